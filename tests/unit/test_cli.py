from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.cli import main

EXAMPLES = Path(__file__).parents[2] / "examples-repo" / "workflows"


def test_validate_examples_clean(capsys: pytest.CaptureFixture[str]) -> None:
    policy = EXAMPLES.parents[1] / "demo" / "policy.yaml"
    assert main(["validate", "--policy", str(policy), str(EXAMPLES)]) == 0
    assert "workflow(s) valid" in capsys.readouterr().err


def test_validate_reports_path_line_col_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\nmetadata: {name: x}\n"
        "spec:\n  steps:\n    - {name: a, action: ScaleDeployment, target: {namespace: n, name: d},"
        " params: {replicas: many}}\n"
    )
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "1 file: 0 workflow(s) valid, 1 problem"
    assert err[:-1] == [
        f"{bad}:6:84: spec.steps[0].params.replicas: expected a whole number, got 'many'"
    ]


def test_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate"])
    assert exc.value.code == 2


def test_plan_json_is_stable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(EXAMPLES / "checkout-latency.yaml"), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (plan,) = out["workflows"]
    assert out["errors"] == []
    assert plan["name"] == "checkout-latency-remediation"
    assert plan["runId"] == f"{plan['name']}-{plan['contentHash'][:10]}"
    assert plan["levels"] == [["scale-up"], ["new-image", "bump-cache"]]
    assert plan["startOrder"] == ["scale-up", "new-image", "bump-cache"]
    assert plan["criticalPath"] == {"steps": ["scale-up", "new-image"], "estimateSeconds": 480.0}
    assert set(plan) == {
        "name",
        "file",
        "line",
        "runId",
        "contentHash",
        "maxConcurrent",
        "steps",
        "levels",
        "startOrder",
        "criticalPath",
        "estimatedMakespanSeconds",
        "timeoutSeconds",
        "stepDetails",
        "worstCaseMakespanSeconds",
        "warnings",
    }
    scale_up = plan["stepDetails"][0]
    assert scale_up == {
        "name": "scale-up",
        "action": "ScaleDeployment",
        "target": "shop/checkout",
        "timeoutSeconds": 180.0,
        "retries": 3,
        "reversible": True,
        # 4 attempts of 3m, and the backoffs 5s, 10s, 20s between them
        "worstCaseSeconds": 4 * 180 + 5 + 10 + 20,
    }
    # scale-up's worst case (12m35s) then new-image's 5m: over the 15m workflow timeout
    assert plan["worstCaseMakespanSeconds"] == 4 * 180 + 35 + 300
    assert plan["warnings"] == [
        "with every retry used the run could take 17m35s, over the workflow's timeout (15m):"
        " it would be cancelled and rolled back"
    ]


def test_plan_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(EXAMPLES / "node-maintenance.yaml")]) == 0
    out = capsys.readouterr().out
    assert "start order:    cordon -> drain -> health-check -> uncordon" in out
    assert "STEP" in out and "UNDO" in out and "irreversible" not in out.split("STEP")[0]


def test_plan_warns_of_a_step_timeout_over_the_workflows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wf = tmp_path / "slow.yaml"
    wf.write_text(
        "apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\nmetadata: {name: slow}\n"
        "spec:\n  timeout: 10m\n  steps:\n    - {name: wait, action: ScaleDeployment,"
        " target: {namespace: n, name: d}, params: {replicas: 1}, timeout: 1h}\n"
    )
    assert main(["plan", str(wf)]) == 0
    out = capsys.readouterr().out
    assert "warning: step wait: its timeout (1h) is longer than the workflow's (10m)" in out


def test_schema_is_valid_json_schema_for_the_workflow(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["required"] == ["apiVersion", "kind", "metadata", "spec"]
    assert schema["additionalProperties"] is False
    step = schema["$defs"]["ScaleDeploymentStep"]
    assert step["properties"]["timeout"]["pattern"].startswith("^(")
    assert "dependsOn" in step["properties"]
