"""The hostile and broken corpus (tests/corpus): a clear error each, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.manifest.loader import load_file
from reconciler.manifest.policy import DEFAULT_PROTECTED, Policy

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
EXPECTED = {
    "syntax-error.yaml": "YAML syntax",
    "wrong-types.yaml": "valid integer",
    "unknown-field.yaml": "unknown field 'stepz'; did you mean 'steps'?",
    "unknown-action.yaml": "unknown action 'NukeCluster'",
    "cycle.yaml": "dependency cycle: a -> b -> a",
    "alias-bomb.yaml": "alias bomb",
    "binary.yaml": "binary",
    "dotdot-name.yaml": "not a valid name",
    "unicode-lookalike.yaml": "not a valid name",
    "duplicate-keys.yaml": "duplicate key",
    "protected-namespace.yaml": "namespace 'kube-system' is protected",
    "deep-nesting.yaml": "nesting is deeper than 64 levels",
    "python-tag.yaml": "spec: expected a mapping, got a list",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_broken_manifest_gets_a_clear_error(name: str) -> None:
    result = load_file(CORPUS / name, name, Policy(protected=frozenset(DEFAULT_PROTECTED)))
    assert result.workflows == []
    messages = [str(i) for i in result.issues]
    assert any(EXPECTED[name] in m for m in messages), messages
    assert all(m.startswith(f"{name}:") for m in messages)


def test_corpus_is_covered() -> None:
    assert {p.name for p in CORPUS.glob("*.yaml")} == set(EXPECTED)
    assert not Path("/tmp/pwned").exists()


def test_a_scalar_ruamel_cannot_construct_is_an_error_not_a_crash() -> None:
    """Found by test_fuzz: ruamel.yaml resolves `+_` as an int and then fails to build it."""
    from reconciler.manifest.loader import load_text

    result = load_text(b"+_", "odd.yaml")
    (issue,) = result.issues
    assert issue.file == "odd.yaml" and "quote unusual scalars" in issue.message
