"""Generated documentation cannot drift from the models."""

from pathlib import Path

from reconciler.manifest.jsonschema import workflow_schema_json
from reconciler.manifest.reference import reference_markdown
from reconciler.manifest.schema import ACTIONS

ROOT = Path(__file__).resolve().parents[2]


def test_readme_reference_is_generated_from_the_models() -> None:
    readme = (ROOT / "README.md").read_text()
    assert reference_markdown() in readme, "run: python -m reconciler.manifest.reference README.md"
    for action in ACTIONS:
        assert f"| {action} |" in readme


def test_published_schema_matches_the_models() -> None:
    published = (ROOT / "schema" / "workflow.schema.json").read_text()
    assert published == workflow_schema_json(), "run: make schema"
