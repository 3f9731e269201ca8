"""Checkpoint benchmark: CPU to pack the run record into the WorkflowExecution status, for
one write and for a whole sequential run (three transitions per step, each may write), at 10
to 500 steps. The baseline is the first implementation (dataclasses.asdict, which
deep-copies every leaf, and gzip level 9), measured in the same run on the same records.

Run: `make bench` or `python bench/checkpoint_bench.py`.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from enum import StrEnum
from typing import Any

from reconciler.engine.record import Attempt, RunRecord, StepPhase, StepRecord
from reconciler.formats.packing import RecordPacker


def record(steps: int) -> RunRecord:
    run = RunRecord(workflow="w", run_id="w-0123456789", content_hash="h" * 64, max_concurrent=4)
    for j in range(steps):
        run.steps[f"step-{j}"] = StepRecord(
            name=f"step-{j}",
            action="UpdateConfigMap",
            depends_on=[f"step-{j - 1}"] if j else [],
            phase=StepPhase.SUCCEEDED,
            started=1_800_000_000.0 + j,
            finished=1_800_000_000.5 + j,
            attempts=[Attempt(1, 1_800_000_000.0 + j, 1_800_000_000.5 + j)],
            captured={"data": {f"key-{k}": f"value {j}.{k}" for k in range(10)}},
            changed=True,
        )
    return run


def baseline_pack(run: RunRecord) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value.value if isinstance(value, StrEnum) else value

    raw = json.dumps(plain(asdict(run)), separators=(",", ":"), sort_keys=True).encode()
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode()


def current_pack(run: RunRecord) -> str:
    return RecordPacker().pack(run)


def per_call_ms(fn: Callable[[RunRecord], str], run: RunRecord, repeat: int) -> float:
    fn(run)
    started = time.perf_counter()
    for _ in range(repeat):
        fn(run)
    return (time.perf_counter() - started) / repeat * 1000


def sequential_run_s(steps: int, packer: Callable[[RunRecord], str]) -> float:
    """A sequential run as the checkpoint sees it: each step starts, captures, succeeds,
    and each of the three transitions packs the whole record."""
    run = record(steps)
    for step in run.steps.values():
        step.phase, step.finished, step.attempts, step.captured = StepPhase.PENDING, None, [], None
    started = time.perf_counter()
    for j, step in enumerate(run.steps.values()):
        step.phase, step.started = StepPhase.RUNNING, 1_800_000_000.0 + j
        step.attempts = [Attempt(1, step.started)]
        packer(run)
        step.captured = {"data": {f"key-{k}": f"value {j}.{k}" for k in range(10)}}
        packer(run)
        step.phase, step.finished = StepPhase.SUCCEEDED, step.started + 0.5
        step.attempts[0].finished = step.finished
        packer(run)
    return time.perf_counter() - started


def main() -> None:
    same = [json.loads(gzip.decompress(base64.b64decode(p(record(3))))) for p in PACKERS]
    assert same[0] == same[1], "both must pack the same record"
    print("checkpoint: CPU to pack the run record, lower is better")
    print(
        f"{'steps':>6} {'one write, baseline ms':>23} {'now ms':>7} "
        f"{'whole run, baseline s':>22} {'now s':>6} {'speed-up':>9} {'packed KiB':>11}"
    )
    for steps in (10, 100, 500):
        run = record(steps)
        repeat = max(5, 2000 // steps)
        base, now = per_call_ms(baseline_pack, run, repeat), per_call_ms(current_pack, run, repeat)
        run_base = sequential_run_s(steps, baseline_pack)
        cached = RecordPacker()  # one per run, as the Checkpointer holds it
        run_now = sequential_run_s(steps, cached.pack)
        size = len(current_pack(run)) / 1024
        print(
            f"{steps:>6} {base:>23.2f} {now:>7.2f} {run_base:>22.2f} {run_now:>6.2f} "
            f"{run_base / run_now:>8.1f}x {size:>11.1f}"
        )


PACKERS = (baseline_pack, current_pack)

if __name__ == "__main__":
    main()
