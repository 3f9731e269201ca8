"""--verify-signatures: which commit's signature decides whether a revision runs, and the
verdict. A refusal is reported in `_refused.md` (formats/reports.py) by the caller."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.formats import reports
from reconciler.gitops.git import GitRepo

log = logging.getLogger(__name__)


@dataclass
class SignatureJudge:
    git: GitRepo
    records_path: str
    allowed_signers: Path
    _judged: dict[str, str] = field(default_factory=dict)  # commit -> its deciding commit

    async def subject(self, head: str) -> str:
        """The commit whose signature decides whether `head` runs: head itself, unless it
        (and the commits below it on the first-parent line) are record commits: they only
        add or change files under the records path (or remove the daemon's own reports).
        Those are the daemon's own commits, unsigned unless --signing-key is given;
        refusing them would refuse every revision after a record. A commit that deletes or
        moves a record is judged: records decide what already ran. Empty commits are judged
        (signing one approves the tree, as with Flux). Walked once per commit (cached),
        however long the run of record commits."""
        prefix = self.records_path.rstrip("/") + "/"
        own_files = reports.own_report_paths(self.records_path)
        skipped: list[str] = []
        commit = head
        while commit not in self._judged:
            parent = await self.git.first_parent(commit)
            if parent is None:
                break
            changes = await self.git.changes(parent, commit)
            if not changes or not all(
                path.startswith(prefix) and (status in ("A", "M") or path in own_files)
                for status, path in changes
            ):
                break
            skipped.append(commit)
            commit = parent
        subject = self._judged.get(commit, commit)
        for c in [*skipped, commit]:
            self._judged[c] = subject
        return subject

    async def verdict(self, head: str) -> tuple[bool, str]:
        """(signed by an allowed key, the judged commit)."""
        judged = await self.subject(head)
        if await self.git.verify_commit(judged, self.allowed_signers):
            return True, judged
        log.error(
            "revision %s@sha1:%s is not signed by an allowed key (judged commit %s):"
            " not executing it",
            self.git.branch,
            head,
            judged,
        )
        return False, judged
