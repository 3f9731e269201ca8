"""What several commands share: the policy flags, the cluster flags, printing load errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from reconciler import DEFAULT_NAMESPACE
from reconciler.manifest.loader import LoadResult
from reconciler.manifest.policy import DEFAULT_PROTECTED, Policy
from reconciler.manifest.policy_file import PolicyError


class Subcommands(Protocol):
    """What a command registers itself with (argparse's subparsers)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def policy_of(args: argparse.Namespace) -> Policy:
    """The policy the flags name; a policy file that cannot be used ends the command with
    its one message (exit 1), never a traceback."""
    protected = [n.strip() for n in (args.protected_namespaces or "").split(",") if n.strip()]
    home = getattr(args, "capture_namespace", None) or DEFAULT_NAMESPACE
    try:
        return Policy.load(protected, args.policy, home)
    except PolicyError as err:
        raise SystemExit(f"reconciler: {err}") from err


def add_policy_flags(
    p: argparse.ArgumentParser,
    own_namespace: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> None:
    default = ",".join([*DEFAULT_PROTECTED, *([own_namespace] if own_namespace else [])])
    p.add_argument(
        "--protected-namespaces",
        default=environ.get("RECONCILER_PROTECTED_NAMESPACES", default),
        metavar="NS,NS",
        help=f"no step may act on these (default: {default}) [RECONCILER_PROTECTED_NAMESPACES]",
    )
    p.add_argument(
        "--policy",
        type=Path,
        default=environ.get("RECONCILER_POLICY"),
        help="YAML file of allowed actions per namespace (see docs/security.md)"
        " [RECONCILER_POLICY]",
    )


def add_cluster_flags(p: argparse.ArgumentParser, capture_namespace: bool = True) -> None:
    p.add_argument(
        "--kubeconfig", help="default: in-cluster config, then $KUBECONFIG or ~/.kube/config"
    )
    p.add_argument("--context", help="kubeconfig context")
    if capture_namespace:
        p.add_argument(
            "--capture-namespace",
            default=DEFAULT_NAMESPACE,
            help=f"where captured Secret values are kept (default: {DEFAULT_NAMESPACE})",
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
