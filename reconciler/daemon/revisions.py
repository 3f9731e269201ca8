"""One sync: the branch head from the remote; on a new head, the desired workflows, the
decision (daemon/sync.py) applied to the queue, the reports (`_errors.md`, `_refused.md`),
the lost final records, the pruning of old executions; then the plan branches."""

from __future__ import annotations

import logging
import time
from typing import Any

from reconciler.cluster.history import executions_to_prune
from reconciler.daemon.approvals import ApprovalBook
from reconciler.daemon.config import DaemonConfig
from reconciler.daemon.plans import PlanBranches
from reconciler.daemon.queue import RunQueue
from reconciler.daemon.recovery import Recovery, finals_in_git
from reconciler.daemon.runs import Runs
from reconciler.daemon.sync import decide
from reconciler.daemon.together import all_of
from reconciler.formats import reports
from reconciler.formats.execution import execution_path
from reconciler.formats.run_record import recorded_runs
from reconciler.gitops.desired import ManifestCache
from reconciler.gitops.git import GitError, GitRepo
from reconciler.gitops.plumbing import TreeEntry
from reconciler.gitops.recordwriter import RecordWriter
from reconciler.gitops.signatures import SignatureJudge
from reconciler.kube.client import Kube
from reconciler.kube.errors import KubeError
from reconciler.manifest.errors import ManifestIssue
from reconciler.observability.metrics import Metrics

log = logging.getLogger("reconciler.daemon")


