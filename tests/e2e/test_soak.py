"""The daemon does not leak under work: the real daemon process runs a small workflow per
cycle (a push that changes it, its run, its two record commits, and the syncs they cause),
and its open file descriptors, child processes and memory are read from /proc from outside.
`make test` runs a bounded number of cycles; `make soak` more (RECONCILER_SOAK_CYCLES)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest
from daemonhelp import Daemon, daemons, record_commits, remote  # noqa: F401  (fixtures)
from figures import report
from kubehelp import api, configmap, configmap_data, run_ids, wait_for  # noqa: F401
from test_load import Usage, children_of

from reconciler.kube.kubeconfig import API_CONNECTIONS

CYCLES = int(os.environ.get("RECONCILER_SOAK_CYCLES", "40"))
HISTORY = 3  # --execution-history: finished WorkflowExecutions kept per workflow
LISTENERS = 2  # the HTTP listener (webhook, metrics) and the request that asked if it was quiet


def one_step(name: str, namespace: str, value: int) -> str:
    return f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: {name}}}
spec:
  steps:
    - {{name: set, action: UpdateConfigMap, target: {{namespace: {namespace}, name: soak}}, params: {{data: {{N: "{value}"}}}}}}
"""


def open_pipes(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed while we looked
            count += os.readlink(fd).startswith("pipe:")
    return count


def sockets_and_others(pid: int) -> tuple[int, int]:
    """Open sockets, and every other fd (files, pipes, eventfds)."""
    fds = Path(f"/proc/{pid}/fd")
    sockets = others = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed while we looked
            if os.readlink(fd).startswith("socket:"):
                sockets += 1
            else:
                others += 1
    return sockets, others


def quiet(daemon: Daemon) -> bool:
    """Between syncs: records pushed, no git child, none of a child's pipes still open (a
    leaked pipe never closes, so a leak shows up as a daemon that never gets quiet)."""
    metrics = daemon.get("/metrics")[1]
    return (
        "reconciler_records_pending 0.0" in metrics
        and children_of(daemon.pid) == 0
        and open_pipes(daemon.pid) == 0
    )


@pytest.mark.timeout(max(300, CYCLES * 4))  # about 1-2 s a cycle
def test_daemon_running_a_workflow_per_cycle_does_not_leak(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    configmap(api, namespace, "soak", {"N": "0"})
    name = f"soak-{namespace[-8:]}"
    daemon = Daemon(
        str(remote.bare),
        tmp_path / "work",
        kubeconfig,
        "--interval",
        "3600",
        "--execution-history",
        str(HISTORY),
    ).start()
    daemons.append(daemon)
    usage = Usage(daemon.pid)
    marks = sorted({1, 10, CYCLES // 4, CYCLES // 2, 3 * CYCLES // 4, CYCLES})
    rows: list[tuple[int, int, int, float]] = []
    started = time.monotonic()
    for i in range(1, CYCLES + 1):
        remote.write("workflows/soak.yaml", one_step(name, namespace, i))
        remote.commit_all(f"soak {i}")
        wait_for(
            lambda n=i: len(record_commits(remote, name, "Succeeded")) >= n,
            60,
            f"cycle {i}'s final record",
            interval=0.05,
        )
        if i in marks:
            # measured when quiet: its records pushed, no git child with its pipes open
            wait_for(lambda: quiet(daemon), 30, f"the daemon idle after cycle {i}", interval=0.05)
            usage.sample()
            sockets, others = sockets_and_others(daemon.pid)
            rows.append((i, sockets, others, children_of(daemon.pid), usage.rss_kib[-1] / 1024))
    elapsed = time.monotonic() - started
    assert configmap_data(api, namespace, "soak") == {"N": str(CYCLES)}
    assert len(record_commits(remote, name, "Succeeded")) == CYCLES  # one run each, no more
    # finished executions beyond the history are deleted once their record is in git
    wait_for(lambda: len(run_ids(api, name)) <= HISTORY + 1, 30, "old executions pruned")
    wait_for(lambda: children_of(daemon.pid) == 0, 30, "no git child processes left")
    report(
        f"\nsoak: the daemon process, {CYCLES} cycles of push -> run -> 2 record commits"
        f" ({elapsed / CYCLES:.2f} s a cycle; daemon CPU {usage.cpu_s:.1f} s)"
    )
    report(f"{'cycle':>6} | {'sockets':>7} | {'other fds':>9} | {'children':>8} | {'RSS MiB':>8}")
    for cycle, sockets, others, kids, rss in rows:
        report(f"{cycle:>6} | {sockets:>7} | {others:>9} | {kids:>8} | {rss:>8.1f}")
    (_, _, others_10, _, rss_10), (_, sockets_end, others_end, _, rss_end) = rows[1], rows[-1]
    assert others_end - others_10 <= 2, f"files and pipes grew from {others_10} to {others_end}"
    # the API client's pool keeps as many connections as requests once overlapped, which
    # depends on how loaded the machine is (+8 with a second e2e session beside it): bounded
    # by the pool's size, a leak is not (make soak's 1000 cycles)
    assert sockets_end <= API_CONNECTIONS + LISTENERS, f"{sockets_end} sockets open"
    assert rss_end - rss_10 < 20, f"RSS grew by {rss_end - rss_10:.1f} MiB"
