"""A bounded stop: once the daemon has decided to stop (leadership lost, a task that may
not be restarted failed), the process is gone within SHUTDOWN_GRACE seconds, whatever is
still running. A stop that hangs leaves a replica that neither leads nor stands by and that
nothing restarts, since its process never exits. Past the grace, what still runs (each
asyncio task and each thread, where it waits) is logged, so the cause is in the log, and
the process exits with the code it meant to. controller-runtime's managers do the same
(GracefulShutdownTimeout)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import traceback
from types import FrameType

SHUTDOWN_GRACE = 20.0  # seconds; below a pod's default termination grace (30 s)
FRAMES = 3  # the innermost frames of each stack: where it waits, and what called that

log = logging.getLogger(__name__)


def exit_within(grace: float, code: int) -> threading.Timer:
    """From now on the process exits with `code` within `grace` seconds at the latest."""
    loop = asyncio.get_running_loop()
    timer = threading.Timer(grace, _give_up, args=(grace, code, loop))
    timer.name, timer.daemon = "shutdown-deadline", True
    timer.start()
    return timer


def _give_up(grace: float, code: int, loop: asyncio.AbstractEventLoop) -> None:
    log.error(
        "the stop did not finish within %gs: exiting (%d) anyway; still running:\n%s",
        grace,
        code,
        still_running(loop),
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(code)  # threads and tasks that ignore their stop cannot hold the process


def still_running(loop: asyncio.AbstractEventLoop) -> str:
    """Each unfinished task and each thread but this one, with where it waits."""
    lines = []
    try:  # read from another thread than the loop's: the set may change meanwhile
        tasks = [t for t in list(asyncio.all_tasks(loop)) if not t.done()]
    except RuntimeError:
        tasks = []
    for task in sorted(tasks, key=lambda t: t.get_name()):
        lines.append(f"task {task.get_name()}: {_where(_awaiting(task))}")
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        if ident != threading.get_ident():
            lines.append(f"thread {names.get(ident, ident)}: {_where(_outer_to_inner(frame))}")
    return "\n".join(lines) or "nothing (the interpreter's own exit hangs)"


def _awaiting(task: asyncio.Task[object]) -> list[FrameType]:
    """The task's coroutine and what it awaits, down to the innermost (Task.get_stack
    gives the outermost frame only)."""
    frames, coro = [], task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


def _outer_to_inner(frame: FrameType | None) -> list[FrameType]:
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames[::-1]


def _where(frames: list[FrameType]) -> str:
    if not frames:
        return "not started"
    summary = traceback.StackSummary.extract(
        ((f, f.f_lineno) for f in frames[-FRAMES:]), lookup_lines=False
    )
    return " <- ".join(f"{s.name} ({s.filename}:{s.lineno})" for s in reversed(summary))
