"""The README's `validate` sample is what validate prints for tests/corpus/readme/wf.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "corpus" / "readme"


def readme_sample() -> str:
    text = (ROOT / "README.md").read_text()
    after = text.split("[tests/corpus/readme/wf.yaml](tests/corpus/readme/wf.yaml)", 1)[1]
    return after.split("```\n", 2)[1]


def test_the_readme_shows_what_validate_prints_for_the_sample(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(SAMPLE)
    assert main(["validate", "wf.yaml"]) == 1
    assert capsys.readouterr().err == readme_sample()
