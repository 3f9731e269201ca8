"""Engine benchmark: planning time, engine overhead per step, makespan vs the lower bound.

Run: `make bench` (or `python bench/engine_bench.py [--sizes 100,1000,10000] [--seed N]`).
Prints a table; the baseline (plain declaration order instead of our critical-path
priority) is measured in the same run on the same DAGs. No thresholds are asserted here or
in tests: the figures go into the closing notes and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from typing import Any

import looptime

from reconciler.engine.dag import Dag
from reconciler.engine.runner import Engine
from reconciler.manifest.durations import format_duration
from reconciler.manifest.schema import Workflow


def layered_workflow(n: int, rng: random.Random, max_concurrent: int) -> Workflow:
    """Random layered DAG: layers of random width; each step depends on 1-3 steps of the
    previous layers (mostly the one just before). Durations 1s-60s, used as the timeout, which
    is the estimate the scheduler sees."""
    steps: list[dict[str, Any]] = []
    layers: list[list[str]] = []
    while len(steps) < n:
        width = min(n - len(steps), rng.randint(1, max(2, int(n**0.5))))
        layer = []
        for _ in range(width):
            name = f"s{len(steps)}"
            deps: set[str] = set()
            if layers:
                for _ in range(rng.randint(1, 3)):
                    source = layers[-1] if rng.random() < 0.7 else rng.choice(layers)
                    deps.add(rng.choice(source))
            steps.append(
                {
                    "name": name,
                    "action": "RestartDeployment",
                    "target": {"namespace": "bench", "name": name},
                    "dependsOn": sorted(deps),
                    "timeout": f"{rng.randint(1, 60)}s",
                }
            )
            layer.append(name)
        layers.append(layer)
    rng.shuffle(steps)  # declaration order carries no hint about the critical path
    return Workflow.model_validate(
        {
            "apiVersion": "reconciler.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "bench"},
            "spec": {"maxConcurrent": max_concurrent, "timeout": "1000h", "steps": steps},
        }
    )


class SleepActions:
    """Each step takes exactly its timeout estimate minus a hair (so it never times out)."""

    def __init__(self, durations: dict[str, float] | None) -> None:
        self.durations = durations

    async def capture(self, step, ctx):  # type: ignore[no-untyped-def]
        return {}

    async def apply(self, step, captured, ctx):  # type: ignore[no-untyped-def]
        if self.durations is not None:
            await asyncio.sleep(self.durations[step.name])
        return None

    async def wait(self, step, captured, ctx):  # type: ignore[no-untyped-def]
        return None

    async def undo(self, step, captured, ctx):  # type: ignore[no-untyped-def]
        return None


def time_planning(wf: Workflow, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        dag = Dag.from_workflow(wf)
        dag.levels()
        dag.critical_path()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def engine_overhead(wf: Workflow) -> float:
    """Real wall time per step with no-op actions: pure scheduling and bookkeeping cost."""
    engine = Engine(SleepActions(None))
    start = time.perf_counter()
    record = asyncio.run(engine.run(wf))
    elapsed = time.perf_counter() - start
    assert record.phase == "Succeeded", record.message
    return elapsed / len(wf.spec.steps)


def makespan(wf: Workflow, durations: dict[str, float], declaration_order: bool) -> float:
    """Virtual-time makespan of a real engine run (looptime: sleeps cost nothing)."""
    original = Dag._priorities
    if declaration_order:
        Dag._priorities = lambda self: dict.fromkeys(self.nodes, 0.0)  # type: ignore[method-assign]
    try:
        loop = looptime.new_event_loop(start=0, _enabled=True)
        engine = Engine(SleepActions(durations))

        async def main() -> float:
            t0 = asyncio.get_running_loop().time()
            record = await engine.run(wf)
            assert record.phase == "Succeeded", record.message
            return asyncio.get_running_loop().time() - t0

        try:
            return loop.run_until_complete(main())
        finally:
            loop.close()
    finally:
        Dag._priorities = original  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--dags", type=int, default=3, help="random DAGs per size")
    parser.add_argument("--max-concurrent", type=int, default=8)
    args = parser.parse_args()

    print(
        f"engine benchmark  seed={args.seed}  maxConcurrent={args.max_concurrent}  "
        f"dags/size={args.dags}  python={sys.version.split()[0]}"
    )
    header = (
        f"{'steps':>6} | {'plan ms':>8} | {'overhead ms/step':>16} | "
        f"{'makespan/LB ours':>16} | {'makespan/LB decl.':>17} | {'LB (virtual)':>12}"
    )
    print(header)
    print("-" * len(header))
    for size in (int(s) for s in args.sizes.split(",")):
        plan, overhead, ours, baseline, bounds = [], [], [], [], []
        for i in range(args.dags):
            rng = random.Random(args.seed + size * 31 + i)
            wf = layered_workflow(size, rng, args.max_concurrent)
            durations = {s.name: s.timeout * 0.999 for s in wf.spec.steps}
            dag = Dag.from_workflow(wf)
            bound = dag.lower_bound(args.max_concurrent, durations)
            plan.append(time_planning(wf, repeats=5 if size >= 10000 else 20))
            overhead.append(engine_overhead(wf))
            ours.append(makespan(wf, durations, declaration_order=False) / bound)
            baseline.append(makespan(wf, durations, declaration_order=True) / bound)
            bounds.append(bound)
        print(
            f"{size:>6} | {statistics.median(plan) * 1000:>8.2f} | "
            f"{statistics.median(overhead) * 1000:>16.3f} | "
            f"{max(ours):>16.4f} | {max(baseline):>17.4f} | "
            f"{format_duration(statistics.median(bounds)):>12}"
        )
    print("plan ms: median time to build the DAG, levels and critical path.")
    print("overhead: real wall time per step with no-op actions (median over DAGs).")
    print("makespan/LB: worst ratio over the DAGs; LB = max(critical path, work/maxConcurrent).")


if __name__ == "__main__":
    main()
