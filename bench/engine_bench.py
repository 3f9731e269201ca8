"""Engine benchmark: planning time, engine overhead per step, makespan vs the lower bound.

Run: `make bench` (or `python bench/engine_bench.py [--sizes 100,1000,10000] [--seed N]`).
Prints a table; the baseline (plain declaration order instead of our critical-path
priority) is measured in the same run on the same DAGs. No thresholds are asserted here or
in tests: the figures go into the closing notes and docs/benchmarks.md.

The scheduler ranks steps by their estimate (the step timeout). Two makespan columns each:
every step taking exactly its estimate (perfect information, the best case) and every step
taking its estimate times a seeded random factor between 0.5 and 2 (log-uniform; relative
to half the timeout, so none times out), as real steps do; the lower bound is computed
from the durations the steps really took. The overhead is measured without a hook and
with the real checkpoint writer (packing the record and coalescing writes as in the
cluster; only the API call is an in-memory stand-in).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import math
import random
import statistics
import sys
import time
from typing import Any

import looptime

from reconciler.cluster.checkpoint import Checkpointer
from reconciler.engine.dag import Dag
from reconciler.engine.runner import Engine
from reconciler.manifest.durations import format_duration
from reconciler.manifest.schema import Workflow

ERROR_RANGE = (0.5, 2.0)  # actual duration / estimate


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


class StatusSink:
    """Takes the checkpoint writer's status patches in memory (the API call is all that is
    left out): a resourceVersion per write, like the API server's answer."""

    def __init__(self) -> None:
        self.writes = 0

    async def merge_patch(self, what: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.writes += 1
        return {"metadata": {"resourceVersion": str(self.writes)}}


def engine_overhead(wf: Workflow, checkpoint: bool) -> float:
    """Real wall time per step with no-op actions: scheduling and bookkeeping, and with
    `checkpoint` the checkpoint writer's packing and coalescing on every transition."""
    engine = Engine(SleepActions(None))

    async def main() -> Any:
        hook = None
        writer = None
        if checkpoint:
            execution = {"metadata": {"name": "bench-0", "resourceVersion": "0"}}
            writer = Checkpointer(StatusSink(), execution)  # type: ignore[arg-type]
            hook = writer.hook
        record = await engine.run(wf, hook=hook)
        if writer is not None:
            await writer.close()
        return record

    start = time.perf_counter()
    record = asyncio.run(main())
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


def generic_makespan(wf: Workflow, durations: dict[str, float], parallelism: int) -> float:
    """The schedule Argo's and Tekton's DAG executors produce, simulated by code of its own
    (not our engine): whenever a step finishes, the ready steps start in declaration order
    up to the parallelism limit. Argo's DAG template walks its tasks in declaration order
    and starts each whose dependencies are done while `parallelism` allows; Tekton starts
    every ready task (no limit inside a pipeline: tektoncd/pipeline#2591), which at the
    same limit is the same order."""
    steps = wf.spec.steps
    index = {s.name: i for i, s in enumerate(steps)}
    waiting_on = {s.name: len(s.depends_on) for s in steps}
    dependents: dict[str, list[str]] = {s.name: [] for s in steps}
    for s in steps:
        for dep in s.depends_on:
            dependents[dep].append(s.name)
    ready = [index[s.name] for s in steps if not s.depends_on]  # a heap: declaration order
    heapq.heapify(ready)
    running: list[tuple[float, int]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < parallelism:
            i = heapq.heappop(ready)
            heapq.heappush(running, (now + durations[steps[i].name], i))
        now, i = heapq.heappop(running)
        for later in dependents[steps[i].name]:
            waiting_on[later] -= 1
            if waiting_on[later] == 0:
                heapq.heappush(ready, index[later])
    return now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--dags", type=int, default=3, help="random DAGs per size")
    parser.add_argument("--max-concurrent", type=int, default=8)
    parser.add_argument(
        "--checkpoint-max",
        type=int,
        default=1000,
        help="measure +ckpt up to this size (each write packs the whole record: the cost per"
        " step grows with the run, a 10,000-step run would take hours here)",
    )
    args = parser.parse_args()

    low, high = ERROR_RANGE
    print(
        f"engine benchmark  seed={args.seed}  maxConcurrent={args.max_concurrent}  "
        f"dags/size={args.dags}  actual/estimate {low}-{high}  python={sys.version.split()[0]}"
    )
    header = (
        f"{'steps':>6} | {'plan ms':>7} | {'ms/step':>7} | {'+ckpt':>7} | "
        f"{'exact ours':>10} | {'exact decl.':>11} | {'exact A/T':>9} | {'error ours':>10} | "
        f"{'error decl.':>11} | {'error A/T':>9} | {'ours/A/T':>8} | {'LB (error)':>12}"
    )
    print(header)
    print("-" * len(header))
    for size in (int(s) for s in args.sizes.split(",")):
        plan, bare, ckpt = [], [], []
        ratios: dict[str, list[float]] = {k: [] for k in ("eo", "ed", "eg", "ro", "rd", "rg")}
        versus: list[float] = []  # our makespan / theirs, estimates off
        bounds = []
        for i in range(args.dags):
            rng = random.Random(args.seed + size * 31 + i)
            wf = layered_workflow(size, rng, args.max_concurrent)
            dag = Dag.from_workflow(wf)
            exact = {s.name: s.timeout * 0.999 for s in wf.spec.steps}
            # the estimate is the timeout; a step takes half of it times 0.5-2, so the
            # estimates are off by x0.5 to x2 relative to each other (what the ranking
            # sees) and no step runs into its timeout
            off = {
                s.name: s.timeout * 0.4995 * math.exp(rng.uniform(math.log(low), math.log(high)))
                for s in wf.spec.steps
            }
            plan.append(time_planning(wf, repeats=5 if size >= 10000 else 20))
            bare.append(engine_overhead(wf, checkpoint=False))
            if size <= args.checkpoint_max:
                ckpt.append(engine_overhead(wf, checkpoint=True))
            for key, durations in (("e", exact), ("r", off)):
                bound = dag.lower_bound(args.max_concurrent, durations)
                ours = makespan(wf, durations, False)
                theirs = generic_makespan(wf, durations, args.max_concurrent)
                ratios[key + "o"].append(ours / bound)
                ratios[key + "d"].append(makespan(wf, durations, True) / bound)
                ratios[key + "g"].append(theirs / bound)
                if key == "r":
                    versus.append(ours / theirs)
            bounds.append(dag.lower_bound(args.max_concurrent, off))
        print(
            f"{size:>6} | {statistics.median(plan) * 1000:>7.2f} | "
            f"{statistics.median(bare) * 1000:>7.3f} | "
            f"{f'{statistics.median(ckpt) * 1000:.3f}' if ckpt else 'not run':>7} | "
            f"{max(ratios['eo']):>10.4f} | {max(ratios['ed']):>11.4f} | "
            f"{max(ratios['eg']):>9.4f} | {max(ratios['ro']):>10.4f} | "
            f"{max(ratios['rd']):>11.4f} | {max(ratios['rg']):>9.4f} | {max(versus):>8.4f} | "
            f"{format_duration(statistics.median(bounds)):>12}"
        )
    print("plan ms: median time to build the DAG, levels and critical path.")
    print("ms/step: real wall time per step with no-op actions, no hook; +ckpt: with the")
    print("  checkpoint writer as the hook (median over DAGs; not run above --checkpoint-max).")
    print("makespan / lower bound, worst over the DAGs; LB = max(critical path, work /")
    print("  maxConcurrent) of the durations the steps took. exact: each step takes its")
    print(f"  estimate; error: its estimate x {low}-{high}. ours: longest remaining path first;")
    print("  decl.: our engine with declaration order for priority. A/T: the schedule of Argo's")
    print("  and Tekton's DAG executors (ready steps in declaration order up to the limit),")
    print("  simulated by its own code. ours/A/T: our makespan over theirs with estimates off")
    print("  (the worst over the DAGs for us; below 1: ours finishes first).")


if __name__ == "__main__":
    main()
