"""The mirror's refs, shallow list and object store, as the in-process fetch reads and
writes them: git's on-disk formats (gitrepository-layout(5)) and git's own commands for the
objects. A ref is written the way git writes one (a `<ref>.lock` created exclusively, then
renamed over the ref), so git processes working on the same mirror see either value, never
half of one."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

UNPACK_LIMIT = 100  # git's fetch.unpackLimit: smaller packs are stored as loose objects
PACK_HEADER = 12  # "PACK", version, object count


class StoreRefused(Exception):
    """git would not store the pack (a broken object or link) or the ref was locked."""


def read_refs(gitdir: Path, prefix: str = "refs/") -> dict[str, str]:
    """Every ref under `prefix` and its object, loose refs over packed ones; symbolic refs
    (`ref: ...`) are left out."""
    refs: dict[str, str] = {}
    packed = gitdir / "packed-refs"
    if packed.exists():
        for line in packed.read_text().splitlines():
            if line and line[0] not in "#^":
                sha, _, name = line.partition(" ")
                if name.startswith(prefix):
                    refs[name] = sha
    base = gitdir / prefix
    if base.is_dir():
        for path in base.rglob("*"):
            if path.is_file() and not path.name.endswith(".lock"):
                value = path.read_text().strip()
                if not value.startswith("ref:"):
                    refs[path.relative_to(gitdir).as_posix()] = value
    return refs


def shallow_commits(gitdir: Path) -> list[str]:
    """The commits whose parents the mirror does not have (a shallow fetch's boundary)."""
    shallow = gitdir / "shallow"
    return shallow.read_text().split() if shallow.exists() else []


def store_pack(
    gitdir: Path,
    chunks: Iterator[bytes],
    env: Mapping[str, str],
    timeout: float,
    promisor: bool = False,
) -> None:
    """The pack's objects into the mirror, checked as they arrive (`--strict`: no broken
    object, no link to an object neither the pack nor the mirror has; this is the
    connectivity check `git fetch` runs as a separate walk). Thin packs are completed.

    `promisor`: the mirror is a partial clone (gitops/partial.py) and the pack is stored
    as one from its promisor remote, as `git fetch` stores it: a pack of its own marked
    `.promisor`, whose links to objects the filter left out are allowed. Such links cannot
    be told from missing ones, so there is no link check (git's own check excludes
    promisor objects too); reading an object that is not there fails, as it does after
    `git fetch`."""
    head, pending = b"", []
    for chunk in chunks:
        pending.append(chunk)
        head += chunk
        if len(head) >= PACK_HEADER:
            break
    if not head.startswith(b"PACK") or len(head) < PACK_HEADER:
        raise StoreRefused("the server's pack has no pack header")
    count = int.from_bytes(head[8:12], "big")
    if promisor:
        command = ["git", "index-pack", "--stdin", "--fix-thin", "--promisor=fetch"]
    elif count < UNPACK_LIMIT:
        command = ["git", "unpack-objects", "-q", "--strict"]
    else:
        command = ["git", "index-pack", "--stdin", "--fix-thin", "--strict"]
    proc = subprocess.Popen(
        command,
        cwd=gitdir,
        env=dict(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stderr is not None
    try:
        try:
            for chunk in itertools.chain(pending, chunks):
                proc.stdin.write(chunk)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it refused the pack early: its message says why
        err = proc.stderr.read()
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StoreRefused(f"{command[1]} did not finish within {timeout:g}s") from None
    finally:  # also when the pack's stream failed half-way: no half-fed git left behind
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        proc.stderr.close()
    if code != 0:
        message = " ".join(err.decode(errors="replace").split())[:400]
        raise StoreRefused(f"{command[1]} refused the pack: {message or f'exit {code}'}")


def write_ref(gitdir: Path, ref: str, sha: str) -> None:
    path = gitdir / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise StoreRefused(f"{ref} is locked by another git process") from None
    try:
        os.write(fd, f"{sha}\n".encode())
    finally:
        os.close(fd)
    os.replace(lock, path)
