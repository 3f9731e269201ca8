"""forEach (docs/fanout.md): targets frozen at the start, sub-steps at most maxConcurrent at
once, the error budget, empty and huge matches, rollback newest first, and a resumed run
doing the same set without applying anything twice. The engine runs on the in-memory double."""

from __future__ import annotations

import copy
import textwrap
from typing import Any

from fakes import FakeActions, Script, run_virtual, workflow
from test_resume import crash_when

from reconciler.engine.errors import PermanentError
from reconciler.engine.record import RunPhase, RunRecord, StepPhase, record_from_dict
from reconciler.engine.runner import Engine
from reconciler.formats.escaping import markdown_text
from reconciler.formats.run_markdown import render_markdown
from reconciler.manifest.fanout import MAX_TARGETS
from reconciler.manifest.loader import load_text

NODES = [f"worker-{i}" for i in range(10)]


def drain(**for_each: Any) -> dict[str, Any]:
    return {
        "name": "drain",
        "action": "DrainNode",
        "target": {},
        "forEach": {"selector": {"kind": "Node", "labelSelector": "pool=old"}, **for_each},
    }


def run(wf: Any, actions: FakeActions) -> RunRecord:
    return run_virtual(lambda: Engine(actions).run(wf))


def subs(record: RunRecord) -> list[str]:
    return [s.name for s in record.steps.values() if s.parent == "drain"]


def test_ten_targets_two_at_a_time() -> None:
    actions = FakeActions()
    actions.matching["pool=old"] = list(reversed(NODES))
    wf = workflow(
        [
            drain(maxConcurrent=2),
            {
                "name": "note",
                "dependsOn": ["drain"],
                "action": "UpdateConfigMap",
                "target": {"namespace": "ops", "name": "log"},
                "params": {"data": {"drained": "${{ steps.drain.outputs.succeeded }}"}},
            },
        ]
    )
    record = run(wf, actions)
    assert record.phase == RunPhase.SUCCEEDED, record.message
    parent = record.steps["drain"]
    assert parent.targets == NODES  # sorted, frozen
    assert parent.peak_concurrent == 2 and actions.max_running == 2
    assert parent.outputs == {"targets": 10, "succeeded": 10, "failed": 0}
    assert parent.message == "10/10 targets succeeded, at most 2 at once"
    assert subs(record) == [f"drain[{n}]" for n in NODES]
    assert actions.applied["drain[worker-3]"].target.name == "worker-3"
    assert actions.applied["note"].params.data == {"drained": "10"}  # type: ignore[attr-defined]
    assert record.progress() == (2, 2)  # targets are not steps
    page = render_markdown(record)
    assert markdown_text("↳ drain[worker-3]") in page


def test_the_error_budget_stops_the_step_and_rollback_undoes_newest_first() -> None:
    actions = FakeActions(
        {
            "drain[worker-2]": Script(errors=[PermanentError("PDB blocks")]),
            "drain[worker-4]": Script(errors=[PermanentError("PDB blocks")]),
        }
    )
    actions.matching["pool=old"] = NODES
    record = run(workflow([drain(maxFailures=1)]), actions)
    parent = record.steps["drain"]
    assert parent.phase == StepPhase.FAILED and parent.message is not None
    assert parent.message.startswith("2 target(s) failed, over maxFailures 1 (1 of 10)")
    assert "worker-2: PDB blocks" in parent.message
    skipped = [s.target for s in record.steps.values() if s.phase == StepPhase.SKIPPED]
    assert skipped == NODES[5:]
    assert "drain[worker-5]" not in actions.order("apply")
    assert record.phase == RunPhase.ROLLED_BACK
    # the ones that changed, newest first; the refused ones changed nothing
    assert actions.order("undo") == ["drain[worker-3]", "drain[worker-1]", "drain[worker-0]"]


def test_a_percentage_budget_rounds_down() -> None:
    actions = FakeActions({"drain[worker-7]": Script(errors=[PermanentError("no")])})
    actions.matching["pool=old"] = NODES
    record = run(workflow([drain(maxFailures="10%", maxConcurrent=3)]), actions)
    assert record.steps["drain"].phase == StepPhase.SUCCEEDED  # 1 of 10 allowed
    assert "1 failed within maxFailures" in (record.steps["drain"].message or "")
    assert record.phase == RunPhase.SUCCEEDED


def test_a_selector_matching_nothing_fails_unless_allow_empty() -> None:
    record = run(workflow([drain()]), FakeActions())
    assert record.steps["drain"].phase == StepPhase.FAILED
    assert record.steps["drain"].message == (
        "forEach: Node with labelSelector 'pool=old' matches nothing, so nothing was done;"
        " set allowEmpty: true if that is fine"
    )
    allowed = run(workflow([drain(allowEmpty=True)]), FakeActions())
    assert allowed.phase == RunPhase.SUCCEEDED
    assert allowed.steps["drain"].outputs == {"targets": 0, "succeeded": 0, "failed": 0}


