"""Signature verification as an attacker with push access tries it (real git, real SSH
signatures): an unsigned merge whose first parent is someone's signed work in progress, and
an unsigned change to the workflows hidden below a signed commit after a verified head."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from reconciler.gitops.git import GitRepo
from reconciler.gitops.signatures import SignatureJudge


def sh(*args: str, cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A bare remote, a clone whose commits can be signed (`-S`), and allowed_signers."""
    key = tmp_path / "sre"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sre", "-f", str(key), cwd=tmp_path)
    kind, public = (tmp_path / "sre.pub").read_text().split()[:2]
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"* {kind} {public}\n")
    bare = tmp_path / "remote.git"
    sh("git", "init", "--bare", "--quiet", "-b", "main", str(bare), cwd=tmp_path)
    clone = tmp_path / "clone"
    sh("git", "clone", "--quiet", str(bare), str(clone), cwd=tmp_path)
    for setting in (
        ("user.name", "SRE"),
        ("user.email", "sre@example.com"),
        ("gpg.format", "ssh"),
        ("user.signingkey", str(key)),
    ):
        sh("git", "config", *setting, cwd=clone)
    return bare, clone, allowed


def commit(clone: Path, message: str, files: dict[str, str], signed: bool) -> str:
    for name, text in files.items():
        path = clone / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    sh("git", "add", "-A", cwd=clone)
    sh(
        "git",
        "commit",
        "--quiet",
        "--allow-empty",
        *(["-S"] if signed else []),
        "-m",
        message,
        cwd=clone,
    )
    return sh("git", "rev-parse", "HEAD", cwd=clone)


def verdict(judge: SignatureJudge, head: str) -> tuple[bool, str]:
    async def main() -> tuple[bool, str]:
        await judge.git.ensure()
        await judge.git.git("fetch", "--quiet", "origin", "+refs/heads/*:refs/remotes/origin/*")
        return await judge.verdict(head)

    return asyncio.run(main())


def judge_of(bare: Path, tmp_path: Path, allowed: Path) -> SignatureJudge:
    git = GitRepo(url=str(bare), workdir=tmp_path / "work", full_history=True)
    return SignatureJudge(git, "runs/", allowed, "workflows/")


def test_an_unsigned_merge_of_a_signed_wip_commit_is_judged_itself(repo, tmp_path) -> None:
    bare, clone, allowed = repo
    commit(clone, "base", {"workflows/a.yaml": "safe\n"}, signed=True)
    sh("git", "push", "--quiet", "origin", "HEAD:main", cwd=clone)
    sh("git", "checkout", "--quiet", "-b", "wip", cwd=clone)
    wip = commit(clone, "WIP, do not merge", {"workflows/a.yaml": "dangerous\n"}, signed=True)
    sh("git", "checkout", "--quiet", "main", cwd=clone)
    commit(clone, "a record", {"runs/a/r.yaml": "phase: Succeeded\n"}, signed=False)
    # the attacker's merge: first parent the signed WIP, its tree the WIP's plus a record
    sh("git", "checkout", "--quiet", "wip", cwd=clone)
    sh("git", "merge", "--quiet", "--no-edit", "--no-ff", "main", cwd=clone)
    merge = sh("git", "rev-parse", "HEAD", cwd=clone)
    sh("git", "push", "--quiet", "--force", "origin", "HEAD:main", cwd=clone)
    ok, judged = verdict(judge_of(bare, tmp_path, allowed), merge)
    assert not ok and judged == merge, f"the merge ran {wip[:8]}'s signed workflows"


def test_after_a_verified_head_every_commit_touching_the_workflows_must_be_signed(
    repo, tmp_path
) -> None:
    bare, clone, allowed = repo
    first = commit(clone, "signed", {"workflows/a.yaml": "v1\n"}, signed=True)
    sh("git", "push", "--quiet", "origin", "HEAD:main", cwd=clone)
    judge = judge_of(bare, tmp_path, allowed)
    assert verdict(judge, first) == (True, first)
    hidden = commit(clone, "unsigned change", {"workflows/a.yaml": "v2\n"}, signed=False)
    docs = commit(clone, "unsigned docs", {"README.md": "hi\n"}, signed=False)
    on_top = commit(clone, "signed on top", {}, signed=True)
    sh("git", "push", "--quiet", "origin", "HEAD:main", cwd=clone)
    assert verdict(judge, on_top) == (False, hidden)
    # a change outside the workflows needs no signature once the workflows are signed
    judge.verified = hidden
    assert verdict(judge, on_top) == (True, on_top), docs


def test_only_record_commits_signed_by_the_daemons_own_key_are_skipped(repo, tmp_path) -> None:
    """A record-only commit is skipped unjudged only if the daemon signed it: an unsigned
    one (anyone may push it: a forged record decides what already ran) is judged."""
    from reconciler.gitops.signatures import own_signers_file

    bare, clone, allowed = repo
    daemon_key = tmp_path / "daemon"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(daemon_key), cwd=tmp_path)
    head = commit(clone, "signed", {"workflows/a.yaml": "v1\n"}, signed=True)
    sh("git", "config", "user.signingkey", str(daemon_key), cwd=clone)
    record = commit(clone, "reconciler: a record", {"runs/a/r.yaml": "x\n"}, signed=True)
    sh("git", "config", "user.signingkey", str(tmp_path / "sre"), cwd=clone)
    forged = commit(clone, "a forged record", {"runs/b/r.yaml": "x\n"}, signed=False)
    sh("git", "push", "--quiet", "origin", "HEAD:main", cwd=clone)
    judge = judge_of(bare, tmp_path, allowed)
    judge.own_signers = own_signers_file(daemon_key, tmp_path / "own")
    assert verdict(judge, record) == (True, record)  # its subject was the signed head
    assert asyncio.run(judge.subject(record)) == head
    assert verdict(judge, forged) == (False, forged)
    keyless = judge_of(bare, tmp_path, allowed)  # no key of its own: records are judged
    assert verdict(keyless, record) == (False, record)


def test_a_signing_key_that_is_not_a_key_is_a_start_up_error(tmp_path) -> None:
    from reconciler.gitops.signatures import OwnKeyError, own_signers_file

    bad = tmp_path / "key"
    bad.write_text("not a key\n")
    bad.chmod(0o600)
    with pytest.raises(OwnKeyError, match=r"--signing-key .*not a readable SSH private key"):
        own_signers_file(bad, tmp_path)
