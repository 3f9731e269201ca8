"""What several commands share: the policy flags, the cluster flags, printing load errors."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from reconciler import DEFAULT_NAMESPACE
from reconciler.daemon.flagvalues import seconds
from reconciler.manifest.durations import format_duration
from reconciler.manifest.loader import LoadResult
from reconciler.manifest.policy import DEFAULT_PROTECTED, Policy
from reconciler.manifest.policy_file import PolicyError

if TYPE_CHECKING:
    from reconciler.kube.client import Kube


API_TIMEOUT = 10.0  # seconds an interactive command waits for an API server that is down
GIT_COMMAND_TIMEOUT = 30.0  # seconds one git command of an interactive command may take


class Subcommands(Protocol):
    """What a command registers itself with (argparse's subparsers)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def workflow_path(text: str) -> Path:
    """A PATH argument: a file or folder that exists, or - (standard input); else a usage
    error (exit 2)."""
    path = Path(text)
    if text != "-" and not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return path


def own_namespace(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> str:
    """The daemon's namespace (its Lease, capture Secrets and cluster account): protected
    for every command alike, so `validate` is never greener than the daemon."""
    return (
        getattr(args, "capture_namespace", None)
        or environ.get("RECONCILER_NAMESPACE")
        or DEFAULT_NAMESPACE
    )


def policy_of(args: argparse.Namespace) -> Policy:
    """The policy the flags name; a policy file that cannot be used ends the command with
    its one message (exit 1), never a traceback. --protected-namespaces adds to the
    defaults and the daemon's own namespace; it never removes one."""
    extra = [n.strip() for n in (args.protected_namespaces or "").split(",") if n.strip()]
    home = own_namespace(args)
    protected = [*DEFAULT_PROTECTED, home, *extra]
    try:
        return Policy.load(protected, args.policy, home)
    except PolicyError as err:
        raise SystemExit(f"reconciler: {err}") from err


def add_policy_flags(p: argparse.ArgumentParser, environ: Mapping[str, str] = os.environ) -> None:
    p.add_argument(
        "--protected-namespaces",
        default=environ.get("RECONCILER_PROTECTED_NAMESPACES", ""),
        metavar="NS,NS",
        help="more namespaces no step may act on, besides "
        + ", ".join(DEFAULT_PROTECTED)
        + " and the daemon's own (--capture-namespace or RECONCILER_NAMESPACE, default "
        + f"{DEFAULT_NAMESPACE}) [RECONCILER_PROTECTED_NAMESPACES]",
    )
    p.add_argument(
        "--policy",
        type=Path,
        default=environ.get("RECONCILER_POLICY"),
        help="YAML file of what workflows may do per namespace (docs/policy.md)"
        " [RECONCILER_POLICY]",
    )


def add_cluster_flags(p: argparse.ArgumentParser, capture_namespace: bool = True) -> None:
    p.add_argument(
        "--kubeconfig", help="default: in-cluster config, then $KUBECONFIG or ~/.kube/config"
    )
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument(
        "--api-timeout",
        type=seconds,
        default=API_TIMEOUT,
        metavar="DURATION",
        help="how long to keep trying an API server that does not answer before giving up"
        f" (default: {format_duration(API_TIMEOUT)}; the daemon rides out outages instead)",
    )
    if capture_namespace:
        p.add_argument(
            "--capture-namespace",
            default=os.environ.get("RECONCILER_NAMESPACE", DEFAULT_NAMESPACE),
            help=f"where captured Secret values are kept (default: {DEFAULT_NAMESPACE})",
        )


def connect(args: argparse.Namespace, *, dry_run: bool = False) -> Kube:
    """The cluster the flags name, answering; else the command ends with one message that
    names the kubeconfig or the server and the cause (exit 1), within --api-timeout."""
    from reconciler.kube.client import Kube
    from reconciler.kube.errors import KubeError
    from reconciler.kube.kubeconfig import KubeconfigError, load_api_client

    try:
        api = load_api_client(args.kubeconfig, args.context)
    except KubeconfigError as err:
        raise SystemExit(f"reconciler: {err}") from None
    kube = Kube(
        api,
        dry_run=dry_run,
        capture_namespace=own_namespace(args),
        outage_budget=args.api_timeout,
        interactive=True,
    )
    try:
        asyncio.run(kube.get("the API server's /version", "/version"))
    except KubeError as err:
        api.close()
        raise SystemExit(f"reconciler: {err}") from None
    return kube


def add_git_timeout_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--git-timeout",
        type=seconds,
        default=GIT_COMMAND_TIMEOUT,
        metavar="DURATION",
        help="the longest one git command may take before the command gives up"
        f" (default: {format_duration(GIT_COMMAND_TIMEOUT)})",
    )


def print_issues(result: LoadResult) -> None:
    for issue in result.issues:
        print(issue, file=sys.stderr)


def add_prometheus_flag(p: argparse.ArgumentParser, purpose: str) -> None:
    """--prometheus-url, the same flag and variable on every command that measures."""
    p.add_argument(
        "--prometheus-url",
        default=os.environ.get("RECONCILER_PROMETHEUS_URL"),
        metavar="URL",
        help=f"{purpose} [RECONCILER_PROMETHEUS_URL]",
    )
