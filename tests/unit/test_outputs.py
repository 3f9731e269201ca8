"""Step outputs, `${{ }}` references and `when` (docs/outputs.md): what validate says of a
wrong reference, how the engine resolves one when the step starts, and what a false `when`
does to the step and its dependents. The engine runs on the in-memory double."""

from __future__ import annotations

import copy
import textwrap
from typing import Any

import pytest
from fakes import FakeActions, Script, run_virtual, workflow
from test_resume import crash_when

from reconciler.engine.bindings import resolve
from reconciler.engine.record import RunPhase, RunRecord, StepPhase, StepRecord, record_from_dict
from reconciler.engine.runner import Engine
from reconciler.formats.run_record import render_yaml
from reconciler.manifest.loader import load_text
from reconciler.manifest.schema import ACTIONS

HEAD = """\
apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {name: outs}
spec:
"""


def problems(body: str) -> list[str]:
    result = load_text(HEAD + textwrap.indent(textwrap.dedent(body), "  "), "wf.yaml")
    return [str(i) for i in result.issues]


def run(wf: Any, actions: FakeActions) -> RunRecord:
    return run_virtual(lambda: Engine(actions).run(wf))


SCALE = {"action": "ScaleDeployment", "target": {"namespace": "shop", "name": "web"}}


# ---------------------------------------------------------------- validate


def test_a_valid_reference_and_when_load() -> None:
    assert (
        problems("""\
        inputs: {floor: 2}
        steps:
          - name: up
            action: ScaleDeployment
            target: {namespace: shop, name: web}
            params: {replicas: 4}
          - name: back
            action: ScaleDeployment
            dependsOn: [up]
            target: {namespace: shop, name: web}
            params: {replicas: "${{ steps.up.outputs.previousReplicas }}"}
            when: steps["up"].outputs.previousReplicas >= inputs.floor
        """)
        == []
    )


@pytest.mark.parametrize(
    ("reference", "said"),
    [
        (
            "steps.ghost.outputs.replicas",
            "wf.yaml:15:16: spec.steps[1].params.replicas:"
            " steps.ghost.outputs.replicas: unknown step 'ghost'",
        ),
        (
            "steps.later.outputs.replicas",
            "'later' is not an earlier step of 'back': its outputs"
            " exist only once it has run; add 'later' to dependsOn",
        ),
        (
            "steps.up.outputs.replica",
            "ScaleDeployment has no output 'replica'; did you mean"
            " 'replicas'? (its outputs: previousReplicas, replicas)",
        ),
        ("steps.back.outputs.replicas", "a step cannot use its own outputs"),
        ("inputs.flor", "the workflow has no input 'flor'; did you mean 'floor'?"),
        ("steps.up.output.replicas", "a reference is ${{ steps.<step>.outputs.<name> }}"),
    ],
)
def test_a_wrong_reference_is_named_at_its_line_and_column(reference: str, said: str) -> None:
    found = problems(f"""\
        inputs: {{floor: 2}}
        steps:
          - name: up
            action: ScaleDeployment
            target: {{namespace: shop, name: web}}
            params: {{replicas: 4}}
          - name: back
            action: ScaleDeployment
            dependsOn: [up]
            target: {{namespace: shop, name: web}}
            params: {{replicas: "${{{{ {reference} }}}}"}}
          - name: later
            action: ScaleDeployment
            dependsOn: [back]
            target: {{namespace: shop, name: web}}
            params: {{replicas: 1}}
        """)
    assert len(found) == 1 and said in found[0], found
    assert found[0].startswith("wf.yaml:15:16: spec.steps[1].params.replicas:")


def test_every_wrong_reference_of_a_string_and_of_when_is_said() -> None:
    found = problems("""\
        steps:
          - name: up
            action: ScaleDeployment
            target: {namespace: shop, name: web}
            params: {replicas: "${{ steps.up.outputs.replicas"}
          - name: cfg
            action: UpdateConfigMap
            dependsOn: [up]
            target: {namespace: shop, name: cfg}
            params: {data: {x: "${{ steps.ghost.outputs.a }} ${{ inputs.zz }}"}}
            when: steps.up_x.outputs.replicas > 1
        """)
    assert any("without its `}}`" in p for p in found), found
    assert any("unknown step 'ghost'" in p for p in found), found
    assert any("the workflow has no input 'zz'" in p for p in found), found
    assert any("spec.steps[1].when: steps.up_x.outputs.replicas: unknown step" in p for p in found)


def test_a_reference_outside_params_verify_when_is_refused() -> None:
    found = problems("""\
        steps:
          - name: up
            action: ScaleDeployment
            target: {namespace: shop, name: "${{ inputs.app }}"}
            params: {replicas: 4}
        """)
    assert found == [
        "wf.yaml:8:33: spec.steps[0].target.name: references (${{ }}) work in a step's params,"
        " verify and when only"
    ]


