"""Figures the e2e tests measure (latencies, the crash and load tables, the soak, the secret
scan), printed together at the end of the run so `make test` and `make soak` show them
without -s; docs/reliability.md and docs/benchmarks.md quote them."""

from __future__ import annotations

FIGURES: list[str] = []


def report(text: str) -> None:
    print(text)  # also in the test's own captured output
    FIGURES.extend(text.strip("\n").splitlines())