def test_too_many_targets_fail_before_anything_is_applied() -> None:
    actions = FakeActions()
    actions.matching["pool=old"] = [f"n-{i:05d}" for i in range(10_000)]
    record = run(workflow([drain()]), actions)
    assert record.steps["drain"].phase == StepPhase.FAILED
    assert f"matches more than {MAX_TARGETS} targets" in (record.steps["drain"].message or "")
    assert actions.order("apply") == [] and subs(record) == []


def test_items_name_the_targets_without_listing() -> None:
    actions = FakeActions()
    wf = workflow(
        [
            {
                "name": "drain",
                "action": "CordonNode",
                "target": {},
                "forEach": {"items": ["b", "a"]},
            }
        ]
    )
    record = run(wf, actions)
    assert record.phase == RunPhase.SUCCEEDED and actions.order("targets") == []
    assert actions.order("apply") == ["drain[a]", "drain[b]"]


def test_a_resumed_fan_out_does_the_frozen_set_and_applies_nothing_twice() -> None:
    wf = workflow([drain(maxConcurrent=1)])
    first = FakeActions()
    first.matching["pool=old"] = NODES[:5]
    checkpoint = crash_when(
        wf, first, lambda t: t.step == "drain[worker-2]" and t.phase == "Running"
    )
    assert checkpoint["steps"]["drain"]["targets"] == NODES[:5]
    second = FakeActions()
    second.matching["pool=old"] = NODES  # the cluster changed meanwhile: not looked at
    record = run_virtual(
        lambda: Engine(second).run(wf, resume=record_from_dict(copy.deepcopy(checkpoint)))
    )
    assert record.phase == RunPhase.SUCCEEDED, record.message
    assert second.order("targets") == []
    assert second.order("apply") == ["drain[worker-2]", "drain[worker-3]", "drain[worker-4]"]
    assert record.steps["drain"].targets == NODES[:5]


HEAD = """\
apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {name: fan}
spec:
  steps:
"""


def problems(step: str) -> list[str]:
    text = HEAD + textwrap.indent(textwrap.dedent(step), "    ")
    return [str(i) for i in load_text(text, "wf.yaml").issues]


def test_validate_names_each_fan_out_mistake() -> None:
    base = "- name: d\n  action: %s\n  target: %s\n  forEach: %s\n"
    assert problems(base % ("DrainNode", "{}", "{items: [a]}")) == []
    said = {
        ("Apply", "{}", "{items: [a]}"): "Apply takes no forEach; these do:",
        ("DrainNode", "{}", "{selector: {kind: Pod, labelSelector: a=b}}"): (
            "forEach.selector.kind: DrainNode acts on a Node, not a Pod"
        ),
        ("DrainNode", "{name: n}", "{items: [a]}"): (
            "target.name: forEach names the targets: remove target.name"
        ),
        ("ScaleDeployment", "{}", "{items: [a]}"): (
            "ScaleDeployment with forEach needs target.namespace"
        ),
        ("DrainNode", "{}", "{items: [a], selector: {labelSelector: a=b}}"): (
            "forEach needs exactly one of selector and items"
        ),
        ("DrainNode", "{}", "{items: [a], maxFailures: lots}"): (
            "maxFailures: 'lots' is neither a count nor a percentage"
        ),
    }
    for (action, target, for_each), message in said.items():
        body = base % (action, target, for_each)
        body += {
            "ScaleDeployment": "  params: {replicas: 1}\n",
            "Apply": "  params: {manifest: {apiVersion: v1, kind: ConfigMap,"
            " metadata: {name: a, namespace: b}}}\n",
        }.get(action, "")
        found = problems(body)
        assert any(message in p for p in found), (body, found)
        assert all(p.startswith("wf.yaml:") for p in found)


def test_each_target_gives_its_actions_outputs_and_one_approval_covers_them_all() -> None:
    from fakes import FakeApprovals

    actions = FakeActions({f"drain[{n}]": Script(outputs={"evictedPods": 1}) for n in NODES[:3]})
    actions.matching["pool=old"] = NODES[:3]
    approvals = FakeApprovals()
    approvals.decide("drain", "approved")
    wf = workflow([{**drain(maxConcurrent=3), "approval": {"approvers": ["sre-leads"]}}])
    record = run_virtual(lambda: Engine(actions).run(wf, approvals=approvals))
    assert record.phase == RunPhase.SUCCEEDED, record.message
    assert [record.steps[f"drain[{n}]"].outputs for n in NODES[:3]] == [{"evictedPods": 1}] * 3
    assert approvals.asked == ["drain"]  # the step asked once, not once per target
    assert record.steps["drain"].peak_concurrent == 3


def test_a_rollback_by_hand_undoes_each_target_as_it_ran() -> None:
    """`reconciler rollback` (cluster/rollback.py) is given the sub-steps too."""
    from reconciler.cluster.rollback import steps_as_they_ran

    actions = FakeActions()
    actions.matching["pool=old"] = NODES[:2]
    wf = workflow([drain()])
    record = run(wf, actions)
    steps = steps_as_they_ran(wf, record)
    assert set(steps) == {"drain", "drain[worker-0]", "drain[worker-1]"}
    assert steps["drain[worker-1]"].target.name == "worker-1"
    assert steps["drain[worker-1]"].for_each is None
