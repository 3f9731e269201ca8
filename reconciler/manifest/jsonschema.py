"""JSON Schema of the Workflow kind, generated from the models so it cannot drift."""

from __future__ import annotations

import json
import re
from typing import Any

from reconciler.manifest.durations import DURATION_PATTERN, format_duration
from reconciler.manifest.schema import Workflow

SCHEMA_ID = "https://reconciler.dev/schema/workflow.schema.json"


def workflow_schema() -> dict[str, Any]:
    schema = Workflow.model_json_schema(by_alias=True, mode="validation")
    _for_people(schema)
    _references_allowed(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "reconciler Workflow (reconciler.dev/v1alpha1)",
        **schema,
    }


def workflow_schema_json() -> str:
    return json.dumps(workflow_schema(), indent=2, sort_keys=True) + "\n"


def _for_people(node: Any) -> None:
    """What an editor shows and inserts: a duration's default as the string the field takes
    ("5m", not 300.0; none for 0, which is what leaving it out means), and each field's
    title from its YAML name ("Backoff limit", not "Backofflimit")."""
    if isinstance(node, list):
        for item in node:
            _for_people(item)
        return
    if not isinstance(node, dict):
        return
    for name, field in (node.get("properties") or {}).items():
        if isinstance(field, dict):
            field["title"] = _words(name)
            if field.get("pattern") == DURATION_PATTERN and isinstance(
                field.get("default"), (int, float)
            ):
                if field["default"]:
                    field["default"] = format_duration(field["default"])
                else:
                    del field["default"]
    for value in node.values():
        _for_people(value)


# A field of a step's params (or a check) may hold one `${{ }}` reference instead of its
# number or boolean (docs/outputs.md): an editor must not flag what `validate` accepts.
REFERENCE = {"type": "string", "pattern": r"^\s*\$\{\{.+\}\}\s*$", "title": "Reference"}
TYPED = ("integer", "number", "boolean")


def _references_allowed(schema: dict[str, Any]) -> None:
    for name, model in schema.get("$defs", {}).items():
        if not (name.endswith("Params") or name in ("JobSpec", "Toleration", "Check")):
            continue
        for field in (model.get("properties") or {}).values():
            if field.get("type") in TYPED:
                kept = {
                    k: v for k, v in field.items() if k not in ("title", "description", "default")
                }
                for key in list(kept):
                    field.pop(key)
                field["anyOf"] = [kept, REFERENCE]


def _words(name: str) -> str:
    """maxConcurrent -> Max concurrent; apiVersion -> API version."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).split()
    text = " ".join(w if w.isupper() else w.lower() for w in words)
    text = re.sub(r"\b(api|ca|url|uid)\b", lambda m: m.group(1).upper(), text)
    return text[:1].upper() + text[1:]
