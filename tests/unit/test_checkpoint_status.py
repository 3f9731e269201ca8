"""What the WorkflowExecution status holds, and that it stays compact."""

from __future__ import annotations

import json
import random

from fakes import FakeActions, Script, run_virtual, workflow

from reconciler.cluster.events import event_for
from reconciler.engine.clock import Clock
from reconciler.engine.errors import PermanentError
from reconciler.engine.record import RunRecord, Transition
from reconciler.engine.runner import Engine
from reconciler.formats.packing import MAX_STEPS_IN_STATUS, status_of, unpack


def run(wf, actions) -> RunRecord:
    async def main() -> RunRecord:
        return await Engine(
            actions, clock=Clock(wall_start=1_800_000_000), rng=random.Random(1)
        ).run(wf)

    return run_virtual(main)


def test_status_summarises_and_carries_the_full_record() -> None:
    wf = workflow([{"name": "a"}, {"name": "b", "dependsOn": ["a"]}])
    record = run(wf, FakeActions({"b": Script(errors=[PermanentError("boom")])}))
    status = status_of(record)
    assert status["phase"] == "RolledBack"
    assert status["progress"] == "1/2"
    assert status["startTime"] == "2027-01-15T08:00:00Z"
    assert status["stepCounts"] == {"Succeeded": 1, "Failed": 1}
    assert status["rollback"] == {
        "reason": "StepFailed",
        "undone": 1,
        "failed": 0,
        "irreversible": 0,
        "notReached": 0,
    }
    assert [s["phase"] for s in status["steps"]] == ["Succeeded", "Failed"]
    assert unpack(status["record"]) == record.to_dict()


def test_ten_thousand_step_status_stays_far_below_etcd_limit() -> None:
    steps = [
        {"name": f"s{i}", "dependsOn": [f"s{i - 1}"] if i % 100 else []} for i in range(10_000)
    ]
    record = run(workflow(steps, maxConcurrent=50), FakeActions())
    status = status_of(record)
    size = len(json.dumps(status))
    assert "steps" not in status and len(record.steps) > MAX_STEPS_IN_STATUS
    assert size < 1_000_000, size  # etcd's default request limit is 1.5 MiB


def test_events_for_run_and_step_failures() -> None:
    wf = workflow([{"name": "a"}, {"name": "b", "dependsOn": ["a"]}])
    record = run(wf, FakeActions({"b": Script(errors=[PermanentError("boom")])}))
    assert event_for(record, Transition("run", "Running"))[1] == "RunStarted"
    kind, reason, message = event_for(record, Transition("step", "Failed", "b"))
    assert (kind, reason) == ("Warning", "StepFailed") and "boom" in message
    assert event_for(record, Transition("run", "RolledBack"))[:2] == ("Warning", "RunRolledBack")
    assert event_for(record, Transition("step", "Running", "a")) is None


def test_a_failed_jobs_log_tail_stays_out_of_its_event() -> None:
    wf = workflow([{"name": "a"}])
    failure = PermanentError(
        "job shop/x failed: BackoffLimitExceeded\nlog tail:\nDB_PASSWORD=hunter2"
    )
    record = run(wf, FakeActions({"a": Script(errors=[failure])}))
    assert "hunter2" in (record.steps["a"].message or "")  # the record keeps it
    _, _, message = event_for(record, Transition("step", "Failed", "a"))
    assert message == "step a failed: job shop/x failed: BackoffLimitExceeded"


class CountingKube:
    """Stands in for the API: records each status write."""

    def __init__(self) -> None:
        self.writes: list[dict] = []

    async def merge_patch(self, what: str, path: str, body: dict) -> dict:
        self.writes.append(body["status"])
        return {"metadata": {"resourceVersion": str(len(self.writes))}}


def checkpointer_and_record():
    from reconciler.cluster.checkpoint import Checkpointer
    from reconciler.engine.record import StepPhase, StepRecord

    kube = CountingKube()
    cp = Checkpointer(kube, {"metadata": {"name": "w-1", "resourceVersion": "0"}})  # type: ignore[arg-type]
    record = RunRecord(workflow="w", run_id="w-1", content_hash="h", max_concurrent=1)
    record.steps["a"] = StepRecord(name="a", action="X", depends_on=[], phase=StepPhase.RUNNING)
    return kube, cp, record


def test_a_started_step_rides_on_the_durable_write_that_follows_it() -> None:
    import asyncio

    kube, cp, record = checkpointer_and_record()

    async def main() -> None:
        await cp.hook(record, Transition("step", "Running", "a"))  # lazy
        assert kube.writes == []
        record.steps["a"].captured = {"replicas": 1}
        await cp.hook(record, Transition("step", "Captured", "a"))  # must be durable now
        assert len(kube.writes) == 1
        await asyncio.sleep(1)  # the lazy write finds nothing left to write
        await cp.close()

    asyncio.run(main())
    assert len(kube.writes) == 1
    assert unpack(kube.writes[0]["record"])["steps"]["a"]["captured"] == {"replicas": 1}


def test_close_writes_a_pending_lazy_transition_without_waiting() -> None:
    import asyncio
    import time

    kube, cp, record = checkpointer_and_record()

    async def main() -> float:
        await cp.hook(record, Transition("step", "Running", "a"))
        started = time.monotonic()
        await cp.close()
        return time.monotonic() - started

    took = asyncio.run(main())
    assert len(kube.writes) == 1 and kube.writes[0]["currentStep"] == "a"
    assert took < 0.4  # close did not sit out the lazy delay


def test_packer_reuses_unchanged_steps_yet_always_packs_the_record_as_it_is() -> None:
    """After every transition of a run with retries, a failure and a rollback, the cached
    packing equals a fresh one: no step's change is ever missed."""
    from reconciler.engine.errors import TransientError
    from reconciler.formats.packing import RecordPacker, pack

    packer, compared = RecordPacker(), []

    async def hook(record: RunRecord, transition: Transition) -> None:
        fresh = unpack(pack(record.to_dict()))
        assert unpack(packer.pack(record)) == fresh, transition
        compared.append(transition)

    wf = workflow(
        [
            {"name": "a"},
            {"name": "b", "dependsOn": ["a"], "retry": {"limit": 2, "backoff": "1s"}},
            {"name": "c", "dependsOn": ["a"]},
            {"name": "d", "dependsOn": ["b", "c"]},
        ],
        maxConcurrent=2,
    )
    actions = FakeActions(
        {
            "b": Script(errors=[TransientError("429"), None]),
            "d": Script(errors=[PermanentError("boom")]),
        }
    )

    async def main() -> RunRecord:
        engine = Engine(actions, clock=Clock(wall_start=1_800_000_000), rng=random.Random(1))
        return await engine.run(wf, hook=hook)

    record = run_virtual(main)
    assert record.phase == "RolledBack" and len(compared) > 15
