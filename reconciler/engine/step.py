"""One step: its attempts (capture once, apply, wait), each bounded by the step timeout,
retried under its retry policy; what each attempt did goes into the step's record."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from reconciler.engine.attempt import AttemptFailed, timed, with_retries
from reconciler.engine.clock import Clock
from reconciler.engine.errors import PermanentError
from reconciler.engine.interface import OUTPUTS_KEY, Actions, Checks, StepContext
from reconciler.engine.record import Attempt, ErrorKind, RunRecord, StepPhase, StepRecord
from reconciler.engine.verify import hold_guards, verify_step
from reconciler.manifest.checkspec import Guard
from reconciler.manifest.outputs import check_values, declared
from reconciler.manifest.schema import StepBase

Emit = Callable[[str, str, str | None], Awaitable[None]]


async def run_step(
    step: StepBase,
    record: RunRecord,
    actions: Actions,
    clock: Clock,
    rng: random.Random,
    emit: Emit,
    checks: Checks | None = None,
    guards: Sequence[Guard] = (),
) -> None:
    """Run `step` (already marked Running) to Succeeded or Failed; every attempt, retry
    and the final phase are emitted before the engine moves on. A step applied before a
    crash (`applied` in its checkpoint) is only verified again, never applied again."""
    rec = record.steps[step.name]
    name = step.name

    async def once(number: int) -> None:
        rec.phase = StepPhase.RUNNING
        attempt = Attempt(number=number, started=clock.now())
        rec.attempts.append(attempt)
        ctx = StepContext(record.run_id, record.workflow, number)
        try:
            rec.result = await timed(
                lambda: _capture_apply_wait(step, rec, actions, ctx, emit),
                step.timeout,
                "attempt",
                lambda: ctx.waiting_for,
            )
        except AttemptFailed as failure:
            attempt.finished, attempt.error = clock.now(), failure.error
            attempt.error_kind = failure.kind
            raise
        except asyncio.CancelledError:
            attempt.finished, attempt.error = clock.now(), "cancelled"
            attempt.error_kind = ErrorKind.CANCELLED
            rec.phase, rec.finished = StepPhase.CANCELLED, clock.now()
            rec.message = "cancelled while running"
            await emit("step", rec.phase, name)
            raise
        attempt.finished = clock.now()

    async def retrying(number: int, failure: Exception, delay: float) -> None:
        rec.phase = StepPhase.RETRYING
        rec.message = f"attempt {number} failed ({failure}); retrying in {delay:.1f}s"
        await emit("step", rec.phase, name)

    if not rec.applied and guards:
        ctx = StepContext(record.run_id, record.workflow, 1)
        refusal = await hold_guards(guards, step, rec, checks, clock, ctx, emit)
        if refusal is not None:  # before it changed anything: nothing of it to undo
            rec.phase, rec.finished, rec.message = StepPhase.FAILED, clock.now(), refusal
            await emit("step", rec.phase, name)
            return
        rec.phase, rec.message = StepPhase.RUNNING, None
    if not rec.applied:
        try:
            await with_retries(once, step.retry, clock, rng, retrying)
        except AttemptFailed as failure:
            number = len(rec.attempts)
            rec.phase, rec.finished = StepPhase.FAILED, clock.now()
            rec.message = (
                failure.error if number == 1 else f"{failure.error} (after {number} attempts)"
            )
            await emit("step", rec.phase, name)
            return
        rec.applied = True
    if step.verify:
        failure = await _verify(step, record, checks, clock, emit)
        if failure is not None:  # it changed something: rollback undoes it too
            rec.phase, rec.finished, rec.message = StepPhase.FAILED, clock.now(), failure
            await emit("step", rec.phase, name)
            return
    rec.phase, rec.finished, rec.message = StepPhase.SUCCEEDED, clock.now(), None
    await emit("step", rec.phase, name)


async def _verify(
    step: StepBase, record: RunRecord, checks: Checks | None, clock: Clock, emit: Emit
) -> str | None:
    rec = record.steps[step.name]
    rec.phase, rec.message = StepPhase.VERIFYING, None
    await emit("step", rec.phase, step.name)  # durable: from here a crash only re-verifies
    if checks is None:
        return "this step has verify checks, but the run has nothing to measure them with"
    ctx = StepContext(record.run_id, record.workflow, max(len(rec.attempts), 1))
    return await verify_step(step, rec, checks, clock, ctx, emit)


async def _capture_apply_wait(
    step: StepBase, rec: StepRecord, actions: Actions, ctx: StepContext, emit: Emit
) -> dict[str, Any] | None:
    if rec.captured is None:
        # Captured once, before the first change, and made durable (hook) before apply:
        # a retry must not re-capture a state the step itself already changed.
        rec.captured = await actions.capture(step, ctx)
        await emit("step", "Captured", step.name)
    was_changed, rec.changed = rec.changed, True
    try:
        result = await actions.apply(step, rec.captured, ctx)
    except PermanentError as err:
        # Refused before changing anything: nothing for rollback to undo.
        if not err.changed:
            rec.changed = was_changed
        raise
    waited = await actions.wait(step, rec.captured, ctx)
    merged = {**(result or {}), **(waited or {})}
    outputs = merged.pop(OUTPUTS_KEY, None)
    if outputs is not None:  # None: nothing ran for real (a dry run)
        if problems := check_values(declared(step), outputs):
            # it ran: its change stays for rollback to consider
            raise PermanentError(f"outputs: {'; '.join(problems)}", changed=True)
        rec.outputs = outputs
    return merged or None
