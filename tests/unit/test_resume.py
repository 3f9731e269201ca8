"""Crash safety at the engine level: a run resumed from its last checkpoint never applies a
finished step again, re-applies interrupted steps from the state captured before their first
change, and finishes an interrupted rollback without undoing anything twice."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fakes import FakeActions, Script, run_virtual, workflow

from reconciler.engine.clock import Clock
from reconciler.engine.errors import PermanentError
from reconciler.engine.record import (
    RunPhase,
    RunRecord,
    StepPhase,
    Transition,
    UndoResult,
    record_from_dict,
)
from reconciler.engine.runner import Engine


class Crash(BaseException):
    """Stands for kill -9: not an Exception, so no step handler can catch and record it."""


class CountingActions(FakeActions):
    def __init__(self, scripts: dict[str, Script] | None = None) -> None:
        super().__init__(scripts)
        self.captures: list[str] = []

    async def capture(self, step, ctx):  # type: ignore[no-untyped-def]
        self.captures.append(step.name)
        return await super().capture(step, ctx)


def crash_when(wf, actions, predicate) -> dict[str, Any]:
    """Run until `predicate(transition)`; return the last checkpoint (a deep copy)."""
    checkpoint: dict[str, Any] = {}

    async def main() -> None:
        async def hook(record: RunRecord, t: Transition) -> None:
            checkpoint.clear()
            checkpoint.update(copy.deepcopy(record.to_dict()))
            if predicate(t):
                raise Crash  # the process dies right after this checkpoint

        with pytest.raises(Crash):
            await Engine(actions, hook=hook, clock=Clock(wall_start=START)).run(wf)

    run_virtual(main)
    return checkpoint


def resume(wf, actions, checkpoint) -> RunRecord:
    async def main() -> RunRecord:
        return await Engine(actions).run(wf, resume=record_from_dict(checkpoint))

    return run_virtual(main)


START = 1_800_000_000.0
CHAIN = [{"name": "a"}, {"name": "b", "dependsOn": ["a"]}, {"name": "c", "dependsOn": ["b"]}]


def test_crash_mid_step_resumes_without_reapplying_finished_steps() -> None:
    wf = workflow(CHAIN)
    first = CountingActions()
    checkpoint = crash_when(wf, first, lambda t: t.step == "b" and t.phase == "Captured")
    assert checkpoint["steps"]["a"]["phase"] == "Succeeded"
    assert checkpoint["steps"]["b"]["captured"] == {"before": "original"}
    second = CountingActions()
    second.state = dict(first.state)  # the cluster outlives the daemon
    record = resume(wf, second, checkpoint)
    assert record.phase == RunPhase.SUCCEEDED
    assert second.order("apply") == ["b", "c"]  # a is never applied again
    assert second.captures == ["c"]  # b keeps the state captured before its first change
    assert record.execution_order == ["a", "b", "c"]
    assert len(record.steps["b"].attempts) == 2  # the interrupted attempt stays on record


def test_crash_during_rollback_finishes_it_without_undoing_twice() -> None:
    wf = workflow(CHAIN + [{"name": "d", "dependsOn": ["c"]}])
    first = CountingActions({"d": Script(errors=[PermanentError("boom")])})
    checkpoint = crash_when(wf, first, lambda t: t.scope == "rollback" and t.step == "c")
    assert checkpoint["phase"] == "RollingBack"
    second = CountingActions()
    second.state = dict(first.state)
    record = resume(wf, second, checkpoint)
    assert record.phase == RunPhase.ROLLED_BACK
    assert first.order("undo") == ["c"] and second.order("undo") == ["b", "a"]
    assert [(e.step, e.result) for e in record.rollback.entries] == [
        ("c", UndoResult.UNDONE),
        ("b", UndoResult.UNDONE),
        ("a", UndoResult.UNDONE),
    ]
    assert second.state == {"a": "original", "b": "original", "c": "original"}


def test_resume_after_a_recorded_failure_goes_straight_to_rollback() -> None:
    wf = workflow(CHAIN)
    first = CountingActions({"b": Script(errors=[PermanentError("boom")])})
    checkpoint = crash_when(wf, first, lambda t: t.step == "b" and t.phase == "Failed")
    second = CountingActions()
    second.state = dict(first.state)
    record = resume(wf, second, checkpoint)
    assert second.order("apply") == []
    assert record.phase == RunPhase.ROLLED_BACK
    assert second.order("undo") == ["a"]
    assert record.steps["c"].phase == StepPhase.SKIPPED


def test_record_round_trips_through_its_dict() -> None:
    wf = workflow(CHAIN)

    async def main() -> RunRecord:
        return await Engine(FakeActions({"c": Script(errors=[PermanentError("x")])})).run(wf)

    record = run_virtual(main)
    assert record_from_dict(record.to_dict()) == record


def test_resume_rejects_a_checkpoint_of_another_run() -> None:
    wf = workflow(CHAIN)
    other = workflow(CHAIN, name="other")

    async def main() -> RunRecord:
        done = await Engine(FakeActions()).run(other)
        return await Engine(FakeActions()).run(wf, resume=done)

    with pytest.raises(ValueError, match="checkpoint is for other-"):
        run_virtual(main)


def test_resumed_run_keeps_its_workflow_deadline() -> None:
    wf = workflow([{"name": "a"}, {"name": "b", "dependsOn": ["a"]}], timeout="100s")
    first = CountingActions({"a": Script(duration=90)})
    checkpoint = crash_when(wf, first, lambda t: t.step == "a" and t.phase == "Succeeded")
    second = CountingActions({"b": Script(duration=60)})

    async def main() -> RunRecord:
        restarted = Clock(wall_start=START + 90)  # the daemon comes back right away
        return await Engine(second, clock=restarted).run(wf, resume=record_from_dict(checkpoint))

    record = run_virtual(main)
    assert record.reason == "WorkflowTimeout"  # 90s were already spent; b cannot take 60s more


def test_crash_between_capture_and_apply_still_undoes_that_step() -> None:
    """The process dies right after b's capture is checkpointed; b's apply may or may not
    have reached the cluster (here it did). After the restart b's apply is refused before
    changing anything: the rollback must still undo b, from its captured state."""
    wf = workflow(CHAIN)
    first = CountingActions()
    checkpoint = crash_when(wf, first, lambda t: t.step == "b" and t.phase == "Captured")
    second = CountingActions({"b": Script(errors=[PermanentError("refused")])})
    second.state = {**first.state, "b": "changed"}  # the apply that landed before the crash
    record = resume(wf, second, checkpoint)
    assert record.phase == RunPhase.ROLLED_BACK
    assert second.order("undo") == ["b", "a"]
    assert second.state["b"] == "original"
