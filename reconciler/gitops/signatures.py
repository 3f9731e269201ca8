"""--verify-signatures: which commits must be signed for a revision to run, and the verdict.
A refusal is reported in `_refused.md` (formats/reports.py) by the caller.

As Flux does it, and stricter: the commit that decides the head (the head, or the newest
commit below it that is more than a record commit) must be signed by an allowed key; and
once a head has been verified, every later commit that touches the workflow path must be
signed too, merges judged against each of their parents (an unsigned merge whose first
parent is someone's signed work-in-progress touches the workflows against its other
parent, so it is judged itself). Only the daemon's own record commits are skipped: those
signed by its --signing-key that touch nothing but the records path; a record commit
anyone else pushed is judged like any other (a forged record decides what already ran).
"""

from __future__ import annotations

import logging
import subprocess
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
    workflows_path: str = "workflows/"
    own_signers: Path | None = None  # the daemon's own key (own_signers_file); None: none
    verified: str | None = None  # the last head that passed
    _judged: dict[str, str] = field(default_factory=dict)  # commit -> its deciding commit

    async def _record_only(self, commit: str, parents: list[str]) -> bool:
        """Against every parent, only files under the records path added or changed (or
        the daemon's own reports removed), and signed with the daemon's own key: the
        daemon's own commits. Empty is not."""
        if self.own_signers is None:
            return False
        prefix = self.records_path.rstrip("/") + "/"
        own_files = reports.own_report_paths(self.records_path)
        changed_any = False
        for parent in parents:
            changes = await self.git.changes(parent, commit)
            changed_any = changed_any or bool(changes)
            if not all(
                path.startswith(prefix) and (status in ("A", "M") or path in own_files)
                for status, path in changes
            ):
                return False
        return changed_any and await self.git.verify_commit(commit, self.own_signers)

    async def subject(self, head: str) -> str:
        """The commit whose signature decides whether `head` runs: head itself, unless it
        (and the commits below it on the first-parent line) are record commits (see
        `_record_only`): the daemon's own, signed with its key; refusing them would refuse
        every revision after a record.
        A commit that deletes or moves a record is judged: records decide what already
        ran. Empty commits are judged (signing one approves the tree, as with Flux).
        Walked once per commit (cached), however long the run of record commits."""
        skipped: list[str] = []
        commit = head
        while commit not in self._judged:
            parents = await self.git.parents(commit)
            if not parents or not await self._record_only(commit, parents):
                break
            skipped.append(commit)
            commit = parents[0]
        subject = self._judged.get(commit, commit)
        for c in [*skipped, commit]:
            self._judged[c] = subject
        return subject

    async def _touches_workflows(self, commit: str) -> bool:
        prefix = self.workflows_path.rstrip("/") + "/"
        parents = await self.git.parents(commit)
        if not parents:
            return bool(await self.git.ls_tree(commit, self.workflows_path))
        for parent in parents:
            if any(path.startswith(prefix) for _, path in await self.git.changes(parent, commit)):
                return True
        return False

    async def verdict(self, head: str) -> tuple[bool, str]:
        """(allowed to run, the commit judged: the first one found unsigned, or head)."""
        judged = await self.subject(head)
        if not await self.git.verify_commit(judged, self.allowed_signers):
            return self._refuse(head, judged)
        if self.verified is not None and self.verified != head:
            for commit in await self.git.commits_between(self.verified, head):
                touches = await self._touches_workflows(commit)
                if touches and not await self.git.verify_commit(commit, self.allowed_signers):
                    return self._refuse(head, commit)
        self.verified = head
        return True, head

    def _refuse(self, head: str, judged: str) -> tuple[bool, str]:
        log.error(
            "revision %s@sha1:%s is not signed by an allowed key (judged commit %s):"
            " not executing it",
            self.git.branch,
            head,
            judged,
        )
        return False, judged


class OwnKeyError(Exception):
    """The daemon's signing key cannot be read: said at start-up, with the fix."""


def own_signers_file(signing_key: Path, workdir: Path) -> Path:
    """An allowed_signers file of the daemon's own public key, derived from --signing-key,
    against which its record commits are verified."""
    try:
        done = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(signing_key)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise OwnKeyError(f"--signing-key {signing_key}: cannot run ssh-keygen: {err}") from err
    if done.returncode != 0 or not done.stdout.strip():
        reason = done.stderr.strip() or "no public key"
        raise OwnKeyError(
            f"--signing-key {signing_key}: not a readable SSH private key without a passphrase"
            f" ({reason}); it signs the daemon's record commits, which --verify-signatures"
            " skips only when signed by it"
        )
    kind, public = done.stdout.split()[:2]
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "own_allowed_signers"
    path.write_text(f'* namespaces="git" {kind} {public}\n')
    return path
