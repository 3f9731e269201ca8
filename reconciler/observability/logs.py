"""Structured logs: one JSON object per line (run id and step when known); `text` for people."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from reconciler.engine.record import RunRecord, Transition

EXTRA = ("run_id", "workflow", "step", "phase", "revision", "stage")  # stage: bench/peers


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in EXTRA:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # one line per ref change is noise


run_log = logging.getLogger("reconciler.run")


async def log_transition(record: RunRecord, t: Transition) -> None:
    if t.phase == "Captured":
        return
    extra = {"run_id": record.run_id, "workflow": record.workflow, "phase": t.phase}
    if t.step:
        extra["step"] = t.step
        message = f"step {t.step} {'check ' if t.scope == 'check' else ''}{t.phase}"
        step = record.steps.get(t.step)
        if t.scope == "step" and step is not None and step.message:
            message += f": {step.message}"
    else:
        message = f"{t.scope} {t.phase}" + (
            f": {record.message}" if record.message and record.phase.finished else ""
        )
    run_log.info(message, extra=extra)
