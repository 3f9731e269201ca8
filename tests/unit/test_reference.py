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


def test_readme_daemon_flags_are_generated_from_the_parser() -> None:
    from reconciler.commands.daemon import flags_markdown
    from reconciler.daemon.config import SETTINGS

    readme = (ROOT / "README.md").read_text()
    table = flags_markdown()
    assert table in readme, "run: make docs"
    for setting in SETTINGS:  # every flag, with its variable
        assert f"| `{setting.flag}` | `{setting.variable}` |" in table


def test_published_schema_matches_the_models() -> None:
    published = (ROOT / "schema" / "workflow.schema.json").read_text()
    assert published == workflow_schema_json(), "run: make schema"


def test_the_schema_offers_editors_valid_defaults_and_readable_titles() -> None:
    """An editor inserts a field's default: a duration's must be a string the field takes
    ("5m", not 300.0); titles come from the YAML names ("Backoff limit")."""
    from reconciler.manifest.durations import DURATION_PATTERN, parse_duration
    from reconciler.manifest.jsonschema import workflow_schema

    durations, titles = [], set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for name, field in (node.get("properties") or {}).items():
                titles.add(field.get("title"))
                if field.get("pattern") == DURATION_PATTERN and "default" in field:
                    durations.append((name, field["default"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(workflow_schema())
    assert durations and all(isinstance(d, str) and parse_duration(d) for _, d in durations)
    assert {"Backoff limit", "Continue on failure", "API version"} <= titles
    assert "Backofflimit" not in titles


def test_the_schema_lets_an_editor_write_a_reference_where_a_number_goes() -> None:
    """`replicas: "${{ steps.up.outputs.previousReplicas }}"` is valid (docs/outputs.md): the
    published schema takes the integer or one reference, and nothing else as text."""
    import re

    from reconciler.manifest.jsonschema import workflow_schema

    replicas = workflow_schema()["$defs"]["ScaleParams"]["properties"]["replicas"]
    integer, reference = replicas["anyOf"]
    assert integer["type"] == "integer" and integer["minimum"] == 0
    assert re.fullmatch(reference["pattern"], "${{ steps.up.outputs.previousReplicas }}")
    assert not re.fullmatch(reference["pattern"], "three")
    assert replicas["title"] == "Replicas"