def test_when_may_name_steps_and_inputs_only() -> None:
    found = problems("""\
        steps:
          - name: up
            action: ScaleDeployment
            target: {namespace: shop, name: web}
            params: {replicas: 4}
            when: env.PROD == "1"
        """)
    assert len(found) == 1 and "`when` names env: it may use steps and inputs only" in found[0]


def test_a_custom_step_declares_its_outputs() -> None:
    body = """\
        steps:
          - name: probe
            action: Custom
            target: {namespace: shop}
            params: {image: "busybox:1.36", outputs: {lag: integer}}
          - name: up
            action: ScaleDeployment
            dependsOn: [probe]
            target: {namespace: shop, name: web}
            params: {replicas: "${{ steps.probe.outputs.%s }}"}
        """
    assert problems(body % "lag") == []
    found = problems(body % "lagg")
    assert len(found) == 1 and "(declare it in params.outputs)" in found[0], found


# ---------------------------------------------------------------- resolving


def test_a_later_step_gets_an_earlier_steps_output_with_its_type() -> None:
    wf = workflow(
        [
            {"name": "up"},
            {
                "name": "back",
                "dependsOn": ["up"],
                "params": {"replicas": "${{ steps.up.outputs.previousReplicas }}"},
            },
            {
                "name": "note",
                "dependsOn": ["back"],
                "action": "UpdateConfigMap",
                "target": {"namespace": "shop", "name": "cfg"},
                "params": {"data": {"was": "from ${{ steps.up.outputs.previousReplicas }}"}},
            },
        ]
    )
    actions = FakeActions(
        {
            "up": Script(outputs={"previousReplicas": 3, "replicas": 2}),
            "back": Script(outputs={"previousReplicas": 2, "replicas": 3}),
            "note": Script(outputs={"resourceVersion": "7", "changedKeys": 1}),
        }
    )
    record = run(wf, actions)
    assert record.phase == RunPhase.SUCCEEDED, record.message
    assert actions.applied["back"].params.replicas == 3  # type: ignore[attr-defined]
    assert actions.applied["note"].params.data == {"was": "from 3"}  # type: ignore[attr-defined]
    assert record.steps["up"].outputs == {"previousReplicas": 3, "replicas": 2}
    assert "previousReplicas: 3" in render_yaml(record)


def test_an_output_the_action_does_not_declare_or_of_the_wrong_type_fails_the_step() -> None:
    wf = workflow([{"name": "up"}])
    wrong = FakeActions({"up": Script(outputs={"previousReplicas": "3", "replicas": 2, "x": 1})})
    record = run(wf, wrong)
    step = record.steps["up"]
    assert step.phase == StepPhase.FAILED and step.outputs is None
    assert step.message is not None
    assert "x: not declared" in step.message
    assert "previousReplicas: string, not integer" in step.message
    assert record.phase == RunPhase.ROLLED_BACK  # it ran: its change is undone


def test_a_value_its_field_refuses_fails_the_step_before_it_changes_anything() -> None:
    wf = workflow(
        [
            {"name": "up"},
            {
                "name": "back",
                "dependsOn": ["up"],
                "params": {"replicas": "${{ steps.up.outputs.previousReplicas }}"},
            },
        ]
    )
    actions = FakeActions({"up": Script(outputs={"previousReplicas": -4, "replicas": 2})})
    record = run(wf, actions)
    back = record.steps["back"]
    assert back.phase == StepPhase.FAILED and "back" not in actions.applied
    assert back.message is not None and "params.replicas" in back.message
    assert "after resolving its references" in back.message
    assert actions.order("undo") == ["up"]


def test_every_action_resolves_a_reference_to_each_of_its_outputs() -> None:
    """Each action's outputs, referenced by a later step's string field, come out as text;
    an integer field gets an integer output unchanged."""
    for action, cls in sorted(ACTIONS.items()):
        if action == "Custom" or not cls.OUTPUTS:
            continue
        samples = {"string": "v1", "integer": 3, "number": 1.5, "boolean": True}
        outputs = {name: samples[kind] for name, kind in cls.OUTPUTS.items()}
        data = {f"k{i}": f"${{{{ steps.first.outputs.{n} }}}}" for i, n in enumerate(outputs)}
        wf = workflow(
            [
                {"name": "first", "action": action, **_minimal(action)},
                {
                    "name": "use",
                    "dependsOn": ["first"],
                    "action": "UpdateConfigMap",
                    "target": {"namespace": "shop", "name": "cfg"},
                    "params": {"data": data},
                },
            ]
        )
        record = RunRecord(workflow="wf", run_id="r", content_hash="h", max_concurrent=1)
        record.steps["first"] = StepRecord(
            name="first", action=action, depends_on=[], outputs=outputs
        )
        used = resolve(wf.spec.steps[1], record, {})
        want = {
            f"k{i}": str(v).lower() if isinstance(v, bool) else str(v)
            for i, v in enumerate(outputs.values())
        }
        assert used.params.data == want, action  # type: ignore[attr-defined]


