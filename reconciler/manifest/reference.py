"""The manifest reference in README, generated from the models so it cannot drift
(tests/unit/test_reference.py fails when README and the models disagree)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from reconciler.manifest.durations import DURATION_PATTERN, format_duration
from reconciler.manifest.schema import ACTIONS, StepBase, Workflow

BEGIN = "<!-- BEGIN GENERATED REFERENCE (reconciler.manifest.reference) -->"
END = "<!-- END GENERATED REFERENCE -->"

UNDO = {
    "ScaleDeployment": "scale back to the captured replicas and wait for the rollout",
    "UpdateImage": "restore the captured image of that container and wait for the rollout",
    "RestartDeployment": "irreversible (recorded as such in rollback)",
    "DeletePod": "irreversible",
    "CordonNode": "restore the captured `unschedulable`",
    "UncordonNode": "restore the captured `unschedulable`",
    "DrainNode": "uncordon; evicted pods are not brought back (the record says so)",
    "UpdateConfigMap": "restore the captured data exactly (keys the step added are removed)",
    "UpdateSecret": "restore the captured data exactly; values never reach git (digests only)",
    "Apply": "restore the captured object, or delete it if the step created it",
    "Custom": "run the `rollback` Job if given; otherwise irreversible",
}
TARGET = {
    "namespaced-object": "`namespace`, `name`",
    "node": "`name` (the node)",
    "namespace": "`namespace`",
    "any": "— (from the manifest)",
}


def _describe(prop: dict[str, Any]) -> str:
    """A short type name from a JSON Schema property."""
    if "anyOf" in prop:
        kinds = [_describe(p) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(kinds)
    if prop.get("pattern") == DURATION_PATTERN:
        return "duration"
    if "$ref" in prop or prop.get("type") == "object":
        return "object" if "additionalProperties" not in prop else "map"
    if prop.get("type") == "array":
        items = prop.get("items", {})
        return "list of " + (
            "steps" if "oneOf" in items or "discriminator" in items else _describe(items) + "s"
        )
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    return {"string": "string", "integer": "integer", "boolean": "boolean", "number": "number"}.get(
        prop.get("type", ""), "object"
    )


def _default(field: FieldInfo, is_duration: bool) -> str:
    if field.is_required():
        return "required"
    value = field.default if field.default is not PydanticUndefined else field.default_factory()  # type: ignore[misc]
    if (
        value is None
        or (isinstance(value, dict | list) and not value)
        or isinstance(value, BaseModel)
    ):
        return "—"
    if is_duration and isinstance(value, float):
        return format_duration(value)
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def fields_table(model: type[BaseModel]) -> list[str]:
    props = model.model_json_schema(by_alias=True)["properties"]
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in ("action", "params"):
            continue
        alias = field.alias or name
        if alias not in props:  # internal, kept out of the schema (a step's `$templates`)
            continue
        kind = _describe(props[alias])
        default = _default(field, kind == "duration")
        rows.append(f"| `{alias}` | {kind} | {default} | {field.description or ''} |")
    return rows


def params_cell(step_class: type[StepBase]) -> str:
    params = step_class.model_fields["params"].annotation
    assert isinstance(params, type) and issubclass(params, BaseModel)
    parts = []
    for name, field in params.model_fields.items():
        default = _default(field, False)
        if default == "—":
            default = "optional"
        parts.append(
            f"`{field.alias or name}`" + ("" if default == "required" else f" ({default})")
        )

    return ", ".join(parts) or "—"


def reference_markdown() -> str:
    lines = [
        BEGIN,
        "",
        "### Actions",
        "",
        "| action | target | params (default) | undo |",
        "|---|---|---|---|",
    ]
    for name, cls in ACTIONS.items():
        lines.append(f"| {name} | {TARGET[cls.target_kind]} | {params_cell(cls)} | {UNDO[name]} |")
    spec = Workflow.model_fields["spec"].annotation
    assert isinstance(spec, type) and issubclass(spec, BaseModel)
    lines += [
        "",
        "### `spec`",
        "",
        *fields_table(spec),
        "",
        "### Every step",
        "",
        *fields_table(StepBase),
    ]
    retry = StepBase.model_fields["retry"].annotation
    rollback = spec.model_fields["rollback"].annotation
    assert isinstance(retry, type) and isinstance(rollback, type)
    lines += [
        "",
        "### `retry`",
        "",
        *fields_table(retry),
        "",
        "### `spec.rollback`",
        "",
        *fields_table(rollback),
        "",
        END,
    ]
    return "\n".join(lines)


def update_readme(path: str) -> bool:
    """Rewrite the generated block of a README; True if it changed."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    new = text[:start] + reference_markdown() + text[end:]
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
    return new != text


if __name__ == "__main__":  # python -m reconciler.manifest.reference README.md
    import sys

    print("updated" if update_readme(sys.argv[1]) else "up to date")
