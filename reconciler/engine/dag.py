"""The step graph: validation, levels, priorities, critical path, and a priority ready-queue.

graphlib.TopologicalSorter does the bookkeeping (prepare / get_ready / done / is_active); we
add one thing it lacks: among ready steps, the one with the longest remaining critical path
(its own duration estimate plus the longest chain after it) goes first, ties by declaration
order. That is the classic list-scheduling rule that keeps makespan near
max(critical path, total work / concurrency).
"""

from __future__ import annotations

import graphlib
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from reconciler.manifest.schema import Workflow


@dataclass(frozen=True)
class Node:
    name: str
    depends_on: tuple[str, ...]
    estimate: float  # seconds; the step timeout is the only estimate a manifest gives


class Dag:
    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.index = {n.name: i for i, n in enumerate(nodes)}
        self.dependents: dict[str, list[str]] = {n.name: [] for n in nodes}
        for n in nodes:
            for dep in n.depends_on:
                self.dependents[dep].append(n.name)
        # Raises graphlib.CycleError (with the cycle) for a graph the manifest checks missed.
        self.topological = list(graphlib.TopologicalSorter(self._graph()).static_order())
        self.priority = self._priorities()

    @classmethod
    def from_workflow(cls, workflow: Workflow) -> Dag:
        return cls([Node(s.name, tuple(s.depends_on), s.timeout) for s in workflow.spec.steps])

    def _graph(self) -> dict[str, tuple[str, ...]]:
        return {name: node.depends_on for name, node in self.nodes.items()}

    def _priorities(self) -> dict[str, float]:
        remaining: dict[str, float] = {}
        for name in reversed(self.topological):
            after = max((remaining[d] for d in self.dependents[name]), default=0.0)
            remaining[name] = self.nodes[name].estimate + after
        return remaining

    def levels(self) -> list[list[str]]:
        """Steps grouped by depth: each level may run together once the previous is done."""
        depth: dict[str, int] = {}
        for name in self.topological:
            depth[name] = 1 + max((depth[d] for d in self.nodes[name].depends_on), default=-1)
        grouped: dict[int, list[str]] = {}
        for name in self.nodes:
            grouped.setdefault(depth[name], []).append(name)
        return [grouped[d] for d in sorted(grouped)]

    def critical_path(self) -> tuple[list[str], float]:
        """The chain of steps with the largest summed estimate, and that sum."""
        if not self.nodes:
            return [], 0.0
        sources = [n for n, node in self.nodes.items() if not node.depends_on]
        name = max(sources, key=lambda n: (self.priority[n], -self.index[n]))
        path = [name]
        while self.dependents[name]:
            name = max(self.dependents[name], key=lambda d: (self.priority[d], -self.index[d]))
            path.append(name)
        return path, self.priority[path[0]]

    def ready_queue(self, done: Iterable[str] = ()) -> ReadyQueue:
        return ReadyQueue(self, done)

    def simulate(
        self, max_concurrent: int, durations: Mapping[str, float] | None = None
    ) -> tuple[list[str], float]:
        """Start order and makespan of a run where each step takes its estimate (or the given
        duration); used by `plan` and the benchmark."""
        durations = durations or {n: node.estimate for n, node in self.nodes.items()}
        queue = self.ready_queue()
        running: list[tuple[float, int, str]] = []
        now, order = 0.0, []
        while queue.is_active():
            while queue.has_ready() and len(running) < max_concurrent:
                name = queue.pop()
                order.append(name)
                heapq.heappush(running, (now + durations[name], self.index[name], name))
            now, _, name = heapq.heappop(running)
            queue.done(name)
        return order, now

    def lower_bound(
        self, max_concurrent: int, durations: Mapping[str, float] | None = None
    ) -> float:
        """No schedule beats max(critical path, total work / concurrency)."""
        durations = durations or {n: node.estimate for n, node in self.nodes.items()}
        longest: dict[str, float] = {}
        for name in self.topological:
            before = max((longest[d] for d in self.nodes[name].depends_on), default=0.0)
            longest[name] = before + durations[name]
        critical = max(longest.values(), default=0.0)
        return max(critical, sum(durations.values()) / max_concurrent)


class ReadyQueue:
    """graphlib's protocol plus priority: `pop()` the best ready step, `done(name)` when it
    finishes, `is_active()` while anything is left."""

    def __init__(self, dag: Dag, done: Iterable[str] = ()) -> None:
        self._dag = dag
        self._sorter = graphlib.TopologicalSorter(dag._graph())
        self._sorter.prepare()
        self._heap: list[tuple[float, int, str]] = []
        self._pull()
        # Resuming a run: steps already complete are marked done in dependency order.
        already = set(done)
        while already:
            ready_done = [item for item in self._heap if item[2] in already]
            if not ready_done:
                break
            for item in ready_done:
                self._heap.remove(item)
                already.discard(item[2])
                self.done(item[2])
            heapq.heapify(self._heap)

    def _pull(self) -> None:
        for name in self._sorter.get_ready():
            heapq.heappush(self._heap, (-self._dag.priority[name], self._dag.index[name], name))

    def has_ready(self) -> bool:
        return bool(self._heap)

    def pop(self) -> str:
        return heapq.heappop(self._heap)[2]

    def done(self, name: str) -> None:
        self._sorter.done(name)
        self._pull()

    def is_active(self) -> bool:
        return self._sorter.is_active()
