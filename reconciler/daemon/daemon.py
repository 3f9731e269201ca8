"""The reconcile loop: git in, cluster changes and records out (docs/architecture.md),
wired from the rooms beside it.

One sync: ask the remote for the branch head (`ls-remote`); if it moved, fetch, load the
workflows that changed, decide (daemon/sync.py) what is new, changed or deleted, queue and
cancel accordingly (daemon/queue.py). Records are committed at run start and end through
the record writer. Triggers: a local repository's refs changing, the webhook, or the
polling interval (with jitter). Every background task runs under the supervisor
(daemon/supervisor.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reconciler.cluster.keys import execution_key
from reconciler.cluster.lease import LeaderElector
from reconciler.cluster.namespaces import API_THREADS, ensure_namespace
from reconciler.daemon import watchers
from reconciler.daemon.approvals import ApprovalBook
from reconciler.daemon.config import DaemonConfig
from reconciler.daemon.queue import RunQueue
from reconciler.daemon.recovery import Recovery
from reconciler.daemon.revisions import Revisions
from reconciler.daemon.runs import Runs
from reconciler.daemon.shutdown import SHUTDOWN_GRACE, exit_within
from reconciler.daemon.supervisor import Supervisor, TaskFailed
from reconciler.engine.runner import Engine
from reconciler.formats.execution import daemon_labels
from reconciler.gitops.git import GitError, GitRepo
from reconciler.gitops.recordwriter import RecordWriter
from reconciler.kube.client import Kube
from reconciler.observability.http import Endpoints, HttpServer
from reconciler.observability.metrics import Metrics

log = logging.getLogger("reconciler.daemon")
LEADERSHIP_LOST = 2  # exit code: another replica leads now
TASK_FAILED = 3  # exit code: a task that may not be restarted failed


APPROVALS_POLL = 2.0  # --once: seconds between reads of the remote's approvals/
RETRY_FIRST = 1.0  # seconds after a failed sync; doubling while it keeps failing...
RETRY_MOST = 30.0  # ...up to this, and never longer than the polling interval


def sync_wait(interval: float, failures: int) -> float:
    """How long the sync loop waits (a webhook or watch event wakes it sooner): the polling
    interval, or after failed syncs a backoff, so a push seen while the remote or the API
    was down is not left until the next interval (an hour, with webhooks)."""
    if failures == 0:
        return interval
    return min(interval, RETRY_MOST, RETRY_FIRST * 2 ** (failures - 1))


class Daemon:
    def __init__(self, config: DaemonConfig, kube: Kube) -> None:
        self.config = config
        self.kube = kube
        self.metrics = Metrics()
        self.git = GitRepo(
            url=config.repo,
            workdir=config.workdir,
            branch=config.branch,
            credentials=config.credentials,
            author_name=config.author_name,
            author_email=config.author_email,
            signing_key=config.signing_key,
            timeout=config.git_timeout,
            in_process_http=not config.git_client_fetch,
            # signature verification and approvals both walk the history
            full_history=config.allowed_signers is not None or bool(config.policy.approvers.people),
            partial=True,
        )
        self.writer = RecordWriter(self.git, config.workdir / "spool", self.metrics)
        self.labels = daemon_labels(config.repo, config.branch)  # the executions it owns
        self.queue = RunQueue(config.max_concurrent_workflows)
        self.supervisor = Supervisor(self.metrics)
        self.recovery = Recovery(kube, self.git, config.records_path, self.labels, config.policy)
        self.wake = asyncio.Event()
        engine = Engine(global_limit=config.max_concurrent_steps)
        self.approvals = ApprovalBook(self.git, config.policy, config.workdir / "approvals")
        self.runs = Runs(
            kube,
            engine,
            self.queue,
            self.writer,
            self.metrics,
            self.labels,
            config.records_path,
            self.wake,
            config.policy,
            config.prometheus_url,
            self.approvals,
        )
        self.revisions = Revisions(
            config,
            self.git,
            kube,
            self.writer,
            self.metrics,
            self.queue,
            self.runs,
            self.recovery,
            self.approvals,
        )
        self.api_ok = False
        self.elector: LeaderElector | None = None
        self.http: HttpServer | None = None

    def _pushed(self) -> None:
        """A webhook said the branch moved: the next sync fetches without asking first."""
        log.debug("webhook accepted", extra={"stage": "webhook"})
        self.revisions.pushed = True
        self.wake.set()

    def readiness(self) -> str | None:
        """Why the daemon is not ready (/readyz 503), or None."""
        down = self.supervisor.down()
        if down:
            return f"task {', '.join(down)} is down"
        if self.revisions.synced_head is None:
            return "not synced yet"
        if not self.revisions.git_ok:
            return "git remote unreachable"
        if self.writer.unanswered is not None:
            return f"records cannot be pushed: {self.writer.unanswered}"
        if not self.api_ok:
            return "Kubernetes API unreachable"
        return None

    # ------------------------------------------------------------------ main

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(API_THREADS))
        secret = (
            self.config.webhook_secret_file.read_bytes().strip()
            if self.config.webhook_secret_file
            else None
        )
        self.http = HttpServer(
            self.config.listen,
            Endpoints(
                self.metrics,
                self.readiness,
                lambda: loop.call_soon_threadsafe(self._pushed),
                secret,
            ),
        )
        # safe to restart: it holds no state of its own (readiness and metrics are ours)
        self.supervisor.start("http", self.http.serve, restart=True)
        log.info("listening on %s:%d", self.http.server.server_address[0], self.http.port)
        code = 1  # an unexpected error: the command logs it and exits 1
        try:
            code = await self._serve()
            return code
        finally:
            exit_within(SHUTDOWN_GRACE, code)  # a stop that hangs must not keep the process
            for handle in self.queue.running.values():  # first: no new step may start
                handle.task.cancel()
            await self.supervisor.stop()
            if self.elector is not None:
                try:
                    await self.elector.release()
                except Exception as err:  # stepping down is a courtesy; the lease expires
                    log.warning("could not release the lease: %s", err)
            self.http.stop()

    async def _serve(self) -> int:
        await self.git.ensure()
        recovered = self.writer.recover()
        if recovered:
            log.info("%d record commit(s) from a previous run will be pushed", recovered)
        start = self.supervisor.start
        # safe to restart: its queue is rebuilt from the spool on disk; a permanent git
        # error (the branch is gone) ends the process instead of retrying for ever
        start("record-writer", self.writer.run, restart=True, fatal=(GitError,))
        # safe to restart: it only reports what it sees
        start("api-probe", lambda: watchers.probe_api(self.kube, self._api_seen), restart=True)
        if self.config.leader_elect:
            await self._become_leader()
        self.metrics.leader.set(1)
        await ensure_namespace(self.kube, self.config.capture_namespace)
        self.runs.key = self.recovery.key = await execution_key(self.kube)
        if watchers.is_local_repo(self.config.repo):
            # safe to restart: it only wakes the sync loop (which also polls)
            start(
                "local-watch",
                lambda: watchers.watch_local_repo(self.config.repo, self.wake),
                restart=True,
            )
        await self.recovery.resume_unfinished(
            self.writer.pending_paths(), set(self.queue.running), self.runs.start
        )
        if self.config.once:
            return await self._once()
        # safe to restart: every sync derives what to do from git and the cluster again
        start("sync", self._sync_loop, restart=True)
        return await self._until_stopped()

    async def _become_leader(self) -> None:
        await ensure_namespace(self.kube, self.config.lease_namespace)
        elector = self.elector = LeaderElector(
            self.kube,
            self.config.lease_namespace,
            self.config.lease_name,
            self.config.identity,
            duration=self.config.lease_duration,
        )
        # never restarted: a crash ends leadership (its `lost`), and with it the process
        self.supervisor.start("leader-elector", elector.run, restart=False, may_return=True)
        log.info("waiting to become leader as %s", self.config.identity)
        leader = asyncio.ensure_future(elector.is_leader.wait())
        assert self.supervisor.failed is not None
        await asyncio.wait({leader, self.supervisor.failed}, return_when=asyncio.FIRST_COMPLETED)
        if not leader.done():
            leader.cancel()
            raise self.supervisor.failed.result()
        self.kube.fence = elector.fence_reason  # from now on, writes only while leading

    async def _until_stopped(self) -> int:
        """Until leadership is lost or a task that may not restart fails: new steps stop at
        once (the runs are cancelled on the way out; the next leader resumes them)."""
        assert self.supervisor.failed is not None
        stops: set[asyncio.Future[Any]] = {self.supervisor.failed}
        if self.elector is not None:
            stops.add(asyncio.ensure_future(self.elector.lost.wait()))
        await asyncio.wait(stops, return_when=asyncio.FIRST_COMPLETED)
        if self.elector is not None and self.elector.lost.is_set():
            log.error("leadership lost: stopping so the new leader alone runs workflows")
            return LEADERSHIP_LOST
        failed: TaskFailed = self.supervisor.failed.result()
        log.error("%s: stopping, so that the pod is restarted", failed)
        return TASK_FAILED

    async def _once(self) -> int:
        await self.revisions.sync()
        # a step may wait for approvals: they keep being read, nothing else is
        poll = min(self.config.interval, APPROVALS_POLL) if self.approvals.enabled else None
        while not self.queue.idle():
            tasks = [h.task for h in self.queue.running.values()]
            if tasks:
                await asyncio.wait(tasks, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
            if poll is not None:
                await self.revisions.read_approvals()
            self.runs.start_ready()
        await self.writer.drain()
        return 0 if not self.runs.crashed and not self.runs.unsuccessful else 1

    async def _sync_loop(self) -> None:
        failures = 0
        while True:
            failures = 0 if await self.revisions.sync() else failures + 1
            wait = sync_wait(self.config.interval, failures)
            with contextlib.suppress(TimeoutError):  # the wait passed: poll anyway
                await asyncio.wait_for(self.wake.wait(), wait * random.uniform(0.9, 1.1))
            self.wake.clear()

    def _api_seen(self, ok: bool) -> None:
        self.api_ok = ok
