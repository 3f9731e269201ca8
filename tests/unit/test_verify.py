"""A step's `verify` checks, on virtual time with scripted measurements (the engine
boundary: tests/unit/fakes.py): when measurements are taken, what passes and fails, that
a failed verify fails the step after it changed something, so rollback undoes it first,
that nothing is retried or re-applied, and that undone steps are measured once more."""

from __future__ import annotations

import random
from typing import Any

from fakes import FakeActions, FakeChecks, run_virtual, workflow

from reconciler.engine.clock import Clock
from reconciler.engine.record import RunPhase, RunRecord, StepPhase, Verdict
from reconciler.engine.runner import Engine
from reconciler.manifest.schema import Workflow

PROM = {"prometheus": {"query": "sum(rate(errors[2m]))"}, "successCondition": "result < 0.01"}


def run(
    wf: Workflow, checks: FakeChecks, actions: FakeActions | None = None, resume=None
) -> RunRecord:
    actions = actions or FakeActions()

    async def main() -> RunRecord:
        engine = Engine(actions, clock=Clock(wall_start=0.0), rng=random.Random(7))
        return await engine.run(wf, checks=checks, resume=resume)

    return run_virtual(main)


def verified(**check: Any) -> Workflow:
    return workflow(
        [
            {"name": "first"},
            {
                "name": "scale",
                "dependsOn": ["first"],
                "verify": [{"name": "errors", **PROM, **check}],
            },
        ]
    )


def test_measurements_are_taken_after_the_delay_at_the_interval_and_pass() -> None:
    checks = FakeChecks({"errors": ["Passed"]})
    record = run(verified(initialDelay="1m", interval="30s", count=4), checks)
    assert record.phase == RunPhase.SUCCEEDED, record.message
    (check,) = record.steps["scale"].checks
    assert check.verdict == Verdict.PASSED and len(check.measurements) == 4
    start = checks.times("errors")[0]
    assert [t - start for t in checks.times("errors")] == [0, 30, 60, 90]
    assert start >= 60  # after the initial delay, itself after the step's own apply and wait


def test_too_many_failed_measurements_fail_the_step_and_rollback_undoes_it_first() -> None:
    checks = FakeChecks({"errors": ["Passed", "Failed", "Failed"]}, {"errors": ["0.001", "0.08"]})
    actions = FakeActions()
    record = run(verified(count=4, failureLimit=1, interval="10s"), checks, actions)
    assert record.phase == RunPhase.ROLLED_BACK
    step = record.steps["scale"]
    assert step.phase == StepPhase.FAILED and step.changed
    assert step.message.startswith("verify 'errors' failed: result = 0.08 at ")
    assert len(step.checks[0].measurements) == 3  # the third failure is one over the limit
    assert actions.order("undo") == ["scale", "first"]  # the verified step, then its predecessor
    assert len([c for c in actions.calls if c.method == "apply" and c.step == "scale"]) == 1


def test_a_failure_condition_fails_at_once() -> None:
    checks = FakeChecks({"errors": ["Passed", "Failed!"]})
    record = run(verified(count=10, failureLimit=5, failureCondition="result > 0.05"), checks)
    assert record.phase == RunPhase.ROLLED_BACK
    assert len(record.steps["scale"].checks[0].measurements) == 2


def test_inconclusive_measurements_beyond_their_limit_fail_the_check() -> None:
    checks = FakeChecks({"errors": ["Inconclusive"]})
    record = run(verified(count=4, inconclusiveLimit=1), checks)
    step = record.steps["scale"]
    assert step.phase == StepPhase.FAILED and "inconclusive" in step.message
    assert len(step.checks[0].measurements) == 2


def test_a_live_check_polls_until_true_or_its_timeout() -> None:
    live = {"name": "ready", "kubernetes": {"condition": "object.status.readyReplicas == 2"}}
    wf = workflow([{"name": "scale", "verify": [{**live, "interval": "5s", "timeout": "1m"}]}])
    checks = FakeChecks({"ready": ["Failed", "Failed", "Passed"]})
    assert run(wf, checks).phase == RunPhase.SUCCEEDED
    never = FakeChecks({"ready": ["Failed"]})
    record = run(wf, never)
    assert record.phase == RunPhase.ROLLED_BACK
    assert "not true within 60s" in record.steps["scale"].message
    times = [m.time for m in record.steps["scale"].checks[0].measurements]
    assert times[-1] - times[0] == 60 and len(times) == 13  # at 0, 5, ..., 60 s
    assert len(never.times("ready")) == 14  # and once more after the undo


def test_the_first_failing_check_fails_the_step_without_waiting_for_the_others() -> None:
    slow = {"name": "slow", **PROM, "count": 100, "interval": "1m"}
    fast = {"name": "fast", **PROM, "initialDelay": "10s"}
    wf = workflow([{"name": "scale", "verify": [slow, fast]}])
    checks = FakeChecks({"slow": ["Passed"], "fast": ["Failed"]})
    record = run(wf, checks)
    assert record.steps["scale"].phase == StepPhase.FAILED
    assert "'fast'" in record.steps["scale"].message
    slow_record = record.steps["scale"].checks[0]
    assert len(slow_record.measurements) == 1  # cancelled once the fast one failed
    assert record.steps["scale"].finished - checks.times("fast")[0] < 1


