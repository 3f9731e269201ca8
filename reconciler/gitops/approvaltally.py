"""One step's approval state from the decisions git holds (gitops/approvals.py reads them):
who counts, and the outcome, which once settled never changes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from reconciler.gitops.approvals import Decision, Refusal
from reconciler.manifest.policy import Approvers

Outcome = Literal["approved", "rejected", "waiting"]


@dataclass(frozen=True)
class ApprovalState:
    outcome: Outcome
    approved_by: tuple[str, ...] = ()
    rejected_by: tuple[str, ...] = ()
    refused: tuple[Refusal, ...] = ()  # decisions that did not count, and why
    decided_by: Decision | None = None  # the decision that settled the outcome


def decisions_for(items: Iterable[Decision | Refusal], run_id: str, step: str) -> list[Decision]:
    return [d for d in items if isinstance(d, Decision) and (d.run_id, d.step) == (run_id, step)]


def tally(
    required: int, approvers: Sequence[str], policy: Approvers, decisions: Iterable[Decision]
) -> ApprovalState:
    """One step's state from its decisions in commit order. Each person's first decision
    counts; decisions by people the step's `approvers` do not name are refused. The
    outcome is settled by the first decision that settles it — the approval that makes
    `required`, or any rejection — and later decisions never change it: a step that went
    ahead stays approved however the history is read again."""
    allowed, _ = policy.expand(approvers)
    first: dict[str, Decision] = {}
    approved: list[str] = []
    rejected: list[str] = []
    refused: list[Refusal] = []
    outcome: Outcome = "waiting"
    decided_by = None
    for d in decisions:
        if d.approver not in allowed:
            reason = f"{d.approver} is not an approver of this step"
            refused.append(Refusal(d.commit, d.path, reason))
            continue
        if (earlier := first.get(d.approver)) is not None:
            reason = (
                f"{d.approver} already decided ({earlier.decision} in commit"
                f" {earlier.commit[:12]}): the first decision stands"
            )
            refused.append(Refusal(d.commit, d.path, reason))
            continue
        first[d.approver] = d
        (approved if d.decision == "approve" else rejected).append(d.approver)
        if outcome == "waiting" and (d.decision == "reject" or len(approved) >= required):
            outcome, decided_by = ("rejected" if d.decision == "reject" else "approved"), d
    return ApprovalState(outcome, tuple(approved), tuple(rejected), tuple(refused), decided_by)
