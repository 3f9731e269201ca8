"""`reconciler run`: run workflow files against the cluster once, with live progress."""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor

from reconciler.cluster.run import AlreadyRun, run_in_cluster
from reconciler.engine.errors import ActionError
from reconciler.engine.record import RunPhase
from reconciler.engine.runner import Engine
from reconciler.kube.client import Kube, is_status, load_api_client
from reconciler.manifest.loader import LoadedWorkflow
from reconciler.observability.progress import progress_for

# The Kubernetes client is blocking; every call runs in a worker thread. Enough threads for
# many steps polling at once (the default pool is only cores + 4).
API_THREADS = 64


async def ensure_namespace(kube: Kube, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    if await kube.find(f"namespace {name}", f"/api/v1/namespaces/{name}") is None:
        try:
            await kube.write(f"namespace {name}", "POST", "/api/v1/namespaces", body)
        except ActionError as err:
            if not is_status(err.__cause__, 409):
                raise


async def _run_all(workflows: list[LoadedWorkflow], kube: Kube, global_limit: int | None) -> int:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(API_THREADS))
    await ensure_namespace(kube, kube.capture_namespace)
    engine = Engine(global_limit=global_limit)  # actions are bound per run (owner refs)
    progress = progress_for(sys.stdout)

    async def one(loaded: LoadedWorkflow) -> str:
        try:
            record = await run_in_cluster(kube, engine, loaded, hooks=[progress.hook])
            return record.phase.value
        except AlreadyRun as done:
            print(
                f"{loaded.run_id}: already ran ({done.phase}); the same content never runs twice."
                " Change the reconciler.dev/run annotation to run it again.",
                file=sys.stderr,
            )
            return done.phase
        except ActionError as err:
            if is_status(err.__cause__, 404) and "workflowexecution" in str(err):
                print(
                    "the WorkflowExecution CRD is not installed: kubectl apply -f deploy/crds/",
                    file=sys.stderr,
                )
            else:
                print(f"{loaded.run_id}: {err}", file=sys.stderr)
            return RunPhase.FAILED.value

    phases = await asyncio.gather(*(one(w) for w in workflows))
    for loaded, phase in zip(workflows, phases, strict=True):
        print(f"{loaded.run_id}: {phase}", file=sys.stderr)
    return 0 if all(p == RunPhase.SUCCEEDED.value for p in phases) else 1


def run_once(
    workflows: list[LoadedWorkflow],
    *,
    kubeconfig: str | None,
    context: str | None,
    global_limit: int | None,
    capture_namespace: str,
) -> int:
    kube = Kube(load_api_client(kubeconfig, context), capture_namespace=capture_namespace)
    try:
        return asyncio.run(_run_all(workflows, kube, global_limit))
    finally:
        kube.api.close()
