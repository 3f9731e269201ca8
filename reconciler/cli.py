"""Command line: a thin shell over the same functions the daemon uses.

Exit codes: 0 success, 1 invalid input or a failed run, 2 usage error (argparse's own).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from reconciler import __version__
from reconciler.manifest.jsonschema import workflow_schema_json
from reconciler.manifest.loader import LoadResult, load_paths
from reconciler.plan import plan_workflow, render_text


def _print_issues(result: LoadResult) -> None:
    for issue in result.issues:
        print(issue, file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    result = load_paths(args.paths)
    _print_issues(result)
    if result.ok:
        print(f"{len(result.workflows)} workflow(s) valid", file=sys.stderr)
        return 0
    return 1


def cmd_plan(args: argparse.Namespace) -> int:
    result = load_paths(args.paths)
    _print_issues(result)
    plans = [plan_workflow(w) for w in result.workflows]
    if args.server_dry_run:
        from reconciler.actions.kube import Kube, load_api_client
        from reconciler.dryrun import server_dry_run

        kube = Kube(load_api_client(args.kubeconfig, args.context), dry_run=True)
        print(server_dry_run(result.workflows, kube))
        return 0 if result.ok else 1
    if args.format == "json":
        errors = [
            {"file": i.file, "line": i.line, "column": i.column, "message": i.message}
            for i in result.issues
        ]
        print(json.dumps({"workflows": plans, "errors": errors}, indent=2))
    else:
        print("\n\n".join(render_text(p) for p in plans))
    return 0 if result.ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    from reconciler.runonce import run_once  # imports the Kubernetes client only when needed

    result = load_paths(args.paths)
    _print_issues(result)
    if not result.ok:
        print("not running anything: fix the errors above first", file=sys.stderr)
        return 1
    return run_once(
        result.workflows,
        kubeconfig=args.kubeconfig,
        context=args.context,
        global_limit=args.max_concurrent_steps,
        capture_namespace=args.capture_namespace,
    )


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(workflow_schema_json())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="GitOps daemon for multi-step Kubernetes remediation workflows.",
    )
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check workflow files; errors as path:line:col")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="show run ids, levels, start order and critical path")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument(
        "--server-dry-run",
        action="store_true",
        help="show what each step would change in the live cluster (dryRun=All writes)",
    )
    p.add_argument("--kubeconfig", help="for --server-dry-run")
    p.add_argument("--context", help="for --server-dry-run")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run workflow files against the cluster now, then exit")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument(
        "--once",
        action="store_true",
        help="run each workflow once and exit (the only mode of `run`; the daemon watches git)",
    )
    p.add_argument(
        "--kubeconfig", help="default: in-cluster config, then $KUBECONFIG or ~/.kube/config"
    )
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument(
        "--max-concurrent-steps",
        type=int,
        default=None,
        metavar="N",
        help="global limit on steps running at once across all workflows",
    )
    p.add_argument(
        "--capture-namespace",
        default="reconciler-system",
        help="where captured Secret values are kept (default: reconciler-system)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("schema", help="print the Workflow JSON Schema")
    p.set_defaults(func=cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
