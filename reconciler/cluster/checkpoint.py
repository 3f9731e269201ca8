"""The WorkflowExecution checkpoint: one cluster object per run, its status the run's state.

Writes are "group commits": every transition marks the status dirty; transitions that must
be durable before the engine moves on (a captured state before its apply, a finished step
before its dependents start, every run phase) wait for a write that includes them, and
concurrent waiters share one write. A 1,000-step workflow thus issues about one write per
finished batch of steps, not one per transition.

Size: the full record (attempts, captured state, rollback) is stored gzip+base64 in
status.record; the readable per-step list is kept only up to 500 steps. A 10,000-step run's
status stays far below etcd's 1.5 MiB object limit (see docs/operations.md).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from reconciler.engine.errors import PermanentError, TransientError
from reconciler.engine.record import (
    RECORD_FIELDS,
    RunRecord,
    StepPhase,
    StepRecord,
    Transition,
    UndoResult,
    plain,
)
from reconciler.kube.client import Kube, cluster_path

log = logging.getLogger(__name__)

API_VERSION = "reconciler.dev/v1alpha1"
KIND = "WorkflowExecution"
PLURAL = "workflowexecutions"
FINALIZER = "reconciler.dev/rollback-before-delete"
MAX_STEPS_IN_STATUS = 500
# Transitions that can wait for the next write instead of forcing one.
LAZY = {("step", StepPhase.RUNNING.value), ("step", StepPhase.RETRYING.value)}
LAZY_DELAY = 0.5  # seconds a lazy transition may wait for a write that carries it anyway


def execution_path(name: str | None = None) -> str:
    return cluster_path(API_VERSION, PLURAL, name)


def pack(value: Any) -> str:
    return _pack_json(json.dumps(value, separators=(",", ":"), sort_keys=True))


def _pack_json(text: str) -> str:
    # level 6, not gzip's 9: the record is packed on every checkpoint write, and 9 costs
    # several times the CPU for ~15% smaller output
    return base64.b64encode(gzip.compress(text.encode(), compresslevel=6, mtime=0)).decode()


class RecordPacker:
    """Packs one run's record for every checkpoint write, re-serialising only the steps that
    changed since the last write: serialising all of them each time made a long run's
    checkpointing quadratic (a 500-step sequential run spent most of its CPU here)."""

    def __init__(self) -> None:
        # step name -> (signature, captured, result, JSON); holding captured and result
        # keeps their identity meaningful (a freed object's id could be reused)
        self._steps: dict[str, tuple[tuple[Any, ...], Any, Any, str]] = {}

    def pack(self, record: RunRecord) -> str:
        head = {name: plain(getattr(record, name)) for name in RECORD_FIELDS if name != "steps"}
        steps = ",".join(
            f"{json.dumps(name)}:{self._step_json(step)}" for name, step in record.steps.items()
        )
        text = json.dumps(head, separators=(",", ":"), sort_keys=True)
        return _pack_json(f'{text[:-1]},"steps":{{{steps}}}}}')

    def _step_json(self, step: StepRecord) -> str:
        last = step.attempts[-1] if step.attempts else None
        signature = (
            step.phase,
            step.started,
            step.finished,
            step.changed,
            step.message,
            step.continue_on_failure,
            tuple(step.depends_on),
            len(step.attempts),
            (last.started, last.finished, last.error, last.error_kind) if last else None,
        )
        cached = self._steps.get(step.name)
        if (
            cached is not None
            and cached[0] == signature
            and cached[1] is step.captured
            and cached[2] is step.result
        ):
            return cached[3]
        text = json.dumps(plain(step), separators=(",", ":"), sort_keys=True)
        self._steps[step.name] = (signature, step.captured, step.result, text)
        return text


def unpack(text: str) -> Any:
    return json.loads(gzip.decompress(base64.b64decode(text)))


def rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_reference(execution: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": execution["metadata"]["name"],
        "uid": execution["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def status_of(record: RunRecord, packer: RecordPacker | None = None) -> dict[str, Any]:
    done, total = record.progress()
    running = [
        s.name for s in record.steps.values() if s.phase in (StepPhase.RUNNING, StepPhase.RETRYING)
    ]
    status: dict[str, Any] = {
        "phase": record.phase.value,
        "reason": record.reason,
        "message": record.message,
        "progress": f"{done}/{total}",
        "currentStep": ", ".join(running[:3])
        + (f" (+{len(running) - 3})" if len(running) > 3 else "")
        or None,
        "startTime": rfc3339(record.started),
        "completionTime": rfc3339(record.finished),
        "stepCounts": dict(Counter(s.phase.value for s in record.steps.values())),
        "record": (packer or RecordPacker()).pack(record),
    }
    if total <= MAX_STEPS_IN_STATUS:
        status["steps"] = [
            {
                "name": s.name,
                "phase": s.phase.value,
                "attempts": len(s.attempts),
                **({"message": s.message[:300]} if s.message else {}),
            }
            for s in record.steps.values()
        ]
    if record.rollback is not None:
        counts = Counter(e.result for e in record.rollback.entries)
        status["rollback"] = {
            "reason": record.rollback.reason,
            "undone": counts[UndoResult.UNDONE],
            "failed": counts[UndoResult.FAILED],
            "irreversible": counts[UndoResult.IRREVERSIBLE],
            "notReached": counts[UndoResult.NOT_REACHED],
        }
    # None stays: the status is written as a JSON merge patch, where null clears a field
    # (a finished run has no current step any more).
    return status


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
        delay = 0.5
        while True:
            body = {"metadata": {"resourceVersion": self.resource_version}, "status": status}
            try:
                obj = await self.kube.merge_patch(
                    f"workflowexecution {self.name}", execution_path(self.name) + "/status", body
                )
                self._observe(obj)
                return
            except TransientError as err:
                # 409: someone changed the object (e.g. started deleting it); refresh, retry.
                # API down: the run pauses here, which is what we want (nothing unrecorded).
                log.warning("checkpoint %s not written yet: %s", self.name, err)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
                with contextlib.suppress(TransientError):
                    self._observe(
                        await self.kube.get(
                            f"workflowexecution {self.name}", execution_path(self.name)
                        )
                    )
            except PermanentError:
                raise

    async def watch_deletion(self, interval: float = 1.0) -> None:
        """Poll for `kubectl delete`: the finalizer holds the object while we roll back."""
        while not self.deleting.is_set():
            await asyncio.sleep(interval)
            try:
                obj = await self.kube.find(
                    f"workflowexecution {self.name}", execution_path(self.name)
                )
            except TransientError:
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
