"""Plan branches, the pull-request view: for a branch matching --plan-branches, validate,
plan and server-side dry-run every workflow, and commit the plans to that branch (under
<records>/plans/<branch>/); nothing is executed."""

from __future__ import annotations

import fnmatch
import logging

from reconciler.actions.dryrun import dry_run_workflow
from reconciler.engine.plan import plan_workflow, render_text
from reconciler.formats import reports
from reconciler.gitops.desired import ManifestCache
from reconciler.gitops.git import GitRepo
from reconciler.kube.client import Kube
from reconciler.manifest.policy import Policy

log = logging.getLogger(__name__)


class PlanBranches:
    def __init__(
        self,
        git: GitRepo,
        kube: Kube,
        cache: ManifestCache,
        pattern: str,
        path: str,
        records_path: str,
    ) -> None:
        self.git = git
        self.kube = kube
        self.cache = cache
        self.pattern = pattern
        self.path = path
        self.records_path = records_path
        self.planned: dict[str, str] = {}  # plan branch -> head we last planned

    async def plan_all(self) -> None:
        heads = await self.git.remote_heads()
        for branch, sha in sorted(heads.items()):
            if branch == self.git.branch or not fnmatch.fnmatch(branch, self.pattern):
                continue
            if self.planned.get(branch) != sha:
                await self._plan(branch, sha)

    async def _plan(self, branch: str, sha: str) -> None:
        head = await self.git.fetch(branch)
        if head is None:
            return
        desired = await self.cache.desired(self.git, head, self.path)
        dry = self.kube.dry()
        policy = self.cache.policy or Policy()
        base = reports.plan_dir(self.records_path, branch)
        files: dict[str, bytes | None] = {}
        for loaded in desired.workflows:
            try:
                dry_run = "\n".join(await dry_run_workflow(dry, loaded, policy))
            except Exception as err:  # the plan must still be written
                dry_run = f"server-side dry run failed: {err}"
            order = render_text(plan_workflow(loaded))
            files[f"{base}/{loaded.name}.md"] = reports.plan_markdown(
                loaded.name, order, branch, head, dry_run
            )
        if desired.issues:
            files[f"{base}/{reports.ERRORS_FILE}"] = reports.errors_markdown(desired.issues)
        if not files:
            self.planned[branch] = sha
            return
        pushed = await self.git.push_files(files, f"reconciler: plan for {branch}", branch=branch)
        log.info("planned branch %s (%d workflow(s))", branch, len(desired.workflows))
        self.planned[branch] = pushed
