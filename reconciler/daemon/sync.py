"""What a new revision means, as a pure function of what git wants (desired), what already
ran (records in git, executions in the cluster) and what is running or queued now: no I/O,
so unit tests drive every case without a cluster or a remote."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field

from reconciler.manifest.loader import LoadedWorkflow


@dataclass
class Decision:
    queue: list[LoadedWorkflow] = field(default_factory=list)  # to run, newest per name
    dequeue: list[str] = field(default_factory=list)  # queued, then deleted from git
    cancel: list[str] = field(default_factory=list)  # running, then deleted from git


def decide(
    desired: Iterable[LoadedWorkflow],
    *,
    recorded: Set[str],
    live: Set[str],
    running: Mapping[str, str],
    queued: Iterable[str],
    cancelling: Set[str] = frozenset(),
) -> Decision:
    """`recorded`: run ids with a record in git; `live`: run ids with a WorkflowExecution;
    `running`: workflow name -> the run id running now; `queued`: workflow names waiting;
    `cancelling`: names already told to cancel.

    A run id is content: a workflow whose run id has a record or an execution already ran
    (or runs), and never runs twice. A changed workflow queues its new run id, which
    replaces an older queued one and waits for the running one to finish. A workflow no
    longer in git is dropped from the queue and its running run cancelled (rolled back)."""
    decision = Decision()
    names = set()
    for loaded in desired:
        names.add(loaded.name)
        if loaded.run_id in recorded or loaded.run_id in live:
            continue
        if running.get(loaded.name) == loaded.run_id:
            continue
        decision.queue.append(loaded)
    decision.dequeue = sorted(name for name in queued if name not in names)
    decision.cancel = sorted(
        name for name in running if name not in names and name not in cancelling
    )
    return decision
