"""Custom: run a Kubernetes Job owned by the run's WorkflowExecution; its optional `rollback`
Job runs on undo. Success and failure come from the Job's conditions; the tail of its pod log
goes into the run record."""

from __future__ import annotations

import json
from typing import Any

from reconciler.actions.base import Action, create_owned, poll, run_labels, run_object_name
from reconciler.engine.errors import PermanentError
from reconciler.engine.interface import OUTPUTS_KEY, Captured, StepContext
from reconciler.kube.client import Kube
from reconciler.kube.paths import ns_path
from reconciler.manifest.params import JobSpec
from reconciler.manifest.schema import StepBase

LOG_LINES = 20
LOG_BYTES = 4096  # a pod that prints megabytes on one line must not fill the record


def job_body(
    name: str, namespace: str, spec: JobSpec, labels: dict[str, str], owner: dict[str, Any] | None
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "step", "image": spec.image}
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    if spec.env:
        container["env"] = [{"name": k, "value": v} for k, v in spec.env.items()]
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.model_dump(exclude_none=True) for t in spec.tolerations]
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            # made by the step's tenant account, which may not update the execution's
            # finalizers (what blockOwnerDeletion asks, under OwnerReferencesPermission-
            # Enforcement); executions are deleted in the background, so it is not needed
            "ownerReferences": [{**owner, "blockOwnerDeletion": False}] if owner else [],
        },
        "spec": job_spec,
    }


async def run_job(
    kube: Kube,
    namespace: str,
    name: str,
    spec: JobSpec,
    ctx: StepContext,
    step: StepBase,
    owner: dict[str, Any] | None,
) -> None:
    """Create the Job unless this run made it already (a resumed run must not start it
    twice); a Job of that name someone else made fails the step."""
    body = job_body(name, namespace, spec, run_labels(ctx, step), owner)
    collection = ns_path("batch/v1", namespace, "jobs")
    await create_owned(kube, f"job {namespace}/{name}", collection, body, owner)


async def wait_job(kube: Kube, namespace: str, name: str, ctx: StepContext) -> dict[str, Any]:
    what = f"job {namespace}/{name}"
    outcome: dict[str, Any] = {}

    async def check() -> str | None:
        job = await kube.get(what, ns_path("batch/v1", namespace, "jobs", name))
        for cond in job.get("status", {}).get("conditions") or []:
            if cond.get("status") != "True":
                continue
            if cond.get("type") == "Complete":
                outcome["logTail"] = await log_tail(kube, namespace, name)
                return None
            if cond.get("type") == "Failed":
                pod = await newest_pod(kube, namespace, name)
                exited = termination(pod) if pod else ""
                tail = await log_tail(kube, namespace, name, pod)
                raise PermanentError(
                    f"{what} failed: {cond.get('reason')}: {cond.get('message')}"
                    + (f"; {exited}" if exited else "")
                    + (f"\nlog tail:\n{tail}" if tail else "")
                )
        status = job.get("status", {})
        return (
            f"{what} to finish (active {status.get('active', 0)}, failed {status.get('failed', 0)})"
        )

    # a Job is looked at every second at most: its end decides what runs next
    await poll(check, lambda w: setattr(ctx, "waiting_for", w), max_interval=1.0)
    return outcome


async def newest_pod(kube: Kube, namespace: str, job: str) -> dict[str, Any] | None:
    """The Job's newest pod (the one whose end decided it), None if it has none; best effort."""
    try:
        pods = await kube.get(
            f"pods of job {namespace}/{job}",
            ns_path("v1", namespace, "pods"),
            {"labelSelector": f"job-name={job}"},
        )
    except Exception:
        return None
    items = sorted(
        pods.get("items") or [], key=lambda p: p["metadata"].get("creationTimestamp", "")
    )
    return items[-1] if items else None


def termination_outputs(pod: dict[str, Any] | None, job: str) -> dict[str, Any]:
    """The JSON object the step's container wrote to its termination message (Tekton's
    results mechanism: /dev/termination-log, 4 KiB), the outputs a Custom step declares."""
    for status in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        ended = (status.get("state") or {}).get("terminated") or {}
        if status.get("name") == "step" and ended:
            text = ended.get("message") or ""
            try:
                values = json.loads(text)
            except ValueError:
                values = None
            if isinstance(values, dict):
                return values
            shown = text[:80] + ("..." if len(text) > 80 else "")
            raise PermanentError(
                f"outputs: job {job}'s container wrote {shown!r} as its termination message,"
                " not a JSON object; write one (e.g. echo '{\"lag\": 3}' >"
                " /dev/termination-log) as its last act",
                changed=True,
            )
    raise PermanentError(
        f"outputs: job {job} declares outputs, but no ended container of its pod was found",
        changed=True,
    )


def termination(pod: dict[str, Any]) -> str:
    """How the step's container ended, in words: `container step exited with code 3 (Error)`."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        ended = (status.get("state") or {}).get("terminated")
        if ended:
            words = f"container {status.get('name')} exited with code {ended.get('exitCode')}"
            if ended.get("signal"):
                words += f" (signal {ended['signal']})"
            elif ended.get("reason"):
                words += f" ({ended['reason']})"
            return words
    return ""


async def log_tail(kube: Kube, namespace: str, job: str, pod: dict[str, Any] | None = None) -> str:
    """Last lines of the Job's newest pod; best effort (fake kubelets may have no logs)."""
    try:
        if pod is None:
            pod = await newest_pod(kube, namespace, job)
        if pod is None:
            return ""
        name = pod["metadata"]["name"]
        path = ns_path("v1", namespace, "pods", name) + "/log"
        return await kube.call(
            f"log of pod {namespace}/{name}",
            lambda: kube.raw("GET", path, {"tailLines": LOG_LINES, "limitBytes": LOG_BYTES}),
        )
    except Exception as err:
        return f"(log unavailable: {err})"


class Custom(Action):
    name = "Custom"

    async def capture(self, kube: Kube, step: StepBase, ctx: StepContext, owner: Any) -> Captured:
        namespace = step.target.namespace
        assert namespace is not None
        return {"namespace": namespace, "job": run_object_name(ctx.run_id, step.name)}

    async def apply(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> dict[str, Any]:
        await run_job(kube, captured["namespace"], captured["job"], step.params, ctx, step, owner)  # type: ignore[attr-defined]
        return {"job": f"{captured['namespace']}/{captured['job']}"}

    async def wait(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext
    ) -> dict[str, Any] | None:
        if kube.dry_run:
            return None
        outcome = await wait_job(kube, captured["namespace"], captured["job"], ctx)
        if step.params.outputs:  # type: ignore[attr-defined]
            pod = await newest_pod(kube, captured["namespace"], captured["job"])
            outcome[OUTPUTS_KEY] = termination_outputs(pod, captured["job"])
        return outcome

    async def undo(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> str:
        spec = step.params.rollback  # type: ignore[attr-defined]
        assert spec is not None  # the engine only undoes reversible steps
        name = run_object_name(ctx.run_id, step.name, "-rollback")
        await run_job(kube, captured["namespace"], name, spec, ctx, step, owner)
        if not kube.dry_run:
            await wait_job(kube, captured["namespace"], name, ctx)
        return f"rollback job {captured['namespace']}/{name} completed"
