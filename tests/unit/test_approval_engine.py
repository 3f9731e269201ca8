"""A step's `approval` in the engine (docs/approvals.md): the run waits, says how to decide,
goes on once approved, fails (and rolls back) when rejected or timed out, and keeps the
wait's start across a restart. Approvals come from a double; git's side is
tests/unit/test_approvals.py. Also what validate says of an `approval` against the policy."""

from __future__ import annotations

import asyncio
import copy
import random
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeActions, FakeApprovals, run_virtual, workflow
from test_policy import ED25519, ED25519_B
from test_resume import Crash

from reconciler.engine.clock import Clock
from reconciler.engine.record import RunPhase, RunRecord, StepPhase, record_from_dict
from reconciler.engine.runner import Engine
from reconciler.formats.packing import status_of
from reconciler.manifest.loader import load_text
from reconciler.manifest.policy import DEFAULT_PROTECTED, Policy

APPROVAL = {"required": 1, "approvers": ["sre-leads"], "timeout": "30m"}


def gated(**approval: Any) -> Any:
    return workflow(
        [
            {"name": "prepare"},
            {"name": "drain", "dependsOn": ["prepare"], "approval": {**APPROVAL, **approval}},
        ],
        timeout="2h",
    )


def run_with(
    wf: Any, approvals: FakeApprovals | None, decide_after: float | None = None, **decision: Any
) -> tuple[RunRecord, list[Any]]:
    seen: list[Any] = []

    async def hook(record: RunRecord, t: Any) -> None:
        if t.phase == "WaitingForApproval":
            seen.append((copy.deepcopy(record.steps[t.step].message), status_of(record)))

    async def main() -> RunRecord:
        engine = Engine(FakeActions(), clock=Clock(wall_start=0.0), rng=random.Random(1))
        task = asyncio.create_task(engine.run(wf, hook=hook, approvals=approvals))
        if decide_after is not None and approvals is not None:
            await asyncio.sleep(decide_after)
            approvals.decide("drain", **decision)
        return await task

    return run_virtual(main), seen


def crash_when(wf: Any, approvals: FakeApprovals, predicate: Any) -> dict[str, Any]:
    """Run until `predicate(transition)`, as test_resume's, with approvals to wait on."""
    checkpoint: dict[str, Any] = {}

    async def main() -> None:
        async def hook(record: RunRecord, t: Any) -> None:
            checkpoint.clear()
            checkpoint.update(copy.deepcopy(record.to_dict()))
            if predicate(t):
                raise Crash

        with pytest.raises(Crash):
            await Engine(FakeActions(), hook=hook, clock=Clock(wall_start=0.0)).run(
                wf, approvals=approvals
            )

    run_virtual(main)
    return checkpoint


def test_the_run_waits_says_how_to_approve_and_goes_on_once_approved() -> None:
    approvals = FakeApprovals()
    record, seen = run_with(gated(), approvals, 600, outcome="approved", by="alice@example.com")
    assert record.phase == RunPhase.SUCCEEDED, record.message
    message, status = seen[0]
    assert f"reconciler approve {record.run_id} drain" in message
    assert f"approvals/{record.run_id}/drain/<you>.yaml" in message
    assert status["phase"] == "WaitingForApproval"
    assert "drain (WaitingForApproval)" in status["currentStep"]
    drain = record.steps["drain"]
    assert drain.approval is not None and drain.approval["outcome"] == "approved"
    assert drain.approval["approvedBy"][0]["approver"] == "alice@example.com"
    assert drain.started is not None and drain.started >= 600  # only after the approval


def test_a_rejection_fails_the_step_and_rolls_back_what_ran() -> None:
    approvals = FakeApprovals()
    record, _ = run_with(gated(), approvals, 60, outcome="rejected", by="bob@example.com")
    drain = record.steps["drain"]
    assert drain.phase == StepPhase.FAILED and drain.attempts == []
    assert (drain.message or "").startswith("approval: rejected by bob@example.com (commit c0ffee")
    assert record.phase == RunPhase.ROLLED_BACK
    assert [e.step for e in record.rollback.entries] == ["prepare"]  # type: ignore[union-attr]


