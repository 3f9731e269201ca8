"""The git layer against real repositories (bare remotes in tmp_path, the real git CLI)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from gitrepos import bare_and_clone, sh

from reconciler.gitops.git import GitError, GitRepo


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, Path]:
    bare, clone = bare_and_clone(tmp_path)
    (clone / "workflows").mkdir()
    (clone / "workflows" / "a.yaml").write_text("a: 1\n")
    (clone / "workflows" / "b.yaml").write_text("b: 2\n")
    (clone / "README.md").write_text("hi\n")
    sh("git", "add", ".", cwd=clone)
    sh("git", "commit", "--quiet", "-m", "workflows", cwd=clone)
    sh("git", "push", "--quiet", "origin", "HEAD:main", cwd=clone)
    return bare, clone


def run(coro):
    return asyncio.run(coro)


def repo(bare: Path, tmp_path: Path) -> GitRepo:
    return GitRepo(
        url=str(bare), workdir=tmp_path / "work", branch="main", author_email="bot@reconciler.dev"
    )


def test_fetch_list_and_read(remote: tuple[Path, Path], tmp_path: Path) -> None:
    bare, clone = remote
    git = repo(bare, tmp_path)

    async def main() -> None:
        await git.ensure()
        head = await git.remote_head()
        assert head == sh("git", "rev-parse", "HEAD", cwd=clone)
        assert await git.fetch() == head
        entries = await git.ls_tree(head, "workflows/")
        assert [e.path for e in entries] == ["workflows/a.yaml", "workflows/b.yaml"]
        blobs = await git.read_blobs([e.sha for e in entries])
        assert blobs[entries[1].sha] == b"b: 2\n"

    run(main())


def test_push_files_commits_only_the_records_path(
    remote: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, clone = remote
    git = repo(bare, tmp_path)

    async def main() -> str:
        await git.ensure()
        return await git.push_files(
            {"runs/wf/wf-1.yaml": b"phase: Succeeded\n"}, "reconciler: wf wf-1 Succeeded"
        )

    commit = run(main())
    sh("git", "pull", "--quiet", "origin", "main", cwd=clone)
    assert sh("git", "rev-parse", "HEAD", cwd=clone) == commit
    assert (clone / "runs" / "wf" / "wf-1.yaml").read_text() == "phase: Succeeded\n"
    assert (
        sh("git", "log", "-1", "--format=%an <%ae>|%s", cwd=clone)
        == "reconciler <bot@reconciler.dev>|reconciler: wf wf-1 Succeeded"
    )
    assert sh("git", "show", "--name-only", "--format=", "HEAD", cwd=clone) == "runs/wf/wf-1.yaml"


def test_rejected_push_is_rebuilt_on_the_new_head_never_forced(
    remote: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, clone = remote
    started = tmp_path / "other-started"
    # Our pushes are refused until another clone's commit has landed; that push is started
    # (in the background, from the hook) by our first attempt. Refs cannot change inside a
    # pre-receive hook (quarantine), so the other writer really is another push.
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(f"""#!/bin/sh
[ -n "$OTHER_WRITER" ] && exit 0
if ! git log --format=%s main | grep -q "other change"; then
  if [ ! -e {started} ]; then
    touch {started}
    (unset $(env | grep -o "^GIT_[A-Z_]*"); cd {clone} && git commit --quiet --allow-empty -m "other change" && OTHER_WRITER=1 git push --quiet origin HEAD:main) >/dev/null 2>&1 &
  fi
  echo "rejected: not yet" >&2
  exit 1
