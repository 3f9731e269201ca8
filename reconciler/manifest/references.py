"""The `${{ ... }}` references of a step to earlier steps' outputs and to the workflow's
inputs (docs/outputs.md): their one owner. Parsed here, checked against the DAG by
manifest/outputrules.py, resolved by the engine right before the step starts.

A string that is one reference and nothing else takes the value with its type
(`replicas: ${{ steps.probe.outputs.replicas }}` is an integer); a reference inside a longer
string is written into it as text; inside a CEL condition (`when`, `successCondition`, ...)
as a CEL literal, so a string output can never become CEL code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from reconciler.manifest.errors import FieldPath

REFERENCE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_STEP = re.compile(r"steps\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.outputs\.([A-Za-z_][A-Za-z0-9_]*)")
_INPUT = re.compile(r"inputs\.([A-Za-z_][A-Za-z0-9_]*)")
CEL_FIELDS = frozenset({"when", "successCondition", "failureCondition", "condition"})
# Where a step may hold references; anywhere else one is an error, said at the field.
REFERABLE = frozenset({"params", "verify", "when"})
# What a reference's text stands for while the schema validates the file (the value is
# only known at run time): a value of the output's type.
STAND_INS: dict[str, Any] = {"string": "x", "integer": 0, "number": 0.0, "boolean": False}


class BadReference(ValueError):
    """A `${{ }}` whose text is neither steps.<step>.outputs.<name> nor inputs.<name>."""


@dataclass(frozen=True)
class Reference:
    text: str  # as written, `${{ ... }}` included
    offset: int  # where it starts in its string
    step: str | None  # None: an input
    name: str  # the output's or the input's name

    @property
    def spelled(self) -> str:
        if self.step is None:
            return f"inputs.{self.name}"
        return f"steps.{self.step}.outputs.{self.name}"


def parse(text: str) -> Iterator[Reference]:
    """Every reference in one string, in order; BadReference for one that is not
    steps.<step>.outputs.<name> or inputs.<name>."""
    unclosed = REFERENCE.sub("", text).find("${{")
    if unclosed >= 0:
        raise BadReference(
            f"{text[unclosed : unclosed + 40]!r}: a `${{{{` without its `}}}}`; a reference is"
            " ${{ steps.<step>.outputs.<name> }} or ${{ inputs.<name> }}"
        )
    for found in REFERENCE.finditer(text):
        inner = found[1].strip()
        if step := _STEP.fullmatch(inner):
            yield Reference(found[0], found.start(), step[1], step[3])
        elif given := _INPUT.fullmatch(inner):
            yield Reference(found[0], found.start(), None, given[1])
        else:
            raise BadReference(
                f"{found[0]!r} at offset {found.start()}: a reference is"
                " ${{ steps.<step>.outputs.<name> }} or ${{ inputs.<name> }}"
            )


def strings(value: Any, at: FieldPath = ()) -> Iterator[tuple[FieldPath, str]]:
    """Every string holding `${{` under `value` (dicts and lists), with its path."""
    if isinstance(value, str):
        if "${{" in value:
            yield at, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, (*at, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings(item, (*at, i))


def is_cel(at: FieldPath) -> bool:
    return bool(at) and at[-1] in CEL_FIELDS and (at[0] != "params")


def substitute(text: str, at: FieldPath, value_of: Callable[[Reference], Any]) -> Any:
    """`text` with each reference replaced by `value_of(reference)`: the value itself when
    the string is one reference (outside CEL), else text (a CEL literal in a condition)."""
    refs = list(parse(text))
    cel = is_cel(at)
    if not cel and len(refs) == 1 and text.strip() == refs[0].text:
        return value_of(refs[0])
    pieces: list[str] = []
    end = 0
    for ref in refs:
        pieces.append(text[end : ref.offset])
        value = value_of(ref)
        pieces.append(cel_literal(value) if cel else as_text(value))
        end = ref.offset + len(ref.text)
    pieces.append(text[end:])
    return "".join(pieces)


def as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def cel_literal(value: Any) -> str:
    """A CEL literal of a JSON-like value: strings quoted and escaped (JSON's escapes are
    CEL's), so an output cannot inject CEL."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def set_at(data: Any, at: FieldPath, value: Any) -> None:
    for key in at[:-1]:
        data = data[key]
    data[at[-1]] = value
