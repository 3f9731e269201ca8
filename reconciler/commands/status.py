"""`reconciler status --repo URL`: the latest run of each workflow, from the records in git."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler.commands.common import GIT_COMMAND_TIMEOUT, Subcommands, add_git_timeout_flag
from reconciler.daemon.config import BY_NAME
from reconciler.formats.run_record import latest_per_workflow, parse_record, recorded_runs
from reconciler.gitops.git import GitError, GitRepo


def register(sub: Subcommands) -> None:
    p = sub.add_parser("status", help="latest run of each workflow, from the records in git")
    p.add_argument("--repo", required=True)
    p.add_argument("--branch", default=BY_NAME["branch"].default)
    p.add_argument("--records-path", default=BY_NAME["records_path"].default)
    add_git_timeout_flag(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        print(status(args.repo, args.branch, args.records_path, args.git_timeout))
    except GitError as err:
        print(f"cannot read {args.repo}: {err}", file=sys.stderr)
        return 1
    return 0


def status(
    repo: str, branch: str, records_path: str, timeout: float = GIT_COMMAND_TIMEOUT
) -> str:
    with tempfile.TemporaryDirectory(prefix="reconciler-status-") as tmp:
        git = GitRepo(url=repo, workdir=Path(tmp), branch=branch, timeout=timeout)
        return render_status(asyncio.run(latest_runs(git, records_path)))


async def latest_runs(git: GitRepo, records_path: str) -> list[Mapping[str, Any]]:
    await git.ensure()
    if await git.remote_head() is None:  # else git's own "couldn't find remote ref"
        branches = sorted(await git.remote_heads())
        raise GitError(
            f"it has no branch {git.branch}: "
            + (
                f"its branches are {', '.join(branches)} (choose one with --branch)"
                if branches
                else "the repository is empty (nothing was pushed to it yet)"
            ),
            transient=False,
        )
    head = await git.fetch()
    if head is None:
        return []
    blobs = list(recorded_runs(await git.ls_tree(head, records_path)).values())
    contents = await git.read_blobs(blobs)
    documents = [parse_record(contents[sha]) for sha in blobs]
    return latest_per_workflow(doc for doc in documents if doc is not None)


def render_status(runs: Sequence[Mapping[str, Any]]) -> str:
    if not runs:
        return "no run records yet"
    rows = [("WORKFLOW", "RUN ID", "PHASE", "STEPS", "STARTED", "DURATION")]
    for doc in runs:
        steps = doc.get("steps", [])
        done = sum(1 for s in steps if s.get("phase") == "Succeeded")
        rows.append(
            (
                doc["workflow"],
                doc["runId"],
                doc["phase"],
                f"{done}/{len(steps)}",
                str(doc.get("started", "-")),
                str(doc.get("duration", "-")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
