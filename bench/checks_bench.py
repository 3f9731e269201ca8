"""Checks benchmark (issue 13): the CPU of one CEL evaluation over a live object, for
1,000 checks parsed once (the daemon's way), against compiling each time (the baseline);
and how soon a failing measurement starts the rollback (the engine on real time), against
the check's interval (the bound: <= 1 s plus the interval).

Run: `make bench` or `python bench/checks_bench.py`.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))

from fakes import FakeActions, Script, workflow

from reconciler.engine.clock import Clock
from reconciler.engine.record import Measurement, Verdict
from reconciler.engine.runner import Engine
from reconciler.manifest import expressions

CONDITION = (
    "has(object.status.readyReplicas) && object.status.readyReplicas == object.spec.replicas"
)


def live_object(i: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"app-{i}", "namespace": "shop", "labels": {"app": f"app-{i}"}},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "app"}]}}},
        "status": {"readyReplicas": 3 if i % 7 else 2, "replicas": 3},
    }


def cel_per_check(objects: list[dict[str, Any]], compile_each: bool) -> float:
    """CPU seconds per evaluation: each condition compiled once, or every time."""
    expressions.compile_condition.cache_clear()
    conditions = [f"{CONDITION} && object.metadata.name == 'app-{i}'" for i in range(len(objects))]
    programs = [expressions.compile_condition(c) for c in conditions]  # at load time
    start = time.process_time()
    for condition, program, obj in zip(conditions, programs, objects, strict=True):
        if compile_each:
            expressions.compile_condition.cache_clear()
            program = expressions.compile_condition(condition)
        expressions.evaluate(program, {"object": obj})
    return (time.process_time() - start) / len(objects)


class FailingChecks:
    """Fails the first measurement; notes when."""

    def __init__(self) -> None:
        self.failed_at: float | None = None

    async def measure(self, check: Any, step: Any, ctx: Any) -> Measurement:
        if self.failed_at is None:  # the rollback measures once more afterwards
            self.failed_at = time.monotonic()
        return Measurement(time.time(), Verdict.FAILED, "0.2", "result = 0.2", True)


class TimedActions(FakeActions):
    def __init__(self) -> None:
        super().__init__()
        self.first_undo: float | None = None

    async def undo(self, step: Any, captured: Any, ctx: Any) -> str | None:
        if self.first_undo is None:
            self.first_undo = time.monotonic()
        return await super().undo(step, captured, ctx)


def failure_to_undo(interval: str) -> float:
    check = {"name": "errors", "prometheus": {"query": "x"}, "successCondition": "result < 0.01"}
    wf = workflow(
        [
            {"name": "a"},
            {"name": "b", "dependsOn": ["a"], "verify": [{**check, "interval": interval}]},
        ]
    )
    actions, checks = TimedActions(), FailingChecks()
    for name in ("a", "b"):
        actions.scripts[name] = Script(duration=0.01, undo_duration=0.01)

    async def main() -> None:
        await Engine(actions, clock=Clock(), rng=random.Random(1)).run(wf, checks=checks)

    asyncio.run(main())
    assert checks.failed_at is not None and actions.first_undo is not None
    return actions.first_undo - checks.failed_at


def main() -> int:
    objects = [live_object(i) for i in range(1_000)]
    parsed = cel_per_check(objects, compile_each=False)
    compiled = cel_per_check(objects, compile_each=True)
    delay = failure_to_undo("30s")
    rows = [
        (
            "CEL per check, parsed once at load (1,000 checks)",
            f"{parsed * 1000:.3f} ms",
            "<= 0.2 ms",
        ),
        ("  baseline: compiled on every evaluation", f"{compiled * 1000:.3f} ms", ""),
        (
            "failing measurement -> first undo (interval 30s)",
            f"{delay * 1000:.1f} ms",
            "<= 1 s + 30 s",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'measured':>12}  target")
    for what, measured, target in rows:
        print(f"{what:<{width}}  {measured:>12}  {target}")
    return 0 if parsed <= 0.0002 and delay <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
