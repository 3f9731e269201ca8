"""Run one workflow in the cluster: its WorkflowExecution (checkpoint, owner, cancel handle),
the engine, events, and the finalizer dance that makes `kubectl delete` mean "cancel and
roll back first".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from reconciler import failpoints
from reconciler.actions.registry import KubeActions
from reconciler.attempt import attempt
from reconciler.checks.measure import ClusterChecks, prometheus_for
from reconciler.cluster import inputs
from reconciler.cluster.checkpoint import Checkpointer
from reconciler.cluster.events import EventRecorder
from reconciler.cluster.keys import KEY_SECRET, execution_key
from reconciler.engine.interface import Approvals
from reconciler.engine.record import Measurement, RunRecord, Transition
from reconciler.engine.runner import Engine
from reconciler.formats.execution import (
    FINALIZER,
    execution_body,
    execution_path,
    inputs_ref,
    manifest_of,
    owner_reference,
    packed_record,
    phase_of,
    record_of,
    sign,
    signed_with,
    stored_workflow,
)
from reconciler.kube.client import Kube
from reconciler.kube.errors import Conflict
from reconciler.kube.origin import request_origin
from reconciler.manifest.approvalrules import check_approvals
from reconciler.manifest.checks import check_workflow
from reconciler.manifest.errors import format_path
from reconciler.manifest.loader import LoadedWorkflow
from reconciler.manifest.policy import Policy
from reconciler.manifest.schema import Workflow

Hook = Callable[[RunRecord, Transition], Awaitable[None]]
log = logging.getLogger("reconciler.run")


class AlreadyRun(Exception):
    """The run id already has a finished WorkflowExecution: same content, never twice."""

    def __init__(self, record: dict[str, Any] | None, phase: str) -> None:
        super().__init__(phase)
        self.record = record
        self.phase = phase


class Untrusted(Exception):
    """A WorkflowExecution this installation did not write, or whose workflow no longer
    passes validation and the policy: it is never run."""


def check_trusted(execution: dict[str, Any], key: bytes) -> None:
    if not signed_with(execution, key):
        raise Untrusted(
            f"workflowexecution {execution['metadata']['name']} is not signed with this"
            f" installation's key (secret {KEY_SECRET}): someone else wrote it or changed"
            " its spec; it is not run (delete it)"
        )


async def trusted_workflow(
    kube: Kube, execution: dict[str, Any], key: bytes, policy: Policy | None
) -> Workflow:
    """The workflow of an execution made by this installation, validated again (checks
    and policy) before anything of it runs again: resume, manual rollback."""
    check_trusted(execution, key)
    workflow = await workflow_of(kube, execution)
    revalidate(execution, workflow, policy)
    return workflow


def revalidate(execution: dict[str, Any], workflow: Workflow, policy: Policy | None) -> None:
    """The checks `validate` makes, and the policy as it is now, on a stored workflow."""
    problems = check_workflow(workflow)
    problems += (policy.check(workflow) + check_approvals(workflow, policy)) if policy else []
    if problems:
        path, message = problems[0]
        raise Untrusted(
            f"workflowexecution {execution['metadata']['name']}: its workflow no longer passes"
            f" validation ({format_path(path)}: {message}); it is not run"
        )


async def create_execution(
    kube: Kube,
    loaded: LoadedWorkflow,
    revision: str | None,
    labels: dict[str, str] | None = None,
    key: bytes | None = None,
) -> dict[str, Any]:
    what = f"workflowexecution {loaded.run_id}"
    manifest = manifest_of(loaded)
    key = key if key is not None else await execution_key(kube)
    redacted = inputs.redact(manifest, key)  # the values go into a Secret (cluster/inputs.py)
    ref = (
        None
        if redacted is None
        else f"{kube.capture_namespace}/{inputs.secret_name(loaded.run_id)}"
    )
    body = sign(execution_body(loaded, revision, labels, redacted=redacted, inputs_ref=ref), key)
    try:
        execution = await kube.write(what, "POST", execution_path(), body)
    except Conflict:
        execution = await kube.get(what, execution_path(loaded.run_id))
        phase = phase_of(execution)
        if phase.finished:
            raise AlreadyRun(packed_record(execution), phase.value) from None
        check_trusted(execution, key)  # created earlier, not finished: this process runs it
    failpoints.reached("created")
    if ref is not None:  # before the first step: resume needs it
        await inputs.store(kube, loaded.run_id, manifest, owner_reference(execution))
    return execution


class InputsLost(Exception):
    """The run's inline Secret values are gone: it was created, and the process died
    before keeping them (nothing ran yet), or someone deleted their Secret."""


async def workflow_of(kube: Kube, execution: dict[str, Any]) -> Workflow:
    """The workflow a WorkflowExecution runs, its inline Secret values put back."""
    ref = inputs_ref(execution)
    if ref is None:
        return stored_workflow(execution)
    kept = await inputs.load(kube, ref)
    if kept is None:
        raise InputsLost(f"the Secret {ref} with its inline Secret values is gone")
    return stored_workflow(execution, kept)


async def remove_finalizer(kube: Kube, name: str) -> None:
    what = f"workflowexecution {name}"

    async def once(_: int) -> None:
        obj = await kube.find(what, execution_path(name))
        if obj is None:
            return
        finalizers = [f for f in obj["metadata"].get("finalizers") or [] if f != FINALIZER]
        patch = {
            "metadata": {
                "finalizers": finalizers,
                "resourceVersion": obj["metadata"]["resourceVersion"],
            }
        }
        await kube.merge_patch(what, execution_path(name), patch)

    # 409: the object changed since we read it (a status write); read it again
    await attempt(once, retryable=lambda err: isinstance(err, Conflict), retries=4)


async def run_in_cluster(
    kube: Kube,
    engine: Engine,
    loaded: LoadedWorkflow,
    *,
    revision: str | None = None,
    hooks: Sequence[Hook] = (),
    cancel: asyncio.Event | None = None,
    labels: dict[str, str] | None = None,
    key: bytes | None = None,
    policy: Policy,
    prometheus_url: str | None = None,
    observe: Callable[[str, Measurement], None] | None = None,
    approvals: Approvals | None = None,
) -> RunRecord:
    """Run (or resume, if its WorkflowExecution exists unfinished) one workflow. `key`
    signs its execution (default: this installation's, read from the cluster). Each step
    acts as the tenant ServiceAccount `policy` names for its namespace (impersonation).

    The run is cancelled and rolled back when its WorkflowExecution is deleted or when
    `cancel` is set (the daemon does that when the workflow is deleted from git).
    """
    with request_origin(f"run/{loaded.run_id}"):  # steps add theirs (KubeActions)
        checks = ClusterChecks(
            kube,
            await prometheus_for(kube, loaded.workflow.spec.prometheus, prometheus_url),
            policy.account_for,
            observe,
        )
        return await _run_in_cluster(
            kube, engine, loaded, revision, hooks, cancel, labels, key, policy, checks, approvals
        )


async def _run_in_cluster(
    kube: Kube,
    engine: Engine,
    loaded: LoadedWorkflow,
    revision: str | None,
    hooks: Sequence[Hook],
    cancel: asyncio.Event | None,
    labels: dict[str, str] | None,
    key: bytes | None,
    policy: Policy,
    checks: ClusterChecks,
    approvals: Approvals | None = None,
) -> RunRecord:
    execution = await create_execution(kube, loaded, revision, labels, key)
    log.debug("execution created", extra={"stage": "created", "run_id": loaded.run_id})
    resume = record_of(execution)
    checkpoint = Checkpointer(kube, execution)
    events = EventRecorder(kube, execution)
    all_hooks = [checkpoint.hook, events.hook, *hooks]

    async def hook(record: RunRecord, t: Transition) -> None:
        for h in all_hooks:
            await h(record, t)

    stop = asyncio.Event()

    async def forward(source: asyncio.Event) -> None:
        await source.wait()
        stop.set()

    watchers = [
        asyncio.create_task(checkpoint.watch_deletion()),
        asyncio.create_task(forward(checkpoint.deleting)),
    ]
    if cancel is not None:
        watchers.append(asyncio.create_task(forward(cancel)))
    try:
        record = await engine.run(
            loaded.workflow,
            digest=loaded.digest,
            revision=revision,
            cancel=stop,
            actions=KubeActions(kube, owner_reference(execution), policy.account_for),
            hook=hook,
            resume=resume,
            checks=checks,
            approvals=approvals,
        )
    except BaseException:
        events.abandon()
        raise
    finally:
        for task in watchers:
            task.cancel()
    await events.close()
    await checkpoint.close()
    # The finalizer only guards a running run; once the record is final, deleting the
    # object must just delete it (and, through owner references, what the run created).
    await remove_finalizer(kube, loaded.run_id)
    return record
