"""The branch's approvals/ decisions (docs/approvals.md), read at every sync that brings a
new head, and what the runs' engine asks of them (engine.interface.Approvals): one step's
decisions that count, and those that did not, each with why. Decisions for a run that is
not running (finished, or no such run) go into `_approvals.md` under the records path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from reconciler.engine.interface import ApprovalView
from reconciler.formats import reports
from reconciler.gitops.approvals import Decision, Refusal, approvers_signers_file, scan
from reconciler.gitops.approvaltally import decisions_for, tally
from reconciler.gitops.git import GitRepo
from reconciler.manifest.policy import Policy
from reconciler.manifest.schema import StepBase

log = logging.getLogger("reconciler.daemon")
MAX_REPORTED = 50  # the newest decisions that did not reach a run, in _approvals.md


class ApprovalBook:
    def __init__(self, git: GitRepo, policy: Policy, workdir: Path) -> None:
        self.git = git
        self.policy = policy
        people = policy.approvers.people
        self.signers = approvers_signers_file(policy.approvers, workdir) if people else None
        self.items: list[Decision | Refusal] = []
        self.scanned: str | None = None  # the head read up to
        self.claimed: set[str] = set()  # see gitops.approvals.scan
        self.unreached: list[str] = []  # decisions no running run took, newest last
        self._changed = asyncio.Event()

    @property
    def enabled(self) -> bool:
        """The policy names approvers: every commit of the branch must be read (history)."""
        return self.signers is not None

    async def update(self, head: str) -> list[Decision | Refusal]:
        """Read what old..head added under approvals/; the new items."""
        if self.signers is None or head == self.scanned:
            return []
        found = await scan(self.git, self.scanned, head, self.signers, self.claimed)
        self.scanned = head
        for item in found:
            if isinstance(item, Refusal):
                log.warning("approval refused: %s", item)
        if found:
            self.items += found
            self._changed.set()  # wakes every waiting step, then a fresh event
            self._changed = asyncio.Event()
        return found

    def unreached_report(
        self, found: list[Decision | Refusal], running: dict[str, set[str]], recorded: set[str]
    ) -> bytes | None:
        """`_approvals.md` once decisions arrived that no running run's step with an
        `approval` takes (`running`: run id -> those steps); None when nothing is new."""
        before = len(self.unreached)
        for item in found:
            parts = item.path.split("/")
            run_id, step = (parts + ["", ""])[1:3]
            if step in running.get(run_id, ()):
                continue  # that step's record shows it
            if run_id in running:
                why = f"run {run_id} has no step {step!r} with an approval"
            elif run_id in recorded:
                why = f"run {run_id} has finished"
            else:
                why = f"no run {run_id!r} exists"
            self.unreached.append(
                f"{item.path} (commit {item.commit[:12]}): {why}; it does nothing"
            )
        if len(self.unreached) == before:
            return None
        self.unreached = self.unreached[-MAX_REPORTED:]
        return reports.approvals_markdown(self.unreached)

    def state(self, run_id: str, step: StepBase) -> ApprovalView:
        spec = step.approval
        assert spec is not None
        mine = decisions_for(self.items, run_id, step.name)
        counted = tally(spec.required, spec.approvers, self.policy.approvers, mine)
        first = {d.approver: d for d in reversed(mine)}
        prefix = f"approvals/{run_id}/{step.name}/"
        refused = [
            str(r) for r in self.items if isinstance(r, Refusal) and r.path.startswith(prefix)
        ]
        return ApprovalView(
            counted.outcome,
            [_who(first[name]) for name in counted.approved_by],
            [_who(first[name]) for name in counted.rejected_by],
            refused + [str(r) for r in counted.refused],
        )

    async def changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


def _who(d: Decision) -> dict[str, object]:
    return {"approver": d.approver, "commit": d.commit, "time": d.time, "comment": d.comment}