class Revisions:
    def __init__(
        self,
        config: DaemonConfig,
        git: GitRepo,
        kube: Kube,
        writer: RecordWriter,
        metrics: Metrics,
        queue: RunQueue,
        runs: Runs,
        recovery: Recovery,
        approvals: ApprovalBook,
    ) -> None:
        self.approvals = approvals
        self.config = config
        self.git = git
        self.kube = kube
        self.writer = writer
        self.metrics = metrics
        self.queue = queue
        self.runs = runs
        self.recovery = recovery
        self.cache = ManifestCache(policy=config.policy)
        self.judge = (
            SignatureJudge(
                git,
                config.records_path,
                config.allowed_signers,
                config.path,
                own_signers=config.own_signers,
            )
            if config.allowed_signers is not None
            else None
        )
        self.plans = (
            PlanBranches(
                git, kube, self.cache, config.plan_branches, config.path, config.records_path
            )
            if config.plan_branches
            else None
        )
        self.synced_head: str | None = None
        self.pushed = False  # a webhook said the branch moved since the last sync
        self.git_ok = False
        self.last_errors: bytes | None = None
        self.prunable: tuple[list[dict[str, Any]], dict[str, str]] | None = None

    async def sync(self) -> bool:
        """One sync; False when git or the API failed it (the loop tries again soon)."""
        start = time.monotonic()
        synced = False
        try:
            if self.pushed:  # the branch moved: fetch at once, no ls-remote to ask first
                self.pushed = False
                head = await self.git.fetch()
            else:
                head = await self.git.remote_head()
                if head is not None and head != self.synced_head:
                    await self.git.fetch()
                elif head is not None:
                    await self._housekeep()  # nothing new to run: the time to tidy up
            log.debug("head %s", head, extra={"stage": "fetched"})
            if head is None:
                raise GitError(
                    f"branch {self.config.branch} not found on the remote", transient=False
                )
            if head != self.synced_head:
                await self._refresh(head)
                log.debug("refreshed %s", head, extra={"stage": "refreshed"})
                self.synced_head = head
            if self.plans is not None:
                await self.plans.plan_all()
            self.git_ok = synced = True
            self.metrics.last_sync.set(time.time())
        except GitError as err:
            self.git_ok = False
            self.metrics.sync_failures.inc()
            log.warning("git sync failed: %s", err)
        except KubeError as err:  # tried again at the next sync: the head is not marked done
            self.metrics.sync_failures.inc()
            log.warning("sync failed on the Kubernetes API: %s", err)
        finally:
            self.metrics.sync_duration.observe(time.monotonic() - start)
        self.runs.start_ready()
        if self.prunable is not None:
            executions, recorded = self.prunable
            self.prunable = None
            try:
                await self._prune_executions(executions, recorded)
            except (GitError, KubeError) as err:  # the next revision prunes them
                log.warning("pruning finished executions failed: %s", err)
        return synced

    async def _housekeep(self) -> None:
        try:
            await self.git.housekeep()
        except GitError as err:  # the mirror still works; git tries again next time
            log.warning("git housekeeping failed: %s", err)

    async def read_approvals(self) -> None:
        """--once: the remote's new decisions only (no new revision runs); a failure is
        logged and tried again at the next call."""
        try:
            head = await self.git.remote_head()
            if head is not None and head != self.approvals.scanned:
                await self.git.fetch()
                await self.approvals.update(head)
        except GitError as err:
            log.warning("reading approvals failed: %s", err)

    async def _refresh(self, head: str) -> None:
        revision = f"{self.config.branch}@sha1:{head}"
        decided = await self.approvals.update(head)  # before the runs that wait look again
        # Read at once, not one after another: this is on the way from a push to its run.
        # The workflows wait for the verdict on signatures when there is one to wait for.
        reads = [
            self.git.ls_tree(head, self.config.records_path),  # once a revision
            self.kube.list_metadata("workflowexecutions", execution_path()),
        ]
        if self.judge is None:
            reads.append(self.cache.desired(self.git, head, self.config.path))
        records, executions, *read = await all_of(*reads)
        if self.judge is not None and not await self._signed(head, records):
            return
        desired = read[0] if read else await self.cache.desired(self.git, head, self.config.path)
        self._record_errors(desired.issues)
        recorded = recorded_runs(records)
        self._report_unreached(decided, set(recorded))
        await self.recovery.record_lost_finals(recorded, self.runs.submit_final)
        decision = decide(
            desired.workflows,
            recorded=set(recorded),
            live={meta["name"] for meta in executions},
            running=self.queue.running_ids(),
            queued=list(self.queue.waiting),
            cancelling=self.queue.cancelling(),
        )
        for loaded in decision.queue:
            log.info("queued %s (%s)", loaded.run_id, loaded.file, extra={"run_id": loaded.run_id})
        for name in self.queue.apply(decision, revision):
            log.info("workflow %s was deleted while running: cancelling", name)
        self.metrics.queue_depth.set(len(self.queue.waiting))
        self.prunable = (executions, recorded)  # once the new runs have started

    def _report_unreached(self, decided: list[Any], recorded: set[str]) -> None:
        waiting = {
            h.loaded.run_id: {s.name for s in h.loaded.workflow.spec.steps if s.approval}
            for h in self.queue.running.values()
        }
        report = self.approvals.unreached_report(decided, waiting, recorded)
        if report is not None:
            path = reports.approvals_path(self.config.records_path)
            self.writer.submit({path: report}, "reconciler: approvals that reached no run")

    async def _signed(self, head: str, records: list[TreeEntry]) -> bool:
        """--verify-signatures: record a refusal, or clear an earlier one once a signed
        revision arrives."""
        assert self.judge is not None
        ok, judged = await self.judge.verdict(head)
        path = reports.refused_path(self.config.records_path)
        if ok:
            if any(e.path == path for e in records):
                self.writer.submit({path: None}, "reconciler: signed revision, running again")
            return True
        content = reports.refused_markdown(judged, self.config.branch)
        self.writer.submit({path: content}, f"reconciler: refused unsigned revision {judged[:12]}")
        return False

    def _record_errors(self, issues: list[ManifestIssue]) -> None:
        self.metrics.invalid_manifests.set(len(issues))
        content = reports.errors_markdown(issues) if issues else None
        if content == self.last_errors:
            return
        for issue in issues:
            log.error("invalid manifest: %s", issue)
        self.last_errors = content
        path = reports.errors_path(self.config.records_path)
        self.writer.submit({path: content}, reports.errors_commit_message(issues))

    async def _prune_executions(
        self, items: list[dict[str, Any]], recorded: dict[str, str]
    ) -> None:
        if self.config.execution_history is None:
            return
        candidates = executions_to_prune(
            items, set(recorded), self.config.execution_history, self.runs.labels
        )
        # Only once the *final* record is in git: the start record arrives first, and the
        # final one may still wait in the spool (a lost pod would lose it with the spool).
        for name in sorted(await finals_in_git(self.git, candidates, recorded)):
            await self.kube.delete(
                f"workflowexecution {name}",
                execution_path(name),
                {"propagationPolicy": "Background"},  # its Jobs and capture Secrets go too
            )
            log.info("deleted finished execution %s: its final record is in git", name)
