"""Nothing of the daemon dies silently: each failure found in review, reproduced.

A hung `git push` used to end the record writer for the life of the process; an exception
inside the leader elector left the process acting as leader without renewing; a hung
`ls-remote` escaped the sync loop and ended the daemon; a watcher that crashed was never
seen again. Real git (bare remotes, a hook that hangs), the real supervisor."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.attempt import Backoff
from reconciler.cluster.lease import LeaderElector, _parse
from reconciler.daemon import watchers
from reconciler.daemon.config import DaemonConfig
from reconciler.daemon.daemon import Daemon
from reconciler.daemon.supervisor import Supervisor, TaskFailed
from reconciler.gitops.git import GitRepo
from reconciler.gitops.recordwriter import RecordWriter
from reconciler.observability.metrics import Metrics

FAST = Backoff(initial=0.05, factor=2.0, cap=0.2)
HANG_WHILE_GATE = "#!/bin/sh\nwhile [ -e {gate} ]; do sleep 0.1; done\nexit 0\n"


def sh(*args: str, cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    sh("git", "init", "--bare", "--quiet", "-b", "main", str(bare), cwd=tmp_path)
    clone = tmp_path / "clone"
    sh("git", "clone", "--quiet", str(bare), str(clone), cwd=tmp_path)
    (clone / "README.md").write_text("hi\n")
    sh("git", "add", ".", cwd=clone)
    sh("git", "-c", "user.name=SRE", "-c", "user.email=sre@x", "commit", "-qm", "init", cwd=clone)
    sh("git", "push", "--quiet", "origin", "HEAD:main", cwd=clone)
    return bare


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


async def until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_a_hung_push_is_retried_reported_and_the_records_arrive(bare: Path, tmp_path: Path) -> None:
    gate = tmp_path / "hang"
    gate.touch()
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(HANG_WHILE_GATE.format(gate=gate))
    hook.chmod(0o755)
    git = GitRepo(url=str(bare), workdir=tmp_path / "work", timeout=1.0)
    metrics = Metrics()
    writer = RecordWriter(git, tmp_path / "spool", metrics)

    async def main() -> None:
        await git.ensure()
        writer.recover()
        task = asyncio.create_task(writer.run())
        writer.submit({"runs/w/r1.yaml": b"phase: Succeeded\n"}, "reconciler: r1")
        await until(lambda: writer.unanswered is not None, 10, "the hung push reported")
        assert "no answer within 1s" in writer.unanswered
        await until(lambda: metric(metrics, "reconciler_record_push_retries_total") >= 2, 10, "")
        assert not task.done(), "the writer died on a hung push"
        gate.unlink()
        await asyncio.wait_for(writer.drain(), 20)
        assert writer.unanswered is None
        assert not task.done()
        task.cancel()

    try:
        asyncio.run(main())
    finally:
        gate.unlink(missing_ok=True)  # the hook ends; no process left behind
    log = sh("git", "log", "--format=%s", "main", cwd=bare).splitlines()
    assert log.count("reconciler: r1") == 1
    assert sh("git", "show", "main:runs/w/r1.yaml", cwd=bare) == "phase: Succeeded"


class CrashingKube:
    """The Lease is created on the first round; the second round's read raises something
    no Kubernetes error type covers (a bug, an unexpected answer)."""

    def __init__(self) -> None:
        self.reads = 0

    async def find(self, what: str, path: str) -> dict[str, Any] | None:
        self.reads += 1
        if self.reads > 1:
            raise RuntimeError("an answer nobody expected")
        return None

    async def call(self, what: str, fn: Any) -> dict[str, Any]:
        return {}  # the POST that creates the Lease succeeded


def test_an_exception_inside_the_elector_ends_leadership_and_is_reported() -> None:
    async def main() -> TaskFailed:
        elector = LeaderElector(CrashingKube(), "ns", "lease", "me", retry=0.05)  # type: ignore[arg-type]
        supervisor = Supervisor(Metrics(), FAST)
        supervisor.start("leader-elector", elector.run, restart=False, may_return=True)
        await asyncio.wait_for(elector.is_leader.wait(), 5)
        await asyncio.wait_for(elector.lost.wait(), 5)
        assert not elector.is_leader.is_set(), "still acting as leader without renewing"
        assert supervisor.failed is not None
        failed = await asyncio.wait_for(supervisor.failed, 5)
        assert supervisor.down() == ["leader-elector"]
        await supervisor.stop()
        return failed

    failed = asyncio.run(main())
    assert failed.task == "leader-elector" and "an answer nobody expected" in failed.error


def test_a_renew_time_without_fractional_seconds_is_read() -> None:
    assert _parse("2026-12-01T10:00:00Z") == _parse("2026-12-01T10:00:00.000000Z") > 0


def test_a_hung_ls_remote_fails_the_sync_not_the_daemon(
    bare: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_git = shutil.which("git")
    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    # exec: the timeout's kill reaches the sleeping process itself, nothing is left behind
    fake.write_text(f'#!/bin/sh\n[ "$1" = ls-remote ] && exec sleep 30\nexec {real_git} "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{Path(real_git).parent}")  # type: ignore[arg-type]
    config = DaemonConfig(repo=str(bare), workdir=tmp_path / "work", git_timeout=1.0)
    daemon = Daemon(config, kube=None)  # type: ignore[arg-type]  # the sync fails before any API call

    async def main() -> None:
        await daemon.git.ensure()
        await asyncio.wait_for(daemon.revisions.sync(), 10)  # raises nothing

    asyncio.run(main())
    assert not daemon.revisions.git_ok
    assert daemon.readiness() == "not synced yet"
    assert metric(daemon.metrics, "reconciler_git_sync_failures_total") == 1


def test_a_crashing_watcher_is_logged_restarted_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    missing = tmp_path / "no-such-repo"  # awatch raises: the watcher crashes at once

    async def main() -> list[str]:
        supervisor = Supervisor(metrics, Backoff(initial=0.4, factor=1.0, cap=0.4))
        wake = asyncio.Event()
        supervisor.start(
            "local-watch", lambda: watchers.watch_local_repo(str(missing), wake), restart=True
        )
        await until(lambda: supervisor.down() == ["local-watch"], 5, "the watcher seen down")
        down = supervisor.down()
        await until(
            lambda: metric(metrics, "reconciler_task_restarts_total", task="local-watch") >= 2,
            5,
            "restarted again",
        )
        assert supervisor.failed is not None and not supervisor.failed.done()
        await supervisor.stop()
        return down

    with caplog.at_level(logging.ERROR, logger="reconciler.daemon.supervisor"):
        assert asyncio.run(main()) == ["local-watch"]
    crashes = [r for r in caplog.records if r.getMessage() == "task local-watch crashed"]
    assert crashes and crashes[0].exc_info is not None  # with its traceback


def test_a_task_that_must_run_and_returns_fails_the_supervisor() -> None:
    async def main() -> TaskFailed:
        supervisor = Supervisor(Metrics(), FAST)

        async def ends() -> None:
            return None

        supervisor.start("sync", ends, restart=True)
        assert supervisor.failed is not None
        return await asyncio.wait_for(supervisor.failed, 5)

    assert asyncio.run(main()).task == "sync"


def test_a_failed_sync_is_retried_with_a_backoff_not_at_the_next_interval() -> None:
    from reconciler.daemon.daemon import sync_wait

    assert sync_wait(3600, 0) == 3600
    assert [sync_wait(3600, n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert sync_wait(2, 5) == 2  # never longer than the polling interval
