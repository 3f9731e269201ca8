"""`reconciler plan PATH...`: run ids, levels, start order and critical path; with
--server-dry-run, what each step would change in the live cluster."""

from __future__ import annotations

import argparse
import json

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
from reconciler.engine.plan import plan_workflow, render_text
from reconciler.manifest.loader import LoadedWorkflow, load_paths


def register(sub: Subcommands) -> None:
    p = sub.add_parser("plan", help="show run ids, levels, start order and critical path")
    p.add_argument("paths", nargs="+", type=workflow_path, metavar="PATH")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument(
        "--server-dry-run",
        action="store_true",
        help="show what each step would change in the live cluster (dryRun=All writes)",
    )
    add_prometheus_flag(p, "with --server-dry-run: measure guards and checks once, now, here")
    add_cluster_flags(p, capture_namespace=False)
    add_policy_flags(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    policy = policy_of(args)
    result = load_paths(args.paths, policy)
    print_issues(result)
    if args.server_dry_run:
        from reconciler.actions.dryrun import server_dry_run
        from reconciler.checks.measure import ClusterChecks, prometheus_for

        kube = connect(args, dry_run=True)

        async def checks_for(loaded: LoadedWorkflow) -> ClusterChecks:
            source = await prometheus_for(
                kube, loaded.workflow.spec.prometheus, args.prometheus_url
            )
            return ClusterChecks(kube, source, policy.account_for)

        print(server_dry_run(result.workflows, kube, policy, checks_for))
        return 0 if result.ok else 1
    plans = [plan_workflow(w) for w in result.workflows]
    if args.format == "json":
        errors = [
            {"file": i.file, "line": i.line, "column": i.column, "message": i.message}
            for i in result.issues
        ]
        print(json.dumps({"workflows": plans, "errors": errors}, indent=2))
    else:
        print("\n\n".join(render_text(p) for p in plans))
    return 0 if result.ok else 1
