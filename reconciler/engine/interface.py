"""The one small interface between the engine and whatever changes the world.

The engine knows DAGs, time and failure policy; an `Actions` implementation knows
Kubernetes (reconciler/actions) or is an in-memory double (tests). Every method is async and
may raise TransientError or PermanentError (engine/errors.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from reconciler.engine.record import Measurement
from reconciler.manifest.checkspec import Check
from reconciler.manifest.schema import CustomStep, StepBase

Captured = dict[str, Any]
# The key of apply's or wait's result that holds the step's outputs (docs/outputs.md):
# values later steps reference, checked against what the step declares.
OUTPUTS_KEY = "outputs"


@dataclass
class StepContext:
    run_id: str
    workflow: str
    attempt: int
    # Set by an action while it waits ("2 of 4 updated replicas available"); the engine puts
    # it into the timeout message, so a timed-out step says what it was waiting for.
    waiting_for: str | None = None


class Actions(Protocol):
    async def capture(self, step: StepBase, ctx: StepContext) -> Captured:
        """Record exactly what `apply` will change, before changing it. JSON-safe; secret
        values must already be replaced by digests here."""
        ...

    async def apply(
        self, step: StepBase, captured: Captured, ctx: StepContext
    ) -> dict[str, Any] | None:
        """Make the change. Idempotent: re-applying an effect already present changes nothing.
        May return details worth recording (e.g. a Job's log tail)."""
        ...

    async def wait(
        self, step: StepBase, captured: Captured, ctx: StepContext
    ) -> dict[str, Any] | None:
        """Return once the change has really taken effect (rollout done, pods gone). May
        return details worth recording, merged with apply's."""
        ...

    async def undo(self, step: StepBase, captured: Captured, ctx: StepContext) -> str | None:
        """Restore the captured state and wait for it. May return a note for the record
        (e.g. "evicted pods are not restored")."""
        ...

    async def targets(self, step: StepBase, ctx: StepContext) -> list[str]:
        """The names a fan-out step's selector matches now, sorted (docs/fanout.md); at most
        one more than the limit, so a huge match is refused without listing it all."""
        ...


@dataclass(frozen=True)
class ApprovalView:
    """One step's approvals as git has them now (the daemon reads them, docs/approvals.md)."""

    outcome: str  # approved | rejected | waiting
    approved_by: list[dict[str, Any]]  # {approver, commit, time, comment}, in commit order
    rejected_by: list[dict[str, Any]]
    refused: list[str]  # decisions that did not count, each with why


class Approvals(Protocol):
    def state(self, run_id: str, step: StepBase) -> ApprovalView:
        """The decisions on `step` of run `run_id` that count, and those that did not."""
        ...

    async def changed(self, timeout: float) -> None:
        """Return when new decisions may have arrived, or after `timeout` seconds."""
        ...


class Checks(Protocol):
    async def measure(self, check: Check, step: StepBase, ctx: StepContext) -> Measurement:
        """One measurement of `check`, now: Passed, Failed (`decisive` if its
        failureCondition held) or Inconclusive (no data, NaN, the source unreachable).
        Never raises for what it measured; bounded in time by its own timeouts."""
        ...


def is_reversible(step: StepBase) -> bool:
    """A Custom step is reversible only when it declares its own rollback Job."""
    if isinstance(step, CustomStep):
        return step.params.rollback is not None
    return step.reversible
