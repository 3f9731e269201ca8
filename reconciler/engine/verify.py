"""A step's `verify` checks (docs/checks.md): measured after its own wait, all at once;
the first that fails cancels the others and fails the step, which rollback then undoes
too. Not retried: a failed check is an answer, not a transient error. After a rollback,
each check of an undone step is measured once more ("did undoing help?"), for the record.

Semantics, as in Argo Rollouts' analysis: a Prometheus check takes `count` measurements,
`interval` apart after `initialDelay`; it fails once more than `failureLimit` failed or
more than `inconclusiveLimit` were inconclusive, or at once when a `failureCondition`
holds. A live (kubernetes) check polls every `interval` until its condition holds or
`timeout` has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from reconciler.engine.clock import Clock
from reconciler.engine.interface import Checks, StepContext
from reconciler.engine.record import CheckRecord, Measurement, StepPhase, StepRecord, Verdict
from reconciler.manifest.checkspec import Check, Guard
from reconciler.manifest.schema import StepBase

MAX_KEPT = 50  # measurements kept per check: the first and the newest, for a long poll
Emit = Callable[[str, str, str | None], Awaitable[None]]


def check_record(check: Check | Guard, role: str = "verify") -> CheckRecord:
    if check.prometheus is not None:
        source, condition = f"prometheus: {check.prometheus.query.strip()}", check.success_condition
    else:
        assert check.kubernetes is not None
        ref = check.kubernetes.object
        where = (
            "the step's target" if ref is None else f"{ref.kind} {_where(ref.namespace, ref.name)}"
        )
        source, condition = f"kubernetes: {where}", check.kubernetes.condition
    failure = getattr(check, "failure_condition", None)
    if failure:
        condition = f"{condition}; fails at once if {failure}"
    return CheckRecord(check.name, source, condition or "", role=role)


async def verify_step(
    step: StepBase, rec: StepRecord, checks: Checks, clock: Clock, ctx: StepContext, emit: Emit
) -> str | None:
    """Run every check of `step`; None if all passed, else why the first one failed."""
    mine = [check_record(c) for c in step.verify]
    rec.checks = [c for c in rec.checks if c.role == "guard"] + mine
    verifying = _Verifying(step, rec, checks, clock, ctx, emit)
    tasks = [
        asyncio.create_task(_one(check, record, verifying))
        for check, record in zip(step.verify, mine, strict=True)
    ]
    try:
        for next_done in asyncio.as_completed(tasks):
            failure = await next_done
            if failure is not None:
                return failure
        return None
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass
class _Verifying:
    """What measuring one step's checks needs, in one place."""

    step: StepBase
    rec: StepRecord
    checks: Checks
    clock: Clock
    ctx: StepContext
    emit: Emit

    async def take(self, check: Check, record: CheckRecord) -> Measurement:
        m = await self.checks.measure(check, self.step, self.ctx)
        record.measurements.append(m)
        shown = m.value if m.value is not None else "-"
        self.rec.message = f"verify {check.name!r}: {shown} {m.verdict}"
        if len(record.measurements) > MAX_KEPT:
            del record.measurements[1]  # keep the first: when it started, what it saw then
        await self.emit("step", "Measured", self.step.name)
        return m


async def _one(check: Check, record: CheckRecord, v: _Verifying) -> str | None:
    await v.clock.sleep(check.initial_delay)
    if check.prometheus is not None:
        verdict, reason = await _measured(check, record, v)
    else:
        verdict, reason = await _polled(check, record, v)
    record.verdict, record.reason = verdict, reason
    await v.emit("check", verdict.value, v.step.name)
    return None if verdict == Verdict.PASSED else f"verify {check.name!r} failed: {reason}"


async def _measured(check: Check, record: CheckRecord, v: _Verifying) -> tuple[Verdict, str]:
    failed = inconclusive = 0
    for number in range(check.count):
        if number:
            await v.clock.sleep(check.interval)
        m = await v.take(check, record)
        if m.verdict == Verdict.FAILED:
            failed += 1
            if m.decisive or failed > check.failure_limit:
                return Verdict.FAILED, _said(m)
        elif m.verdict == Verdict.INCONCLUSIVE:
            inconclusive += 1
            if inconclusive > check.inconclusive_limit:
                return Verdict.FAILED, f"inconclusive: {_said(m)}"
    passed = check.count - failed - inconclusive
    return Verdict.PASSED, f"{passed} of {check.count} measurements passed"


async def _polled(check: Check, record: CheckRecord, v: _Verifying) -> tuple[Verdict, str]:
    deadline = v.clock.now() + check.timeout
    while True:
        m = await v.take(check, record)
        if m.verdict == Verdict.PASSED:
            return Verdict.PASSED, m.note or "the condition holds"
        if v.clock.now() + check.interval > deadline:
            return Verdict.FAILED, f"not true within {check.timeout:g}s: {_said(m)}"
        await v.clock.sleep(check.interval)


async def hold_guards(
    guards: Sequence[Guard],
    step: StepBase,
    rec: StepRecord,
    checks: Checks | None,
    clock: Clock,
    ctx: StepContext,
    emit: Emit,
) -> str | None:
    """Before a step starts: None once every guard holds. One that does not, with
    `onFail: fail`, fails the step before it changes anything (the reason is returned);
    with `onFail: wait` the step waits (phase Waiting, the reason in its message),
    re-checking each interval; the workflow timeout bounds the wait."""
    if not guards:
        return None
    if checks is None:
        return "this workflow has guards, but the run has nothing to measure them with"
    records = [check_record(g, "guard") for g in guards]
    rec.checks = records
    while True:
        failing = []
        for guard, record in zip(guards, records, strict=True):
            m = await checks.measure(guard, step, ctx)  # type: ignore[arg-type]
            record.measurements.append(m)
            if len(record.measurements) > MAX_KEPT:
                del record.measurements[1]
            record.verdict, record.reason = m.verdict, m.note
            if m.verdict != Verdict.PASSED:
                failing.append((guard, m))
        if not failing:
            return None
        guard, m = failing[0]
        if any(g.on_fail == "fail" for g, _ in failing):
            return f"guard {guard.name!r} does not hold: {_said(m)}"
        rec.phase, rec.message = StepPhase.WAITING, f"waiting for guard {guard.name!r}: {_said(m)}"
        await emit("step", rec.phase, step.name)
        await clock.sleep(min(g.interval for g, _ in failing))


async def after_rollback(step: StepBase, rec: StepRecord, checks: Checks, ctx: StepContext) -> None:
    """Each check of an undone step, measured once more; never fails anything."""
    mine = [c for c in rec.checks if c.role == "verify"]  # not the guards before it
    for check, record in zip(step.verify, mine, strict=False):
        with contextlib.suppress(Exception):  # for the record only: a failure is not news
            record.after_rollback = await checks.measure(check, step, ctx)


def _said(m: Measurement) -> str:
    """ "result = 0.083: result > 0.05 at 18:32:10 UTC": what a reviewer reads first."""
    at = time.strftime("%H:%M:%S", time.gmtime(m.time))
    return f"{m.note or m.verdict.value} at {at} UTC"


def _where(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name
