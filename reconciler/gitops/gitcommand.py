"""One git command: run it (a timeout, its own process group), and its failure as a person
can act on it: GitError (may trying again help?), git's whole message, and a local
repository path git can use from inside the mirror."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?[^/:]+:")  # git@github.com:org/repo, host:repo


class GitError(Exception):
    """A git command failed; `transient` when trying again later may help."""

    def __init__(self, message: str, transient: bool = True, no_answer: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.no_answer = no_answer  # the remote did not answer in time (hung, not refusing)


def no_answer(command: str, limit: float) -> GitError:
    """A git command (or the in-process request standing for it) the remote left hanging."""
    return GitError(f"git {command}: no answer within {limit:g}s", no_answer=True)


def is_transient(err: Exception) -> bool:
    """Git errors worth trying again: a rejected push, an unreachable or hung remote."""
    return isinstance(err, GitError) and err.transient


def stderr_detail(err: bytes, code: int | None) -> str:
    """What git said, whole: its last line alone is often "and the repository exists.",
    the end of a sentence that began lines earlier. Hints are left out."""
    lines = [
        line.strip()
        for line in err.decode(errors="replace").splitlines()
        if line.strip() and not line.startswith("hint:")
    ]
    text = " ".join(lines) or f"exit {code}"
    return text if len(text) <= 600 else text[:597] + "..."


def absolute_if_local(url: str) -> str:
    """A local path as an absolute one: git runs inside the mirror, where a relative path
    would point elsewhere. URLs (scheme://) and scp-like addresses (host:path) stay."""
    if "://" in url or SCP_LIKE.match(url):
        return url
    return str(Path(url).expanduser().resolve())


async def run_git(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin: bytes | None,
    limit: float,
) -> bytes:
    """Run `git ARGS`; a failure or a command that outlives `limit` seconds (a hung
    remote) raises GitError, named by the git command, not its `-c` options."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=str(cwd),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        start_new_session=True,  # its own process group: a kill reaches its children
    )
    name = command_name(args)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), limit)
    except (TimeoutError, asyncio.CancelledError) as stopped:
        # The whole group: a hung push's helpers (ssh, receive-pack and its hook on a
        # local remote) hold our pipes, and killing git alone would leave us waiting.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if isinstance(stopped, TimeoutError):
            raise no_answer(name, limit) from None
        raise
    if proc.returncode != 0:
        raise GitError(f"git {name}: {stderr_detail(err, proc.returncode)}")
    return out


def command_name(args: Sequence[str]) -> str:
    """`fetch` of `-c maintenance.auto=false fetch --quiet`."""
    rest = list(args)
    while len(rest) > 1 and rest[0] == "-c":
        rest = rest[2:]
    return rest[0] if rest else "git"
