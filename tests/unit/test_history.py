"""Which finished WorkflowExecutions the daemon deletes (reconciler/cluster/history.py)."""

from __future__ import annotations

from reconciler.cluster.history import executions_to_prune
from reconciler.formats.execution import FINALIZER

MINE = {"app.kubernetes.io/managed-by": "reconciler-daemon"}


def meta(name: str, workflow: str, created: str, **extra) -> dict:
    return {
        "name": name,
        "labels": {**MINE, "reconciler.dev/workflow": workflow},
        "creationTimestamp": created,
        **extra,
    }


def test_keeps_the_newest_per_workflow_and_only_what_git_has_recorded() -> None:
    items = [
        meta("a-1", "a", "2026-01-01T00:00:01Z"),
        meta("a-2", "a", "2026-01-01T00:00:02Z"),
        meta("a-3", "a", "2026-01-01T00:00:03Z"),
        meta("a-0", "a", "2026-01-01T00:00:00Z"),  # not in git yet: it alone says it ran
        meta("b-1", "b", "2026-01-01T00:00:01Z"),
    ]
    recorded = {"a-1", "a-2", "a-3", "b-1"}
    assert executions_to_prune(items, recorded, 1, MINE) == ["a-1", "a-2"]
    assert executions_to_prune(items, recorded, 0, MINE) == ["a-1", "a-2", "a-3", "b-1"]
    assert executions_to_prune(items, recorded, 10, MINE) == []


def test_never_a_running_one_a_deleting_one_or_one_made_by_someone_else() -> None:
    items = [
        meta("a-1", "a", "2026-01-01T00:00:01Z", finalizers=[FINALIZER]),  # still running
        meta("a-2", "a", "2026-01-01T00:00:02Z", deletionTimestamp="2026-01-02T00:00:00Z"),
        {**meta("a-3", "a", "2026-01-01T00:00:03Z"), "labels": {"reconciler.dev/workflow": "a"}},
    ]
    assert executions_to_prune(items, {"a-1", "a-2", "a-3"}, 0, MINE) == []
