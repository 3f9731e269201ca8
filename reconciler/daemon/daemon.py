"""The reconcile loop: git in, cluster changes and records out (DESIGN.md §1, §4, §5).

One sync: ask the remote for the branch head (`ls-remote`); if it moved, fetch, load the
workflows that changed, diff desired against applied, queue what is new or changed, cancel
what was deleted. Runs start up to --max-concurrent-workflows, one at a time per workflow
name (a changed workflow waits for its running version to finish). Records are committed at
run start and end. Triggers: a local repository's refs changing (watchfiles), the webhook, or
the polling interval (with jitter).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from reconciler import failpoints
from reconciler.actions.dryrun import dry_run_workflow
from reconciler.cluster.checkpoint import execution_path, unpack
from reconciler.cluster.history import executions_to_prune
from reconciler.cluster.lease import LeaderElector
from reconciler.cluster.run import (
    AlreadyRun,
    InputsLost,
    remove_finalizer,
    run_in_cluster,
    workflow_of,
)
from reconciler.commands.run import API_THREADS, ensure_namespace
from reconciler.engine.plan import plan_workflow, render_text
from reconciler.engine.record import RunPhase, RunRecord, Transition, record_from_dict
from reconciler.engine.runner import Engine
from reconciler.formats.run_record import render_markdown, render_yaml
from reconciler.gitops.desired import ManifestCache, record_files
from reconciler.gitops.git import Credentials, GitError, GitRepo, TreeEntry
from reconciler.gitops.recordwriter import RecordWriter
from reconciler.kube.client import Kube, process_identity
from reconciler.manifest.durations import format_duration
from reconciler.manifest.errors import ManifestIssue, format_path
from reconciler.manifest.loader import LoadedWorkflow
from reconciler.manifest.policy import Policy
from reconciler.observability.http import Endpoints, HttpServer, threadsafe_setter
from reconciler.observability.logs import log_transition
from reconciler.observability.metrics import Metrics

log = logging.getLogger("reconciler.daemon.daemon")
FINISHED_PHASES = {p.value for p in RunPhase if p.finished}
RUNNER_LABEL = {"app.kubernetes.io/managed-by": "reconciler-daemon"}
SOURCE_LABEL = "reconciler.dev/source"


def source_label_value(repo: str, branch: str) -> str:
    """Which repository and branch made an execution: daemons of other repositories that
    share the cluster must neither resume its run nor write its record into their git."""
    if "://" not in repo and not repo.startswith("git@"):
        repo = str(Path(repo).resolve())
    return hashlib.sha256(f"{repo.rstrip('/')}#{branch}".encode()).hexdigest()[:16]


@dataclass
class DaemonConfig:
    repo: str
    workdir: Path
    branch: str = "main"
    path: str = "workflows/"
    records_path: str = "runs/"
    interval: float = 30.0
    max_concurrent_workflows: int = 4
    max_concurrent_steps: int | None = None
    listen: str = "127.0.0.1:8080"
    webhook_secret_file: Path | None = None
    credentials: Credentials = field(default_factory=Credentials)
    author_name: str = "reconciler"
    author_email: str = "reconciler@localhost"
    signing_key: Path | None = None
    allowed_signers: Path | None = None  # set: only commits signed by these keys run
    leader_elect: bool = False
    lease_namespace: str = "reconciler-system"
    lease_name: str = "reconciler"
    identity: str = field(default_factory=process_identity)
    capture_namespace: str = "reconciler-system"
    once: bool = False
    # finished WorkflowExecutions kept per workflow once their record is in git (None: all)
    execution_history: int | None = 10
    plan_branches: str | None = None  # glob: such branches are planned, never executed
    policy: Policy = field(default_factory=Policy)


@dataclass
class RunHandle:
    loaded: LoadedWorkflow
    task: asyncio.Task[RunRecord | None]
    cancel: asyncio.Event


def record_paths(records_path: str, workflow: str, run_id: str) -> tuple[str, str]:
    base = f"{records_path.rstrip('/')}/{workflow}/{run_id}"
    return f"{base}.yaml", f"{base}.md"


def commit_message(record: RunRecord) -> str:
    done, total = record.progress()
    duration = ""
    if record.started is not None and record.finished is not None:
        duration = f", {format_duration(record.finished - record.started)}"
    phase = record.phase.value
    return f"reconciler: {record.workflow} {record.run_id} {phase} ({done}/{total} steps{duration})"


def plan_markdown(loaded: LoadedWorkflow, branch: str, head: str, dry_run: str) -> bytes:
    text = render_text(plan_workflow(loaded))
    return (
        f"# Plan: {loaded.name} on `{branch}`\n\n"
        f"What merging `{branch}` (at `{head[:12]}`) would run. Nothing here was executed.\n\n"
        f"## Order\n\n```\n{text}\n```\n\n## Server-side dry run\n\n```\n{dry_run}\n```\n"
    ).encode()


def errors_markdown(issues: list[ManifestIssue]) -> bytes:
    # No revision or time in here: the daemon's own record commits move the head, and a file
    # that changed with every head would commit itself forever.
    lines = [
        "# Invalid workflow manifests",
        "",
        "These files were not run (every other workflow was).",
        "Fix them and push; this file is rewritten on every revision, removed when all is valid.",
        "",
        "| file | line | column | field | problem |",
        "|---|---|---|---|---|",
    ]
    for i in issues:
        problem = i.message.replace("|", "\\|")
        where = format_path(i.path) or "—"
        lines.append(f"| `{i.file}` | {i.line} | {i.column} | `{where}` | {problem} |")
    return ("\n".join(lines) + "\n").encode()


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
        )
        self.writer = RecordWriter(self.git, config.workdir / "spool", self.metrics)
        self.engine = Engine(global_limit=config.max_concurrent_steps)
        # the executions this daemon owns: made by a daemon, from this repository and branch
        self.labels = {**RUNNER_LABEL, SOURCE_LABEL: source_label_value(config.repo, config.branch)}
        self.cache = ManifestCache(policy=config.policy)
        self.running: dict[str, RunHandle] = {}
        self.queued: dict[str, tuple[LoadedWorkflow, str]] = {}
        self.unsuccessful = 0  # runs that did not succeed (--once exits 1); no records kept
        self.crashed = 0
        self.wake = asyncio.Event()
        self.synced_head: str | None = None
        self._judged: dict[str, str] = {}  # commit -> the commit whose signature decides it
        self.last_errors: bytes | None = None
        self.git_ok = False
        self.api_ok = False
        self.elector: LeaderElector | None = None
        self.planned: dict[str, str] = {}  # plan branch -> head we last planned
        # finished executions found at start-up whose final record may never have reached git
        self.unrecorded: dict[str, dict[str, Any]] = {}
        self.http: HttpServer | None = None

    # ------------------------------------------------------------------ readiness

    def readiness(self) -> str | None:
        if self.synced_head is None:
            return "not synced yet"
        if not self.git_ok:
            return "git remote unreachable"
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
            Endpoints(self.metrics, self.readiness, threadsafe_setter(loop, self.wake), secret),
        )
        self.http.start()
        log.info("listening on %s:%d", self.http.server.server_address[0], self.http.port)
        background: list[asyncio.Task[None]] = []
        try:
            await self.git.ensure()
            recovered = self.writer.recover()
            if recovered:
                log.info("%d record commit(s) from a previous run will be pushed", recovered)
            background.append(asyncio.create_task(self.writer.run()))
            background.append(asyncio.create_task(self._watch_api()))
            if self.config.leader_elect:
                await ensure_namespace(self.kube, self.config.lease_namespace)
                self.elector = LeaderElector(
                    self.kube,
                    self.config.lease_namespace,
                    self.config.lease_name,
                    self.config.identity,
                )
                background.append(asyncio.create_task(self.elector.run()))
                log.info("waiting to become leader as %s", self.config.identity)
                await self.elector.is_leader.wait()
                self.metrics.leader.set(1)
            else:
                self.metrics.leader.set(1)
            await ensure_namespace(self.kube, self.config.capture_namespace)
            if self._is_local_repo():
                background.append(asyncio.create_task(self._watch_local()))
            await self._resume_unfinished()
            return await self._loop()
        finally:
            for task in background:
                task.cancel()
            for handle in self.running.values():
                handle.task.cancel()
            if self.elector is not None:
                with contextlib.suppress(Exception):
                    await self.elector.release()
            self.http.stop()

    async def _loop(self) -> int:
        while True:
            await self.sync()
            if self.config.once:
                while self.running or self.queued:
                    await asyncio.wait(
                        [h.task for h in self.running.values()], return_when=asyncio.FIRST_COMPLETED
                    )
                    self._start_queued()
                await self.writer.drain()
                ok = not self.crashed and not self.unsuccessful
                return 0 if ok else 1
            lost = self.elector.lost.wait() if self.elector else asyncio.Event().wait()
            jitter = self.config.interval * random.uniform(-0.1, 0.1)
            waits = {asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(lost)}
            _, pending = await asyncio.wait(
                waits, timeout=self.config.interval + jitter, return_when=asyncio.FIRST_COMPLETED
            )
            for fut in pending:
                fut.cancel()
            if self.elector is not None and self.elector.lost.is_set():
                log.error("leadership lost: stopping so the new leader alone runs workflows")
                return 2
            self.wake.clear()

    def _is_local_repo(self) -> bool:
        return "://" not in self.config.repo and Path(self.config.repo).is_dir()

    async def _watch_local(self) -> None:
        """A push to a local repository moves a ref file: sync at once, no polling delay."""
        from watchfiles import awatch

        def is_ref(change: object, path: str) -> bool:
            return "/refs/" in path or path.endswith(("packed-refs", "HEAD"))

        async for _ in awatch(
            self.config.repo,
            watch_filter=is_ref,
            debounce=50,
            step=10,
            recursive=True,
            force_polling=False,
        ):
            self.wake.set()

    async def _watch_api(self) -> None:
        while True:
            try:  # one plain request, no outage retries: readiness must say so at once
                await asyncio.to_thread(self.kube._request, "GET", "/version")
                self.api_ok = True
            except Exception:
                self.api_ok = False
            await asyncio.sleep(2)

    # ------------------------------------------------------------------ sync

    async def sync(self) -> None:
        start = time.monotonic()
        try:
            head = await self.git.remote_head()
            if head is None:
                raise GitError(
                    f"branch {self.config.branch} not found on the remote", transient=False
                )
            if head != self.synced_head:
                await self.git.fetch()
                await self._refresh(head)
                self.synced_head = head
            if self.config.plan_branches:
                await self._plan_branches()
            self.git_ok = True
            self.metrics.last_sync.set(time.time())
        except GitError as err:
            self.git_ok = False
            self.metrics.sync_failures.inc()
            log.warning("git sync failed: %s", err)
        finally:
            self.metrics.sync_duration.observe(time.monotonic() - start)
        self._start_queued()

    async def _signature_subject(self, head: str) -> str:
        """The commit whose signature decides whether `head` runs: head itself, unless it
        (and the commits below it on the first-parent line) are record commits: they only
        add or change files under the records path (or remove the daemon's own
        `_errors.md`/`_refused.md`). Those are the daemon's own commits, unsigned unless
        --signing-key is given; refusing them would refuse every revision after a record.
        A commit that deletes or moves a record is judged: records decide what already ran.
        Empty commits are judged (signing one approves the tree, as with Flux). Walked once
        per commit (cached), however long the run of record commits."""
        prefix = self.config.records_path.rstrip("/") + "/"
        own_files = {prefix + "_errors.md", prefix + "_refused.md"}
        skipped: list[str] = []
        commit = head
        while commit not in self._judged:
            parent = await self.git.first_parent(commit)
            if parent is None:
                break
            changes = await self.git.changes(parent, commit)
            if not changes or not all(
                path.startswith(prefix) and (status in ("A", "M") or path in own_files)
                for status, path in changes
            ):
                break
            skipped.append(commit)
            commit = parent
        subject = self._judged.get(commit, commit)
        for c in [*skipped, commit]:
            self._judged[c] = subject
        return subject

    async def _verified(self, head: str, records: list[TreeEntry]) -> bool:
        """--verify-signatures: record a refusal, or clear an earlier one once a signed
        revision arrives."""
        assert self.config.allowed_signers is not None
        refused_path = f"{self.config.records_path.rstrip('/')}/_refused.md"
        judged = await self._signature_subject(head)
        if await self.git.verify_commit(judged, self.config.allowed_signers):
            if any(e.path == refused_path for e in records):
                self.writer.submit(
                    {refused_path: None}, "reconciler: signed revision, running again"
                )
            return True
        log.error(
            "revision %s@sha1:%s is not signed by an allowed key (judged commit %s):"
            " not executing it",
            self.config.branch,
            head,
            judged,
        )
        # Names the judged commit, not the head: the head moves with every record commit,
        # and a file naming it would commit itself forever.
        message = (
            f"# Refused revision\n\nCommit `{judged}` on `{self.config.branch}` is not signed"
            " by an allowed key, so nothing in it was executed. Commits that only touch the"
            " records path are not judged; the next signed commit runs.\n"
        ).encode()
        self.writer.submit(
            {refused_path: message}, f"reconciler: refused unsigned revision {judged[:12]}"
        )
        return False

    async def _refresh(self, head: str) -> None:
        revision = f"{self.config.branch}@sha1:{head}"
        records = await self.git.ls_tree(head, self.config.records_path)  # once a revision
        if self.config.allowed_signers is not None and not await self._verified(head, records):
            return
        desired = await self.cache.desired(self.git, head, self.config.path)
        await self._record_errors(desired.issues)
        recorded = record_files(records)
        await self._record_lost_finals(recorded)
        executions = await self.kube.list_metadata("workflowexecutions", execution_path())
        live = {meta["name"] for meta in executions}
        names = {w.name for w in desired.workflows}
        for loaded in desired.workflows:
            if loaded.run_id in recorded or loaded.run_id in live:
                continue
            handle = self.running.get(loaded.name)
            if handle is not None and handle.loaded.run_id == loaded.run_id:
                continue
            log.info("queued %s (%s)", loaded.run_id, loaded.file, extra={"run_id": loaded.run_id})
            self.queued[loaded.name] = (loaded, revision)
        for name in list(self.queued):
            if name not in names:
                del self.queued[name]
        for name, handle in self.running.items():
            if name not in names and not handle.cancel.is_set():
                log.info("workflow %s was deleted while running: cancelling", name)
                handle.cancel.set()
        self.metrics.queue_depth.set(len(self.queued))
        await self._prune_executions(executions, recorded)

    async def _plan_branches(self) -> None:
        """The pull-request view: for a matching branch, validate, plan and server-side dry-run
        every workflow, and commit the plans to that branch; nothing is executed."""
        heads = await self.git.remote_heads()
        for branch, sha in sorted(heads.items()):
            if branch == self.config.branch or not fnmatch.fnmatch(
                branch, self.config.plan_branches or ""
            ):
                continue
            if self.planned.get(branch) == sha:
                continue
            head = await self.git.fetch(branch)
            if head is None:
                continue
            desired = await self.cache.desired(self.git, head, self.config.path)
            dry = Kube(self.kube.api, dry_run=True, capture_namespace=self.kube.capture_namespace)
            base = f"{self.config.records_path.rstrip('/')}/plans/{branch}"
            files: dict[str, bytes | None] = {}
            for loaded in desired.workflows:
                try:
                    dry_run = "\n".join(await dry_run_workflow(dry, loaded))
                except Exception as err:  # the plan must still be written
                    dry_run = f"server-side dry run failed: {err}"
                files[f"{base}/{loaded.name}.md"] = plan_markdown(loaded, branch, head, dry_run)
            if desired.issues:
                files[f"{base}/_errors.md"] = errors_markdown(desired.issues)
            if files:
                pushed = await self.git.push_files(
                    files, f"reconciler: plan for {branch}", branch=branch
                )
                log.info("planned branch %s (%d workflow(s))", branch, len(desired.workflows))
                self.planned[branch] = pushed
            else:
                self.planned[branch] = sha

    async def _record_errors(self, issues: list[ManifestIssue]) -> None:
        self.metrics.invalid_manifests.set(len(issues))
        path = f"{self.config.records_path.rstrip('/')}/_errors.md"
        content = errors_markdown(issues) if issues else None
        if content == self.last_errors:
            return
        for issue in issues:
            log.error("invalid manifest: %s", issue)
        self.last_errors = content
        message = (
            f"reconciler: {len(issues)} invalid manifest error(s)"
            if issues
            else "reconciler: all manifests valid"
        )
        self.writer.submit({path: content}, message)

    async def _prune_executions(
        self, items: list[dict[str, Any]], recorded: dict[str, str]
    ) -> None:
        if self.config.execution_history is None:
            return
        candidates = executions_to_prune(
            items, set(recorded), self.config.execution_history, self.labels
        )
        if not candidates:
            return
        # Only once the *final* record is in git: the start record arrives first, and the
        # final one may still wait in the spool (a lost pod would lose it with the spool).
        for name in await self._final_in_git(candidates, recorded):
            await self.kube.delete(
                f"workflowexecution {name}",
                execution_path(name),
                {"propagationPolicy": "Background"},  # its Jobs and capture Secrets go too
            )
            log.info("deleted finished execution %s: its final record is in git", name)

    async def _final_in_git(self, names: list[str], recorded: dict[str, str]) -> set[str]:
        """Those of `names` whose record in git says the run finished (one `cat-file` for
        all). A record someone broke by hand counts as not final."""
        blobs = await self.git.read_blobs([recorded[n] for n in names if n in recorded])
        yaml = YAML(typ="safe", pure=True)
        final = set()
        for name in names:
            if name not in recorded:
                continue
            try:
                doc = yaml.load(blobs.get(recorded[name], b""))
            except Exception:
                continue
            if isinstance(doc, dict) and doc.get("phase") in FINISHED_PHASES:
                final.add(name)
        return final

    # ------------------------------------------------------------------ runs

    def _start_queued(self) -> None:
        for name in list(self.queued):
            if len(self.running) >= self.config.max_concurrent_workflows:
                break
            if name in self.running:
                continue  # the running version finishes first
            loaded, revision = self.queued.pop(name)
            self._start(loaded, revision)
        self.metrics.queue_depth.set(len(self.queued))

    def _start(self, loaded: LoadedWorkflow, revision: str | None) -> None:
        cancel = asyncio.Event()
        task = asyncio.create_task(self._run(loaded, revision, cancel), name=loaded.run_id)
        self.running[loaded.name] = RunHandle(loaded, task, cancel)
        self.metrics.runs_active.set(len(self.running))

    async def _run(
        self, loaded: LoadedWorkflow, revision: str | None, cancel: asyncio.Event
    ) -> RunRecord | None:
        async def commit_start(record: RunRecord, t: Transition) -> None:
            if (
                t.scope == "run"
                and t.phase == RunPhase.RUNNING.value
                and not record.execution_order
            ):
                self._submit_record(record, loaded.file)

        try:
            record = await run_in_cluster(
                self.kube,
                self.engine,
                loaded,
                revision=revision,
                cancel=cancel,
                labels=self.labels,
                hooks=[self.metrics.hook, log_transition, commit_start],
            )
        except AlreadyRun:
            return None
        except Exception:
            log.exception("run %s crashed", loaded.run_id, extra={"run_id": loaded.run_id})
            self.crashed += 1
            return None
        finally:
            current = self.running.get(loaded.name)
            if current is not None and current.loaded.run_id == loaded.run_id:
                del self.running[loaded.name]
            self.metrics.runs_active.set(len(self.running))
            self.wake.set()  # a slot is free: start what is queued
        failpoints.reached("finished")
        self._submit_final(record, loaded.file)
        return record

    def _submit_final(self, record: RunRecord, source: str) -> None:
        if record.phase != RunPhase.SUCCEEDED:
            self.unsuccessful += 1
        self._submit_record(record, source)

    def _submit_record(self, record: RunRecord, source: str) -> None:
        """The run's record (YAML + Markdown) as one commit, spooled for the writer."""
        yaml_path, md_path = record_paths(self.config.records_path, record.workflow, record.run_id)
        self.writer.submit(
            {
                yaml_path: render_yaml(record, source).encode(),
                md_path: render_markdown(record, source).encode(),
            },
            commit_message(record),
        )

    async def _record_lost_finals(self, recorded: dict[str, str]) -> None:
        """A process that died between a run's final checkpoint and spooling its final
        record (or whose spool died with its pod) left a finished WorkflowExecution whose
        record in git says Running or is missing: write that record from the checkpoint."""
        if not self.unrecorded:
            return
        final = await self._final_in_git(list(self.unrecorded), recorded)
        for name, item in list(self.unrecorded.items()):
            del self.unrecorded[name]
            if name in final:
                continue  # the usual case: it is there
            status = item.get("status") or {}
            try:
                record = record_from_dict(unpack(status["record"]))
            except Exception as err:  # one unreadable checkpoint must not stop the daemon
                log.error("cannot write the final record of %s: %s", name, err)
                continue
            log.warning(
                "the final record of %s never reached git: written from its checkpoint",
                name,
                extra={"run_id": name},
            )
            self._submit_final(record, item["spec"].get("source", ""))

    async def _forget_unstarted(self, item: dict[str, Any], why: str) -> None:
        """A run whose inputs were lost before its first step (the process died between
        creating its execution and keeping its inline Secret values) is forgotten: with the
        execution gone, the next sync queues it again from git."""
        name = item["metadata"]["name"]
        if (item.get("status") or {}).get("record"):
            log.error("cannot resume %s: %s", name, why, extra={"run_id": name})
            return
        log.warning("run %s never started and %s: it starts again", name, why)
        await remove_finalizer(self.kube, name)
        await self.kube.delete(f"workflowexecution {name}", execution_path(name))

    async def _resume_unfinished(self) -> None:
        """Runs a previous leader (or this process before a crash) left unfinished."""
        selector = ",".join(f"{k}={v}" for k, v in self.labels.items())
        listing = await self.kube.get(
            "workflowexecutions", execution_path(), {"labelSelector": selector}
        )
        pending = self.writer.pending_paths()  # spooled records go out anyway
        for item in listing.get("items") or []:
            phase = RunPhase((item.get("status") or {}).get("phase", "Pending"))
            if phase.finished:
                name = item["metadata"]["name"]
                workflow = item["spec"].get("workflow", "")
                if record_paths(self.config.records_path, workflow, name)[0] not in pending:
                    self.unrecorded[name] = item  # checked against git on the first sync
                continue
            spec = item["spec"]
            try:
                workflow = await workflow_of(self.kube, item)
            except InputsLost as err:
                await self._forget_unstarted(item, str(err))
                continue
            except Exception as err:  # one unreadable checkpoint must not stop the daemon
                log.error("cannot resume %s: %s", item["metadata"]["name"], err)
                continue
            loaded = LoadedWorkflow(
                workflow, spec.get("source", ""), 0, spec["contentHash"], item["metadata"]["name"]
            )
            if workflow.metadata.name in self.running:
                continue
            log.info(
                "resuming %s from its checkpoint (%s)",
                loaded.run_id,
                phase.value,
                extra={"run_id": loaded.run_id},
            )
            self._start(loaded, spec.get("revision"))
