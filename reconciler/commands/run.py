"""`reconciler run PATH...`: run workflow files against the cluster once, with live progress."""

from __future__ import annotations

import argparse
import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor

from reconciler.cluster.keys import execution_key
from reconciler.cluster.namespaces import API_THREADS, ensure_namespace
from reconciler.cluster.run import AlreadyRun, run_in_cluster
from reconciler.commands.common import (
    Subcommands,
    add_cluster_flags,
    add_policy_flags,
    add_prometheus_flag,
    connect,
    policy_of,
    print_issues,
    workflow_path,
)
from reconciler.daemon.flagvalues import count
from reconciler.engine.errors import ActionError
from reconciler.engine.record import RunPhase
from reconciler.engine.runner import Engine
from reconciler.kube.client import Kube
from reconciler.kube.errors import KubeError, NotFound
from reconciler.manifest.loader import LoadedWorkflow, load_paths
from reconciler.manifest.policy import Policy
from reconciler.observability.progress import progress_for


async def _run_all(
    workflows: list[LoadedWorkflow],
    kube: Kube,
    global_limit: int | None,
    policy: Policy,
    prometheus_url: str | None = None,
) -> int:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(API_THREADS))
    await ensure_namespace(kube, kube.capture_namespace)
    key = await execution_key(kube)  # once, not once per workflow run at the same time
    engine = Engine(global_limit=global_limit)  # actions are bound per run (owner refs)
    progress = progress_for(sys.stdout)

    async def one(loaded: LoadedWorkflow) -> str:
        try:
            record = await run_in_cluster(
                kube,
                engine,
                loaded,
                hooks=[progress.hook],
                key=key,
                policy=policy,
                prometheus_url=prometheus_url,
            )
            return record.phase.value
        except AlreadyRun as done:
            print(
                f"{loaded.run_id}: already ran ({done.phase}); the same content never runs twice."
                " Change the reconciler.dev/run annotation to run it again.",
                file=sys.stderr,
            )
            return done.phase
        except NotFound as err:
            if "workflowexecution" in err.what:
                print(
                    "the WorkflowExecution CRD is not installed: kubectl apply -f deploy/crds/",
                    file=sys.stderr,
                )
            else:
                print(f"{loaded.run_id}: {err}", file=sys.stderr)
            return RunPhase.FAILED.value
        except (KubeError, ActionError) as err:
            print(f"{loaded.run_id}: {err}", file=sys.stderr)
            return RunPhase.FAILED.value

    phases = await asyncio.gather(*(one(w) for w in workflows))
    for loaded, phase in zip(workflows, phases, strict=True):
        print(f"{loaded.run_id}: {phase}", file=sys.stderr)
    return 0 if all(p == RunPhase.SUCCEEDED.value for p in phases) else 1


def run_once(
    workflows: list[LoadedWorkflow],
    kube: Kube,
    *,
    global_limit: int | None,
    policy: Policy,
    prometheus_url: str | None = None,
) -> int:
    try:
        return asyncio.run(_run_all(workflows, kube, global_limit, policy, prometheus_url))
    finally:
        kube.api.close()


def register(sub: Subcommands) -> None:
    p = sub.add_parser("run", help="run workflow files against the cluster now, then exit")
    p.add_argument("paths", nargs="+", type=workflow_path, metavar="PATH")
    p.add_argument(
        "--once",
        action="store_true",
        help="run each workflow once and exit (the only mode of `run`; the daemon watches git)",
    )
    add_cluster_flags(p)
    p.add_argument(
        "--max-concurrent-steps",
        type=count,
        default=None,
        metavar="N",
        help="global limit on steps running at once across all workflows",
    )
    add_prometheus_flag(p, "Prometheus that checks query unless a workflow names its own")
    add_policy_flags(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    policy = policy_of(args)
    result = load_paths(args.paths, policy)
    print_issues(result)
    if not result.ok:
        print("not running anything: fix the errors above first", file=sys.stderr)
        return 1
    return run_once(
        result.workflows,
        connect(args),
        global_limit=args.max_concurrent_steps,
        policy=policy,
        prometheus_url=args.prometheus_url,
    )
