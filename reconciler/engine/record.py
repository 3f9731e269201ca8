"""The run record (DESIGN.md §5), filled in by the engine as it runs.

Plain dataclasses: the engine mutates them, `state/` serialises them to YAML and Markdown,
the checkpoint writer copies them into the WorkflowExecution status. Times are epoch seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class RunPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    PARTIALLY_ROLLED_BACK = "PartiallyRolledBack"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self not in (RunPhase.PENDING, RunPhase.RUNNING, RunPhase.ROLLING_BACK)


class StepPhase(StrEnum):
    PENDING = "Pending"  # waiting for dependencies or a concurrency slot
    RUNNING = "Running"
    RETRYING = "Retrying"  # a transient error; waiting out the backoff
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"  # was running when the workflow was cancelled or timed out
    SKIPPED = "Skipped"  # never started: the workflow stopped scheduling first


class ErrorKind(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class UndoResult(StrEnum):
    UNDONE = "Undone"
    FAILED = "Failed"
    IRREVERSIBLE = "Irreversible"  # skipped by design, recorded so people know
    NOT_REACHED = "NotReached"  # rollback timed out before this step


@dataclass
class Attempt:
    number: int
    started: float
    finished: float | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None


@dataclass
class StepRecord:
    name: str
    action: str
    depends_on: list[str]
    phase: StepPhase = StepPhase.PENDING
    started: float | None = None
    finished: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    captured: dict[str, Any] | None = None  # what the step will change, before changing it
    changed: bool = False  # its change may be in the cluster (so rollback must consider it)
    result: dict[str, Any] | None = None  # action output worth showing (e.g. a Job's log tail)
    message: str | None = None
    continue_on_failure: bool = False


@dataclass
class UndoEntry:
    step: str
    action: str
    result: UndoResult
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    error: str | None = None
    note: str | None = None


@dataclass
class RollbackRecord:
    reason: str
    started: float
    finished: float | None = None
    entries: list[UndoEntry] = field(default_factory=list)


@dataclass
class RunRecord:
    workflow: str
    run_id: str
    content_hash: str
    max_concurrent: int
    phase: RunPhase = RunPhase.PENDING
    revision: str | None = None  # the source revision (branch@sha1:...), set by the daemon
    started: float | None = None
    finished: float | None = None
    reason: str | None = None  # StepFailed | WorkflowTimeout | Cancelled | ...
    message: str | None = None
    execution_order: list[str] = field(default_factory=list)
    steps: dict[str, StepRecord] = field(default_factory=dict)
    rollback: RollbackRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready; enums become their string values."""
        return _plain(asdict(self))

    def progress(self) -> tuple[int, int]:
        done = sum(1 for s in self.steps.values() if s.phase == StepPhase.SUCCEEDED)
        return done, len(self.steps)


@dataclass(frozen=True)
class Transition:
    """What changed, handed to the engine's hook (checkpoint, git record, logs, metrics)."""

    scope: str  # "run" | "step" | "rollback"
    phase: str
    step: str | None = None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value
