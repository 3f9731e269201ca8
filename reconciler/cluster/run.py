"""Run one workflow in the cluster: its WorkflowExecution (checkpoint, owner, cancel handle),
the engine, events, and the finalizer dance that makes `kubectl delete` mean "cancel and
roll back first".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from reconciler import failpoints
from reconciler.actions.registry import KubeActions
from reconciler.cluster import inputs
from reconciler.cluster.checkpoint import (
    API_VERSION,
    FINALIZER,
    KIND,
    Checkpointer,
    execution_path,
    owner_reference,
    pack,
    unpack,
)
from reconciler.cluster.events import EventRecorder
from reconciler.engine.record import RunPhase, RunRecord, Transition, record_from_dict
from reconciler.engine.runner import Engine
from reconciler.kube.client import Kube, is_status, request_origin
from reconciler.manifest.loader import LoadedWorkflow
from reconciler.manifest.schema import Workflow

Hook = Callable[[RunRecord, Transition], Awaitable[None]]


def manifest_of(loaded: LoadedWorkflow) -> dict[str, Any]:
    return loaded.workflow.model_dump(mode="json", by_alias=True, exclude_defaults=True)


def execution_body(
    loaded: LoadedWorkflow,
    revision: str | None,
    labels: dict[str, str] | None = None,
    inputs_namespace: str = "reconciler-system",
) -> dict[str, Any]:
    manifest = manifest_of(loaded)
    redacted = inputs.redact(manifest)
    spec = {
        "workflow": loaded.name,
        "contentHash": loaded.digest,
        "source": loaded.file,
        "manifest": pack(redacted or manifest),
    }
    if redacted is not None:  # the values live in a Secret (state/inputs.py)
        spec["inputs"] = f"{inputs_namespace}/{inputs.secret_name(loaded.run_id)}"
    if revision:
        spec["revision"] = revision
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": loaded.run_id,
            "labels": {
                "reconciler.dev/workflow": loaded.name,
                "reconciler.dev/content-hash": loaded.digest[:63],
                **(labels or {}),
            },
            "finalizers": [FINALIZER],
        },
        "spec": spec,
    }


class AlreadyRun(Exception):
    """The run id already has a finished WorkflowExecution: same content, never twice."""

    def __init__(self, record: dict[str, Any] | None, phase: str) -> None:
        super().__init__(phase)
        self.record = record
        self.phase = phase


async def create_execution(
    kube: Kube, loaded: LoadedWorkflow, revision: str | None, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    what = f"workflowexecution {loaded.run_id}"
    body = execution_body(loaded, revision, labels, kube.capture_namespace)
    try:
        execution = await kube.write(what, "POST", execution_path(), body)
    except Exception as err:
        if not is_status(err.__cause__, 409):
            raise
        execution = await kube.get(what, execution_path(loaded.run_id))
        status = execution.get("status") or {}
        phase = status.get("phase", RunPhase.PENDING.value)
        if RunPhase(phase).finished:
            record = unpack(status["record"]) if "record" in status else None
            raise AlreadyRun(record, phase) from None
        # created earlier but not finished: this process runs it now
    failpoints.reached("created")
    if "inputs" in body["spec"]:  # before the first step: resume needs it
        await inputs.store(kube, loaded.run_id, manifest_of(loaded), owner_reference(execution))
    return execution


class InputsLost(Exception):
    """The run's inline Secret values are gone: it was created, and the process died
    before keeping them (nothing ran yet), or someone deleted their Secret."""


async def workflow_of(kube: Kube, execution: dict[str, Any]) -> Workflow:
    """The workflow a WorkflowExecution runs, its inline Secret values put back."""
    spec = execution["spec"]
    manifest = unpack(spec["manifest"])
    if spec.get("inputs"):
        kept = await inputs.load(kube, spec["inputs"])
        if kept is None:
            raise InputsLost(f"the Secret {spec['inputs']} with its inline Secret values is gone")
        manifest = kept
    return Workflow.model_validate(manifest)


async def remove_finalizer(kube: Kube, name: str) -> None:
    what = f"workflowexecution {name}"
    for _ in range(5):
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
        try:
            await kube.merge_patch(what, execution_path(name), patch)
            return
        except Exception as err:
            if not is_status(err.__cause__, 409):
                raise


async def run_in_cluster(
    kube: Kube,
    engine: Engine,
    loaded: LoadedWorkflow,
    *,
    revision: str | None = None,
    hooks: Sequence[Hook] = (),
    cancel: asyncio.Event | None = None,
    labels: dict[str, str] | None = None,
) -> RunRecord:
    """Run (or resume, if its WorkflowExecution exists unfinished) one workflow.

    The run is cancelled and rolled back when its WorkflowExecution is deleted or when
    `cancel` is set (the daemon does that when the workflow is deleted from git).
    """
    with request_origin(f"run/{loaded.run_id}"):  # steps add theirs (KubeActions)
        return await _run_in_cluster(kube, engine, loaded, revision, hooks, cancel, labels)


async def _run_in_cluster(
    kube: Kube,
    engine: Engine,
    loaded: LoadedWorkflow,
    revision: str | None,
    hooks: Sequence[Hook],
    cancel: asyncio.Event | None,
    labels: dict[str, str] | None,
) -> RunRecord:
    execution = await create_execution(kube, loaded, revision, labels)
    status = execution.get("status") or {}
    resume = record_from_dict(unpack(status["record"])) if status.get("record") else None
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
            actions=KubeActions(kube, owner_reference(execution)),
            hook=hook,
            resume=resume,
        )
    finally:
        for task in watchers:
            task.cancel()
    await checkpoint.close()
    # The finalizer only guards a running run; once the record is final, deleting the
    # object must just delete it (and, through owner references, what the run created).
    await remove_finalizer(kube, loaded.run_id)
    return record
