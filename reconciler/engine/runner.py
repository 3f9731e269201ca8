"""Run one workflow: DAG order with priorities, per-workflow and global concurrency limits,
attempt timeouts, retries for transient errors, workflow timeout, cancellation, rollback.

Every state change goes through `emit`, which awaits the hook before the engine moves on:
that is what lets a checkpoint be durable before the next step starts."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from reconciler.engine.bindings import concrete
from reconciler.engine.clock import Clock
from reconciler.engine.dag import Dag
from reconciler.engine.fanout import sub_steps
from reconciler.engine.interface import Actions, Approvals, Checks
from reconciler.engine.launch import launch
from reconciler.engine.record import RunPhase, RunRecord, StepPhase, StepRecord, Transition
from reconciler.engine.rollback import plan_rollback, run_rollback
from reconciler.engine.slots import PrioritySlots, RunTickets
from reconciler.manifest.durations import format_duration
from reconciler.manifest.identity import content_hash, run_id
from reconciler.manifest.schema import StepBase, Workflow

Hook = Callable[[RunRecord, Transition], Awaitable[None]]
# A checkpoint's step in one of these was cut short: it runs again (from its capture).
INTERRUPTED = {StepPhase.RUNNING, StepPhase.RETRYING, StepPhase.VERIFYING, StepPhase.WAITING}
INTERRUPTED |= {StepPhase.CANCELLED, StepPhase.SKIPPED, StepPhase.WAITING_FOR_APPROVAL}


class Engine:
    """Runs workflows; one instance per process so the global step limit is shared."""

    def __init__(
        self,
        actions: Actions | None = None,
        *,
        global_limit: int | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        hook: Hook | None = None,
    ) -> None:
        self.actions = actions
        self.slots = PrioritySlots(global_limit) if global_limit else None
        self.clock = clock or Clock()
        self.rng = rng or random.Random()
        self.hook = hook

    async def run(
        self,
        workflow: Workflow,
        *,
        digest: str | None = None,
        revision: str | None = None,
        cancel: asyncio.Event | None = None,
        actions: Actions | None = None,
        hook: Hook | None = None,
        resume: RunRecord | None = None,
        checks: Checks | None = None,
        approvals: Approvals | None = None,
    ) -> RunRecord:
        """Run to a final phase and return the record. Setting `cancel` stops scheduling,
        cancels running steps and rolls back, like a workflow timeout. `actions` overrides
        the engine's for this run (e.g. bound to the run's WorkflowExecution owner), `hook`
        likewise (e.g. that run's checkpoint writer). `resume` continues a run from its last
        checkpoint: finished steps are not run again, interrupted ones are re-applied
        (apply is idempotent) with the state captured before their first change. `checks`
        measure verify checks (docs/checks.md), `approvals` give approvals (docs/approvals.md)."""
        chosen = actions or self.actions
        if chosen is None:
            raise ValueError("no actions: pass them to Engine() or to run()")
        run = WorkflowRun(
            self,
            workflow,
            digest or content_hash(workflow),
            revision,
            cancel,
            chosen,
            hook or self.hook,
        )
        run.checks, run.approvals = checks, approvals
        if resume is not None:
            run.adopt(resume)
        return await run.execute()


class WorkflowRun:
    def __init__(
        self,
        engine: Engine,
        workflow: Workflow,
        digest: str,
        revision: str | None,
        cancel: asyncio.Event | None,
        actions: Actions,
        hook: Hook | None,
    ) -> None:
        self.engine = engine
        self.actions = actions
        self.checks: Checks | None = None
        self.approvals: Approvals | None = None
        self.hook = hook
        self.workflow = workflow
        self.cancel = cancel
        self.steps: dict[str, StepBase] = {s.name: s for s in workflow.spec.steps}
        self.started_steps: set[str] = set()
        self.dag = Dag.from_workflow(workflow)
        self.record = RunRecord(
            workflow=workflow.metadata.name,
            run_id=run_id(workflow, digest),
            content_hash=digest,
            max_concurrent=workflow.spec.max_concurrent,
            revision=revision,
            steps={
                s.name: StepRecord(
                    name=s.name,
                    action=s.action,  # type: ignore[attr-defined]
                    depends_on=list(s.depends_on),
                    continue_on_failure=s.continue_on_failure,
                )
                for s in workflow.spec.steps
            },
        )

    def adopt(self, record: RunRecord) -> None:
        """Continue from a checkpoint instead of a fresh record."""
        if record.run_id != self.record.run_id:
            raise ValueError(f"checkpoint is for {record.run_id}, not {self.record.run_id}")
        for step in record.steps.values():
            if step.phase in INTERRUPTED and not step.skipped_by_when:
                step.phase = StepPhase.PENDING  # interrupted: run again from its captured state
                if step.captured is not None:
                    # Its apply may have reached the cluster just before the crash (the
                    # checkpoint cannot say): rollback must consider it. Undoing from the
                    # captured state is harmless if it did not.
                    step.changed = True
        self.record = record
        self.started_steps = set(record.execution_order)

    def now(self) -> float:
        return self.engine.clock.now()

    async def emit(self, scope: str, phase: str, step: str | None = None) -> None:
        if self.hook is not None:
            await self.hook(self.record, Transition(scope, phase, step))

    # ------------------------------------------------------------------ the run

    async def execute(self) -> RunRecord:
        record = self.record
        if record.phase == RunPhase.ROLLING_BACK:  # resumed mid-rollback: finish the rollback
            await self._finish_failed(record.reason or "StepFailed")
            record.finished = self.now()
            await self.emit("run", record.phase)
            return record
        if record.started is None:
            record.started = self.now()
        record.phase = RunPhase.RUNNING
        await self.emit("run", record.phase)
        stop_reason, stop_message = await self._run_steps()
        for step in record.steps.values():
            if step.phase == StepPhase.PENDING:
                step.phase = StepPhase.SKIPPED
        if stop_reason is None:
            record.phase = RunPhase.SUCCEEDED
            record.message = self._success_message()
        else:
            record.reason, record.message = stop_reason, stop_message
            await self._finish_failed(stop_reason)
        record.finished = self.now()
        await self.emit("run", record.phase)
        return record

    async def _finish_failed(self, reason: str) -> None:
        record, policy = self.record, self.workflow.spec.rollback
        to_undo = plan_rollback(record)
        if policy.on_failure and to_undo:
            record.phase = RunPhase.ROLLING_BACK
            await self.emit("run", record.phase)
            complete = await run_rollback(
                record=record,
                steps=self._concrete_all(),
                actions=self.actions,
                policy=policy,
                reason=reason,
                clock=self.engine.clock,
                rng=self.engine.rng,
                emit=self.emit,
                checks=self.checks,
            )
            record.phase = RunPhase.ROLLED_BACK if complete else RunPhase.PARTIALLY_ROLLED_BACK
            return
        record.phase = RunPhase.CANCELLED if reason == "Cancelled" else RunPhase.FAILED
        if to_undo:
            record.message = (record.message or "") + (
                f"; rollback is off, {len(to_undo)} changed step(s) left as they are"
            )

    def _success_message(self) -> str:
        steps = self.record.workflow_steps()
        total = len(steps)
        failed = [s.name for s in steps if s.phase == StepPhase.FAILED]
        skipped = sum(1 for s in steps if s.skipped_by_when)
        text = f"{total - len(failed) - skipped}/{total} steps succeeded"
        if skipped:
            text += f", {skipped} skipped by their `when`"
        if failed:
            text += f"; failed with continueOnFailure: {', '.join(failed)}"
        return text

    async def _run_steps(self) -> tuple[str | None, str | None]:
        """Schedule until everything is done or something stops the run; return why."""
        loop = asyncio.get_running_loop()
        elapsed = self.now() - (self.record.started or self.now())
        deadline = loop.time() + max(0.0, self.workflow.spec.timeout - elapsed)
        limit = self.workflow.spec.max_concurrent
        steps = self.record.workflow_steps()
        failed = [s for s in steps if s.phase == StepPhase.FAILED and not s.continue_on_failure]
        if failed:  # resumed after a failure: nothing more runs
            return "StepFailed", f"step {failed[0].name!r} failed: {failed[0].message}"
        finished = [
            s.name
            for s in steps
            if s.phase in (StepPhase.SUCCEEDED, StepPhase.FAILED) or s.skipped_by_when
        ]
        queue = self.dag.ready_queue(done=finished)
        running: dict[asyncio.Task[None], str] = {}
        cancel_wait = asyncio.ensure_future(self.cancel.wait()) if self.cancel else None
        reason: str | None = None
        message: str | None = None
        tickets = RunTickets(self.engine.slots)  # the global step limit
        try:
            while True:
                while reason is None and queue.has_ready() and len(running) < limit:
                    name = queue.pop()
                    ticket = tickets.take(name, self.dag.priority[name])
                    running[asyncio.create_task(self._run_step(name, ticket), name=name)] = name
                tickets.give_back_finished()  # only now: see RunTickets
                if not running:
                    break
                waiters: set[asyncio.Future[Any]] = set(running)
                if cancel_wait is not None:
                    waiters.add(cancel_wait)
                done, _ = await asyncio.wait(
                    waiters,
                    timeout=max(0.0, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done or (cancel_wait is not None and cancel_wait in done):
                    if not done:
                        reason = "WorkflowTimeout"
                        limit_text = format_duration(self.workflow.spec.timeout)
                        message = f"workflow timeout {limit_text} exceeded"
                    else:
                        reason, message = "Cancelled", "cancelled while running"
                    await _cancel_all(running)
                    break
                for task in done:
                    name = running.pop(task)  # type: ignore[arg-type]
                    tickets.finished(name)
                    task.result()  # a hook or engine bug surfaces here, loudly
                    step = self.record.steps[name]
                    if (
                        step.phase == StepPhase.SUCCEEDED
                        or step.continue_on_failure
                        or step.skipped_by_when  # as Argo's `when`: dependents still run
                    ):
                        queue.done(name)
                    elif reason is None:
                        # Stop scheduling; steps already running are allowed to finish.
                        reason, message = "StepFailed", f"step {name!r} failed: {step.message}"
        finally:
            if cancel_wait is not None:
                cancel_wait.cancel()
            tickets.give_back_all({name: task for task, name in running.items()})
            await _cancel_all(running)  # only non-empty if we ourselves were cancelled
        return reason, message

    # ------------------------------------------------------------------ one step

    async def _run_step(self, name: str, slot: asyncio.Future[None] | None) -> None:
        if slot is not None:
            await slot  # the global step limit; _run_steps gives the slot back
        await launch(self, name)

    def _concrete_all(self) -> dict[str, StepBase]:
        """Every step and sub-step as it ran, for rollback."""
        given = self.workflow.spec.inputs
        steps = {n: concrete(s, self.record, given) for n, s in self.steps.items()}
        return {**steps, **sub_steps(steps, self.record)}


async def _cancel_all(running: dict[asyncio.Task[None], str]) -> None:
    for task in running:
        task.cancel()
    if running:
        await asyncio.gather(*running, return_exceptions=True)
    running.clear()
