"""Whatever bytes or YAML arrive, the loader answers with ManifestIssues, never a crash."""

from __future__ import annotations

import yaml as pyyaml  # only to render generated structures as YAML text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.manifest.errors import ManifestIssue
from reconciler.manifest.loader import load_text


def _check(result) -> None:
    for issue in result.issues:
        assert isinstance(issue, ManifestIssue)
        assert issue.line >= 0 and issue.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(raw: bytes) -> None:
    _check(load_text(raw, "fuzz.yaml"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(alphabet=st.sampled_from(list("abc:-[]{}&*!|>'\"#\n  ,?%@`0123456789")), max_size=400)
)
def test_yaml_like_text(text: str) -> None:
    _check(load_text(text, "fuzz.yaml"))


scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=30,
)
STEP_KEYS = [
    "name",
    "action",
    "dependsOn",
    "target",
    "params",
    "timeout",
    "retry",
    "continueOnFailure",
]
steps = st.lists(st.dictionaries(st.sampled_from(STEP_KEYS), values, max_size=8), max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.fixed_dictionaries(
        {"steps": steps}, optional={"maxConcurrent": values, "timeout": values}
    )
)
def test_structured_workflows(spec: dict) -> None:
    manifest = {
        "apiVersion": "reconciler.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "f"},
        "spec": spec,
    }
    _check(load_text(pyyaml.safe_dump(manifest), "fuzz.yaml"))
