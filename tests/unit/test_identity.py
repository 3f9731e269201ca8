"""Content hash and run id: formatting never matters, content always does."""

from __future__ import annotations

import pytest

from reconciler.manifest.loader import load_text

BASE = """\
apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata:
  name: wf
spec:
  maxConcurrent: 2
  steps:
    - name: scale-up
      action: ScaleDeployment
      target: {namespace: shop, name: checkout}
      params: {replicas: 6}
      timeout: 5m
"""

SAME_CONTENT = {
    "comments": "# a comment\n"
    + BASE.replace("maxConcurrent: 2", "maxConcurrent: 2  # two at once"),
    "key order": BASE.replace(
        "      target: {namespace: shop, name: checkout}\n      params: {replicas: 6}\n",
        "      params: {replicas: 6}\n      target: {name: checkout, namespace: shop}\n",
    ),
    "quoting": BASE.replace("name: scale-up", 'name: "scale-up"').replace("shop", "'shop'"),
    "block vs flow": BASE.replace("params: {replicas: 6}", "params:\n        replicas: 6"),
    "equivalent duration": BASE.replace("timeout: 5m", "timeout: 300s"),
    "explicit default": BASE.replace(
        "      timeout: 5m\n", "      timeout: 5m\n      continueOnFailure: false\n"
    ),
    "other annotations": BASE.replace("  name: wf\n", "  name: wf\n  annotations: {owner: sre}\n"),
}

DIFFERENT_CONTENT = {
    "replicas": BASE.replace("replicas: 6", "replicas: 7"),
    "timeout": BASE.replace("timeout: 5m", "timeout: 6m"),
    "name": BASE.replace("name: wf", "name: wf2"),
    "re-run annotation": BASE.replace(
        "  name: wf\n", "  name: wf\n  annotations: {reconciler.dev/run: '2'}\n"
    ),
}


def digest(text: str) -> str:
    result = load_text(text, "wf.yaml")
    assert result.ok, result.issues
    return result.workflows[0].digest


@pytest.mark.parametrize("variant", SAME_CONTENT)
def test_formatting_only_edits_keep_the_hash(variant: str) -> None:
    assert digest(SAME_CONTENT[variant]) == digest(BASE)


@pytest.mark.parametrize("variant", DIFFERENT_CONTENT)
def test_content_edits_change_the_hash(variant: str) -> None:
    assert digest(DIFFERENT_CONTENT[variant]) != digest(BASE)


def test_run_id_is_name_and_ten_hex_digits() -> None:
    loaded = load_text(BASE, "wf.yaml").workflows[0]
    assert loaded.run_id == "wf-" + loaded.digest[:10]
    assert len(loaded.digest) == 64 and int(loaded.digest, 16) >= 0


def test_a_dumped_workflow_validates_again_with_the_same_hash() -> None:
    """What a checkpoint stores (the JSON dump) must load back to the same content."""
    from reconciler.manifest.schema import Workflow

    loaded = load_text(BASE, "wf.yaml").workflows[0]
    dumped = loaded.workflow.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    again = Workflow.model_validate(dumped)
    assert again == loaded.workflow
    assert (
        loaded.workflow.model_dump(mode="json", by_alias=True)["spec"]["steps"][0]["timeout"]
        == "5m"
    )
