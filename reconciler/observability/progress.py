"""What `reconciler run` prints: a live per-step view on a terminal, one plain line per
transition otherwise (CI logs, pipes), so both people and log scrapers get what they need."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TextIO

from reconciler.engine.record import RunRecord, StepPhase, Transition

SYMBOL = {
    StepPhase.PENDING: "·",
    StepPhase.RUNNING: "▶",
    StepPhase.RETRYING: "↻",
    StepPhase.SUCCEEDED: "✔",
    StepPhase.FAILED: "✘",
    StepPhase.CANCELLED: "■",
    StepPhase.SKIPPED: "-",
}


class PlainProgress:
    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out

    async def hook(self, record: RunRecord, t: Transition) -> None:
        if t.phase == "Captured":
            return
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        subject = f"step {t.step}" if t.step else t.scope
        if t.scope == "check":
            subject += " check"
        line = f"{now} {record.run_id} {subject} {t.phase}"
        detail = record.steps[t.step].message if t.step and t.scope == "step" else None
        if t.scope == "run" and record.phase.finished:
            detail = record.message
        if detail:
            line += f": {detail}"
        print(line, file=self.out, flush=True)


class LiveProgress:
    """Redraws a block per run in place (ANSI cursor movement), newest state only."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.records: dict[str, RunRecord] = {}
        self.lines_drawn = 0

    async def hook(self, record: RunRecord, t: Transition) -> None:
        self.records[record.run_id] = record
        self.draw()

    def render(self) -> list[str]:
        lines: list[str] = []
        for record in self.records.values():
            done, total = record.progress()
            lines.append(f"{record.run_id}  {record.phase.value}  {done}/{total}")
            for step in record.steps.values():
                attempts = f" (attempt {len(step.attempts)})" if len(step.attempts) > 1 else ""
                note = (
                    f"  {step.message}"
                    if step.message and step.phase != StepPhase.SUCCEEDED
                    else ""
                )
                lines.append(
                    f"  {SYMBOL[step.phase]} {step.name:<30} {step.phase.value}{attempts}{note}"[
                        :160
                    ]
                )
            if record.rollback is not None:
                for entry in record.rollback.entries:
                    lines.append(f"  ↶ undo {entry.step:<25} {entry.result.value}")
        return lines

    def draw(self) -> None:
        lines = self.render()
        if self.lines_drawn:
            self.out.write(f"\x1b[{self.lines_drawn}F")
        for line in lines:
            self.out.write("\x1b[2K" + line + "\n")
        self.out.flush()
        self.lines_drawn = len(lines)


def progress_for(out: TextIO = sys.stdout) -> PlainProgress | LiveProgress:
    return LiveProgress(out) if out.isatty() else PlainProgress(out)
