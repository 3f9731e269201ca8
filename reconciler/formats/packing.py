"""How a run's record is kept in its WorkflowExecution's status: gzip+base64 JSON in
status.record (the whole record: attempts, captured state, rollback), and beside it the
readable summary `kubectl get` shows, per-step rows only up to MAX_STEPS_IN_STATUS steps.
A 10,000-step run's status stays far below etcd's 1.5 MiB object limit."""

from __future__ import annotations

import base64
import gzip
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from reconciler.engine.record import (
    RECORD_FIELDS,
    RunRecord,
    StepPhase,
    StepRecord,
    UndoResult,
    plain,
)

MAX_STEPS_IN_STATUS = 500


def pack(value: Any) -> str:
    return _pack_json(json.dumps(value, separators=(",", ":"), sort_keys=True))


def _pack_json(text: str) -> str:
    # level 6, not gzip's 9: the record is packed on every checkpoint write, and 9 costs
    # several times the CPU for ~15% smaller output
    return base64.b64encode(gzip.compress(text.encode(), compresslevel=6, mtime=0)).decode()


class RecordPacker:
    """Packs one run's record for every checkpoint write, re-serialising only the steps that
    changed since the last write: serialising all of them each time made a long run's
    checkpointing quadratic (a 500-step sequential run spent most of its CPU here)."""

    def __init__(self) -> None:
        # step name -> (signature, captured, result, JSON); holding captured and result
        # keeps their identity meaningful (a freed object's id could be reused)
        self._steps: dict[str, tuple[tuple[Any, ...], Any, Any, str]] = {}

    def pack(self, record: RunRecord) -> str:
        head = {name: plain(getattr(record, name)) for name in RECORD_FIELDS if name != "steps"}
        steps = ",".join(
            f"{json.dumps(name)}:{self._step_json(step)}" for name, step in record.steps.items()
        )
        text = json.dumps(head, separators=(",", ":"), sort_keys=True)
        return _pack_json(f'{text[:-1]},"steps":{{{steps}}}}}')

    def _step_json(self, step: StepRecord) -> str:
        last = step.attempts[-1] if step.attempts else None
        signature = (
            step.phase,
            step.started,
            step.finished,
            step.changed,
            step.message,
            step.continue_on_failure,
            tuple(step.depends_on),
            len(step.attempts),
            (last.started, last.finished, last.error, last.error_kind) if last else None,
        )
        cached = self._steps.get(step.name)
        if (
            cached is not None
            and cached[0] == signature
            and cached[1] is step.captured
            and cached[2] is step.result
        ):
            return cached[3]
        text = json.dumps(plain(step), separators=(",", ":"), sort_keys=True)
        self._steps[step.name] = (signature, step.captured, step.result, text)
        return text


def unpack(text: str) -> Any:
    return json.loads(gzip.decompress(base64.b64decode(text)))


def rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_of(record: RunRecord, packer: RecordPacker | None = None) -> dict[str, Any]:
    done, total = record.progress()
    # kubectl's CURRENT column: a step waiting for a guard or verifying is shown as such
    shown = (StepPhase.WAITING, StepPhase.VERIFYING, StepPhase.WAITING_FOR_APPROVAL)
    running = [
        f"{s.name} ({s.phase.value})" if s.phase in shown else s.name
        for s in record.steps.values()
        if s.phase in (StepPhase.RUNNING, StepPhase.RETRYING, *shown)
    ]
    waiting = any(s.phase == StepPhase.WAITING_FOR_APPROVAL for s in record.steps.values())
    status: dict[str, Any] = {
        # kubectl's PHASE column: a run that waits for people says so
        "phase": "WaitingForApproval" if waiting else record.phase.value,
        "reason": record.reason,
        "message": record.message,
        "progress": f"{done}/{total}",
        "currentStep": ", ".join(running[:3])
        + (f" (+{len(running) - 3})" if len(running) > 3 else "")
        or None,
        "startTime": rfc3339(record.started),
        "completionTime": rfc3339(record.finished),
        "stepCounts": dict(Counter(s.phase.value for s in record.steps.values())),
        "record": (packer or RecordPacker()).pack(record),
    }
    if total <= MAX_STEPS_IN_STATUS:
        status["steps"] = [
            {
                "name": s.name,
                "phase": s.phase.value,
                "attempts": len(s.attempts),
                **({"message": s.message[:300]} if s.message else {}),
            }
            for s in record.steps.values()
        ]
    if record.rollback is not None:
        counts = Counter(e.result for e in record.rollback.entries)
        status["rollback"] = {
            "reason": record.rollback.reason,
            "undone": counts[UndoResult.UNDONE],
            "failed": counts[UndoResult.FAILED],
            "irreversible": counts[UndoResult.IRREVERSIBLE],
            "notReached": counts[UndoResult.NOT_REACHED],
        }
    # None stays: the status is written as a JSON merge patch, where null clears a field
    # (a finished run has no current step any more).
    return status
