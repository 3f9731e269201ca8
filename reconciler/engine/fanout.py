"""A `forEach` step (docs/fanout.md): its targets resolved once and frozen in the record
(a resumed run does the same set), then one sub-step per target, each with its own capture,
attempts and undo, at most `maxConcurrent` at once, until the error budget is spent.

Sub-steps are records of their own (`drain[worker-3]`, `parent` set) in the run's record and
its execution order, so rollback undoes the ones that changed, newest first, like steps."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence

from reconciler.engine.clock import Clock
from reconciler.engine.errors import PermanentError, TransientError
from reconciler.engine.interface import Actions, Checks, StepContext
from reconciler.engine.record import RunRecord, StepPhase, StepRecord
from reconciler.engine.step import run_step
from reconciler.manifest.checkspec import Guard
from reconciler.manifest.fanout import (
    MAX_TARGETS,
    TARGET_KINDS,
    ForEach,
    allowed_failures,
    describe,
    sub_name,
)
from reconciler.manifest.schema import StepBase, Target

Emit = Callable[[str, str, str | None], Awaitable[None]]


def sub_step(step: StepBase, target: str) -> StepBase:
    """The step for one target: its target named, its name the sub-step's; its parent's
    forEach, approval and when are the parent's business, decided once for all targets."""
    where = Target(namespace=step.target.namespace, name=target)
    update = {"name": sub_name(step.name, target), "target": where}
    return step.model_copy(update={**update, "for_each": None, "approval": None, "when": None})


def sub_steps(steps: dict[str, StepBase], record: RunRecord) -> dict[str, StepBase]:
    """Every sub-step of the record, from its (resolved) parent: what rollback undoes."""
    return {
        name: sub_step(steps[rec.parent], rec.target)
        for name, rec in record.steps.items()
        if rec.parent is not None and rec.target is not None and rec.parent in steps
    }


async def freeze_targets(
    step: StepBase, rec: StepRecord, actions: Actions, ctx: StepContext, emit: Emit
) -> str | None:
    """Resolve the targets once (a checkpoint then holds them); why the step fails if it must."""
    spec: ForEach = step.for_each  # type: ignore[assignment]
    kind = TARGET_KINDS[step.action]  # type: ignore[attr-defined]
    if rec.targets is None:
        try:
            names = list(spec.items) if spec.items is not None else await actions.targets(step, ctx)
        except (PermanentError, TransientError) as err:
            return f"forEach: listing the targets failed: {err}"
        if len(names) > MAX_TARGETS:
            return (
                f"forEach: {describe(spec, kind)} matches more than {MAX_TARGETS} targets, the"
                " most one step may have; narrow the selector or split the step"
            )
        rec.targets = sorted(dict.fromkeys(names))
        await emit("step", "TargetsFrozen", step.name)
    if not rec.targets and not spec.allow_empty:
        return (
            f"forEach: {describe(spec, kind)} matches nothing, so nothing was done; set"
            " allowEmpty: true if that is fine"
        )
    return None


def _place_subs(record: RunRecord, step: StepBase, targets: Sequence[str]) -> None:
    """A record per target, right after its parent in the record (the report groups them)."""
    if all(sub_name(step.name, t) in record.steps for t in targets):
        return
    ordered: dict[str, StepRecord] = {}
    for name, rec in record.steps.items():
        ordered[name] = rec
        if name == step.name:
            for target in targets:
                sub = sub_name(step.name, target)
                ordered[sub] = record.steps.get(sub) or StepRecord(
                    name=sub,
                    action=step.action,  # type: ignore[attr-defined]
                    depends_on=list(step.depends_on),
                    parent=step.name,
                    target=target,
                )
    record.steps = ordered


async def fan_out(
    step: StepBase,
    record: RunRecord,
    actions: Actions,
    clock: Clock,
    rng: random.Random,
    emit: Emit,
    checks: Checks | None,
    guards: Sequence[Guard],
    started: set[str],
) -> None:
    """Run every target of `step` (already Running) and end it Succeeded or Failed."""
    rec = record.steps[step.name]
    spec: ForEach = step.for_each  # type: ignore[assignment]
    ctx = StepContext(record.run_id, record.workflow, 1)
    if why := await freeze_targets(step, rec, actions, ctx, emit):
        rec.phase, rec.finished, rec.message = StepPhase.FAILED, clock.now(), why
        await emit("step", rec.phase, step.name)
        return
    targets = rec.targets or []
    _place_subs(record, step, targets)
    budget = allowed_failures(spec, len(targets))
    subs = [record.steps[sub_name(step.name, t)] for t in targets]
    failed = [s for s in subs if s.phase == StepPhase.FAILED]  # before a crash: they stand
    todo = [s for s in subs if s.phase not in (StepPhase.SUCCEEDED, StepPhase.FAILED)]
    running: set[asyncio.Task[None]] = set()
    peak = rec.peak_concurrent or 0

    async def one(sub: StepRecord) -> None:
        sub.phase, sub.started = StepPhase.RUNNING, sub.started or clock.now()
        if sub.name not in started:
            started.add(sub.name)
            record.execution_order.append(sub.name)
        await emit("step", sub.phase, sub.name)
        await run_step(
            sub_step(step, sub.target or ""), record, actions, clock, rng, emit, checks, guards
        )

    try:
        while todo or running:
            while todo and len(running) < spec.max_concurrent and len(failed) <= budget:
                running.add(asyncio.create_task(one(todo.pop(0))))
                peak = rec.peak_concurrent = max(peak, len(running))  # checkpointed with them
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                running.discard(task)
                task.result()  # an engine bug surfaces here, loudly
            failed = [s for s in subs if s.phase == StepPhase.FAILED]
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    rec.peak_concurrent = peak
    for sub in todo:
        sub.phase, sub.message = StepPhase.SKIPPED, "not started: the error budget was spent"
    _finish(rec, subs, failed, budget, spec, clock)
    await emit("step", rec.phase, step.name)


def _finish(
    rec: StepRecord,
    subs: list[StepRecord],
    failed: list[StepRecord],
    budget: int,
    spec: ForEach,
    clock: Clock,
) -> None:
    ok = sum(1 for s in subs if s.phase == StepPhase.SUCCEEDED)
    rec.outputs = {"targets": len(subs), "succeeded": ok, "failed": len(failed)}
    rec.finished = clock.now()
    said = f"{ok}/{len(subs)} targets succeeded, at most {rec.peak_concurrent} at once"
    if len(failed) > budget:
        first = "; ".join(f"{s.target}: {s.message}" for s in failed[:3])
        rec.phase = StepPhase.FAILED
        rec.message = (
            f"{len(failed)} target(s) failed, over maxFailures {spec.max_failures}"
            f" ({budget} of {len(subs)}): {first}; {said}"
        )
        return
    rec.phase = StepPhase.SUCCEEDED
    rec.message = said + (f"; {len(failed)} failed within maxFailures" if failed else "")
    if not subs:
        rec.message = "no targets matched; allowEmpty: true"
