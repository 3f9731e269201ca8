"""`reconciler daemon`: watch a git repository and run what is new or changed. Its flags
and environment variables come from the settings table (daemon/config.py)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from reconciler.commands.common import Subcommands, add_policy_flags, policy_of
from reconciler.daemon.config import (
    add_arguments,
    bad_variables,
    config_problems,
    from_arguments,
)

log = logging.getLogger("reconciler.daemon")


def register(sub: Subcommands) -> None:
    p = sub.add_parser("daemon", help="watch a git repository and run what is new or changed")
    env = os.environ
    add_arguments(p, env)
    p.add_argument("--kubeconfig")
    p.add_argument("--context")
    add_policy_flags(p)
    p.set_defaults(func=main)


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
