"""Real git repositories for the git layer's tests: a bare remote and a person's clone."""

from __future__ import annotations

import subprocess
from pathlib import Path


def sh(*args: str, cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def bare_and_clone(
    root: Path, name: str = "SRE", email: str = "sre@example.com"
) -> tuple[Path, Path]:
    """An empty bare repository on branch main and a clone of it, committing as `name`."""
    bare = root / "remote.git"
    sh("git", "init", "--bare", "--quiet", "-b", "main", str(bare), cwd=root)
    clone = root / "clone"
    sh("git", "clone", "--quiet", str(bare), str(clone), cwd=root)
    sh("git", "config", "user.email", email, cwd=clone)
    sh("git", "config", "user.name", name, cwd=clone)
    return bare, clone