def _minimal(action: str) -> dict[str, Any]:
    ns = {"namespace": "shop", "name": "x"}
    node = {"name": "worker-1"}
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": ns, "data": {"a": "b"}}
    return {
        "ScaleDeployment": {"target": ns, "params": {"replicas": 1}},
        "UpdateImage": {"target": ns, "params": {"container": "c", "image": "i:1"}},
        "RestartDeployment": {"target": ns},
        "DeletePod": {"target": ns},
        "CordonNode": {"target": node},
        "UncordonNode": {"target": node},
        "DrainNode": {"target": node},
        "UpdateConfigMap": {"target": ns, "params": {"data": {"a": "b"}}},
        "UpdateSecret": {"target": ns, "params": {"data": {"a": "b"}}},
        "Apply": {"params": {"manifest": manifest}},
    }[action]


def test_a_reference_in_a_cel_check_becomes_a_cel_literal() -> None:
    wf = workflow(
        [
            {"name": "up"},
            {
                "name": "back",
                "dependsOn": ["up"],
                "when": "true",
                "params": {"replicas": 1},
            },
        ],
        inputs={"pool": 'old "a"'},
    )
    step = wf.spec.steps[1].model_copy(update={"templates": {"when": "${{ inputs.pool }} == 'x'"}})
    record = RunRecord(workflow="wf", run_id="r", content_hash="h", max_concurrent=1)
    assert resolve(step, record, dict(wf.spec.inputs)).when == '"old \\"a\\"" == \'x\''


# ---------------------------------------------------------------- when


def _when_workflow(condition: str) -> Any:
    return workflow(
        [
            {"name": "probe"},
            {"name": "fix", "dependsOn": ["probe"], "when": condition},
            {"name": "after", "dependsOn": ["fix"]},
        ],
        inputs={"floor": 3},
    )


def test_a_false_when_skips_the_step_and_its_dependents_still_run() -> None:
    actions = FakeActions({"probe": Script(outputs={"previousReplicas": 1, "replicas": 2})})
    record = run(_when_workflow("steps.probe.outputs.previousReplicas >= inputs.floor"), actions)
    fix = record.steps["fix"]
    assert fix.phase == StepPhase.SKIPPED and fix.skipped_by_when
    assert fix.message == "when: steps.probe.outputs.previousReplicas >= inputs.floor was false"
    assert "fix" not in actions.applied and "after" in actions.applied
    assert record.phase == RunPhase.SUCCEEDED
    assert record.message == "2/3 steps succeeded, 1 skipped by their `when`"


def test_a_true_when_runs_the_step() -> None:
    actions = FakeActions({"probe": Script(outputs={"previousReplicas": 5, "replicas": 2})})
    record = run(_when_workflow("steps.probe.outputs.previousReplicas >= inputs.floor"), actions)
    assert record.steps["fix"].phase == StepPhase.SUCCEEDED and "fix" in actions.applied


def test_a_reference_to_a_skipped_steps_output_fails_with_how_to_guard_it() -> None:
    wf = workflow(
        [
            {"name": "probe"},
            {"name": "fix", "dependsOn": ["probe"], "when": "false"},
            {
                "name": "use",
                "dependsOn": ["fix"],
                "params": {"replicas": "${{ steps.fix.outputs.replicas }}"},
            },
        ]
    )
    record = run(wf, FakeActions({"probe": Script(outputs={"previousReplicas": 1, "replicas": 2})}))
    use = record.steps["use"]
    assert use.phase == StepPhase.FAILED and use.message is not None
    assert "step 'fix' was skipped, so it has no outputs" in use.message
    assert "has(steps.fix.outputs)" in use.message
    assert record.phase == RunPhase.ROLLED_BACK


def test_a_when_that_cannot_be_evaluated_fails_the_step() -> None:
    record = run(
        _when_workflow("steps.probe.outputs.replicas > 'a'"),
        FakeActions({"probe": Script(outputs={"previousReplicas": 1, "replicas": 2})}),
    )
    assert record.steps["fix"].phase == StepPhase.FAILED
    assert (record.steps["fix"].message or "").startswith("when: ")


# ---------------------------------------------------------------- resume


