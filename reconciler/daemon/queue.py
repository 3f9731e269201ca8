"""The runs waiting and the runs running, and the limits between them: at most
--max-concurrent-workflows at once, one at a time per workflow name (a changed workflow
waits for its running version to finish)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from reconciler.daemon.sync import Decision
from reconciler.engine.record import RunRecord
from reconciler.manifest.loader import LoadedWorkflow


@dataclass
class RunHandle:
    loaded: LoadedWorkflow
    task: asyncio.Task[RunRecord | None]
    cancel: asyncio.Event


@dataclass
class Waiting:
    loaded: LoadedWorkflow
    revision: str | None


class RunQueue:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting: dict[str, Waiting] = {}  # workflow name -> its newest run, in order
        self.running: dict[str, RunHandle] = {}

    def running_ids(self) -> dict[str, str]:
        return {name: h.loaded.run_id for name, h in self.running.items()}

    def cancelling(self) -> set[str]:
        return {name for name, h in self.running.items() if h.cancel.is_set()}

    def apply(self, decision: Decision, revision: str) -> list[str]:
        """Queue and drop what `decision` says; cancel deleted runs. Returns the names of
        runs told to cancel."""
        for loaded in decision.queue:
            self.waiting[loaded.name] = Waiting(loaded, revision)
        for name in decision.dequeue:
            self.waiting.pop(name, None)
        for name in decision.cancel:
            self.running[name].cancel.set()
        return decision.cancel

    def ready(self) -> list[Waiting]:
        """Take what may start now, in queue order."""
        started = []
        for name in list(self.waiting):
            if len(self.running) + len(started) >= self.limit:
                break
            if name in self.running:
                continue  # the running version finishes first
            started.append(self.waiting.pop(name))
        return started

    def add(self, handle: RunHandle) -> None:
        self.running[handle.loaded.name] = handle

    def finished(self, loaded: LoadedWorkflow) -> None:
        current = self.running.get(loaded.name)
        if current is not None and current.loaded.run_id == loaded.run_id:
            del self.running[loaded.name]

    def idle(self) -> bool:
        return not self.running and not self.waiting
