"""The two languages inside checks: CEL conditions and PromQL queries. Parsed once, at load
time (a compiled program is cached by its text); evaluated by checks/ on each measurement.

CEL is the language Kubernetes (ValidatingAdmissionPolicy, CRD rules) and Flux (health
checks) use, so our users already write it. We evaluate it with common-expression-language
(Python bindings of cel-rust): about 0.03 ms an evaluation here, ten times cel-python's
(bench/checks_bench.py), with CEL's numeric comparisons across int and double (`result ==
0` on Prometheus' 0.0), parse errors with a position, and the variables a program names,
so a condition that names something other than what its check provides is a load error.
PromQL is parsed by promql-parser (Python bindings of the Rust parser GreptimeDB uses), so
a typo is a load error at the field, not a failed measurement.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import cel
import promql_parser

PROMETHEUS_VARIABLES = frozenset({"result", "results"})
LIVE_VARIABLES = frozenset({"object"})
_POSITION = re.compile(r"<input>:(\d+):(\d+): (.*?)(?:\n|$)")


@dataclass(frozen=True)
class ExpressionError(Exception):
    """A condition or query that does not parse or evaluate; `line`/`column` within its
    text (1-based) when known."""

    message: str
    line: int = 1
    column: int = 1

    def __str__(self) -> str:
        return self.message


@functools.lru_cache(maxsize=4096)
def compile_condition(text: str) -> Any:
    """A CEL program, compiled once per distinct text."""
    try:
        return cel.compile(text)
    except (ValueError, RuntimeError) as err:
        found = _POSITION.search(str(err))
        if found is None:
            raise ExpressionError(f"CEL syntax error: {str(err).splitlines()[0]}") from None
        line, column, what = int(found[1]), int(found[2]), found[3]  # 1-based already
        raise ExpressionError(
            f"CEL syntax error at column {column}: {what}", line, column
        ) from None


def unknown_variables(text: str, known: frozenset[str]) -> list[str]:
    """The variables a condition names that its check does not provide."""
    return sorted(set(compile_condition(text).variables()) - known)


def check_query(text: str) -> None:
    """Raise ExpressionError unless `text` is PromQL."""
    try:
        promql_parser.parse(text)
    except ValueError as err:
        raise ExpressionError(f"PromQL syntax error: {err}") from None


def evaluate(program: Any, variables: dict[str, Any]) -> bool:
    """The condition's verdict on JSON-like variables; a non-boolean answer, a missing
    field or a type error is an ExpressionError naming what went wrong."""
    try:
        value = program.execute(variables)
    except KeyError as err:
        raise ExpressionError(
            f"CEL evaluation failed: no field {err} (test it with has())"
        ) from None
    except Exception as err:  # the bindings raise ValueError, TypeError, RuntimeError
        raise ExpressionError(f"CEL evaluation failed: {err}") from None
    if not isinstance(value, bool):
        raise ExpressionError(f"the condition is {type(value).__name__}, not a boolean")
    return value
