"""Command line: a thin shell over the same functions the daemon uses.

Exit codes: 0 success, 1 invalid input or a failed run, 2 usage error (argparse's own).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from reconciler import __version__
from reconciler.engine.plan import plan_workflow, render_text
from reconciler.manifest.jsonschema import workflow_schema_json
from reconciler.manifest.loader import LoadResult, load_paths
from reconciler.manifest.policy import DEFAULT_PROTECTED, Policy


def _policy(args: argparse.Namespace) -> Policy:
    protected = [n for n in (args.protected_namespaces or "").split(",") if n]
    return Policy.load(protected, args.policy)


def _add_policy_flags(p: argparse.ArgumentParser, own_namespace: str | None = None) -> None:
    default = ",".join([*DEFAULT_PROTECTED, *([own_namespace] if own_namespace else [])])
    p.add_argument(
        "--protected-namespaces",
        default=os.environ.get("RECONCILER_PROTECTED_NAMESPACES", default),
        metavar="NS,NS",
        help=f"no step may act on these (default: {default})",
    )
    p.add_argument(
        "--policy",
        type=Path,
        default=os.environ.get("RECONCILER_POLICY"),
        help="YAML file of allowed actions per namespace (see docs/security.md)",
    )


def _print_issues(result: LoadResult) -> None:
    for issue in result.issues:
        print(issue, file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    result = load_paths(args.paths, _policy(args))
    _print_issues(result)
    if result.ok:
        print(f"{len(result.workflows)} workflow(s) valid", file=sys.stderr)
        return 0
    return 1


def cmd_plan(args: argparse.Namespace) -> int:
    result = load_paths(args.paths, _policy(args))
    _print_issues(result)
    plans = [plan_workflow(w) for w in result.workflows]
    if args.server_dry_run:
        from reconciler.actions.dryrun import server_dry_run
        from reconciler.kube.client import Kube, load_api_client

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
    from reconciler.commands.run import run_once  # imports the Kubernetes client only when needed

    result = load_paths(args.paths, _policy(args))
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


def cmd_daemon(args: argparse.Namespace) -> int:
    import asyncio

    from reconciler.daemon.daemon import Daemon, DaemonConfig
    from reconciler.gitops.git import Credentials
    from reconciler.kube.client import Kube, load_api_client
    from reconciler.observability import logs

    logs.setup(args.log_format, args.log_level)
    config = DaemonConfig(
        repo=args.repo,
        workdir=Path(args.workdir),
        branch=args.branch,
        path=args.path,
        records_path=args.records_path,
        interval=args.interval,
        max_concurrent_workflows=args.max_concurrent_workflows,
        max_concurrent_steps=args.max_concurrent_steps,
        listen=args.listen,
        webhook_secret_file=args.webhook_secret_file,
        credentials=Credentials(args.ssh_key, args.known_hosts, args.token_file),
        author_name=args.author_name,
        author_email=args.author_email,
        signing_key=args.signing_key,
        allowed_signers=args.allowed_signers if args.verify_signatures == "ssh" else None,
        leader_elect=args.leader_elect,
        lease_namespace=args.lease_namespace,
        capture_namespace=args.capture_namespace,
        once=args.once,
        execution_history=args.execution_history,
        plan_branches=args.plan_branches,
        policy=_policy(args),
    )
    if args.verify_signatures == "ssh" and args.allowed_signers is None:
        print("--verify-signatures=ssh needs --allowed-signers FILE", file=sys.stderr)
        return 2
    kube = Kube(
        load_api_client(args.kubeconfig, args.context), capture_namespace=args.capture_namespace
    )
    try:
        return asyncio.run(Daemon(config, kube).run())
    except KeyboardInterrupt:
        return 130


def _history(text: str) -> int | None:
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def cmd_status(args: argparse.Namespace) -> int:
    from reconciler.cluster.manual import status
    from reconciler.gitops.git import GitError

    try:
        print(status(args.repo, args.branch, args.records_path))
    except GitError as err:
        print(f"cannot read {args.repo}: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    import asyncio
    import tempfile

    from reconciler.cluster.manual import rollback_run
    from reconciler.engine.errors import ActionError
    from reconciler.gitops.git import GitRepo
    from reconciler.kube.client import Kube, load_api_client

    kube = Kube(
        load_api_client(args.kubeconfig, args.context), capture_namespace=args.capture_namespace
    )
    with tempfile.TemporaryDirectory(prefix="reconciler-rollback-") as tmp:
        git = GitRepo(url=args.repo, workdir=Path(tmp), branch=args.branch) if args.repo else None
        try:
            record = asyncio.run(rollback_run(kube, args.run_id, git, args.records_path))
        except ActionError as err:
            print(f"rollback of {args.run_id}: {err}", file=sys.stderr)
            return 1
    for entry in record.rollback.entries if record.rollback else []:
        detail = " ".join(x for x in (entry.note, entry.error) if x)
        print(f"{entry.step:<30} {entry.result.value:<13} {detail}")
    print(f"{record.run_id}: {record.phase.value}", file=sys.stderr)
    return 0 if record.phase == "RolledBack" else 1


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
    _add_policy_flags(p)
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
    _add_policy_flags(p)
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
    _add_policy_flags(p, "reconciler-system")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("daemon", help="watch a git repository and run what is new or changed")
    env = os.environ.get
    p.add_argument(
        "--repo",
        required=env("RECONCILER_REPO") is None,
        default=env("RECONCILER_REPO"),
        help="local path or URL (file://, ssh://, https://) [RECONCILER_REPO]",
    )
    p.add_argument("--branch", default=env("RECONCILER_BRANCH", "main"))
    p.add_argument("--path", default=env("RECONCILER_PATH", "workflows/"), help="workflow folder")
    p.add_argument("--records-path", default=env("RECONCILER_RECORDS_PATH", "runs/"))
    p.add_argument(
        "--workdir",
        default=env("RECONCILER_WORKDIR", ".reconciler"),
        help="where the daemon keeps its git mirror and record spool",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=float(env("RECONCILER_INTERVAL", "30")),
        help="seconds between remote checks (±10%% jitter)",
    )
    p.add_argument(
        "--max-concurrent-workflows", type=int, default=int(env("RECONCILER_MAX_WORKFLOWS", "4"))
    )
    p.add_argument("--max-concurrent-steps", type=int, default=None, help="global step limit")
    p.add_argument("--listen", default=env("RECONCILER_LISTEN", "127.0.0.1:8080"))
    p.add_argument(
        "--webhook-secret-file", type=Path, default=env("RECONCILER_WEBHOOK_SECRET_FILE")
    )
    p.add_argument("--ssh-key", type=Path, default=env("RECONCILER_SSH_KEY"))
    p.add_argument("--known-hosts", type=Path, default=env("RECONCILER_KNOWN_HOSTS"))
    p.add_argument("--token-file", type=Path, default=env("RECONCILER_TOKEN_FILE"))
    p.add_argument("--author-name", default=env("RECONCILER_AUTHOR_NAME", "reconciler"))
    p.add_argument("--author-email", default=env("RECONCILER_AUTHOR_EMAIL", "reconciler@localhost"))
    p.add_argument(
        "--signing-key",
        type=Path,
        default=env("RECONCILER_SIGNING_KEY"),
        help="SSH key file to sign record commits with",
    )
    p.add_argument(
        "--verify-signatures", choices=("ssh",), default=env("RECONCILER_VERIFY_SIGNATURES")
    )
    p.add_argument("--allowed-signers", type=Path, default=env("RECONCILER_ALLOWED_SIGNERS"))
    p.add_argument(
        "--leader-elect", action="store_true", default=env("RECONCILER_LEADER_ELECT") == "1"
    )
    p.add_argument("--lease-namespace", default=env("RECONCILER_NAMESPACE", "reconciler-system"))
    p.add_argument("--capture-namespace", default=env("RECONCILER_NAMESPACE", "reconciler-system"))
    p.add_argument(
        "--once", action="store_true", help="one sync, wait for its runs, exit with their status"
    )
    p.add_argument(
        "--execution-history",
        type=_history,
        metavar="N",
        default=env("RECONCILER_EXECUTION_HISTORY", "10"),
        help="finished WorkflowExecutions kept per workflow once their record is in git; older"
        " ones are deleted with what they own, so `reconciler rollback` reaches back N runs"
        " ('all': keep every one; default 10)",
    )
    p.add_argument(
        "--plan-branches",
        metavar="GLOB",
        default=env("RECONCILER_PLAN_BRANCHES"),
        help="branches to plan (validate + server dry-run, committed to the branch), never run",
    )
    p.add_argument("--kubeconfig")
    p.add_argument("--context")
    p.add_argument(
        "--log-format", choices=("json", "text"), default=env("RECONCILER_LOG_FORMAT", "json")
    )
    p.add_argument("--log-level", default=env("RECONCILER_LOG_LEVEL", "INFO"))
    _add_policy_flags(p, os.environ.get("RECONCILER_NAMESPACE", "reconciler-system"))
    p.set_defaults(func=cmd_daemon)

    p = sub.add_parser("status", help="latest run of each workflow, from the records in git")
    p.add_argument("--repo", required=True)
    p.add_argument("--branch", default="main")
    p.add_argument("--records-path", default="runs/")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "rollback", help="undo a finished run from its checkpoint; record the result"
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--repo", help="commit the updated record here too")
    p.add_argument("--branch", default="main")
    p.add_argument("--records-path", default="runs/")
    p.add_argument("--kubeconfig")
    p.add_argument("--context")
    p.add_argument("--capture-namespace", default="reconciler-system")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("schema", help="print the Workflow JSON Schema")
    p.set_defaults(func=cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
