"""Desired vs applied (docs/architecture.md, Identity).

Desired: every Workflow under the workflow folder at a revision. Manifests are cached by
(path, blob sha), so a new revision re-reads only the files whose content changed: a
10,000-file repository with a one-file change parses one file.

Applied: run ids with a record under the records path at that revision, plus live
WorkflowExecutions. Desired minus applied is the queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from reconciler.gitops.git import GitRepo
from reconciler.gitops.plumbing import TreeEntry
from reconciler.manifest import yamlsource
from reconciler.manifest.errors import ManifestIssue
from reconciler.manifest.loader import YAML_SUFFIXES, LoadResult, load_text, reject_duplicate_names
from reconciler.manifest.policy import Policy

SYMLINK_MODE = "120000"


@dataclass
class ManifestCache:
    policy: Policy | None = None
    entries: dict[tuple[str, str], LoadResult] = field(default_factory=dict)
    parsed: int = 0  # files parsed since start (the benchmark reads this)

    async def desired(self, git: GitRepo, commit: str, folder: str) -> LoadResult:
        tree = [e for e in await git.ls_tree(commit, folder) if e.path.endswith(YAML_SUFFIXES)]
        tree = [e for e in tree if not any(p.startswith(".") for p in PurePosixPath(e.path).parts)]
        fresh = [e for e in tree if (e.path, e.sha) not in self.entries]
        readable = [e for e in fresh if self._precheck(e) is None]
        blobs = await git.read_blobs(sorted({e.sha for e in readable}))
        for entry in fresh:
            problem = self._precheck(entry)
            if problem is not None:
                self.entries[(entry.path, entry.sha)] = LoadResult(issues=[problem])
            else:
                self.entries[(entry.path, entry.sha)] = load_text(
                    blobs[entry.sha], entry.path, self.policy
                )
                self.parsed += 1
        current = {(e.path, e.sha) for e in tree}
        for key in [k for k in self.entries if k not in current]:
            del self.entries[key]  # keep memory bounded by the repository, not its history
        combined = LoadResult()
        for entry in sorted(tree, key=lambda e: e.path):
            cached = self.entries[(entry.path, entry.sha)]
            combined.workflows.extend(cached.workflows)
            combined.issues.extend(cached.issues)
        return reject_duplicate_names(combined)

    @staticmethod
    def _precheck(entry: TreeEntry) -> ManifestIssue | None:
        if entry.mode == SYMLINK_MODE:
            return ManifestIssue(
                entry.path, 0, 0, "symlinks are not followed; commit the file itself"
            )
        if entry.kind != "blob":
            return ManifestIssue(entry.path, 0, 0, f"not a file ({entry.kind})")
        if entry.size > yamlsource.MAX_FILE_BYTES:
            limit = yamlsource.MAX_FILE_BYTES // (1024 * 1024)
            return ManifestIssue(
                entry.path, 0, 0, f"file is {entry.size:,} bytes, over the {limit} MiB limit"
            )
        return None
