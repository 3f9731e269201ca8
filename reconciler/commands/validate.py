"""`reconciler validate PATH...`: check workflow files; errors as path:line:col."""

from __future__ import annotations

import argparse
import sys

from reconciler.commands.common import (
    Subcommands,
    add_policy_flags,
    policy_of,
    print_issues,
    workflow_path,
)
from reconciler.manifest.loader import load_paths


def register(sub: Subcommands) -> None:
    p = sub.add_parser("validate", help="check workflow files; errors as path:line:col")
    p.add_argument("paths", nargs="+", type=workflow_path, metavar="PATH")
    add_policy_flags(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    result = load_paths(args.paths, policy_of(args))
    print_issues(result)
    if result.ok:
        print(f"{len(result.workflows)} workflow(s) valid", file=sys.stderr)
        return 0
    return 1
