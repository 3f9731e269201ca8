"""What `validate` says about checks: each mistake at its file:line and field."""

from __future__ import annotations

import pytest

from reconciler.manifest.loader import load_text

HEAD = "apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec:\n"
STEP = (
    "  steps:\n    - name: s\n      action: ScaleDeployment\n"
    "      target: {namespace: shop, name: web}\n      params: {replicas: 2}\n"
)


def issues(verify: str = "", guards: str = "", step: str = STEP) -> list[str]:
    text = HEAD + guards + step + (f"      verify:\n{verify}" if verify else "")
    return [str(i) for i in load_text(text, "w.yaml").issues]


@pytest.mark.parametrize(
    ("verify", "expected"),
    [
        (
            "        - {name: v, successCondition: 'result < 1'}\n",
            "w.yaml:11:11: spec.steps[0].verify[0]: check 'v': give exactly one of prometheus or kubernetes",
        ),
        (
            "        - {name: v, prometheus: {query: up}}\n",
            "w.yaml:11:11: spec.steps[0].verify[0]: check 'v': a prometheus check needs successCondition",
        ),
        (
            "        - {name: v, prometheus: {query: 'sum(rate(x[2m])'}, successCondition: 'result < 1'}\n",
            "w.yaml:11:34: spec.steps[0].verify[0].prometheus.query: PromQL syntax error: unclosed left parenthesis",
        ),
        (
            "        - {name: v, prometheus: {query: up}, successCondition: 'value < 1'}\n",
            "the condition names value: this check gives it `result`, `results`",
        ),
        (
            "        - {name: v, prometheus: {query: up}, successCondition: 'result <'}\n",
            "spec.steps[0].verify[0].successCondition: CEL syntax error at column 9",
        ),
        (
            "        - {name: v, kubernetes: {condition: 'result == 1'}}\n",
            "the condition names result: this check gives it `object`",
        ),
        (
            "        - {name: v, kubernetes: {condition: 'true'}, successCondition: 'true'}\n",
            "a kubernetes check has its own condition: move it to kubernetes.condition",
        ),
        (
            "        - {name: v, kubernetes: {object: {apiVersion: v1, kind: Secret, namespace: shop,"
            " name: db}, condition: 'true'}}\n",
            "a check never reads a Secret",
        ),
    ],
)
def test_a_bad_check_is_refused_at_its_field(verify: str, expected: str) -> None:
    found = issues(verify)
    assert any(expected in i for i in found), found


def test_a_guard_on_a_live_object_must_name_it() -> None:
    guard = "  guards:\n    - {name: g, kubernetes: {condition: 'true'}}\n"
    (issue,) = issues(guards=guard)
    assert issue.startswith("w.yaml:6:17: spec.guards[0].kubernetes: a guard names no single object")


def test_a_good_check_passes_and_a_live_check_defaults_to_the_steps_target() -> None:
    verify = (
        "        - {name: v, prometheus: {query: up}, successCondition: 'result == 0',"
        " failureCondition: 'size(results) > 3'}\n"
        "        - {name: r, kubernetes: {condition: 'object.spec.replicas == 2'}}\n"
    )
    assert issues(verify) == []
