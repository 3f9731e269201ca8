"""`reconciler validate PATH...`: check workflow files, the CI gate. Problems as
path:line:col: field: message (or JSON for CI annotations), then a one-line summary."""

from __future__ import annotations

import argparse
import json
import sys

from reconciler.commands.common import (
    Subcommands,
    add_policy_flags,
    policy_of,
    print_issues,
    workflow_path,
)
from reconciler.manifest.errors import format_path
from reconciler.manifest.loader import LoadResult, load_paths


def register(sub: Subcommands) -> None:
    p = sub.add_parser("validate", help="check workflow files; errors as path:line:col")
    p.add_argument(
        "paths", nargs="+", type=workflow_path, metavar="PATH", help="files, folders, or -"
    )
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("-q", "--quiet", action="store_true", help="the problems only, no summary")
    add_policy_flags(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    result = load_paths(args.paths, policy_of(args))
    if args.format == "json":
        print(json.dumps(as_json(result), indent=2))
    else:
        print_issues(result)
    if not args.quiet:
        print(summary(result), file=sys.stderr)
    return 0 if result.ok else 1


def summary(result: LoadResult) -> str:
    files = f"{result.files} file{'' if result.files == 1 else 's'}"
    problems = len(result.issues)
    return (
        f"{files}: {len(result.workflows)} workflow(s) valid,"
        f" {problems} problem{'' if problems == 1 else 's'}"
    )


def as_json(result: LoadResult) -> dict[str, object]:
    """One object per problem with the fields CI annotations take (GitHub's ::error
    file=,line=,col=; GitLab's Code Quality location)."""
    return {
        "files": result.files,
        "workflows": [w.name for w in result.workflows],
        "problems": [
            {
                "file": i.file,
                "line": i.line,
                "column": i.column,
                "field": format_path(i.path),
                "message": i.message,
            }
            for i in result.issues
        ],
    }