def test_a_resumed_run_resolves_from_the_checkpointed_outputs() -> None:
    wf = workflow(
        [
            {"name": "up"},
            {
                "name": "back",
                "dependsOn": ["up"],
                "params": {"replicas": "${{ steps.up.outputs.previousReplicas }}"},
            },
            {"name": "skip", "dependsOn": ["up"], "when": "false"},
        ]
    )
    first = FakeActions({"up": Script(outputs={"previousReplicas": 6, "replicas": 2})})
    checkpoint = crash_when(wf, first, lambda t: t.step == "back" and t.phase == "Running")
    assert checkpoint["steps"]["up"]["outputs"] == {"previousReplicas": 6, "replicas": 2}
    # the second process's actions would give other values: the record's are used
    second = FakeActions({"up": Script(outputs={"previousReplicas": 99, "replicas": 2})})
    resumed = run_virtual(
        lambda: Engine(second).run(wf, resume=record_from_dict(copy.deepcopy(checkpoint)))
    )
    assert resumed.phase == RunPhase.SUCCEEDED, resumed.message
    assert "up" not in second.applied
    assert second.applied["back"].params.replicas == 6  # type: ignore[attr-defined]
    assert resumed.steps["skip"].skipped_by_when


def test_the_markdown_report_lists_outputs_and_says_skipped_by_when() -> None:
    from reconciler.formats.run_markdown import render_markdown

    actions = FakeActions({"probe": Script(outputs={"previousReplicas": 1, "replicas": 2})})
    record = run(_when_workflow("steps.probe.outputs.previousReplicas >= inputs.floor"), actions)
    page = render_markdown(record)
    assert "## Outputs" in page and "`previousReplicas`" in page and "`1`" in page
    assert "Skipped (when)" in page and "Skipped by its when" in page


# ---------------------------------------------------------------- found end to end


def test_a_step_with_a_reference_and_a_default_check_resolves() -> None:
    wf = workflow(
        [
            {"name": "up"},
            {
                "name": "back",
                "dependsOn": ["up"],
                "params": {"replicas": "${{ steps.up.outputs.previousReplicas }}"},
                "verify": [
                    {
                        "name": "ready",
                        "kubernetes": {"condition": "object.spec.replicas == 1"},
                        "timeout": "30s",
                    }
                ],
            },
        ]
    )
    record = RunRecord(workflow="wf", run_id="r", content_hash="h", max_concurrent=1)
    record.steps["up"] = StepRecord(
        name="up", action="ScaleDeployment", depends_on=[], outputs={"previousReplicas": 1}
    )
    assert resolve(wf.spec.steps[1], record, {}).params.replicas == 1  # type: ignore[attr-defined]


def test_when_guards_a_step_whose_params_reference_a_skipped_step() -> None:
    wf = workflow(
        [
            {"name": "probe"},
            {"name": "fix", "dependsOn": ["probe"], "when": "false"},
            {
                "name": "use",
                "dependsOn": ["fix"],
                "when": "has(steps.fix.outputs) && steps.fix.outputs.replicas > ${{ inputs.n }}",
                "params": {"replicas": "${{ steps.fix.outputs.replicas }}"},
            },
        ],
        inputs={"n": 1},
    )
    record = run(wf, FakeActions({"probe": Script(outputs={"previousReplicas": 1, "replicas": 2})}))
    use = record.steps["use"]
    assert use.skipped_by_when and record.phase == RunPhase.SUCCEEDED, use.message
    # the message quotes the `when` as written, not its stand-ins
    assert use.message == (
        "when: has(steps.fix.outputs) && steps.fix.outputs.replicas > ${{ inputs.n }} was false"
    )


def test_a_checkpointed_reference_whose_stand_in_is_the_default_survives() -> None:
    from reconciler.formats.execution import manifest_of, stored_workflow  # noqa: F401
    from reconciler.manifest.outputs import restore

    wf = workflow(
        [
            {
                "name": "drain",
                "action": "DrainNode",
                "target": {"name": "worker-1"},
                "params": {"force": "${{ inputs.force }}"},
            }
        ],
        inputs={"force": True},
    )
    step = wf.spec.steps[0]
    dumped = step.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    assert "force" not in dumped.get("params", {})  # the stand-in is the default
    assert restore(dumped)["params"]["force"] == "${{ inputs.force }}"


def test_each_steps_when_is_checked_whatever_another_steps_when_says() -> None:
    found = problems("""\
        steps:
          - name: a
            action: ScaleDeployment
            target: {namespace: shop, name: web}
            params: {replicas: 1}
            when: nope.x > 1
          - name: b
            action: ScaleDeployment
            target: {namespace: shop, name: web}
            params: {replicas: 1}
            when: steps.ghost.outputs.x > 1
        """)
    assert any("spec.steps[0].when" in p for p in found), found
    assert any("spec.steps[1].when" in p and "unknown step 'ghost'" in p for p in found), found
