from __future__ import annotations

import graphlib

import pytest

from reconciler.engine.dag import Dag, Node


def dag(spec: dict[str, tuple[tuple[str, ...], float]]) -> Dag:
    return Dag([Node(name, deps, est) for name, (deps, est) in spec.items()])


DIAMOND = {
    "step-1": ((), 1.0),
    "step-2": (("step-1",), 1.0),
    "step-3": (("step-1",), 2.0),
    "step-4": (("step-2", "step-3"), 1.0),
}


def test_diamond_levels_order_and_critical_path() -> None:
    d = dag(DIAMOND)
    assert d.levels() == [["step-1"], ["step-2", "step-3"], ["step-4"]]
    assert d.critical_path() == (["step-1", "step-3", "step-4"], 4.0)
    order, makespan = d.simulate(2)
    assert order == ["step-1", "step-3", "step-2", "step-4"]
    assert makespan == d.lower_bound(2) == 4.0


@pytest.mark.parametrize(
    ("spec", "limit", "bound"),
    [
        ({f"s{i}": ((), 1.0) for i in range(6)}, 2, 3.0),  # total work / concurrency
        ({"a": ((), 5.0), "b": (("a",), 5.0), "c": ((), 1.0)}, 4, 10.0),  # critical path
    ],
)
def test_lower_bound(spec: dict, limit: int, bound: float) -> None:
    assert dag(spec).lower_bound(limit) == bound


def test_cycle_raises_graphlib_cycle_error() -> None:
    with pytest.raises(graphlib.CycleError):
        dag({"a": (("b",), 1.0), "b": (("a",), 1.0)})


def test_ready_queue_resumes_with_steps_already_done() -> None:
    q = dag(DIAMOND).ready_queue(done=["step-1", "step-3"])
    assert q.pop() == "step-2"
    assert not q.has_ready()
    q.done("step-2")
    assert q.pop() == "step-4"
    q.done("step-4")
    assert not q.is_active()


def test_priority_is_remaining_critical_path() -> None:
    assert dag(DIAMOND).priority == {"step-1": 4.0, "step-2": 2.0, "step-3": 3.0, "step-4": 1.0}
