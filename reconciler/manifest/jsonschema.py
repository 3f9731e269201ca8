"""JSON Schema of the Workflow kind, generated from the models so it cannot drift."""

from __future__ import annotations

import json
from typing import Any

from reconciler.manifest.schema import Workflow

SCHEMA_ID = "https://reconciler.dev/schema/workflow.schema.json"


def workflow_schema() -> dict[str, Any]:
    schema = Workflow.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "reconciler Workflow (reconciler.dev/v1alpha1)",
        **schema,
    }


def workflow_schema_json() -> str:
    return json.dumps(workflow_schema(), indent=2, sort_keys=True) + "\n"
