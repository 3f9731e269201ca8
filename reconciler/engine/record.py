"""The run record (docs/architecture.md, State), filled in by the engine as it runs.

Plain dataclasses: the engine mutates them, `formats/` serialises them to YAML and Markdown,
the checkpoint writer copies them into the WorkflowExecution status. Times are epoch seconds."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
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
    VERIFYING = "Verifying"  # applied and waited for; its `verify` checks are measuring
    WAITING = "Waiting"  # not started: a guard with onFail: wait does not hold yet
    WAITING_FOR_APPROVAL = "WaitingForApproval"  # not started: its `approval` is not given


class Verdict(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"  # no data, NaN, Prometheus unreachable


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
class Measurement:
    time: float
    verdict: Verdict
    value: str | None = None  # what was measured, as text ("0.083", "[0.1, 0.2]", "false")
    note: str | None = None  # why this verdict ("0.083 > 0.05", "no data", the error)
    decisive: bool = False  # its failureCondition held: no more measurements
    took: float | None = None  # seconds the measurement took (a query, a read)


@dataclass
class CheckRecord:
    """One check of a step's `verify`: every measurement and the verdict."""

    name: str
    source: str  # "prometheus: <query>" or "kubernetes: <Kind namespace/name>"
    condition: str
    measurements: list[Measurement] = field(default_factory=list)
    verdict: Verdict | None = None
    reason: str | None = None
    after_rollback: Measurement | None = None  # once, after its step was undone
    role: str = "verify"  # or "guard": checked before the step started


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
    applied: bool = False  # applied and waited for: a resumed run only verifies it again
    checks: list[CheckRecord] = field(default_factory=list)
    outputs: dict[str, Any] | None = None  # what later steps may reference, typed
    skipped_by_when: bool = False  # Skipped because its `when` was false: finished, not cut
    targets: list[str] | None = None  # a forEach step's, frozen when it starts
    peak_concurrent: int | None = None  # a forEach step's most targets at once
    parent: str | None = None  # a forEach target's sub-step: its step and its target
    target: str | None = None
    approval: dict[str, Any] | None = None  # who decided, with which commit (docs/approvals.md)


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

    def to_dict(self) -> dict[str, Any]:  # JSON/YAML-ready; enums as their values
        return plain(self)

    def progress(self) -> tuple[int, int]:
        """Succeeded and all of the workflow's steps (a fan-out's targets are not steps)."""
        steps = self.workflow_steps()
        return sum(1 for s in steps if s.phase == StepPhase.SUCCEEDED), len(steps)

    def workflow_steps(self) -> list[StepRecord]:
        return [s for s in self.steps.values() if s.parent is None]


@dataclass(frozen=True)
class Transition:
    """What changed, handed to the engine's hook (checkpoint, git record, logs, metrics)."""

    scope: str  # "run" | "step" | "rollback"
    phase: str
    step: str | None = None


_ATOMS = (str, int, float, bool, type(None))
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def plain(value: Any) -> Any:
    """What dataclasses.asdict() gives, with enums as their values, at a fraction of its
    cost: the checkpoint serialises the whole record on every write, so asdict's deepcopy of
    every leaf made a 500-step run quadratic in CPU."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if is_dataclass(value):
        names = _FIELD_NAMES.get(kind)
        if names is None:
            names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(value))
        return {name: plain(getattr(value, name)) for name in names}
    return value


_AS_IS = ("outputs", "targets", "peak_concurrent", "parent", "target", "approval")  # JSON


def record_from_dict(data: dict[str, Any]) -> RunRecord:
    """The inverse of RunRecord.to_dict(): how a restarted daemon reads its checkpoint.
    One function, field by field, read side by side with the dataclasses above."""
    steps = {}
    for name, s in data["steps"].items():
        attempts = [
            Attempt(
                number=a["number"],
                started=a["started"],
                finished=a.get("finished"),
                error=a.get("error"),
                error_kind=ErrorKind(a["error_kind"]) if a.get("error_kind") else None,
            )
            for a in s.get("attempts", [])
        ]
        steps[name] = StepRecord(
            name=s["name"],
            action=s["action"],
            depends_on=list(s.get("depends_on", [])),
            phase=StepPhase(s["phase"]),
            started=s.get("started"),
            finished=s.get("finished"),
            attempts=attempts,
            captured=s.get("captured"),
            changed=bool(s.get("changed")),
            result=s.get("result"),
            message=s.get("message"),
            continue_on_failure=bool(s.get("continue_on_failure")),
            applied=bool(s.get("applied")),
            checks=[_check_from_dict(c) for c in s.get("checks") or []],
            skipped_by_when=bool(s.get("skipped_by_when")),
            **{key: s.get(key) for key in _AS_IS},
        )
    rollback = None
    if data.get("rollback"):
        rb = data["rollback"]
        rollback = RollbackRecord(
            reason=rb["reason"],
            started=rb["started"],
            finished=rb.get("finished"),
            entries=[
                UndoEntry(
                    step=e["step"],
                    action=e["action"],
                    result=UndoResult(e["result"]),
                    started=e.get("started"),
                    finished=e.get("finished"),
                    attempts=e.get("attempts", 0),
                    error=e.get("error"),
                    note=e.get("note"),
                )
                for e in rb.get("entries", [])
            ],
        )
    return RunRecord(
        workflow=data["workflow"],
        run_id=data["run_id"],
        content_hash=data["content_hash"],
        max_concurrent=data["max_concurrent"],
        phase=RunPhase(data["phase"]),
        revision=data.get("revision"),
        started=data.get("started"),
        finished=data.get("finished"),
        reason=data.get("reason"),
        message=data.get("message"),
        execution_order=list(data.get("execution_order", [])),
        steps=steps,
        rollback=rollback,
    )


def _measurement_from_dict(m: dict[str, Any]) -> Measurement:
    return Measurement(
        m["time"],
        Verdict(m["verdict"]),
        m.get("value"),
        m.get("note"),
        bool(m.get("decisive")),
        m.get("took"),
    )


def _check_from_dict(c: dict[str, Any]) -> CheckRecord:
    after = c.get("after_rollback")
    return CheckRecord(
        name=c["name"],
        source=c["source"],
        condition=c["condition"],
        measurements=[_measurement_from_dict(m) for m in c.get("measurements") or []],
        verdict=Verdict(c["verdict"]) if c.get("verdict") else None,
        reason=c.get("reason"),
        after_rollback=_measurement_from_dict(after) if after else None,
        role=c.get("role", "verify"),
    )


RECORD_FIELDS = tuple(f.name for f in fields(RunRecord))
