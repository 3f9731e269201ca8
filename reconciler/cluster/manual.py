"""`reconciler status` (latest runs, from the records in git) and `reconciler rollback RUN_ID`
(undo a finished run from its checkpoint, recorded like any run)."""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from ruamel.yaml import YAML

from reconciler.actions.registry import KubeActions
from reconciler.cluster.checkpoint import Checkpointer, execution_path, owner_reference, unpack
from reconciler.cluster.run import InputsLost, workflow_of
from reconciler.engine.clock import Clock
from reconciler.engine.errors import PermanentError
from reconciler.engine.record import RunPhase, RunRecord, Transition, UndoResult, record_from_dict
from reconciler.engine.rollback import run_rollback
from reconciler.formats.run_record import render_markdown, render_yaml
from reconciler.gitops.git import GitRepo
from reconciler.kube.client import Kube
from reconciler.manifest.schema import Workflow


async def latest_runs(git: GitRepo, records_path: str) -> list[dict[str, Any]]:
    await git.ensure()
    head = await git.fetch()
    if head is None:
        return []
    entries = [
        e
        for e in await git.ls_tree(head, records_path)
        if e.path.endswith(".yaml") and len(PurePosixPath(e.path).parts) >= 3
    ]
    blobs = await git.read_blobs([e.sha for e in entries])
    yaml = YAML(typ="safe", pure=True)
    latest: dict[str, dict[str, Any]] = {}
    for entry in entries:
        doc = yaml.load(blobs[entry.sha])
        if not isinstance(doc, dict) or doc.get("kind") != "RunRecord":
            continue
        current = latest.get(doc["workflow"])
        if current is None or str(doc.get("started", "")) > str(current.get("started", "")):
            latest[doc["workflow"]] = doc
    return [latest[name] for name in sorted(latest)]


def render_status(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "no run records yet"
    rows = [("WORKFLOW", "RUN ID", "PHASE", "STEPS", "STARTED", "DURATION")]
    for doc in runs:
        steps = doc.get("steps", [])
        done = sum(1 for s in steps if s.get("phase") == "Succeeded")
        rows.append(
            (
                doc["workflow"],
                doc["runId"],
                doc["phase"],
                f"{done}/{len(steps)}",
                str(doc.get("started", "-")),
                str(doc.get("duration", "-")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def status(repo: str, branch: str, records_path: str) -> str:
    with tempfile.TemporaryDirectory(prefix="reconciler-status-") as tmp:
        git = GitRepo(url=repo, workdir=Path(tmp), branch=branch)
        return render_status(asyncio.run(latest_runs(git, records_path)))


async def rollback_run(
    kube: Kube, run_id: str, git: GitRepo | None, records_path: str
) -> RunRecord:
    execution = await kube.find(f"workflowexecution {run_id}", execution_path(run_id))
    if execution is None:
        raise PermanentError(
            f"no WorkflowExecution {run_id}: its checkpoint (and any captured Secret data) is gone;"
            " the record in git still lists what each step captured"
        )
    phase = RunPhase((execution.get("status") or {}).get("phase", "Pending"))
    if not phase.finished:
        raise PermanentError(
            f"{run_id} is {phase.value}: delete its WorkflowExecution to cancel and roll it back"
        )
    if phase == RunPhase.ROLLED_BACK:
        raise PermanentError(f"{run_id} is already rolled back")
    try:
        workflow = await workflow_of(kube, execution)
    except InputsLost:  # undos need no new Secret value: their captured keys say what to undo
        workflow = Workflow.model_validate(unpack(execution["spec"]["manifest"]))
    record = record_from_dict(unpack(execution["status"]["record"]))
    if record.rollback is not None:  # a partial rollback: try again what failed or was not reached
        record.rollback.entries = [
            e
            for e in record.rollback.entries
            if e.result in (UndoResult.UNDONE, UndoResult.IRREVERSIBLE)
        ]
    checkpoint = Checkpointer(kube, execution)
    clock = Clock()
    record.phase = RunPhase.ROLLING_BACK
    await checkpoint.hook(record, _run_transition(record))

    async def emit(scope: str, phase_name: str, step: str | None) -> None:
        await checkpoint.hook(record, Transition(scope, phase_name, step))

    complete = await run_rollback(
        record=record,
        steps={s.name: s for s in workflow.spec.steps},
        actions=KubeActions(kube, owner_reference(execution)),
        policy=workflow.spec.rollback,
        reason="ManualRollback",
        clock=clock,
        rng=random.Random(),
        emit=emit,
    )
    record.phase = RunPhase.ROLLED_BACK if complete else RunPhase.PARTIALLY_ROLLED_BACK
    record.reason = "ManualRollback"
    record.message = f"rolled back by hand after it ended {phase.value}"
    record.finished = clock.now()
    await checkpoint.hook(record, _run_transition(record))
    await checkpoint.close()
    if git is not None:
        base = f"{records_path.rstrip('/')}/{record.workflow}/{record.run_id}"
        source = execution["spec"].get("source")
        await git.ensure()
        await git.push_files(
            {
                f"{base}.yaml": render_yaml(record, source).encode(),
                f"{base}.md": render_markdown(record, source).encode(),
            },
            f"reconciler: {record.workflow} {record.run_id} {record.phase.value} (manual rollback)",
        )
    return record


def _run_transition(record: RunRecord) -> Transition:
    return Transition("run", record.phase.value)
