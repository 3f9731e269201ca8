"""What a daemon finds at start-up and must finish: runs a previous leader (or this
process before a crash) left unfinished are resumed from their checkpoints; runs that
finished in the cluster but whose final record never reached git get it written from the
checkpoint; a run whose inline inputs were lost before its first step is forgotten, so the
next sync starts it again from git."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from reconciler.cluster.run import InputsLost, Untrusted, remove_finalizer, trusted_workflow
from reconciler.engine.record import RunRecord
from reconciler.formats import execution as wfe
from reconciler.formats.run_record import record_paths, says_finished
from reconciler.gitops.git import GitRepo
from reconciler.kube.client import Kube
from reconciler.manifest.loader import LoadedWorkflow
from reconciler.manifest.policy import Policy

log = logging.getLogger(__name__)
StartRun = Callable[[LoadedWorkflow, str | None], None]
SubmitFinal = Callable[[RunRecord, str], None]


async def finals_in_git(git: GitRepo, names: Iterable[str], recorded: dict[str, str]) -> set[str]:
    """Those of `names` whose record in git says the run finished (one `cat-file` for all).
    A record someone broke by hand counts as not final."""
    known = [n for n in names if n in recorded]
    blobs = await git.read_blobs([recorded[n] for n in known])
    return {n for n in known if says_finished(blobs.get(recorded[n], b""))}


class Recovery:
    def __init__(
        self,
        kube: Kube,
        git: GitRepo,
        records_path: str,
        labels: dict[str, str],
        policy: Policy,
    ) -> None:
        self.kube = kube
        self.git = git
        self.records_path = records_path
        self.labels = labels
        self.policy = policy
        self.key = b""  # the installation's execution key, read at start-up
        # finished executions found at start-up whose final record may never have reached git
        self.unrecorded: dict[str, dict[str, Any]] = {}

    async def resume_unfinished(
        self, spooled: set[str], running: set[str], start: StartRun
    ) -> None:
        """Start again every unfinished run of this daemon's executions; note the finished
        ones whose final record is not in the spool (`spooled`: paths it will push)."""
        listing = await self.kube.get(
            "workflowexecutions",
            wfe.execution_path(),
            {"labelSelector": wfe.label_selector(self.labels)},
        )
        for item in listing.get("items") or []:
            name = item["metadata"]["name"]
            phase = wfe.phase_of(item)
            if phase.finished:
                workflow = item["spec"].get("workflow", "")
                if record_paths(self.records_path, workflow, name)[0] not in spooled:
                    self.unrecorded[name] = item  # checked against git on the first sync
                continue
            try:
                workflow = await trusted_workflow(self.kube, item, self.key, self.policy)
            except InputsLost as err:
                await self.forget_unstarted(item, str(err))
                continue
            except Untrusted as err:  # forged, tampered with, or now against the policy
                log.error("not resuming: %s", err, extra={"run_id": name})
                continue
            except Exception as err:  # one unreadable checkpoint must not stop the daemon
                log.error("cannot resume %s: %s", name, err, extra={"run_id": name})
                continue
            if workflow.metadata.name in running:
                continue
            log.info(
                "resuming %s from its checkpoint (%s)", name, phase.value, extra={"run_id": name}
            )
            start(wfe.loaded_of(item, workflow), wfe.revision_of(item))

    async def forget_unstarted(self, item: dict[str, Any], why: str) -> None:
        """A run whose inputs were lost before its first step (the process died between
        creating its execution and keeping its inline Secret values) is forgotten: with the
        execution gone, the next sync queues it again from git."""
        name = item["metadata"]["name"]
        if wfe.packed_record(item) is not None:
            log.error("cannot resume %s: %s", name, why, extra={"run_id": name})
            return
        log.warning("run %s never started and %s: it starts again", name, why)
        await remove_finalizer(self.kube, name)
        await self.kube.delete(f"workflowexecution {name}", wfe.execution_path(name))

    async def record_lost_finals(self, recorded: dict[str, str], submit: SubmitFinal) -> None:
        """A process that died between a run's final checkpoint and spooling its final
        record (or whose spool died with its pod) left a finished WorkflowExecution whose
        record in git says Running or is missing: write that record from the checkpoint."""
        if not self.unrecorded:
            return
        final = await finals_in_git(self.git, list(self.unrecorded), recorded)
        for name, item in list(self.unrecorded.items()):
            del self.unrecorded[name]
            if name in final:
                continue  # the usual case: it is there
            try:
                record = wfe.record_of(item)
                if record is None:
                    raise ValueError("it has no checkpoint")
            except Exception as err:  # one unreadable checkpoint must not stop the daemon
                log.error("cannot write the final record of %s: %s", name, err)
                continue
            log.warning(
                "the final record of %s never reached git: written from its checkpoint",
                name,
                extra={"run_id": name},
            )
            submit(record, wfe.source_of(item))
