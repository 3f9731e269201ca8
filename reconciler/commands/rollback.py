"""`reconciler rollback RUN_ID`: undo a finished run from its checkpoint; record the result."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from reconciler.commands.common import (
    Subcommands,
    add_cluster_flags,
    add_git_timeout_flag,
    add_policy_flags,
    connect,
    policy_of,
)
from reconciler.daemon.config import BY_NAME


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "rollback", help="undo a finished run from its checkpoint; record the result"
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--repo", help="commit the updated record here too")
    p.add_argument("--branch", default=BY_NAME["branch"].default)
    p.add_argument("--records-path", default=BY_NAME["records_path"].default)
    add_cluster_flags(p)
    add_git_timeout_flag(p)
    add_policy_flags(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from reconciler.cluster.rollback import rollback_run
    from reconciler.engine.errors import ActionError
    from reconciler.gitops.git import GitError, GitRepo
    from reconciler.kube.errors import KubeError

    policy = policy_of(args)
    kube = connect(args)
    with tempfile.TemporaryDirectory(prefix="reconciler-rollback-") as tmp:
        git = (
            GitRepo(url=args.repo, workdir=Path(tmp), branch=args.branch, timeout=args.git_timeout)
            if args.repo
            else None
        )
        try:
            record = asyncio.run(
                rollback_run(kube, args.run_id, git, args.records_path, policy)
            )
        except (ActionError, KubeError, GitError) as err:
            print(f"rollback of {args.run_id}: {err}", file=sys.stderr)
            return 1
    for entry in record.rollback.entries if record.rollback else []:
        detail = " ".join(x for x in (entry.note, entry.error) if x)
        print(f"{entry.step:<30} {entry.result.value:<13} {detail}")
    print(f"{record.run_id}: {record.phase.value}", file=sys.stderr)
    return 0 if record.phase == "RolledBack" else 1
