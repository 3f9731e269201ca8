"""Kubernetes Events on a run's WorkflowExecution: run start/end, step failure, rollback.

Best effort: an Event that cannot be written is logged and never fails or pauses a run.
Messages come from the record, which never holds secret values.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from reconciler.engine.record import RunPhase, RunRecord, StepPhase, Transition
from reconciler.formats.execution import API_VERSION, KIND
from reconciler.kube.client import Kube
from reconciler.kube.paths import ns_path

log = logging.getLogger(__name__)
# Events about cluster-scoped objects live in "default", as they do for Nodes.
EVENT_NAMESPACE = "default"
WARNING_PHASES = {
    RunPhase.FAILED,
    RunPhase.PARTIALLY_ROLLED_BACK,
    RunPhase.CANCELLED,
    RunPhase.ROLLED_BACK,
}


def event_for(record: RunRecord, t: Transition) -> tuple[str, str, str] | None:
    """(type, reason, message) for transitions people should see in `kubectl describe`."""
    if t.scope == "run":
        phase = RunPhase(t.phase)
        if phase == RunPhase.RUNNING:
            return (
                "Normal",
                "RunStarted",
                f"run {record.run_id} of {record.workflow} started ({len(record.steps)} steps)",
            )
        if phase == RunPhase.ROLLING_BACK:
            return "Warning", "RollbackStarted", f"rolling back: {record.message}"
        if phase.finished:
            done, total = record.progress()
            kind = "Warning" if phase in WARNING_PHASES else "Normal"
            return (
                kind,
                f"Run{phase.value}",
                f"{phase.value} ({done}/{total} steps): {record.message}",
            )
    if t.scope == "step" and t.phase == StepPhase.FAILED.value and t.step:
        # The first line only: a Job's log tail follows it in the record, and Events are
        # readable by whoever may list them in the namespace, not only by whoever may read
        # the record.
        summary = (record.steps[t.step].message or "").split("\n", 1)[0]
        return "Warning", "StepFailed", f"step {t.step} failed: {summary}"
    if t.scope == "step" and t.phase == StepPhase.WAITING_FOR_APPROVAL.value and t.step:
        return "Normal", "WaitingForApproval", f"step {t.step}: {record.steps[t.step].message}"
    return None


class EventRecorder:
    """Posts a run's Events in order, beside the run: a step never waits for one (the first
    step's write came about 5 ms later for it). `close` sends what is left."""

    def __init__(self, kube: Kube, execution: dict[str, Any]) -> None:
        self.kube = kube
        self.execution = execution
        self._pending: asyncio.Queue[tuple[str, str, str] | None] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None

    async def hook(self, record: RunRecord, t: Transition) -> None:
        found = event_for(record, t)
        if found is None:
            return
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all(), name="events")
        self._pending.put_nowait(found)

    async def close(self) -> None:
        if self._sender is not None:
            self._pending.put_nowait(None)
            await self._sender

    def abandon(self) -> None:
        """The run ended by an exception: Events not sent yet are dropped."""
        if self._sender is not None:
            self._sender.cancel()

    async def _send_all(self) -> None:
        while (found := await self._pending.get()) is not None:
            try:
                await self._post(*found)
            except Exception:  # never let an Event break a run, or stop the next ones
                log.exception("could not record event %s", found[1])

    async def _post(self, kind: str, reason: str, message: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta = self.execution["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": EVENT_NAMESPACE},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "reconciler"},
            "reportingComponent": "reconciler.dev/reconciler",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.call(
                "event",
                lambda: self.kube.request("POST", ns_path("v1", EVENT_NAMESPACE, "events"), body),
                fenced=True,  # a leader past its lease writes nothing, Events included
            )
        except Exception as err:  # never let an Event break a run
            log.warning("could not record event %s on %s: %s", reason, meta["name"], err)
