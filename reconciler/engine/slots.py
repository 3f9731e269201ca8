"""The global step limit: a counting semaphore whose waiters are served in priority order.

Each workflow already starts its ready steps longest-remaining-critical-path first; across
workflows, a plain FIFO semaphore would undo that: a long chain would queue each of its
steps behind every ready step of the wide workflows beside it and finish last. Serving the
longest remaining critical path first across all workflows (FIFO among equals) keeps the
whole batch's makespan near its lower bound.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class PrioritySlots:
    """`enqueue()` returns a ticket (a future) that completes when the slot is granted;
    `free()` gives a granted slot back, or withdraws a ticket still waiting."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the step limit must be at least 1")
        self.limit = limit
        self._free = limit
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def enqueue(self, priority: float) -> asyncio.Future[None]:
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._free > 0:  # then nobody is waiting: release() serves waiters first
            self._free -= 1
            ticket.set_result(None)
        else:
            heapq.heappush(self._waiters, (-priority, next(self._order), ticket))
        return ticket

    def free(self, ticket: asyncio.Future[None]) -> None:
        if ticket.done() and not ticket.cancelled():
            self._release()
        else:
            ticket.cancel()  # withdrawn; _release() skips it

    def _release(self) -> None:
        while self._waiters:
            _, _, ticket = heapq.heappop(self._waiters)
            if not ticket.done():
                ticket.set_result(None)  # the slot passes straight to the best waiter
                return
        self._free += 1
