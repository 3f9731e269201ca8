"""The WorkflowExecution checkpoint: one cluster object per run, its status the run's state.

Writes are "group commits": every transition marks the status dirty; transitions that must
be durable before the engine moves on (a captured state before its apply, a finished step
before its dependents start, every run phase) wait for a write that includes them, and
concurrent waiters share one write. A 1,000-step workflow thus issues about one write per
finished batch of steps, not one per transition.

What the status holds, and how the record is packed in it, is formats/packing.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from reconciler.attempt import Backoff, attempt
from reconciler.engine.record import (
    RunPhase,
    RunRecord,
    StepPhase,
    Transition,
)
from reconciler.formats.execution import execution_path
from reconciler.formats.packing import RecordPacker, status_of
from reconciler.kube.client import Kube
from reconciler.kube.errors import RETRYABLE

log = logging.getLogger(__name__)
WRITE_BACKOFF = Backoff(initial=0.5, factor=2.0, cap=10.0)

# Transitions that can wait for the next write instead of forcing one.
# Not worth a write of their own: the next durable one carries them. A run that started
# and died before its first step's capture checkpoint has nothing to resume anyway.
LAZY = {("step", StepPhase.RUNNING.value), ("step", StepPhase.RETRYING.value)}
LAZY |= {("run", RunPhase.RUNNING.value)}
LAZY_DELAY = 0.5  # seconds a lazy transition may wait for a write that carries it anyway


class Checkpointer:
    """Writes one run's status; also notices when the object is being deleted."""

    def __init__(self, kube: Kube, execution: dict[str, Any]) -> None:
        self.kube = kube
        self.name = execution["metadata"]["name"]
        self.resource_version = execution["metadata"]["resourceVersion"]
        self.deleting = asyncio.Event()
        self.writes = 0
        self._record: RunRecord | None = None
        self._dirty = False
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self._sleeping = False
        self._packer = RecordPacker()
        self._observe(execution)

    def _observe(self, obj: dict[str, Any]) -> None:
        self.resource_version = obj["metadata"]["resourceVersion"]
        if obj["metadata"].get("deletionTimestamp"):
            self.deleting.set()

    async def hook(self, record: RunRecord, transition: Transition) -> None:
        self._record, self._dirty = record, True
        if (transition.scope, transition.phase) in LAZY:
            if self._background is None or self._background.done():
                self._sleeping = True  # until _flush_soon starts writing
                self._background = asyncio.create_task(self._flush_soon())
            return
        await self.flush()

    async def _flush_soon(self) -> None:
        # A lazy transition (a step started) is usually followed within milliseconds by one
        # that must be durable (its capture, before it changes anything); waiting a moment
        # lets one write carry both, a third fewer status writes for short steps.
        await asyncio.sleep(LAZY_DELAY)
        self._sleeping = False
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self._dirty or self._record is None:
                return
            self._dirty = False
            status = status_of(
                self._record, self._packer
            )  # snapshot now: later changes set dirty again
            self.writes += 1
            status["checkpoints"] = self.writes
            await self._write(status)

    async def _write(self, status: dict[str, Any]) -> None:
        what = f"workflowexecution {self.name}"

        async def once(number: int) -> None:
            if number > 1:  # 409: someone changed the object (e.g. started deleting it)
                with contextlib.suppress(*RETRYABLE):
                    self._observe(await self.kube.get(what, execution_path(self.name)))
            body = {"metadata": {"resourceVersion": self.resource_version}, "status": status}
            obj = await self.kube.merge_patch(what, execution_path(self.name) + "/status", body)
            self._observe(obj)

        def note(_: int, err: Exception, delay: float) -> None:
            log.warning("checkpoint %s not written yet: %s", self.name, err)

        # No retry limit: with the API down the run pauses here, which is what we want
        # (nothing happens unrecorded). A permanent error (403, 422) fails the run loudly.
        await attempt(
            once,
            retryable=lambda err: isinstance(err, RETRYABLE),
            backoff=WRITE_BACKOFF,
            on_retry=note,
        )

    async def watch_deletion(self, interval: float = 1.0) -> None:
        """Poll for `kubectl delete`: the finalizer holds the object while we roll back."""
        while not self.deleting.is_set():
            await asyncio.sleep(interval)
            try:
                obj = await self.kube.find(
                    f"workflowexecution {self.name}", execution_path(self.name)
                )
            except RETRYABLE:
                continue
            except Exception:  # a watcher that died would make `kubectl delete` a no-op
                log.exception("watching %s for deletion failed; watching on", self.name)
                continue
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                self.deleting.set()

    async def close(self) -> None:
        if self._background is not None and not self._background.done():
            if self._sleeping:  # not mid-write: the flush below writes what it waited for
                self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        await self.flush()