def test_undone_steps_are_measured_once_more_for_the_record() -> None:
    checks = FakeChecks({"errors": ["Failed", "Passed"]})
    record = run(verified(), checks)
    assert record.phase == RunPhase.ROLLED_BACK
    after = record.steps["scale"].checks[0].after_rollback
    assert after is not None and after.verdict == Verdict.PASSED  # undoing helped


def test_a_run_resumed_while_verifying_measures_again_and_never_applies_again() -> None:
    checks = FakeChecks({"errors": ["Passed"]})
    wf = verified(count=2)
    first = run(wf, checks)
    assert first.phase == RunPhase.SUCCEEDED
    # the checkpoint as a crash during the verify left it
    crashed = first
    crashed.phase = RunPhase.RUNNING
    crashed.steps["scale"].phase = StepPhase.VERIFYING
    actions = FakeActions()
    again = run(wf, FakeChecks({"errors": ["Passed"]}), actions, resume=crashed)
    assert again.phase == RunPhase.SUCCEEDED
    assert not [c for c in actions.calls if c.method == "apply"]
    assert len(again.steps["scale"].checks[0].measurements) == 2


def test_the_record_shows_every_measurement_and_the_summary_names_the_failed_check() -> None:
    from reconciler.formats.run_markdown import render_markdown
    from reconciler.formats.run_record import render_yaml

    checks = FakeChecks({"errors": ["Passed", "Failed!"]}, {"errors": ["0.004", "0.083"]})
    record = run(verified(count=4, failureCondition="result > 0.05"), checks)
    page = render_markdown(record)
    summary = next(line for line in page.splitlines() if line.startswith("| message "))
    assert "verify 'errors' failed: result = 0.083" in summary and "UTC" in summary
    assert "## Checks" in page
    row = next(line for line in page.splitlines() if line.startswith("| scale | errors |"))
    assert "0.004 Passed" in row and "0.083 Failed" in row and "**Failed**" in row
    assert "`prometheus: sum(rate(errors[2m]))`" in row
    yaml = render_yaml(record)
    assert "measurements:" in yaml and "decisive: true" in yaml and "afterRollback:" in yaml
    assert "applied" not in yaml


GUARD = {
    "name": "no-alerts",
    "prometheus": {"query": 'count(ALERTS{alertstate="firing"}) or vector(0)'},
    "successCondition": "result == 0",
}


def guarded(**guard: Any) -> Workflow:
    return workflow(
        [{"name": "first"}, {"name": "second", "dependsOn": ["first"]}], guards=[{**GUARD, **guard}]
    )


def test_a_guard_that_does_not_hold_keeps_the_step_waiting_until_it_does() -> None:
    checks = FakeChecks(
        {"no-alerts": ["Failed", "Failed", "Passed"]}, {"no-alerts": ["2", "1", "0"]}
    )
    actions = FakeActions()
    record = run(guarded(interval="30s"), checks, actions)
    assert record.phase == RunPhase.SUCCEEDED
    first_apply = next(c for c in actions.calls if c.method == "apply")
    times = checks.times("no-alerts")
    assert times[:3] == [0, 30, 60] and first_apply.start >= 60  # nothing ran while it fired
    guard = record.steps["first"].checks[0]
    assert guard.role == "guard" and [m.value for m in guard.measurements] == ["2", "1", "0"]


def test_a_waiting_guard_is_bounded_by_the_workflow_timeout() -> None:
    checks = FakeChecks({"no-alerts": ["Failed"]})
    actions = FakeActions()
    record = run(
        workflow([{"name": "first"}], guards=[{**GUARD, "interval": "10s"}], timeout="2m"),
        checks,
        actions,
    )
    assert record.phase == RunPhase.FAILED and record.reason == "WorkflowTimeout"
    assert not [c for c in actions.calls if c.method == "apply"]


def test_a_guard_with_on_fail_fail_fails_the_run_before_anything_changes() -> None:
    checks = FakeChecks({"no-alerts": ["Failed"]}, {"no-alerts": ["3"]})
    actions = FakeActions()
    record = run(guarded(onFail="fail"), checks, actions)
    assert record.phase == RunPhase.FAILED
    assert "guard 'no-alerts' does not hold: result = 3" in record.steps["first"].message
    assert not actions.calls and not record.steps["first"].changed


def test_a_guarded_verified_step_rechecks_its_own_checks_after_rollback() -> None:
    """Guards and verify checks share the step's record; "did undoing help?" measures the
    verify checks, each against its own record."""
    wf = workflow([{"name": "scale", "verify": [{"name": "errors", **PROM}]}], guards=[GUARD])
    checks = FakeChecks({"no-alerts": ["Passed"], "errors": ["Failed", "Passed"]})
    record = run(wf, checks)
    guard, verify = record.steps["scale"].checks
    assert (guard.role, verify.role) == ("guard", "verify")
    assert guard.after_rollback is None and verify.after_rollback is not None
    assert verify.after_rollback.verdict == Verdict.PASSED