fi
""")
    hook.chmod(0o755)
    git = repo(bare, tmp_path)

    async def main() -> str:
        await git.ensure()
        return await git.push_files({"runs/wf/r.yaml": b"x\n"}, "reconciler: record")

    commit = run(main())
    log = sh("git", "log", "--format=%s", "main", cwd=bare).splitlines()
    assert log[:2] == ["reconciler: record", "other change"]  # both survive, ours on top
    assert sh("git", "rev-parse", "main", cwd=bare) == commit


def test_no_change_makes_no_commit(remote: tuple[Path, Path], tmp_path: Path) -> None:
    bare, _ = remote
    git = repo(bare, tmp_path)

    async def main() -> tuple[str, str]:
        await git.ensure()
        first = await git.push_files({"runs/x.md": b"same\n"}, "one")
        second = await git.push_files({"runs/x.md": b"same\n"}, "two")
        return first, second

    first, second = run(main())
    assert first == second


def test_unreachable_remote_is_a_transient_git_error(tmp_path: Path) -> None:
    git = GitRepo(url=str(tmp_path / "nowhere.git"), workdir=tmp_path / "w")

    async def main() -> None:
        await git.ensure()
        await git.remote_head()

    with pytest.raises(GitError) as exc:
        run(main())
    assert exc.value.transient


def test_push_files_can_delete_a_path(remote: tuple[Path, Path], tmp_path: Path) -> None:
    bare, _ = remote
    git = repo(bare, tmp_path)

    async def main() -> None:
        await git.ensure()
        await git.push_files({"runs/_errors.md": b"x\n"}, "errors")
        await git.push_files({"runs/_errors.md": None}, "all valid")

    run(main())
    assert sh("git", "log", "--format=%s", "main", cwd=bare).splitlines()[:2] == [
        "all valid",
        "errors",
    ]
    assert "runs/_errors.md" not in sh("git", "ls-tree", "-r", "--name-only", "main", cwd=bare)


def test_ssh_signatures_are_made_and_verified(remote: tuple[Path, Path], tmp_path: Path) -> None:
    bare, _ = remote
    key = tmp_path / "id_ed25519"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bot", "-f", str(key), cwd=tmp_path)
    public = (tmp_path / "id_ed25519.pub").read_text().split()
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"* {public[0]} {public[1]}\n")
    git = GitRepo(url=str(bare), workdir=tmp_path / "work", signing_key=key)

    async def main() -> tuple[bool, bool]:
        await git.ensure()
        unsigned_head = await git.fetch()
        signed = await git.push_files({"runs/x.yaml": b"x\n"}, "signed record")
        return await git.verify_commit(unsigned_head, allowed), await git.verify_commit(
            signed, allowed
        )

    unsigned_ok, signed_ok = run(main())
    assert not unsigned_ok  # the people's commit is not signed by the allowed key
    assert signed_ok  # the daemon's record commit is


def test_queued_records_go_out_as_one_commit_each_in_one_push(
    remote: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, _ = remote
    hook = bare / "hooks" / "post-receive"  # counts pushes as the remote sees them
    hook.write_text(f"#!/bin/sh\necho push >> {tmp_path / 'pushes'}\n")
    hook.chmod(0o755)
    git = repo(bare, tmp_path)

    async def main() -> None:
        await git.ensure()
        await git.push_commits(
            [
                ({"runs/a.md": b"1\n"}, "reconciler: a Running"),
                ({"runs/a.md": b"1\n"}, "no change, no commit"),
                ({"runs/a.md": b"2\n", "runs/b.md": b"3\n"}, "reconciler: a Succeeded"),
            ]
        )

    run(main())
    assert sh("git", "log", "--format=%s", "-3", "main", cwd=bare).splitlines() == [
        "reconciler: a Succeeded",
        "reconciler: a Running",
        "workflows",
    ]
    assert sh("git", "show", "main:runs/a.md", cwd=bare) == "2"
    assert (tmp_path / "pushes").read_text().count("push") == 1


def test_a_writer_that_died_after_pushing_a_batch_does_not_push_it_again(
    remote: tuple[Path, Path], tmp_path: Path
) -> None:
    """The spool marker names what is on the remote; the next process deletes those files
    instead of pushing them a second time (which would repeat a run's Running and final
    record commits in history)."""
    from reconciler.gitops.recordwriter import PUSHED_MARKER, RecordWriter
    from reconciler.observability.metrics import Metrics

    bare, _ = remote
    git = repo(bare, tmp_path)
    spool = tmp_path / "spool"

    async def first_life() -> None:
        await git.ensure()
        writer = RecordWriter(git, spool, Metrics())
        writer.submit({"runs/w/r.yaml": b"phase: Running\n"}, "reconciler: w r Running")
        writer.submit({"runs/w/r.yaml": b"phase: Succeeded\n"}, "reconciler: w r Succeeded")
        names = sorted(p.name for p in spool.glob("*.json"))
        changes = [RecordWriter._load(spool / n) for n in names]
        await git.push_commits(changes)
        (spool / PUSHED_MARKER).write_text(json.dumps(names))  # and then it died

    async def second_life() -> int:
        writer = RecordWriter(git, spool, Metrics())
        queued = writer.recover()
        task = asyncio.create_task(writer.run())
        await writer.drain()
        task.cancel()
        return queued

    run(first_life())
    assert run(second_life()) == 0
    subjects = sh("git", "log", "--format=%s", "main", cwd=bare).splitlines()
    assert subjects.count("reconciler: w r Running") == 1
    assert subjects.count("reconciler: w r Succeeded") == 1
    assert not list(spool.glob("*.json"))


def test_signature_judges_the_newest_commit_that_is_not_a_plain_record_commit(
    remote: tuple[Path, Path], tmp_path: Path
) -> None:
    """Record commits (adding or changing files under runs/, signed by the daemon's key)
    are skipped; a rename out of workflows/ into runs/, a deleted record, and an empty
    commit are judged themselves, whoever signed them."""
    from reconciler.gitops.signatures import SignatureJudge, own_signers_file

    bare, clone = remote
    key = tmp_path / "daemon"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key), cwd=tmp_path)
    sh("git", "config", "gpg.format", "ssh", cwd=clone)
    sh("git", "config", "user.signingkey", str(key), cwd=clone)

    def commit(message: str, *git_args: str) -> str:
        if git_args:
            sh("git", *git_args, cwd=clone)
        sh("git", "add", "-A", cwd=clone)
        sh("git", "commit", "--quiet", "--allow-empty", "-S", "-m", message, cwd=clone)
        sh("git", "push", "--quiet", "origin", "HEAD:main", cwd=clone)
        return sh("git", "rev-parse", "HEAD", cwd=clone)

    human = sh("git", "rev-parse", "HEAD", cwd=clone)
    (clone / "runs").mkdir()
    (clone / "runs" / "r1.yaml").write_text("phase: Running\n")
    commit("record added")
    (clone / "runs" / "r1.yaml").write_text("phase: Succeeded\n")
    records = commit("record changed")
    renamed = commit("move a workflow into runs/", "mv", "workflows/a.yaml", "runs/a.yaml")
    deleted = commit("delete a record", "rm", "--quiet", "runs/r1.yaml")
    empty = commit("approve")
    git = GitRepo(url=str(bare), workdir=tmp_path / "work", full_history=True)
    judge = SignatureJudge(
        git, "runs/", tmp_path / "allowed_signers", own_signers=own_signers_file(key, tmp_path)
    )

    async def subjects() -> list[str]:
        await git.ensure()
        await git.fetch()
        return [await judge.subject(c) for c in (records, renamed, deleted, empty)]

    assert run(subjects()) == [human, renamed, deleted, empty]


def test_fetches_at_once_while_the_remote_moves_never_collide_on_the_ref(
    remote: tuple[Path, Path], tmp_path: Path
) -> None:
    """A sync's fetch and a record push's fetch run at once in the daemon; unserialised, git
    fails one with "cannot lock ref 'refs/remotes/origin/main'"."""
    bare, clone = remote
    repo = GitRepo(url=str(bare), workdir=tmp_path / "mirror")

    async def main() -> None:
        await repo.ensure()
        await repo.fetch()
        for i in range(6):
            (clone / "README.md").write_text(f"change {i}\n")
            sh("git", "commit", "--quiet", "-am", f"change {i}", cwd=clone)
            sh("git", "push", "--quiet", "origin", "HEAD:main", cwd=clone)
            await asyncio.gather(*(repo.fetch() for _ in range(6)))

    run(main())
    assert run(repo.local_head()) == sh("git", "rev-parse", "HEAD", cwd=clone)


def test_fetch_returns_each_new_head_and_leaves_housekeeping_for_later(
    remote: tuple[Path, Path], tmp_path: Path
) -> None:
    """The head comes from FETCH_HEAD, not a rev-parse: it must still be the new one after
    every push, and the fetch must not start git's maintenance (housekeep does)."""
    bare, clone = remote
    git = repo(bare, tmp_path)
    trace = tmp_path / "trace.txt"

    async def main() -> None:
        await git.ensure()
        await git.fetch()
        for n in range(3):
            (clone / "workflows" / "a.yaml").write_text(f"a: {n + 10}\n")
            sh("git", "commit", "--quiet", "-am", f"change {n}", cwd=clone)
            sh("git", "push", "--quiet", "origin", "HEAD:main", cwd=clone)
            assert await git.fetch() == sh("git", "rev-parse", "HEAD", cwd=clone)
        fetched = await git.git("fetch", "--quiet", "origin", env={"GIT_TRACE": str(trace)})
        assert fetched == b""
        assert "maintenance" in trace.read_text()  # the plain command would start it
        trace.write_text("")
        await git.git(
            *("-c", "maintenance.auto=false", "fetch", "--quiet", "origin"),
            env={"GIT_TRACE": str(trace)},
        )
        assert "maintenance" not in trace.read_text()
        await git.housekeep()

    run(main())


def test_plumbing_reads_fetch_head_and_names_the_command() -> None:
    from reconciler.gitops.gitcommand import command_name
    from reconciler.gitops.plumbing import parse_fetch_head

    sha = "a" * 40
    assert parse_fetch_head(f"{sha}\t\tbranch 'main' of http://x/r\n".encode()) == sha
    assert parse_fetch_head(b"") is None
    assert parse_fetch_head(b"not a sha\t\tbranch 'main'\n") is None
    assert command_name(["-c", "maintenance.auto=false", "fetch", "--quiet"]) == "fetch"
    assert command_name(["ls-remote", "origin"]) == "ls-remote"


def test_a_failing_read_cancels_the_others() -> None:
    from reconciler.daemon.together import all_of

    cancelled = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def fails() -> None:
        raise GitError("no")

    async def main() -> None:
        assert await all_of(asyncio.sleep(0, 1), asyncio.sleep(0, 2)) == [1, 2]
        with pytest.raises(GitError):
            await all_of(slow(), fails())

    run(main())
    assert cancelled == [True]
