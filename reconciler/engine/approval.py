"""A step's `approval` (docs/approvals.md): before it starts, the run waits until enough of
its approvers have approved in git, one rejects, or its timeout passes. The wait is counted
from the first time the step asked, kept in the record, so a restart does not extend it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from reconciler.engine.clock import Clock
from reconciler.engine.interface import Approvals, ApprovalView
from reconciler.engine.record import StepPhase, StepRecord
from reconciler.manifest.durations import format_duration
from reconciler.manifest.schema import StepBase

Emit = Callable[[str, str, str | None], Awaitable[None]]
POLL = 5.0  # seconds between looks when no sync says decisions arrived


def how_to_decide(run_id: str, step: str) -> str:
    return (
        f"approve with `reconciler approve {run_id} {step}` (reject: add --reject), or push a"
        f" commit signed with your SSH key that adds approvals/{run_id}/{step}/<you>.yaml"
        " holding `decision: approve` or `decision: reject`"
    )


async def await_approval(
    step: StepBase,
    rec: StepRecord,
    run_id: str,
    approvals: Approvals | None,
    clock: Clock,
    emit: Emit,
) -> str | None:
    """None once approved; else why the step fails (rejected, timed out, no source)."""
    spec = step.approval
    assert spec is not None
    if approvals is None:
        return "approval: this run has no approvals to read (only the daemon reads them from git)"
    kept = rec.approval or {}
    requested = float(kept.get("requested", clock.now()))
    rec.approval = {**kept, "required": spec.required, "requested": requested}
    rec.phase, rec.message = StepPhase.WAITING_FOR_APPROVAL, how_to_decide(run_id, step.name)
    await emit("step", rec.phase, step.name)
    shown: ApprovalView | None = None
    while True:
        view = approvals.state(run_id, step)
        if view != shown:
            shown = view
            rec.approval = {**rec.approval, **_said(view)}
            if view.outcome == "waiting":
                await emit("step", "ApprovalChanged", step.name)
        if view.outcome == "approved":
            return None
        if view.outcome == "rejected":
            by = view.rejected_by[0]
            comment = f": {by['comment']}" if by.get("comment") else ""
            return f"approval: rejected by {by['approver']} (commit {by['commit'][:12]}){comment}"
        left = requested + spec.timeout - clock.now()
        if left <= 0:
            got = len(view.approved_by)
            return (
                f"approval: {got} of {spec.required} approval(s) within"
                f" {format_duration(spec.timeout)}; timed out"
            )
        await approvals.changed(min(left, POLL))


def _said(view: ApprovalView) -> dict[str, object]:
    """The view as the record keeps it (camelCase, as the rest of the record's YAML)."""
    said = {"approvedBy": view.approved_by, "rejectedBy": view.rejected_by}
    return {
        "outcome": view.outcome,
        **{k: v for k, v in said.items() if v},
        "refused": view.refused,
    }
