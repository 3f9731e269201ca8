"""Command line: a thin shell over the same functions the daemon uses; one module per
command under commands/.

Exit codes: 0 success, 1 invalid input, a failed run or a decision not committed or pushed
(`approve`), 2 usage error (argparse's own), 70 a bug (an exception nothing expected: one
line, never a traceback unless RECONCILER_DEBUG=1), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from reconciler import __version__
from reconciler.commands import (
    approve,
    completion,
    daemon,
    plan,
    rollback,
    run,
    schema,
    status,
    validate,
)

COMMANDS = (validate, plan, run, daemon, status, rollback, approve, schema, completion)


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
    parser = build_parser()
    if argv is None and "_ARGCOMPLETE" in os.environ:  # a shell asking for completions
        import argcomplete

        argcomplete.autocomplete(parser)  # answers and exits
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `reconciler validate ... | head`: the reader left, not a bug
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as err:  # a bug: one line, and the traceback only when asked for
        if os.environ.get("RECONCILER_DEBUG") == "1":
            raise
        print(
            f"reconciler {args.command}: internal error: {type(err).__name__}: {err}\n"
            "This is a bug in reconciler; please report it with the command you ran"
            " (RECONCILER_DEBUG=1 shows the traceback).",
            file=sys.stderr,
        )
        return 70  # EX_SOFTWARE
