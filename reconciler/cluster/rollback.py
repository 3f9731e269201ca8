"""Rolling back a finished run by hand (`reconciler rollback RUN_ID`): the undos run from
its checkpoint in reverse start order, the result is checkpointed, and recorded in git like
any run."""

from __future__ import annotations

import random

from reconciler.actions.registry import KubeActions
from reconciler.cluster.checkpoint import Checkpointer
from reconciler.cluster.keys import execution_key
from reconciler.cluster.run import InputsLost, Untrusted, check_trusted, revalidate, workflow_of
from reconciler.engine.bindings import concrete
from reconciler.engine.clock import Clock
from reconciler.engine.errors import PermanentError
from reconciler.engine.fanout import sub_steps
from reconciler.engine.record import RunPhase, RunRecord, Transition, UndoResult
from reconciler.engine.rollback import run_rollback
from reconciler.formats.execution import (
    execution_path,
    owner_reference,
    phase_of,
    record_of,
    source_of,
    stored_workflow,
)
from reconciler.formats.run_record import commit_message, record_files
from reconciler.gitops.git import GitRepo
from reconciler.kube.client import Kube
from reconciler.manifest.policy import Policy
from reconciler.manifest.schema import StepBase, Workflow


def steps_as_they_ran(workflow: Workflow, record: RunRecord) -> dict[str, StepBase]:
    """Each step with its references resolved from the record, and each forEach target's
    sub-step: what the automatic rollback undoes too (engine/runner.py)."""
    given = workflow.spec.inputs
    steps = {s.name: concrete(s, record, given) for s in workflow.spec.steps}
    return {**steps, **sub_steps(steps, record)}


async def rollback_run(
    kube: Kube, run_id: str, git: GitRepo | None, records_path: str, policy: Policy | None = None
) -> RunRecord:
    execution = await kube.find(f"workflowexecution {run_id}", execution_path(run_id))
    if execution is None:
        raise PermanentError(
            f"no WorkflowExecution {run_id}: its checkpoint (and any captured Secret data) is gone;"
            " the record in git still lists what each step captured"
        )
    phase = phase_of(execution)
    if not phase.finished:
        raise PermanentError(
            f"{run_id} is {phase.value}: delete its WorkflowExecution to cancel and roll it back"
        )
    if phase == RunPhase.ROLLED_BACK:
        raise PermanentError(f"{run_id} is already rolled back")
    try:  # only what this installation ran, and what the policy still allows, is undone
        check_trusted(execution, await execution_key(kube))
        try:
            workflow = await workflow_of(kube, execution)
        except InputsLost:  # undos need no new Secret value: their captured keys say what
            workflow = stored_workflow(execution)
        revalidate(execution, workflow, policy)
    except Untrusted as err:
        raise PermanentError(str(err)) from None
    record = record_of(execution)
    if record is None:
        raise PermanentError(f"{run_id} has no checkpoint: nothing ran, nothing to undo")
    if record.rollback is not None:  # a partial rollback: try again what failed or was not reached
        record.rollback.entries = [
            e
            for e in record.rollback.entries
            if e.result in (UndoResult.UNDONE, UndoResult.IRREVERSIBLE)
        ]
    checkpoint = Checkpointer(kube, execution)
    clock = Clock()
    record.phase = RunPhase.ROLLING_BACK
    await checkpoint.hook(record, _run_transition(record))

    async def emit(scope: str, phase_name: str, step: str | None) -> None:
        await checkpoint.hook(record, Transition(scope, phase_name, step))

    complete = await run_rollback(
        record=record,
        steps=steps_as_they_ran(workflow, record),
        actions=KubeActions(kube, owner_reference(execution), (policy or Policy()).account_for),
        policy=workflow.spec.rollback,
        reason="ManualRollback",
        clock=clock,
        rng=random.Random(),
        emit=emit,
    )
    record.phase = RunPhase.ROLLED_BACK if complete else RunPhase.PARTIALLY_ROLLED_BACK
    record.reason = "ManualRollback"
    record.message = f"rolled back by hand after it ended {phase.value}"
    record.finished = clock.now()
    await checkpoint.hook(record, _run_transition(record))
    await checkpoint.close()
    if git is not None:
        await git.ensure()
        await git.push_files(
            record_files(records_path, record, source_of(execution)),
            commit_message(record, note="manual rollback"),
        )
    return record


def _run_transition(record: RunRecord) -> Transition:
    return Transition("run", record.phase.value)
