"""Rollback: which steps to undo, in what order, and running the undos (docs/architecture.md,
Rollback).

Order: the reverse of the order steps started. A step starts only after everything it
depends on has finished, so in the reversed list every step comes before the steps it
depended on: a step is undone only after everything that depended on it is undone.
Undos run one at a time: rollback is the moment to be careful, not fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping

from reconciler.engine.attempt import AttemptFailed, timed, with_retries
from reconciler.engine.clock import Clock
from reconciler.engine.interface import Actions, Checks, StepContext, is_reversible
from reconciler.engine.record import RollbackRecord, RunRecord, UndoEntry, UndoResult
from reconciler.engine.verify import after_rollback
from reconciler.manifest.durations import format_duration
from reconciler.manifest.schema import RollbackPolicy, StepBase

RECHECK_TIMEOUT = 60.0  # seconds for all the after-rollback measurements together

Emit = Callable[[str, str, str | None], Awaitable[None]]


def plan_rollback(record: RunRecord) -> list[str]:
    """Steps whose change may be in the cluster, dependents first."""
    return [name for name in reversed(record.execution_order) if record.steps[name].changed]


async def run_rollback(
    *,
    record: RunRecord,
    steps: Mapping[str, StepBase],
    actions: Actions,
    policy: RollbackPolicy,
    reason: str,
    clock: Clock,
    rng: random.Random,
    emit: Emit,
    checks: Checks | None = None,
) -> bool:
    """Undo what `plan_rollback` names; True if everything reversible was undone. Then the
    verify checks of the undone steps are measured once more, for the record."""
    rollback = record.rollback
    if rollback is None:
        rollback = record.rollback = RollbackRecord(reason=reason, started=clock.now())
    # Resuming after a crash: entries that finished stand; an undo cut short is done again.
    rollback.entries = [e for e in rollback.entries if e.finished is not None]
    done = {e.step for e in rollback.entries}
    names = [n for n in plan_rollback(record) if n not in done]
    try:
        async with asyncio.timeout(policy.timeout):
            for name in names:
                step = steps[name]
                entry = UndoEntry(step=name, action=step.action, result=UndoResult.UNDONE)  # type: ignore[attr-defined]
                rollback.entries.append(entry)
                if not is_reversible(step):
                    entry.result = UndoResult.IRREVERSIBLE
                    entry.started = entry.finished = clock.now()
                    entry.note = f"{step.action} cannot be undone; skipped"  # type: ignore[attr-defined]
                else:
                    await _undo_one(step, entry, record, actions, clock, rng)
                await emit("rollback", entry.result.value, name)
    except TimeoutError:
        _mark_unfinished(rollback, names, steps, clock, policy)
        await emit("rollback", "TimedOut", None)
    if checks is not None:
        await _recheck(rollback, steps, record, checks)
    rollback.finished = clock.now()
    return all(e.result in (UndoResult.UNDONE, UndoResult.IRREVERSIBLE) for e in rollback.entries)


async def _undo_one(
    step: StepBase,
    entry: UndoEntry,
    record: RunRecord,
    actions: Actions,
    clock: Clock,
    rng: random.Random,
) -> None:
    captured = record.steps[step.name].captured or {}
    entry.started = clock.now()

    async def once(number: int) -> None:
        entry.attempts = number
        ctx = StepContext(record.run_id, record.workflow, number)
        entry.note = await timed(lambda: actions.undo(step, captured, ctx), step.timeout, "undo")

    def failed(number: int, failure: Exception, delay: float) -> None:
        entry.error = str(failure)

    try:  # an undo failure is recorded; rollback goes on
        await with_retries(once, step.retry, clock, rng, failed)
    except AttemptFailed as failure:
        entry.result, entry.error, entry.finished = UndoResult.FAILED, failure.error, clock.now()
        return
    entry.result, entry.error, entry.finished = UndoResult.UNDONE, None, clock.now()


async def _recheck(
    rollback: RollbackRecord, steps: Mapping[str, StepBase], record: RunRecord, checks: Checks
) -> None:
    """ "Did undoing help?": one measurement of each check of each undone step, bounded so
    that a Prometheus gone silent cannot hold the rollback's end."""
    undone = [e.step for e in rollback.entries if e.result == UndoResult.UNDONE]
    ctx = StepContext(record.run_id, record.workflow, 1)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(RECHECK_TIMEOUT):
            for name in undone:
                if steps[name].verify:
                    await after_rollback(steps[name], record.steps[name], checks, ctx)


def _mark_unfinished(
    rollback: RollbackRecord,
    names: list[str],
    steps: Mapping[str, StepBase],
    clock: Clock,
    policy: RollbackPolicy,
) -> None:
    message = f"rollback timeout {format_duration(policy.timeout)} exceeded"
    if rollback.entries and rollback.entries[-1].finished is None:  # the undo cut short
        last = rollback.entries[-1]
        last.result, last.error, last.finished = UndoResult.FAILED, message, clock.now()
    reached = {e.step for e in rollback.entries}
    for name in names:
        if name not in reached:
            rollback.entries.append(
                UndoEntry(
                    step=name,
                    action=steps[name].action,
                    result=UndoResult.NOT_REACHED,
                    error=message,
                )  # type: ignore[attr-defined]
            )
