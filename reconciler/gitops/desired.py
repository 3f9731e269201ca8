"""Desired vs applied (docs/architecture.md, Identity).

Desired: every Workflow under the workflow folder at a revision. Manifests are cached by
(path, blob sha), so a new revision re-reads only the files whose content changed: a
10,000-file repository with a one-file change parses one file.

Applied: run ids with a record under the records path at that revision, plus live
WorkflowExecutions. Desired minus applied is the queue.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from reconciler.gitops.git import GitRepo
from reconciler.gitops.plumbing import TreeEntry
from reconciler.manifest import yamlsource
from reconciler.manifest.errors import ManifestIssue
from reconciler.manifest.loader import YAML_SUFFIXES, LoadResult, load_text, reject_duplicate_names
from reconciler.manifest.policy import Policy

SYMLINK_MODE = "120000"
# Per revision, all workflow files together: a push of many small, compressible files must
# not take the daemon's memory (40 files of 8 MiB each took 714 MB) or time.
MAX_REVISION_BYTES = 64 * 1024 * 1024
MAX_REVISION_NODES = 4_000_000
# Below the 15 s lease, so the event loop (and the lease's renewals) never wait on a parse
# (parsing runs in a worker thread); a file that takes longer is refused.
PARSE_DEADLINE = 10.0


@dataclass
class ManifestCache:
    policy: Policy | None = None
    entries: dict[tuple[str, str], LoadResult] = field(default_factory=dict)
    parsed: int = 0  # files parsed since start (the benchmark reads this)

    async def desired(self, git: GitRepo, commit: str, folder: str) -> LoadResult:
        tree = [e for e in await git.ls_tree(commit, folder) if e.path.endswith(YAML_SUFFIXES)]
        tree = [e for e in tree if not any(p.startswith(".") for p in PurePosixPath(e.path).parts)]
        problems = {e: self._precheck(e) for e in tree}
        # what would be read: a file over its own limit is reported alone and never read
        total = sum(e.size or 0 for e in tree if problems[e] is None)
        if total > MAX_REVISION_BYTES:
            return revision_refused(
                folder, f"{total:,} bytes of workflow files, over the {MAX_REVISION_BYTES:,}"
            )
        fresh = [e for e in tree if (e.path, e.sha) not in self.entries]
        readable = [e for e in fresh if problems[e] is None]
        blobs = await git.read_blobs(sorted({e.sha for e in readable}))
        for entry in fresh:
            problem = problems[entry]
            if problem is not None:
                self.entries[(entry.path, entry.sha)] = LoadResult(issues=[problem])
            else:
                self.entries[(entry.path, entry.sha)] = await self._parse(
                    blobs[entry.sha], entry.path
                )
                self.parsed += 1
        current = {(e.path, e.sha) for e in tree}
        for key in [k for k in self.entries if k not in current]:
            del self.entries[key]  # keep memory bounded by the repository, not its history
        combined = LoadResult()
        for entry in sorted(tree, key=lambda e: e.path):
            combined.extend(self.entries[(entry.path, entry.sha)])
        if combined.nodes > MAX_REVISION_NODES:
            return revision_refused(
                folder, f"{combined.nodes:,} YAML nodes, over the {MAX_REVISION_NODES:,}"
            )
        return reject_duplicate_names(combined)

    async def _parse(self, raw: bytes, path: str) -> LoadResult:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(load_text, raw, path, self.policy), PARSE_DEADLINE
            )
        except TimeoutError:
            message = f"took over {PARSE_DEADLINE:g} s to parse: not run (make it smaller)"
            return LoadResult(issues=[ManifestIssue(path, 0, 0, message)])

    @staticmethod
    def _precheck(entry: TreeEntry) -> ManifestIssue | None:
        if entry.mode == SYMLINK_MODE:
            return ManifestIssue(
                entry.path, 0, 0, "symlinks are not followed; commit the file itself"
            )
        if entry.kind != "blob":
            return ManifestIssue(entry.path, 0, 0, f"not a file ({entry.kind})")
        limit = yamlsource.MAX_FILE_BYTES // (1024 * 1024)
        if entry.size is None:  # the mirror never fetched it: over the limit
            return ManifestIssue(entry.path, 0, 0, f"file is over the {limit} MiB limit")
        if entry.size > yamlsource.MAX_FILE_BYTES:
            return ManifestIssue(
                entry.path, 0, 0, f"file is {entry.size:,} bytes, over the {limit} MiB limit"
            )
        return None


def revision_refused(folder: str, what: str) -> LoadResult:
    """Nothing of a revision over a limit runs; the one issue says why."""
    message = f"this revision's {folder} holds {what} limit: nothing in it runs until it shrinks"
    return LoadResult(issues=[ManifestIssue(folder, 0, 0, message)])
