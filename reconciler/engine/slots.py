"""The global step limit: a counting semaphore whose waiters are served in priority order.

Each workflow already starts its ready steps longest-remaining-critical-path first; across
workflows, a plain FIFO semaphore would undo that: a long chain would queue each of its
steps behind every ready step of the wide workflows beside it and finish last. Serving the
longest remaining critical path first across all workflows keeps the whole batch's makespan
near its lower bound.

Priority alone could starve: a short workflow would wait as long as longer paths keep
arriving, and an author could jump the queue by declaring huge timeouts. So a step that has
waited longer than MAX_WAIT is served before any priority, oldest first: priority decides
among steps that contend for a while, and nobody waits much longer than MAX_WAIT plus one
step's duration.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Mapping

MAX_WAIT = 60.0  # seconds a step may be passed over by higher priorities


class PrioritySlots:
    """`enqueue()` returns a ticket (a future) that completes when the slot is granted;
    `free()` gives a granted slot back, or withdraws a ticket still waiting."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the step limit must be at least 1")
        self.limit = limit
        self._free = limit
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._arrivals: deque[tuple[float, asyncio.Future[None]]] = deque()  # oldest first
        self._order = itertools.count()

    def enqueue(self, priority: float) -> asyncio.Future[None]:
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._free > 0:  # then nobody is waiting: release() serves waiters first
            self._free -= 1
            ticket.set_result(None)
        else:
            heapq.heappush(self._waiters, (-priority, next(self._order), ticket))
            self._arrivals.append((asyncio.get_running_loop().time(), ticket))
        return ticket

    def free(self, ticket: asyncio.Future[None]) -> None:
        if ticket.done() and not ticket.cancelled():
            self._release()
        else:
            ticket.cancel()  # withdrawn; _release() skips it

    def _release(self) -> None:
        while self._arrivals and self._arrivals[0][1].done():
            self._arrivals.popleft()  # granted by priority, or withdrawn
        if self._arrivals:
            arrived, oldest = self._arrivals[0]
            if asyncio.get_running_loop().time() - arrived > MAX_WAIT:
                self._arrivals.popleft()
                oldest.set_result(None)  # waited long enough: before any priority
                return
        while self._waiters:
            _, _, ticket = heapq.heappop(self._waiters)
            if not ticket.done():
                ticket.set_result(None)  # the slot passes straight to the best waiter
                return
        self._free += 1


class RunTickets:
    """One run's tickets for the global step limit (None: no limit), by step name."""

    def __init__(self, slots: PrioritySlots | None) -> None:
        self.slots = slots
        self.held: dict[str, asyncio.Future[None]] = {}  # held, or waited for
        self.done: list[str] = []

    def take(self, name: str, priority: float) -> asyncio.Future[None] | None:
        if self.slots is None:
            return None
        ticket = self.held[name] = self.slots.enqueue(priority)
        return ticket

    def finished(self, name: str) -> None:
        self.done.append(name)

    def give_back_finished(self) -> None:
        """Finished steps give their slots back only after the steps they unblocked have
        queued: a chain's next step competes for the slot its parent frees instead of
        finding it taken by whoever was already waiting."""
        for name in self.done:
            if self.slots is not None and name in self.held:
                self.slots.free(self.held.pop(name))
        self.done.clear()

    def give_back_all(self, running: Mapping[str, asyncio.Task[None]]) -> None:
        """Every slot goes back when its step's task ends, bound now: the caller's next
        await can itself be cancelled (shutdown), and a slot freed by nobody is lost."""
        slots = self.slots
        if slots is None:
            return
        for name, ticket in self.held.items():
            task = running.get(name)
            if task is None or task.done():
                slots.free(ticket)
            else:
                task.add_done_callback(lambda _, t=ticket: slots.free(t))
        self.held.clear()
