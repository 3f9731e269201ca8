"""Protected namespaces and the allowed-actions policy fail validation, at the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.manifest.loader import load_text
from reconciler.manifest.policy import DEFAULT_PROTECTED, Policy


def wf(step: str) -> str:
    return (
        "apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  steps:\n"
        f"    - {step}\n"
    )


SCALE_KUBE_SYSTEM = "{name: s, action: ScaleDeployment, target: {namespace: kube-system, name: coredns}, params: {replicas: 0}}"
APPLY_INTO_OWN = (
    "{name: a, action: Apply, params: {manifest: {apiVersion: v1, kind: ConfigMap, "
    "metadata: {name: x, namespace: reconciler-system}}}}"
)


@pytest.mark.parametrize(
    ("step", "fragment", "line"),
    [
        (SCALE_KUBE_SYSTEM, "namespace 'kube-system' is protected", 6),
        (APPLY_INTO_OWN, "namespace 'reconciler-system' is protected", 6),
    ],
)
def test_protected_namespaces_fail_validation(step: str, fragment: str, line: int) -> None:
    policy = Policy(protected=frozenset([*DEFAULT_PROTECTED, "reconciler-system"]))
    result = load_text(wf(step), "w.yaml", policy)
    assert result.workflows == []
    (issue,) = result.issues
    assert fragment in issue.message and issue.line == line


def test_policy_file_limits_actions_per_namespace_and_on_nodes(tmp_path: Path) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text("namespaces:\n  shop: [ScaleDeployment]\n  '*': []\nnodes: [CordonNode]\n")
    policy = Policy.load(DEFAULT_PROTECTED, file)
    ok = load_text(
        wf(
            "{name: s, action: ScaleDeployment, target: {namespace: shop, name: a}, params: {replicas: 1}}"
        ),
        "w.yaml",
        policy,
    )
    assert ok.ok
    image = load_text(
        wf(
            "{name: s, action: UpdateImage, target: {namespace: shop, name: a}, params: {container: c, image: i}}"
        ),
        "w.yaml",
        policy,
    )
    assert "does not allow UpdateImage in namespace 'shop'" in image.issues[0].message
    elsewhere = load_text(
        wf(
            "{name: s, action: ScaleDeployment, target: {namespace: other, name: a}, params: {replicas: 1}}"
        ),
        "w.yaml",
        policy,
    )
    assert "does not allow ScaleDeployment in namespace 'other'" in elsewhere.issues[0].message
    drain = load_text(wf("{name: d, action: DrainNode, target: {name: n1}}"), "w.yaml", policy)
    assert "does not allow DrainNode on nodes" in drain.issues[0].message
    assert str(drain.issues[0]).startswith("w.yaml:6:")


def test_policy_file_with_unknown_action_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text("namespaces:\n  shop: [ScaleDeploymnt]\n")
    with pytest.raises(ValueError, match="unknown action"):
        Policy.load(DEFAULT_PROTECTED, file)


def test_apply_of_reconcilers_own_kinds_is_refused_at_the_field() -> None:
    """A step that writes a WorkflowExecution would plant a run the next leader resumes
    with the daemon's authority."""
    step = (
        "{name: forge, action: Apply, params: {manifest: {apiVersion: reconciler.dev/v1alpha1, "
        "kind: WorkflowExecution, metadata: {name: forged}}}}"
    )
    result = load_text(wf(step), "w.yaml")
    (issue,) = result.issues
    assert "may not manage reconciler's own kinds" in issue.message
    assert issue.path[-1] == "apiVersion" and issue.line == 6
