"""Crash points for the fault tests: at a named point, the process kills itself (SIGKILL).

Off unless RECONCILER_FAILPOINTS is set, which only the e2e crash tests do. A kill from
outside lands wherever the process happens to be; the windows that matter most (an apply
sent but not yet checkpointed, a run finished but its record not yet spooled) last
milliseconds, so the process kills itself there, as etcd's gofail failpoints do.

    RECONCILER_FAILPOINTS=applied:s3        die right after step s3's apply was sent
    RECONCILER_FAILPOINTS=finished,pushed   die at the first of these reached

Points (where reached() is called says exactly what is and is not durable yet):
    created          a run's WorkflowExecution exists; its inline Secret values not kept
    captured:<step>  the step's captured state is checkpointed; its apply not sent
    applied:<step>   its apply reached the API server; nothing checkpointed since
    waited:<step>    its change took effect; its Succeeded checkpoint not written
    measured:<step>  a verify measurement of the step was taken; it is not checkpointed
    undone:<step>    its undo reached the cluster; the rollback checkpoint not written
    finished         a run's final checkpoint is written; its final record not spooled
    pushed           record commits are on the remote; the spool does not know yet
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "RECONCILER_FAILPOINTS"
log = logging.getLogger(__name__)
_armed = frozenset(p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip())


def reached(point: str) -> None:
    """Kill this process if `point` (e.g. "applied:s3") is armed."""
    if point not in _armed:
        return
    log.error("failpoint %s reached: killing this process (%s)", point, ENV)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
