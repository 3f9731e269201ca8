"""The two languages inside checks: CEL conditions and PromQL queries. Parsed once, at load
time (a compiled program is cached by its text); evaluated by checks/ on each measurement.

CEL comes from cel-python (`celpy`): the language Kubernetes (ValidatingAdmissionPolicy,
CRD rules) and Flux (health checks) use, so our users already write it; a pure-Python,
actively maintained implementation of the spec, about 0.1 ms an evaluation here, with no
native code to build. PromQL is parsed by promql-parser (Python bindings of the Rust parser
GreptimeDB uses), so a typo is a load error at the field, not a failed measurement.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import celpy
import promql_parser
from celpy import celtypes

VARIABLES = {"result", "results", "object"}  # what conditions may name


@dataclass(frozen=True)
class ExpressionError(Exception):
    """A condition or query that does not parse; `column` within its text (1-based)."""

    message: str
    line: int = 1
    column: int = 1

    def __str__(self) -> str:
        return self.message


@functools.lru_cache(maxsize=4096)
def compile_condition(text: str) -> Any:
    """A CEL program, compiled once per distinct text."""
    env = celpy.Environment()
    try:
        return env.program(env.compile(text))
    except celpy.CELParseError as err:
        line, column = getattr(err, "line", 1) or 1, getattr(err, "column", 1) or 1
        raise ExpressionError(f"CEL syntax error at column {column}", line, column) from None


def check_query(text: str) -> None:
    """Raise ExpressionError unless `text` is PromQL."""
    try:
        promql_parser.parse(text)
    except ValueError as err:
        raise ExpressionError(f"PromQL syntax error: {err}") from None


def evaluate(program: Any, variables: dict[str, Any]) -> bool:
    """The condition's verdict on JSON-like variables; a non-boolean answer, an unknown
    field or a type error is an ExpressionError naming what went wrong."""
    try:
        activation = {k: _to_cel(v) for k, v in variables.items()}
        value = program.evaluate(activation)
    except Exception as err:  # celpy raises its own error types and Python's
        raise ExpressionError(f"CEL evaluation failed: {err}") from None
    if isinstance(value, celpy.CELEvalError):
        raise ExpressionError(f"CEL evaluation failed: {value.args[0] if value.args else value}")
    if not isinstance(value, bool):  # celpy's BoolType subclasses int, not bool
        if type(value).__name__ == "BoolType":
            return bool(value)
        raise ExpressionError(f"the condition is {type(value).__name__}, not a boolean")
    return value


class Number(celtypes.DoubleType):
    """A measured value: a double that also equals an int literal. CEL has no implicit
    conversion, so `result == 0` on Prometheus' 0.0 would be an error ("no matching
    overload"), and that is the first condition everyone writes for an alert count."""

    def __eq__(self, other: Any) -> Any:
        if isinstance(other, celtypes.IntType):
            return celtypes.BoolType(float(self) == float(other))
        return super().__eq__(other)

    def __ne__(self, other: Any) -> Any:
        if isinstance(other, celtypes.IntType):
            return celtypes.BoolType(float(self) != float(other))
        return super().__ne__(other)

    __hash__ = celtypes.DoubleType.__hash__


def _to_cel(value: Any) -> Any:
    if isinstance(value, float):
        return Number(value)
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return celtypes.ListType([Number(v) for v in value])
    return celpy.json_to_cel(value)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
