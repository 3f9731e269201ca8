"""A WorkflowExecution carries an HMAC over its name, labels and spec: any change to them,
another key, or no signature at all, and it is not this installation's."""

from __future__ import annotations

import copy

from reconciler.formats.execution import execution_body, sign, signed_with
from reconciler.manifest.loader import load_text

WORKFLOW = """
apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {name: w}
spec:
  steps:
    - {name: s, action: ScaleDeployment, target: {namespace: shop, name: web}, params: {replicas: 2}}
"""
KEY = b"k" * 32


def body() -> dict:
    (loaded,) = load_text(WORKFLOW, "w.yaml").workflows
    return execution_body(loaded, "main@sha1:abc", {"reconciler.dev/source": "s1"})


def test_a_signed_execution_verifies_and_any_change_breaks_it() -> None:
    signed = sign(body(), KEY)
    assert signed_with(signed, KEY)
    for change in (
        lambda b: b["spec"].update(manifest="H4sIAAAAAAAA"),
        lambda b: b["spec"].update(revision="main@sha1:def"),
        lambda b: b["metadata"]["labels"].update({"reconciler.dev/source": "s2"}),
        lambda b: b["metadata"].update(name="w-other"),
    ):
        tampered = copy.deepcopy(signed)
        change(tampered)
        assert not signed_with(tampered, KEY)


def test_another_key_or_no_signature_is_not_ours() -> None:
    assert not signed_with(sign(body(), b"x" * 32), KEY)
    assert not signed_with(body(), KEY)
