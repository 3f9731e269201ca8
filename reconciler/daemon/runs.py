"""Starting queued runs and seeing them through: each run is a task that runs its workflow
in the cluster (cluster/run.py) and spools its start and final records for the writer."""

from __future__ import annotations

import asyncio
import logging

from reconciler import failpoints
from reconciler.cluster.run import AlreadyRun, run_in_cluster
from reconciler.daemon.queue import RunHandle, RunQueue, Waiting
from reconciler.engine.interface import Approvals
from reconciler.engine.record import RunPhase, RunRecord, StepPhase, Transition
from reconciler.engine.runner import Engine
from reconciler.formats.run_record import commit_message, record_files
from reconciler.gitops.recordwriter import RecordWriter
from reconciler.kube.client import Kube
from reconciler.manifest.loader import LoadedWorkflow
from reconciler.manifest.policy import Policy
from reconciler.observability.logs import log_transition
from reconciler.observability.metrics import Metrics

log = logging.getLogger("reconciler.daemon")
START_RECORD_DELAY = 0.25  # s after a run starts, its Running record is spooled


class Runs:
    def __init__(
        self,
        kube: Kube,
        engine: Engine,
        queue: RunQueue,
        writer: RecordWriter,
        metrics: Metrics,
        labels: dict[str, str],
        records_path: str,
        wake: asyncio.Event,
        policy: Policy,
        prometheus_url: str | None = None,
        approvals: Approvals | None = None,
    ) -> None:
        self.approvals = approvals
        self.policy = policy
        self.prometheus_url = prometheus_url
        self.kube = kube
        self.engine = engine
        self.queue = queue
        self.writer = writer
        self.metrics = metrics
        self.labels = labels
        self.records_path = records_path
        self.wake = wake
        self.key: bytes | None = None  # signs the runs' executions (cluster/keys.py)
        self.unsuccessful = 0  # runs that did not succeed (--once exits 1)
        self.crashed = 0

    def start_ready(self) -> None:
        for waiting in self.queue.ready():
            self.start(waiting.loaded, waiting.revision)
        self.metrics.queue_depth.set(len(self.queue.waiting))

    def start(self, loaded: LoadedWorkflow, revision: str | None) -> None:
        cancel = asyncio.Event()
        task = asyncio.create_task(self._run(Waiting(loaded, revision), cancel), name=loaded.run_id)
        self.queue.add(RunHandle(loaded, task, cancel))
        self.metrics.runs_active.set(len(self.queue.running))

    async def _run(self, waiting: Waiting, cancel: asyncio.Event) -> RunRecord | None:
        loaded = waiting.loaded

        loop = asyncio.get_running_loop()
        start_record: list[tuple[dict[str, bytes | None], str]] = []  # rendered, not spooled
        due: asyncio.TimerHandle | None = None

        def render_start(record: RunRecord) -> None:  # as the run looked when it started
            files = record_files(self.records_path, record, loaded.file)
            start_record.append((files, commit_message(record)))

        def spool_start() -> None:
            while start_record:
                self.writer.submit(*start_record.pop(0))

        async def commit_start(record: RunRecord, t: Transition) -> None:
            nonlocal due
            starting = t.scope == "run" and t.phase == RunPhase.RUNNING.value
            # and when a step waits for people: its record in git says how to decide
            asking = t.scope == "step" and t.phase == StepPhase.WAITING_FOR_APPROVAL.value
            if starting and not record.execution_order:
                # Rendered once the step's first request is out; handed to the writer a
                # quarter second later, or when the run ends if that is sooner (before its
                # final record): its commit and push are git processes that would compete
                # with the first step's requests for the CPU.
                loop.call_soon(render_start, record)
                due = loop.call_later(START_RECORD_DELAY, spool_start)
            elif asking:
                spool_start()
                loop.call_soon(self.submit, record, loaded.file)

        try:
            record = await run_in_cluster(
                self.kube,
                self.engine,
                loaded,
                revision=waiting.revision,
                cancel=cancel,
                labels=self.labels,
                key=self.key,
                policy=self.policy,
                prometheus_url=self.prometheus_url,
                observe=self.metrics.measured,
                hooks=[self.metrics.hook, log_transition, commit_start],
                approvals=self.approvals,
            )
        except AlreadyRun:
            return None
        except Exception:  # the run's own fault; the daemon and the other runs go on
            log.exception("run %s crashed", loaded.run_id, extra={"run_id": loaded.run_id})
            self.crashed += 1
            return None
        finally:
            if due is not None:
                due.cancel()
            spool_start()
            self.queue.finished(loaded)
            self.metrics.runs_active.set(len(self.queue.running))
            self.wake.set()  # a slot is free: start what is queued
        failpoints.reached("finished")
        self.submit_final(record, loaded.file)
        return record

    def submit_final(self, record: RunRecord, source: str) -> None:
        if record.phase != RunPhase.SUCCEEDED:
            self.unsuccessful += 1
        self.submit(record, source)

    def submit(self, record: RunRecord, source: str) -> None:
        """The run's record (YAML + Markdown) as one commit, spooled for the writer."""
        self.writer.submit(record_files(self.records_path, record, source), commit_message(record))
