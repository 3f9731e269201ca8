"""Every long-running task of the daemon runs under one supervisor: nothing dies silently.

A task that raises is logged with its traceback and counted
(`reconciler_task_restarts_total{task}`); then, as its owner declared when starting it,
either started again after a backoff (for tasks whose state is elsewhere: on disk, in git,
in the cluster) or the supervisor fails, and the daemon ends non-zero so that Kubernetes
restarts the pod. While a task is down, `down()` names it and /readyz answers 503.

Restarts use the delays of reconciler/attempt.py, not its loop: a restart is not another
try of one operation, and a task that ran for a while since its last crash starts its
backoff over (attempt() counts from the first failure on).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from reconciler.attempt import Backoff
from reconciler.observability.metrics import Metrics

log = logging.getLogger(__name__)
RESTART_BACKOFF = Backoff(initial=1.0, factor=2.0, cap=60.0)
HEALTHY_AFTER = 60.0  # a task that ran this long since its last crash starts its backoff over


@dataclass(frozen=True)
class TaskFailed(Exception):
    """A task that may not be restarted raised (or one that must keep running returned)."""

    task: str
    error: str

    def __str__(self) -> str:
        return f"task {self.task} failed: {self.error}"


class Supervisor:
    def __init__(self, metrics: Metrics, backoff: Backoff = RESTART_BACKOFF) -> None:
        self.metrics = metrics
        self.backoff = backoff
        self.rng = random.Random()
        self.failed: asyncio.Future[TaskFailed] | None = None
        self._down: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        restart: bool,
        fatal: tuple[type[Exception], ...] = (),
        may_return: bool = False,
    ) -> None:
        """Run `run()` as task `name`. `restart`: started again after an exception, unless
        the exception is one of `fatal`. `may_return`: the task ending is not a fault."""
        if self.failed is None:
            self.failed = asyncio.get_running_loop().create_future()
        self.metrics.task_restarts.labels(name)  # exported from the start, at 0
        self._tasks[name] = asyncio.create_task(
            self._keep(name, run, restart, fatal, may_return), name=name
        )

    async def _keep(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        restart: bool,
        fatal: tuple[type[Exception], ...],
        may_return: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        crashes = 0
        while True:
            started = loop.time()
            try:
                await run()
            except Exception as err:
                log.exception("task %s crashed", name, extra={"task": name})
                error = f"{type(err).__name__}: {err}"
                if not restart or isinstance(err, fatal):
                    self._fail(name, error)
                    return
            else:
                if may_return:
                    return
                self._fail(name, "ended, but must run for the life of the process")
                return
            crashes = 1 if loop.time() - started > HEALTHY_AFTER else crashes + 1
            delay = self.backoff.delay(crashes, self.rng)
            self._down.add(name)
            self.metrics.task_restarts.labels(name).inc()
            log.warning("restarting task %s in %.1fs", name, delay, extra={"task": name})
            await asyncio.sleep(delay)
            self._down.discard(name)

    def _fail(self, name: str, error: str) -> None:
        self._down.add(name)
        if self.failed is not None and not self.failed.done():
            self.failed.set_result(TaskFailed(name, error))

    def down(self) -> list[str]:
        """Tasks not running now (crashed and waiting to restart, or failed)."""
        return sorted(self._down)

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
