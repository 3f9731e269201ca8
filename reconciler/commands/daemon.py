"""`reconciler daemon`: watch a git repository and run what is new or changed. Its flags
and environment variables come from the settings table (daemon/config.py)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.commands.common import Subcommands, add_policy_flags, policy_of
from reconciler.daemon.config import (
    add_arguments,
    bad_variables,
    config_problems,
    from_arguments,
)

log = logging.getLogger("reconciler.daemon")
BEGIN_FLAGS = "<!-- BEGIN GENERATED DAEMON FLAGS (reconciler.commands.daemon.flags_markdown) -->"
END_FLAGS = "<!-- END GENERATED DAEMON FLAGS -->"


def register(sub: Subcommands, environ: Mapping[str, str] = os.environ) -> None:
    p = sub.add_parser("daemon", help="watch a git repository and run what is new or changed")
    add_arguments(p, environ)
    p.add_argument(
        "--kubeconfig",
        help="kubeconfig file; default: the in-cluster configuration, then $KUBECONFIG or"
        " ~/.kube/config",
    )
    p.add_argument("--context", help="kubeconfig context; default: its current-context")
    add_policy_flags(p, environ)
    p.set_defaults(func=main)


class _Parser(argparse.ArgumentParser):
    """Keeps what was added, in order (argparse keeps it private)."""

    actions: list[argparse.Action]

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:  # type: ignore[override]
        action = super().add_argument(*args, **kwargs)
        self.__dict__.setdefault("actions", []).append(action)  # -h comes before __init__ ends
        return action


class _Recorder:
    """Stands in for argparse's subparsers: the one parser `register` adds."""

    parser: _Parser

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.pop("help", None)
        self.parser = _Parser(prog=name, **kwargs)
        return self.parser


def flags_markdown() -> str:
    """The daemon's flags as a Markdown table (README), made from its parser as it is
    built with no variables set, so it shows the defaults of the one table."""
    recorder = _Recorder()
    register(recorder, environ={})
    rows = [BEGIN_FLAGS, "| flag | variable | default | meaning |", "|---|---|---|---|"]
    for action in recorder.parser.actions:
        if action.dest == "help":
            continue
        text = action.help or ""
        variable = re.search(r"\[([A-Z_]+)\]", text)
        meaning = re.sub(r"\s*\[[A-Z_]+\]|\s*\(default: [^)]*\)", "", text).replace("%%", "%")
        default = re.search(r"\(default: ([^)]*)\)", text)
        shown = default.group(1) if default else ("off" if action.nargs == 0 else "—")
        if action.choices:
            meaning += f" ({', '.join(map(str, action.choices))})"
        rows.append(
            f"| `{action.option_strings[0]}` | {f'`{variable.group(1)}`' if variable else '—'}"
            f" | {shown} | {meaning.replace('|', '/')} |"
        )
    return "\n".join([*rows, END_FLAGS])


def main(args: argparse.Namespace) -> int:
    import asyncio

    from reconciler.daemon.daemon import Daemon
    from reconciler.gitops.signatures import OwnKeyError, own_signers_file
    from reconciler.kube.client import Kube
    from reconciler.kube.kubeconfig import KubeconfigError, load_api_client
    from reconciler.observability import logs

    refused = bad_variables(args)
    for bad in refused:
        print(f"reconciler daemon: {bad}", file=sys.stderr)
    if refused:
        return 2
    logs.setup(args.log_format, args.log_level)
    if args.verify_signatures == "ssh" and args.allowed_signers is None:
        print("--verify-signatures=ssh needs --allowed-signers FILE", file=sys.stderr)
        return 2
    config = from_arguments(args, policy_of(args))
    problems = config_problems(config)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 2
    if config.allowed_signers is not None and config.signing_key is not None:
        try:
            config.own_signers = own_signers_file(config.signing_key, config.workdir)
        except OwnKeyError as err:
            print(err, file=sys.stderr)
            return 2
    try:
        api = load_api_client(args.kubeconfig, args.context)
    except KubeconfigError as err:
        print(f"reconciler daemon: {err}", file=sys.stderr)
        return 1
    kube = Kube(api, capture_namespace=config.capture_namespace)
    try:
        return asyncio.run(Daemon(config, kube).run())
    except KeyboardInterrupt:
        return 130
    except Exception:  # logged as one JSON line with its traceback, not a bare dump
        log.exception("the daemon stopped on an unexpected error")
        return 1


if __name__ == "__main__":  # python -m reconciler.commands.daemon README.md (make docs)
    readme = Path(sys.argv[1])
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(BEGIN_FLAGS), text.index(END_FLAGS) + len(END_FLAGS)
    readme.write_text(text[:start] + flags_markdown() + text[end:], encoding="utf-8")
