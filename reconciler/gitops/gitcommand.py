"""One git command's failure, as a person can act on it: GitError (may trying again help?),
git's whole message, and a local repository path git can use from inside the mirror."""

from __future__ import annotations

import re
from pathlib import Path

SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?[^/:]+:")  # git@github.com:org/repo, host:repo

class GitError(Exception):
    """A git command failed; `transient` when trying again later may help."""

    def __init__(self, message: str, transient: bool = True, no_answer: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.no_answer = no_answer  # the remote did not answer in time (hung, not refusing)


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
