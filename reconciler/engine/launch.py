"""One step from the scheduler's pick to its end: its references resolved and its `when`
decided first (docs/outputs.md), then run_step, or fan_out for a forEach step."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.engine.approval import await_approval
from reconciler.engine.bindings import Unresolvable, resolve, when_holds
from reconciler.engine.fanout import fan_out
from reconciler.engine.record import StepPhase
from reconciler.engine.step import run_step

if TYPE_CHECKING:
    from reconciler.engine.runner import WorkflowRun


async def launch(run: WorkflowRun, name: str) -> None:
    rec = run.record.steps[name]
    inputs = run.workflow.spec.inputs
    written = run.steps[name]
    try:
        if not when_holds(written, run.record, inputs):
            rec.phase, rec.finished, rec.skipped_by_when = StepPhase.SKIPPED, run.now(), True
            rec.message = f"when: {written.templates.get('when', written.when)} was false"
            await run.emit("step", rec.phase, name)
            return
        step = resolve(written, run.record, inputs)
    except Unresolvable as err:  # before it changed anything: nothing to undo
        rec.phase, rec.finished, rec.message = StepPhase.FAILED, run.now(), str(err)
        await run.emit("step", rec.phase, name)
        return
    if step.approval is not None and (rec.approval or {}).get("outcome") != "approved":
        clock = run.engine.clock
        why = await await_approval(step, rec, run.record.run_id, run.approvals, clock, run.emit)
        if why is not None:  # before it changed anything: nothing to undo
            rec.phase, rec.finished, rec.message = StepPhase.FAILED, run.now(), why
            await run.emit("step", rec.phase, name)
            return
        rec.message = None  # how to approve: said, and done
    rec.phase = StepPhase.RUNNING
    if rec.started is None:
        rec.started = run.now()
    if name not in run.started_steps:
        run.started_steps.add(name)
        run.record.execution_order.append(name)
    await run.emit("step", rec.phase, name)
    engine = run.engine
    args = (run.record, run.actions, engine.clock, engine.rng, run.emit, run.checks)
    if step.for_each is not None:
        await fan_out(step, *args, run.workflow.spec.guards, run.started_steps)
    else:
        await run_step(step, *args, run.workflow.spec.guards)
