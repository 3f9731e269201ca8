"""Which finished WorkflowExecutions to delete: git keeps every run's record forever, the
cluster keeps only the newest few per workflow (they hold what `reconciler rollback` needs:
the captured state, secret originals included). Without a bound, every run ever made stays
in etcd and every sync lists more of them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.formats.execution import FINALIZER

WORKFLOW_LABEL = "reconciler.dev/workflow"


def executions_to_prune(
    items: Iterable[Mapping[str, Any]],
    recorded: set[str],
    keep: int,
    owner_labels: Mapping[str, str],
) -> list[str]:
    """Names to delete, from list metadata: per workflow, the finished executions (no
    rollback finalizer: a running one keeps it until its record is final) whose record is in
    git, beyond the newest `keep`; only those this daemon made (`owner_labels`)."""
    finished: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for meta in items:
        labels = meta.get("labels") or {}
        if any(labels.get(k) != v for k, v in owner_labels.items()):
            continue
        if FINALIZER in (meta.get("finalizers") or []) or meta.get("deletionTimestamp"):
            continue
        if meta["name"] not in recorded or WORKFLOW_LABEL not in labels:
            continue  # a record not yet in git: the execution is what says it ran
        finished[labels[WORKFLOW_LABEL]].append(meta)
    doomed: list[str] = []
    for metas in finished.values():
        metas.sort(key=lambda m: (m.get("creationTimestamp") or "", m["name"]), reverse=True)
        doomed += [m["name"] for m in metas[keep:]]
    return sorted(doomed)
