"""Command line: a thin shell over the same functions the daemon uses; one module per
command under commands/.

Exit codes: 0 success, 1 invalid input or a failed run, 2 usage error (argparse's own).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from reconciler import __version__
from reconciler.commands import daemon, plan, rollback, run, schema, status, validate

COMMANDS = (validate, plan, run, daemon, status, rollback, schema)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="GitOps daemon for multi-step Kubernetes remediation workflows.",
    )
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