def test_no_decision_by_the_timeout_fails_the_step() -> None:
    record, _ = run_with(gated(required=2, timeout="1h"), FakeApprovals())
    drain = record.steps["drain"]
    assert drain.phase == StepPhase.FAILED
    assert drain.message == "approval: 0 of 2 approval(s) within 1h; timed out"
    assert (
        drain.finished is not None
        and 3600 <= drain.finished - (drain.approval or {})["requested"] < 3600 + 6
    )
    assert record.phase == RunPhase.ROLLED_BACK


def test_without_an_approvals_source_the_step_fails_clearly() -> None:
    record, _ = run_with(gated(), None)
    assert record.steps["drain"].message == (
        "approval: this run has no approvals to read (only the daemon reads them from git)"
    )


def test_a_restart_while_waiting_keeps_when_the_wait_began() -> None:
    wf = gated(timeout="30m")
    checkpoint = crash_when(wf, FakeApprovals(), lambda t: t.phase == "WaitingForApproval")
    asked = checkpoint["steps"]["drain"]["approval"]["requested"]
    approvals = FakeApprovals()

    async def main() -> RunRecord:
        # the restarted process comes back 20 minutes later: 10 are left
        clock = Clock(wall_start=asked + 1200.0)
        resumed = record_from_dict(copy.deepcopy(checkpoint))
        return await Engine(FakeActions(), clock=clock).run(wf, resume=resumed, approvals=approvals)

    record = run_virtual(main)
    drain = record.steps["drain"]
    assert drain.phase == StepPhase.FAILED and "timed out" in (drain.message or "")
    assert drain.approval is not None and drain.approval["requested"] == asked
    assert drain.finished is not None and drain.finished - asked < 1800 + 6


def test_an_approved_step_is_not_asked_again_after_a_restart() -> None:
    wf = gated()
    approvals = FakeApprovals()
    approvals.decide("drain", "approved")
    checkpoint = crash_when(wf, approvals, lambda t: t.step == "drain" and t.phase == "Running")
    checkpoint["steps"]["drain"]["approval"] = {"outcome": "approved", "requested": 0.0}
    later = FakeApprovals()  # would say waiting
    record = run_virtual(
        lambda: Engine(FakeActions()).run(
            wf, resume=record_from_dict(copy.deepcopy(checkpoint)), approvals=later
        )
    )
    assert record.phase == RunPhase.SUCCEEDED and later.asked == []


# ---------------------------------------------------------------- validate, with a policy

HEAD = """\
apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {name: gated}
spec:
  steps:
    - name: drain
      action: CordonNode
      target: {name: worker-1}
      approval: %s
"""


def problems(tmp_path: Path, approval: str) -> list[str]:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "approvers:\n  people:\n"
        f"    alice@example.com: ['{ED25519}']\n    bob@example.com: ['{ED25519_B}']\n"
        "  groups:\n    sre-leads: [alice@example.com, bob@example.com]\n"
    )
    policy = Policy.load(DEFAULT_PROTECTED, policy_file)
    return [str(i) for i in load_text(HEAD % approval, "wf.yaml", policy).issues]


def test_validate_checks_an_approval_against_the_policys_approvers(tmp_path: Path) -> None:
    assert problems(tmp_path, "{required: 2, approvers: [sre-leads]}") == []
    assert problems(tmp_path, "{approvers: [sre-lead]}") == [
        "wf.yaml:9:7: spec.steps[0].approval: approval.approvers: 'sre-lead' is neither a"
        f" person nor a group under approvers in {tmp_path / 'policy.yaml'}; did you mean"
        " 'sre-leads'?"
    ]
    found = problems(tmp_path, "{required: 3, approvers: [sre-leads]}")
    assert (
        len(found) == 1 and "approval.required is 3, but approval.approvers name only 2" in found[0]
    )
    found = problems(tmp_path, "{required: 0, approvers: [sre-leads]}")
    assert len(found) == 1 and "required" in found[0] and found[0].startswith("wf.yaml:9:")


def test_the_report_says_who_approved_with_which_commit_and_what_did_not_count() -> None:
    from reconciler.formats.run_markdown import render_markdown

    approvals = FakeApprovals()
    record, _ = run_with(
        gated(),
        approvals,
        60,
        outcome="approved",
        by="alice@example.com",
        refused=["approvals/x/drain/mallory.yaml: unsigned commit (commit 123456789abc)"],
    )
    page = render_markdown(record)
    assert "## Approvals" in page and "approved (1 required)" in page
    assert "✅ alice@example.com" in page and "`c0ffeec0ffee`" in page
    assert "mallory.yaml: unsigned commit" in page
