"""Step outputs: their types, what each step declares, a value checked against its
declaration, and the stand-ins that let the schema validate a step whose params hold
`${{ }}` references (the values come at run time). Knows nothing of the engine."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from reconciler.manifest import references
from reconciler.manifest.fanout import FAN_OUT_OUTPUTS
from reconciler.manifest.references import BadReference, Reference

if TYPE_CHECKING:
    from reconciler.manifest.schema import StepBase

OutputType = Literal["string", "integer", "number", "boolean"]
MAX_STRING = 1_024  # one output value; the termination message is 4 KiB in all
TEMPLATES = "$templates"


def declared(step: StepBase) -> dict[str, OutputType]:
    """The outputs `step` has: its action's, or for Custom what its author declared; a
    fan-out step's are its counts of targets."""
    if step.for_each is not None:
        return dict(FAN_OUT_OUTPUTS)
    own = getattr(step.params, "outputs", None) if step.action == "Custom" else None  # type: ignore[attr-defined]
    return dict(own) if own is not None else dict(step.OUTPUTS)


def declared_raw(raw: dict[str, Any], actions: dict[str, Any]) -> dict[str, str]:
    action = raw.get("action")
    if raw.get("forEach") is not None:
        return dict(FAN_OUT_OUTPUTS)
    if action == "Custom":
        params = raw.get("params")
        given = params.get("outputs") if isinstance(params, dict) else None
        return {str(k): str(v) for k, v in given.items()} if isinstance(given, dict) else {}
    cls = actions.get(action) if isinstance(action, str) else None
    return dict(cls.OUTPUTS) if cls is not None else {}


def type_of(value: Any) -> OutputType | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number" if math.isfinite(value) else None
    if isinstance(value, str):
        return "string"
    return None


def check_values(wanted: dict[str, OutputType], values: dict[str, Any]) -> list[str]:
    """What is wrong with `values` as the outputs `wanted` declares: each an English
    sentence naming the output (an integer is a number too)."""
    problems = [f"{name}: not declared" for name in sorted(set(values) - set(wanted))]
    for name, kind in wanted.items():
        if name not in values:
            problems.append(f"{name}: missing")
            continue
        got = type_of(values[name])
        if got != kind and not (kind == "number" and got == "integer"):
            problems.append(f"{name}: {got or type(values[name]).__name__}, not {kind}")
        elif got == "string" and len(values[name]) > MAX_STRING:
            problems.append(f"{name}: {len(values[name])} characters, over {MAX_STRING}")
    return problems


def pointer(at: tuple[str | int, ...]) -> str:
    """A JSON pointer (RFC 6901) of a field path: `params/data/app.kubernetes.io~1name`."""
    return "/".join(str(k).replace("~", "~0").replace("/", "~1") for k in at)


def unpointer(text: str) -> tuple[str, ...]:
    return tuple(k.replace("~1", "/").replace("~0", "~") for k in text.split("/"))


def field_path(pointer: str) -> tuple[str | int, ...]:
    """The field path of a template's pointer (digits: list indexes)."""
    return tuple(int(k) if k.isdigit() else k for k in unpointer(pointer))


def _path_in(data: Any, keys: tuple[str, ...], make: bool = False) -> tuple[str | int, ...] | None:
    """The field path of a pointer in `data` (list indexes as ints), None if it is gone.
    `make`: mappings on the way are made (a dump that left out defaults left them out)."""
    at: list[str | int] = []
    for i, key in enumerate(keys):
        if make and isinstance(data, dict) and key not in data:
            data[key] = {} if i < len(keys) - 1 else None
        if isinstance(data, list) and key.isdigit() and int(key) < len(data):
            at.append(int(key))
            data = data[int(key)]
        elif isinstance(data, dict) and key in data:
            at.append(key)
            data = data[key]
        else:
            return None
    return tuple(at)


def restore(raw: dict[str, Any]) -> dict[str, Any]:
    """A dumped step (a checkpoint's) with its templates back in their fields."""
    held = raw.get(TEMPLATES)
    if not isinstance(held, dict):
        return raw
    raw = copy.deepcopy({k: v for k, v in raw.items() if k != TEMPLATES})
    for key, text in held.items():
        at = _path_in(raw, unpointer(str(key)), make=True)
        if at is not None and isinstance(text, str):
            references.set_at(raw, at, text)
    return raw


def hold_references(data: Any, actions: dict[str, Any]) -> Any:
    """A raw spec with every `${{ }}` string of its steps' params, verify and when replaced
    by a stand-in of the referenced output's type, the strings kept in `$templates`. An
    unknown reference gets a string stand-in; manifest/outputrules.py reports it."""
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        return data
    raw_steps = [s if isinstance(s, dict) else {} for s in data["steps"]]
    types = {
        s["name"]: declared_raw(s, actions) for s in raw_steps if isinstance(s.get("name"), str)
    }
    inputs = data.get("inputs") if isinstance(data.get("inputs"), dict) else {}

    def stand_in(ref: Reference) -> Any:
        if ref.step is None:
            kind = type_of(inputs.get(ref.name))  # type: ignore[union-attr]
        else:
            kind = types.get(ref.step, {}).get(ref.name)  # type: ignore[assignment]
        return references.STAND_INS.get(kind or "string", "x")

    steps = []
    for item in data["steps"]:
        if not isinstance(item, dict):
            steps.append(item)
            continue
        raw = restore(item)
        held: dict[str, str] = {}
        out = copy.deepcopy(raw)
        fields = {k: raw[k] for k in references.REFERABLE if k in raw}
        for at, text in references.strings(fields):
            try:
                value = references.substitute(text, at, stand_in)
            except BadReference:
                value = references.STAND_INS["string"]
            held[pointer(at)] = text
            references.set_at(out, at, value)
        if held:
            cls = actions.get(out.get("action"))  # type: ignore[arg-type]
            out = as_text_where_wanted(cls, out) if cls is not None else out
            out[TEMPLATES] = held
        steps.append(out)
    return {**data, "steps": steps}


def as_text_where_wanted(cls: Any, data: dict[str, Any]) -> dict[str, Any]:
    """`data` (a step) with each number or boolean that stands where its field takes text
    (a ConfigMap's data, an env value) turned into that text: a field that is one reference
    keeps the output's type, unless the field wants a string."""
    try:
        cls.model_validate(data)
        return data
    except ValidationError as err:
        wrong = [
            tuple(e["loc"])
            for e in err.errors(include_url=False)
            if e["type"] == "string_type" and isinstance(e["input"], (bool, int, float))
        ]
    fixed = copy.deepcopy(data)
    for at in wrong:
        found = _path_in(fixed, tuple(str(k) for k in at))
        if found is None:
            continue
        value: Any = fixed
        for key in found:
            value = value[key]
        references.set_at(fixed, found, references.as_text(value))
    return fixed
