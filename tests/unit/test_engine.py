"""The engine on an in-memory action double and a virtual clock (no real sleeping)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import pytest
from fakes import FakeActions, Script, run_virtual, workflow

from reconciler.engine.clock import Clock
from reconciler.engine.errors import PermanentError, TransientError
from reconciler.engine.record import (
    ErrorKind,
    RunPhase,
    RunRecord,
    StepPhase,
    Transition,
    UndoResult,
)
from reconciler.engine.runner import Engine
from reconciler.manifest.schema import Workflow


def run(
    wf: Workflow, actions: FakeActions, **engine_args: Any
) -> tuple[RunRecord, list[Transition]]:
    transitions: list[Transition] = []

    async def hook(record: RunRecord, t: Transition) -> None:
        transitions.append(t)

    async def main() -> RunRecord:
        engine = Engine(
            actions, clock=Clock(wall_start=0.0), rng=random.Random(7), hook=hook, **engine_args
        )
        return await engine.run(wf)

    return run_virtual(main), transitions


def chain(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"name": f"step-{i}", "dependsOn": [f"step-{i - 1}"] if i > 1 else [], **extra}
        for i in range(1, n + 1)
    ]


DIAMOND = [
    {"name": "step-1"},
    {"name": "step-2", "dependsOn": ["step-1"]},
    {"name": "step-3", "dependsOn": ["step-1"]},
    {"name": "step-4", "dependsOn": ["step-2", "step-3"]},
]


# ------------------------------------------------------------------ seed cases


def test_br_workflow_002_diamond_runs_in_dependency_order() -> None:
    record, _ = run(workflow(DIAMOND, maxConcurrent=2), FakeActions())
    assert record.phase == RunPhase.SUCCEEDED
    assert record.execution_order[0] == "step-1"
    assert set(record.execution_order[1:3]) == {"step-2", "step-3"}
    assert record.execution_order[3] == "step-4"
    # step-2 and step-3 really ran side by side
    s2, s3 = record.steps["step-2"], record.steps["step-3"]
    assert s2.started == s3.started == record.steps["step-1"].finished


def test_br_workflow_003_six_independent_steps_never_exceed_max_concurrent() -> None:
    steps = [{"name": f"s{i}"} for i in range(6)]
    actions = FakeActions({f"s{i}": Script(duration=1 + i % 3) for i in range(6)})
    record, _ = run(workflow(steps, maxConcurrent=2), actions)
    assert record.phase == RunPhase.SUCCEEDED
    assert all(s.phase == StepPhase.SUCCEEDED for s in record.steps.values())
    assert actions.max_running == 2
    # measured from the record itself, as a reviewer would
    intervals = [(s.started, s.finished) for s in record.steps.values()]
    for t, _ in intervals:
        assert sum(1 for a, b in intervals if a <= t < b) <= 2


def test_br_workflow_013_failure_in_step_3_rolls_back_2_then_1() -> None:
    actions = FakeActions(
        {"step-3": Script(errors=[PermanentError("deployment shop/app not found")])}
    )
    record, _ = run(workflow(chain(3)), actions)
    assert record.phase == RunPhase.ROLLED_BACK
    assert record.reason == "StepFailed"
    assert actions.order("undo") == ["step-2", "step-1"]
    assert [e.step for e in record.rollback.entries] == ["step-2", "step-1"]
    assert actions.state == {"step-1": "original", "step-2": "original"}
    assert record.steps["step-3"].phase == StepPhase.FAILED
    assert "deployment shop/app not found" in record.message


def test_br_workflow_014_irreversible_step_skipped_and_recorded() -> None:
    steps = [
        {"name": "scale"},
        {
            "name": "kill-pod",
            "action": "DeletePod",
            "target": {"namespace": "shop", "name": "p"},
            "dependsOn": ["scale"],
        },
        {"name": "boom", "dependsOn": ["kill-pod"]},
    ]
    actions = FakeActions({"boom": Script(errors=[PermanentError("no")])})
    record, _ = run(workflow(steps), actions)
    assert record.phase == RunPhase.ROLLED_BACK
    entries = {e.step: e for e in record.rollback.entries}
    assert entries["kill-pod"].result == UndoResult.IRREVERSIBLE
    assert "cannot be undone" in entries["kill-pod"].note
    assert actions.order("undo") == ["scale"]


def test_failed_undo_is_recorded_and_the_other_undos_still_run() -> None:
    actions = FakeActions(
        {
            "step-2": Script(undo_errors=[PermanentError("configmap shop/x is gone")]),
            "step-4": Script(errors=[PermanentError("no")]),
        }
    )
    record, _ = run(workflow(chain(4)), actions)
    assert record.phase == RunPhase.PARTIALLY_ROLLED_BACK
    results = {e.step: e.result for e in record.rollback.entries}
    assert results == {
        "step-3": UndoResult.UNDONE,
        "step-2": UndoResult.FAILED,
        "step-1": UndoResult.UNDONE,
    }
    assert actions.order("undo") == ["step-3", "step-2", "step-1"]


# ------------------------------------------------------------------ phases


@pytest.mark.parametrize(
    ("scripts", "spec", "final", "run_phases"),
    [
        ({}, {}, RunPhase.SUCCEEDED, ["Running", "Succeeded"]),
        (
            {"step-1": Script(errors=[PermanentError("x")])},
            {},
            RunPhase.FAILED,
            ["Running", "Failed"],
        ),
        (
            {"step-2": Script(errors=[PermanentError("x")])},
            {},
            RunPhase.ROLLED_BACK,
            ["Running", "RollingBack", "RolledBack"],
        ),
        (
            {"step-2": Script(errors=[PermanentError("x")])},
            {"rollback": {"onFailure": False}},
            RunPhase.FAILED,
            ["Running", "Failed"],
        ),
        (
            {
                "step-2": Script(errors=[PermanentError("x")]),
                "step-1": Script(undo_errors=[PermanentError("u")]),
            },
            {},
            RunPhase.PARTIALLY_ROLLED_BACK,
            ["Running", "RollingBack", "PartiallyRolledBack"],
        ),
        (
            {"step-2": Script(duration=100)},
            {"timeout": "10s"},
            RunPhase.ROLLED_BACK,
            ["Running", "RollingBack", "RolledBack"],
        ),
    ],
    ids=["success", "first-step-fails", "rollback", "rollback-off", "partial", "workflow-timeout"],
)
def test_run_phase_transitions(
    scripts: dict, spec: dict, final: RunPhase, run_phases: list[str]
) -> None:
    record, transitions = run(workflow(chain(2), **spec), FakeActions(scripts))
    assert record.phase == final
    assert [t.phase for t in transitions if t.scope == "run"] == run_phases
    assert record.phase.finished and record.finished is not None


def test_nothing_to_roll_back_when_the_first_step_fails() -> None:
    actions = FakeActions({"step-1": Script(errors=[PermanentError("forbidden")])})
    record, _ = run(workflow(chain(3)), actions)
    assert record.phase == RunPhase.FAILED
    assert record.rollback is None
    assert actions.order("undo") == []
    assert [s.phase for s in record.steps.values()] == [
        StepPhase.FAILED,
        StepPhase.SKIPPED,
        StepPhase.SKIPPED,
    ]


def test_step_transitions_are_reported_in_order() -> None:
    _, transitions = run(workflow(chain(1)), FakeActions())
    assert [(t.scope, t.phase, t.step) for t in transitions] == [
        ("run", "Running", None),
        ("step", "Running", "step-1"),
        ("step", "Captured", "step-1"),
        ("step", "Succeeded", "step-1"),
        ("run", "Succeeded", None),
    ]


def test_hook_is_awaited_before_the_next_step_starts() -> None:
    """A checkpoint written by the hook is durable before anything else happens."""
    actions = FakeActions()
    hook_done: dict[str, float] = {}

    async def slow_hook(record: RunRecord, t: Transition) -> None:
        await asyncio.sleep(5)  # a slow API server
        if t.scope == "step" and t.phase == "Succeeded":
            hook_done[t.step] = asyncio.get_running_loop().time()

    async def main() -> RunRecord:
        return await Engine(actions, hook=slow_hook).run(workflow(chain(2)))

    run_virtual(main)
    apply_2 = next(c for c in actions.calls if c.step == "step-2")
    assert apply_2.start >= hook_done["step-1"]


# ------------------------------------------------------------------ retries and timeouts


def test_transient_errors_are_retried_with_capped_jittered_backoff() -> None:
    errors = [TransientError("429 too many requests")] * 4 + [None]
    actions = FakeActions({"s": Script(errors=errors, duration=0)})
    wf = workflow(
        [{"name": "s", "retry": {"limit": 4, "backoff": "10s", "factor": 2, "maxBackoff": "25s"}}]
    )
    record, transitions = run(wf, actions)
    step = record.steps["s"]
    assert step.phase == StepPhase.SUCCEEDED
    assert len(step.attempts) == 5
    assert [a.error_kind for a in step.attempts[:4]] == [ErrorKind.TRANSIENT] * 4
    gaps = [b.started - a.finished for a, b in zip(step.attempts, step.attempts[1:], strict=False)]
    for gap, nominal in zip(gaps, [10, 20, 25, 25], strict=True):  # capped at 25s
        assert nominal / 2 <= gap <= nominal
    assert len({round(g, 6) for g in gaps}) == 4  # jitter: no two delays alike
    assert sum(1 for t in transitions if t.phase == "Retrying") == 4
    assert actions.order("apply").count("s") == 5
    # captured once, before the first change, never re-captured from the changed state
    assert sum(1 for t in transitions if t.phase == "Captured") == 1


def test_transient_errors_stop_at_the_retry_limit() -> None:
    actions = FakeActions({"s": Script(errors=[TransientError("503")] * 5)})
    record, _ = run(workflow([{"name": "s", "retry": {"limit": 2, "backoff": "1s"}}]), actions)
    assert record.steps["s"].phase == StepPhase.FAILED
    assert len(record.steps["s"].attempts) == 3
    assert "after 3 attempts" in record.steps["s"].message


def test_permanent_errors_are_never_retried() -> None:
    actions = FakeActions(
        {"s": Script(errors=[PermanentError("404 deployment shop/app not found")])}
    )
    record, _ = run(workflow([{"name": "s", "retry": {"limit": 5}}]), actions)
    assert len(record.steps["s"].attempts) == 1
    assert record.steps["s"].attempts[0].error_kind == ErrorKind.PERMANENT


def test_unknown_exceptions_count_as_permanent() -> None:
    actions = FakeActions({"s": Script(errors=[ValueError("bug")])})
    record, _ = run(workflow([{"name": "s", "retry": {"limit": 5}}]), actions)
    assert len(record.steps["s"].attempts) == 1
    assert record.steps["s"].message == "ValueError: bug"


def test_attempt_timeout_is_recorded_and_retried() -> None:
    actions = FakeActions({"s": Script(duration=120)})
    record, _ = run(
        workflow([{"name": "s", "timeout": "1m", "retry": {"limit": 1, "backoff": "1s"}}]), actions
    )
    step = record.steps["s"]
    assert step.phase == StepPhase.FAILED
    assert [a.error_kind for a in step.attempts] == [ErrorKind.TIMEOUT, ErrorKind.TIMEOUT]
    assert step.attempts[0].error == "attempt timed out after 1m"
    assert step.attempts[0].finished - step.attempts[0].started == pytest.approx(60)


def test_failed_step_whose_change_was_applied_is_undone_too() -> None:
    # apply succeeded, but the rollout never became healthy (wait failed): undo it as well
    actions = FakeActions(
        {"step-2": Script(errors=[PermanentError("rollout stuck")], error_in="wait")}
    )
    record, _ = run(workflow(chain(2)), actions)
    assert actions.order("undo") == ["step-2", "step-1"]
    assert record.phase == RunPhase.ROLLED_BACK


def test_workflow_timeout_cancels_running_steps_then_rolls_back() -> None:
    steps = [{"name": "quick"}, {"name": "slow", "dependsOn": ["quick"]}]
    actions = FakeActions({"slow": Script(duration=600)})
    record, _ = run(workflow(steps, timeout="2m"), actions)
    assert record.reason == "WorkflowTimeout"
    assert record.steps["slow"].phase == StepPhase.CANCELLED
    assert record.steps["slow"].attempts[-1].error_kind == ErrorKind.CANCELLED
    assert actions.order("undo") == ["slow", "quick"]  # slow was mid-change: undone too
    assert record.phase == RunPhase.ROLLED_BACK
    assert record.steps["slow"].finished == pytest.approx(120)


def test_rollback_timeout_leaves_partially_rolled_back() -> None:
    scripts = {f"step-{i}": Script(undo_duration=40) for i in range(1, 4)}
    scripts["step-4"] = Script(errors=[PermanentError("x")])
    record, _ = run(workflow(chain(4), rollback={"timeout": "1m"}), FakeActions(scripts))
    assert record.phase == RunPhase.PARTIALLY_ROLLED_BACK
    results = [(e.step, e.result) for e in record.rollback.entries]
    assert results == [
        ("step-3", UndoResult.UNDONE),
        ("step-2", UndoResult.FAILED),
        ("step-1", UndoResult.NOT_REACHED),
    ]
    assert "rollback timeout 1m exceeded" in record.rollback.entries[1].error


def test_transient_undo_errors_are_retried() -> None:
    actions = FakeActions(
        {
            "step-1": Script(undo_errors=[TransientError("409 conflict"), None]),
            "step-2": Script(errors=[PermanentError("x")]),
        }
    )
    record, _ = run(workflow(chain(2, retry={"limit": 2, "backoff": "1s"})), actions)
    assert record.phase == RunPhase.ROLLED_BACK
    assert record.rollback.entries[0].attempts == 2


# ------------------------------------------------------------------ failure policy


def test_continue_on_failure_lets_dependents_run() -> None:
    steps = [
        {"name": "a"},
        {"name": "optional", "dependsOn": ["a"], "continueOnFailure": True},
        {"name": "b", "dependsOn": ["optional"]},
    ]
    actions = FakeActions({"optional": Script(errors=[PermanentError("meh")])})
    record, _ = run(workflow(steps), actions)
    assert record.phase == RunPhase.SUCCEEDED
    assert record.steps["b"].phase == StepPhase.SUCCEEDED
    assert "failed with continueOnFailure: optional" in record.message
    assert actions.order("undo") == []


def test_running_steps_finish_after_a_failure_and_nothing_new_starts() -> None:
    steps = [{"name": "fails"}, {"name": "long"}, {"name": "after-long", "dependsOn": ["long"]}]
    actions = FakeActions({"fails": Script(duration=1, errors=[None]), "long": Script(duration=30)})
    actions.scripts["fails"] = Script(errors=[PermanentError("bad")], error_in="capture")
    record, _ = run(workflow(steps, maxConcurrent=2), actions)
    assert record.steps["long"].phase == StepPhase.SUCCEEDED  # finished, not cancelled
    assert record.steps["after-long"].phase == StepPhase.SKIPPED
    assert actions.order("undo") == ["long"]


def test_cancel_event_cancels_and_rolls_back() -> None:
    actions = FakeActions({"step-2": Script(duration=1000)})
    cancel = asyncio.Event()

    async def main() -> RunRecord:
        engine = Engine(actions)
        asyncio.get_running_loop().call_later(50, cancel.set)
        return await engine.run(workflow(chain(3)), cancel=cancel)

    record = run_virtual(main)
    assert record.reason == "Cancelled"
    assert record.phase == RunPhase.ROLLED_BACK
    assert record.steps["step-2"].phase == StepPhase.CANCELLED
    assert record.steps["step-3"].phase == StepPhase.SKIPPED
    assert actions.order("undo") == ["step-2", "step-1"]


def test_cancel_with_rollback_off_ends_cancelled() -> None:
    actions = FakeActions({"step-1": Script(duration=1000)})
    cancel = asyncio.Event()

    async def main() -> RunRecord:
        asyncio.get_running_loop().call_later(5, cancel.set)
        return await Engine(actions).run(
            workflow(chain(2), rollback={"onFailure": False}), cancel=cancel
        )

    record = run_virtual(main)
    assert record.phase == RunPhase.CANCELLED
    assert "rollback is off" in record.message


# ------------------------------------------------------------------ limits and priority


def test_global_limit_is_shared_by_concurrent_workflows() -> None:
    actions = FakeActions()
    wf_a = workflow([{"name": f"a{i}"} for i in range(5)], name="wf-a", maxConcurrent=3)
    wf_b = workflow([{"name": f"b{i}"} for i in range(5)], name="wf-b", maxConcurrent=3)

    async def main() -> list[RunRecord]:
        engine = Engine(actions, global_limit=4)
        return await asyncio.gather(engine.run(wf_a), engine.run(wf_b))

    records = run_virtual(main)
    assert all(r.phase == RunPhase.SUCCEEDED for r in records)
    assert actions.max_running == 4


def test_global_slots_go_to_the_longest_remaining_path_across_workflows() -> None:
    """A 5-step chain beside 10 independent steps, 2 global slots, 1 s a step. FIFO slots
    queue each chain step behind the wide workflow's (the batch ends at 9 s); priority keeps
    the chain moving and the batch at its lower bound, max(5, 15 / 2) rounded up: 8 s."""
    actions = FakeActions()
    wide = workflow([{"name": f"w{i}"} for i in range(10)], name="wide", maxConcurrent=10)
    chain = workflow(
        [{"name": "c0"}] + [{"name": f"c{i}", "dependsOn": [f"c{i - 1}"]} for i in range(1, 5)],
        name="chain",
    )

    async def main() -> list[RunRecord]:
        engine = Engine(actions, global_limit=2)
        return await asyncio.gather(engine.run(wide), engine.run(chain))

    records = run_virtual(main)
    start = min(r.started for r in records if r.started is not None)
    ends = {r.workflow: r.finished - start for r in records if r.finished is not None}
    assert all(r.phase == RunPhase.SUCCEEDED for r in records)
    assert actions.max_running == 2
    chain_starts = sorted(s.started - start for s in records[1].steps.values())  # type: ignore[operator]
    assert chain_starts[:4] == [1.0, 2.0, 3.0, 4.0]  # back to back while its path is longest
    assert max(ends.values()) <= 8.0 + 1e-6, ends


def test_priority_cannot_starve_a_short_workflow_past_the_wait_bound() -> None:
    """One global slot, a 10-step chain of 60 s steps whose long timeouts give it top
    priority, and a 1-step workflow with a 5 m timeout arriving just after: the short one is
    served once it has waited MAX_WAIT, not after the whole chain (which would time it out)."""
    actions = FakeActions({f"c{i}": Script(duration=60) for i in range(10)})
    chain = workflow(
        [{"name": "c0", "timeout": "30m"}]
        + [{"name": f"c{i}", "dependsOn": [f"c{i - 1}"], "timeout": "30m"} for i in range(1, 10)],
        name="chain",
    )
    quick = workflow([{"name": "q", "timeout": "1m"}], name="quick", timeout="5m")

    async def main() -> list[RunRecord]:
        engine = Engine(actions, global_limit=1)
        first = asyncio.create_task(engine.run(chain))
        await asyncio.sleep(1)
        return [await engine.run(quick), await first]

    short, long_ = run_virtual(main)
    assert short.phase == RunPhase.SUCCEEDED and long_.phase == RunPhase.SUCCEEDED
    waited = short.steps["q"].started - short.started  # type: ignore[operator]
    assert 60 < waited <= 2 * 60 + 1, waited


def test_a_run_cancelled_twice_still_gives_its_global_slot_back() -> None:
    """The second cancel lands while the cancelled step writes its checkpoint."""

    async def slow_hook(record: RunRecord, t) -> None:
        if t.phase == "Cancelled":
            await asyncio.sleep(1)  # the checkpoint write of the cancelled step

    async def main() -> RunRecord:
        engine = Engine(FakeActions({"a0": Script(duration=100)}), global_limit=1, hook=slow_hook)
        task = asyncio.create_task(engine.run(workflow([{"name": "a0"}], name="wf-a")))
        await asyncio.sleep(5)
        task.cancel()
        await asyncio.sleep(0.5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return await engine.run(workflow([{"name": "b0"}], name="wf-b", timeout="10m"))

    assert run_virtual(main).phase == RunPhase.SUCCEEDED  # the slot was not lost


def test_longest_remaining_path_starts_first() -> None:
    steps = [
        {"name": "short", "timeout": "1m"},
        {"name": "head", "timeout": "1m"},
        {"name": "tail", "dependsOn": ["head"], "timeout": "10m"},
    ]
    record, _ = run(workflow(steps, maxConcurrent=1), FakeActions())
    assert record.execution_order == ["head", "tail", "short"]


def test_equal_priority_keeps_declaration_order() -> None:
    steps = [{"name": n} for n in ["c", "a", "b"]]
    record, _ = run(workflow(steps, maxConcurrent=1), FakeActions())
    assert record.execution_order == ["c", "a", "b"]


def test_permanent_error_after_a_partial_change_is_undone() -> None:
    # e.g. a drain that cordoned the node, then met a pod it may not evict
    actions = FakeActions({"step-2": Script(errors=[PermanentError("cannot evict", changed=True)])})
    record, _ = run(workflow(chain(2)), actions)
    assert actions.order("undo") == ["step-2", "step-1"]
    assert record.steps["step-2"].changed
