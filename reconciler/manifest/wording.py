"""Pydantic's validation errors in a person's words: the YAML field path (as written, not
the model's), what is wrong, and how to write it instead."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

from reconciler.manifest.checks import suggest
from reconciler.manifest.errors import FieldPath
from reconciler.manifest.schema import ACTIONS, API_VERSION, KIND, Workflow


def not_a_workflow(data: dict[Any, Any]) -> tuple[FieldPath, str] | None:
    """One problem for a document that is some other kind of file (a Deployment, an Argo
    Workflow, an older apiVersion), instead of every field it lacks; None when it says it
    is a Workflow, or says nothing (missing fields are reported as such)."""
    api, kind = data.get("apiVersion"), data.get("kind")
    if api == API_VERSION and kind == KIND:
        return None
    if api is None and kind is None:
        return (), (
            f"not a workflow: no apiVersion or kind; a workflow starts with"
            f" 'apiVersion: {API_VERSION}' and 'kind: {KIND}'"
        )
    if not isinstance(api, str) or not isinstance(kind, str):
        return None
    group = api.split("/")[0] if "/" in api else ""
    ours = group == API_VERSION.split("/")[0]
    if kind == KIND and not ours and group != "argoproj.io":  # our kind, a mistyped apiVersion
        ours = True
    if not ours:
        return ("kind",), (
            f"this is a{'n' if api[:1] in 'aeiou' else ''} {api} {kind}, not a {API_VERSION}"
            f" {KIND}: keep other manifests out of the workflow folder (an Apply step can"
            " manage one)"
        )
    if kind != KIND:
        return ("kind",), f"kind {kind!r} is not one reconciler reads: use {KIND!r}"
    return ("apiVersion",), f"apiVersion {api!r} is not one reconciler reads: use {API_VERSION}"


def translate(error: Any) -> tuple[FieldPath, str]:
    """A pydantic error -> (YAML field path, message a person can act on)."""
    raw_loc: tuple[Any, ...] = tuple(error["loc"])
    path = _yaml_path(raw_loc)
    kind, msg, value = error["type"], error["msg"], error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag"))
        return path + ("action",), f"unknown action {tag!r}{suggest(tag, ACTIONS)}"
    if kind == "union_tag_not_found":
        return path, "missing required field 'action' (one of: " + ", ".join(ACTIONS) + ")"
    if kind == "missing":
        return path, f"missing required field {path[-1]!r}"
    if kind == "extra_forbidden":
        name = str(path[-1])
        return path, f"unknown field {name!r}{suggest(name, _fields_at(raw_loc[:-1]))}"
    if kind.startswith("literal_error"):
        return path, f"{msg} (got {_short(value)})"
    if kind == "value_error":
        return path, msg.removeprefix("Value error, ")
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return path, f"expected a mapping, got {kind_of(value)}"
    if value is None and (kind.endswith("_type") or kind.endswith("_parsing")):
        return path, _no_value(kind)
    if kind in ("string_type", "str_type") and isinstance(value, (int, float, bool)):
        # YAML reads true/True/false as booleans; a Kubernetes user means the string "true"
        written = str(value).lower() if isinstance(value, bool) else str(value)
        return path, f'expected a string, got {_short(value)}: quote it, e.g. "{written}"'
    if kind == "list_type" and isinstance(value, (str, int, float)):
        return path, f"expected a list, got {_short(value)}: write it in brackets, e.g. [{value}]"
    if kind in ("int_type", "int_parsing", "float_type", "float_parsing") and isinstance(
        value, str
    ):
        number = value.strip().lstrip("+-").replace(".", "", 1)
        if number.isdigit():
            return path, f'expected a number, got the string "{value}": remove the quotes'
        whole = "a whole" if kind.startswith("int") else "a"
        return path, f"expected {whole} number, got {_short(value)}"
    if kind == "too_short" and isinstance(value, (list, dict)) and not value:
        if path == ("spec", "steps"):
            return path, "no steps: a workflow needs at least one step"
        return path, f"{path[-1]} is empty: give at least {ctx.get('min_length', 1)}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return path, f"{msg}, got {kind_of(value)} {_short(value)}"
    return path, f"{msg} (got {_short(value)})"


def _no_value(kind: str) -> str:
    """A field written with nothing after its colon (YAML null)."""
    expected = {
        "string_type": 'a string (or "" for an empty one)',
        "int_type": "a whole number",
        "int_parsing": "a whole number",
        "float_type": "a number",
        "float_parsing": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "list_type": "a list, e.g. [a, b]",
    }.get(kind, "a value")
    return f"has no value (null): give {expected}, or remove the field"


def _yaml_path(loc: tuple[Any, ...]) -> FieldPath:
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if part == "[key]":
            continue
        # The discriminated union inserts the action name after the step index.
        if i >= 1 and isinstance(loc[i - 1], int) and part in ACTIONS and "steps" in loc[:i]:
            continue
        out.append(part)
    return tuple(out)


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names (YAML spelling) of the model at a pydantic location, for suggestions."""
    current: Any = Workflow
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            match = next(
                (f for n, f in current.model_fields.items() if (f.alias or n) == part), None
            )
            current = match.annotation if match else None
        elif isinstance(current, list):  # union of step classes
            current = ACTIONS.get(part)
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, list):
        return sorted({f.alias or n for c in current for n, f in c.model_fields.items()})
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    """Strip Annotated/Optional; a union of models becomes a list of them."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
            else:
                return args
        else:
            return tp


def kind_of(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
