"""Load (issue 7): many workflows pushed in one commit against the real control plane, and a
leader killed while ten of them run.

The load test checks what users care about under load, from what they can see: every run
finishes and is recorded in git, every change is in the cluster, and the global and
per-workflow limits held at every instant (measured from the step times in the records, not
from the daemon's own counters). It samples the daemon's RSS and open file descriptors from
/proc throughout and prints a table; `make soak` runs the same test, the figures in
docs/reliability.md come from it. RECONCILER_LOAD_WORKFLOWS scales it (default 200).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from auditlog import AuditLog, Life, check_applied_once, checkpoint_of, ended, peak_overlap
from daemonhelp import Daemon, Remote, daemons, remote  # noqa: F401  (fixtures)
from figures import report
from kubehelp import api, deployment, execution, fake_node, wait_for  # noqa: F401
from kubernetes import client as k8s

from reconciler.kube.kubeconfig import API_CONNECTIONS

WORKFLOWS = int(os.environ.get("RECONCILER_LOAD_WORKFLOWS", "200"))
# the large workflows' sizes times this: make test 0.25 (largest 125 steps), make soak 1
# (largest 500); the run is bound by the 2 cores the API server, etcd and the daemon share
SCALE = float(os.environ.get("RECONCILER_LOAD_SCALE", "0.25"))
GLOBAL_LIMIT = 16  # --max-concurrent-steps
KEYS_PER_CONFIGMAP = 10  # steps of one workflow share ConfigMaps, so merges really interleave
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "deployment.yaml"


@dataclass
class Shape:
    name: str
    steps: int
    width: int  # step j depends on step j - width: a DAG `width` wide
    max_concurrent: int


def shapes(count: int, rng: random.Random, scale: float = 1.0) -> list[Shape]:
    """Mixed sizes: a few large DAGs (up to 500 steps, times `scale`), many small ones."""
    sizes = [max(1, round(n * scale)) for n in [500, 200, 100, 100, 100] + [50] * 5 + [20] * 20]
    sizes = (sizes + [rng.randint(1, 10) for _ in range(count)])[:count]
    return [
        Shape(f"load-{i}", n, rng.choice([1, 3, 8, 20]), rng.choice([1, 2, 4, 8]))
        for i, n in enumerate(sizes)
    ]


def manifest(shape: Shape, namespace: str) -> str:
    lines = [
        "apiVersion: reconciler.dev/v1alpha1",
        "kind: Workflow",
        f"metadata: {{name: {shape.name}}}",
        "spec:",
        f"  maxConcurrent: {shape.max_concurrent}",
        "  steps:",
    ]
    for j in range(shape.steps):
        deps = {j - shape.width} if j >= shape.width else set()
        if j % 5 == 4:
            deps.add(j - 1)  # some fan-in
        depends = f", dependsOn: [{', '.join(f's{d}' for d in sorted(deps))}]" if deps else ""
        lines.append(
            f"    - {{name: s{j}, action: UpdateConfigMap{depends}, "
            f"target: {{namespace: {namespace}, name: {configmap_of(shape, j)}}}, "
            f'params: {{data: {{k{j}: "{shape.name}-{j}"}}}}}}'
        )
    return "\n".join(lines) + "\n"


def configmap_of(shape: Shape, step: int) -> str:
    return f"{shape.name}-{step // KEYS_PER_CONFIGMAP}"


@dataclass
class Usage:
    """RSS and open fds of one process, sampled from /proc."""

    pid: int
    rss_kib: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    cpu_s: float = 0.0

    def sample(self) -> None:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        self.cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                self.rss_kib.append(int(line.split()[1]))
        self.fds.append(len(os.listdir(f"/proc/{self.pid}/fd")))


def sample_until(usage: Usage, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            usage.sample()
        except OSError:
            return
        stop.wait(0.5)


def children_of(pid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/stat").read_text().split()[3] == str(pid):
                    count += 1
            except (OSError, IndexError):
                pass
    return count


def memory_limit_mib() -> int:
    text = DEPLOY.read_text()
    limit = text.split("limits:", 1)[1].split("memory:", 1)[1].split("}", 1)[0].strip()
    assert limit.endswith("Mi"), limit
    return int(limit[:-2])


@pytest.mark.timeout(1800)
def test_many_workflows_at_once_all_finish_within_limits_and_flat_resources(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    core = k8s.CoreV1Api(api)
    plan = shapes(WORKFLOWS, random.Random(os.environ.get("RECONCILER_LOAD_SEED", "200")), SCALE)
    for shape in plan:
        for g in range((shape.steps - 1) // KEYS_PER_CONFIGMAP + 1):
            core.create_namespaced_config_map(
                namespace, {"metadata": {"name": f"{shape.name}-{g}"}, "data": {"seed": "x"}}
            )
        remote.write(f"workflows/{shape.name}.yaml", manifest(shape, namespace))
    daemon = Daemon(
        str(remote.bare),
        tmp_path / "work",
        kubeconfig,
        "--interval",
        "3600",
        "--max-concurrent-workflows",
        "20",
        "--max-concurrent-steps",
        str(GLOBAL_LIMIT),
    ).start()
    daemons.append(daemon)
    assert daemon.proc is not None
    usage = Usage(daemon.proc.pid)
    usage.sample()
    stop = threading.Event()
    sampler = threading.Thread(target=sample_until, args=(usage, stop), daemon=True)
    sampler.start()
    pushed = time.monotonic()
    remote.commit_all(f"{len(plan)} workflows at once")
    try:
        wait_for(
            lambda: (
                sum(
                    1
                    for s in remote.log()
                    if s.startswith("reconciler: load-") and "Succeeded" in s
                )
                >= len(plan)
            ),
            1200,
            f"{len(plan)} final records",
            interval=2,
        )
        elapsed = time.monotonic() - pushed
        time.sleep(3)  # let the last pushes and checkpoint writes settle before the end sample
        usage.sample()
    finally:
        stop.set()
        sampler.join(timeout=5)

    by_workflow: dict[str, list[dict]] = defaultdict(list)
    for path in remote.files("runs"):
        if path.endswith(".yaml") and path.startswith("runs/load-"):
            by_workflow[path.split("/")[1]].append(yaml.safe_load(remote.show(path) or ""))
    intervals: list[tuple[datetime, datetime]] = []
    worst_ratio = 0.0
    for shape in plan:
        records = by_workflow[shape.name]
        assert len(records) == 1, f"{shape.name}: {len(records)} records"
        record = records[0]
        assert record["phase"] == "Succeeded", (shape.name, record.get("message"))
        steps = record["steps"]
        assert len(steps) == shape.steps and all(s["phase"] == "Succeeded" for s in steps)
        mine = [
            (datetime.fromisoformat(s["started"]), datetime.fromisoformat(s["finished"]))
            for s in steps
        ]
        peak = peak_overlap(mine)
        assert peak <= shape.max_concurrent, f"{shape.name}: {peak} > {shape.max_concurrent}"
        worst_ratio = max(worst_ratio, peak / shape.max_concurrent)
        intervals += mine
    global_peak = peak_overlap(intervals)
    assert global_peak <= GLOBAL_LIMIT
    # every change is really in the cluster: each ConfigMap holds each of its steps' keys
    for shape in plan:
        for g in range((shape.steps - 1) // KEYS_PER_CONFIGMAP + 1):
            data = core.read_namespaced_config_map(f"{shape.name}-{g}", namespace).data
            steps = range(g * KEYS_PER_CONFIGMAP, min(shape.steps, (g + 1) * KEYS_PER_CONFIGMAP))
            assert data == {"seed": "x", **{f"k{j}": f"{shape.name}-{j}" for j in steps}}

    total = sum(s.steps for s in plan)
    rss = [k / 1024 for k in usage.rss_kib]
    table = [
        ("workflows / steps", f"{len(plan)} / {total} (largest {max(s.steps for s in plan)})"),
        ("push -> last final record", f"{elapsed:.1f} s ({total / elapsed:.0f} steps/s)"),
        ("global step limit, peak in records", f"{GLOBAL_LIMIT}, {global_peak}"),
        ("per-workflow limit, worst peak/limit", f"{worst_ratio:.2f}"),
        ("daemon CPU", f"{usage.cpu_s:.1f} s ({usage.cpu_s / total * 1000:.1f} ms a step)"),
        ("RSS MiB start / peak / end", f"{rss[0]:.0f} / {max(rss):.0f} / {rss[-1]:.0f}"),
        ("open fds start / peak / end", f"{usage.fds[0]} / {max(usage.fds)} / {usage.fds[-1]}"),
        ("samples", str(len(usage.fds))),
    ]
    report("\nload test")
    for what, value in table:
        report(f"  {what:<40} {value}")
    assert max(rss) < memory_limit_mib(), "over the Deployment's memory limit"
    # kept-alive API connections are bounded by the pool; anything per step or per run would
    # show up as thousands here
    assert usage.fds[-1] <= usage.fds[0] + API_CONNECTIONS, "file descriptors leaked"
    wait_for(lambda: children_of(daemon.proc.pid) == 0, 30, "no git child processes left")


def test_leader_killed_while_ten_workflows_run_all_finish_on_the_standby(
    api, namespace, kubeconfig, remote, daemons, audit_log, tmp_path: Path
) -> None:
    """Each workflow waits at a gate (a Deployment whose pods need a node that does not
    exist yet) when the leader dies; the gate opens only after the kill, so every run must
    be finished by the standby."""
    core = k8s.CoreV1Api(api)
    gate_node = f"{namespace}-gate"
    names = [f"busy-{i}" for i in range(10)]
    for name in names:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name}, "data": {}})
        deployment(api, namespace, name, replicas=0, node=gate_node)
        remote.write(
            f"workflows/{name}.yaml",
            f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: {name}}}
spec:
  steps:
    - {{name: before, action: UpdateConfigMap, target: {{namespace: {namespace}, name: {name}}}, params: {{data: {{before: "1"}}}}}}
    - {{name: gate, action: ScaleDeployment, dependsOn: [before], target: {{namespace: {namespace}, name: {name}}}, params: {{replicas: 1}}, timeout: 5m}}
    - {{name: after, action: UpdateConfigMap, dependsOn: [gate], target: {{namespace: {namespace}, name: {name}}}, params: {{data: {{after: "1"}}}}}}
""",
        )
    ha = ("--interval", "2", "--leader-elect", "--lease-namespace", namespace)
    limits = ("--max-concurrent-workflows", "10")
    a = Daemon(str(remote.bare), tmp_path / "a", kubeconfig, *ha, *limits, name="a").start()
    daemons.append(a)
    b = Daemon(str(remote.bare), tmp_path / "b", kubeconfig, *ha, *limits, name="b")
    daemons.append(b.start(wait_ready=False))
    remote.commit_all("ten workflows")

    def running() -> dict[str, str]:
        return {
            s.split()[1]: s.split()[2]
            for s in remote.log()
            if s.startswith("reconciler: busy-") and " Running (" in s
        }

    run_ids = wait_for(lambda: len(running()) == 10 and running(), 60, "ten runs started")
    wait_for(
        lambda: all(
            (execution(api, r) or {}).get("status", {}).get("currentStep") == "gate"
            for r in run_ids.values()
        ),
        60,
        "all ten at the gate",
    )
    a.kill()  # the leader dies with ten runs in flight
    killed = time.monotonic()
    left = {r: ended(Life(a.pid, "leader"), checkpoint_of(api, r)) for r in run_ids.values()}
    try:
        fake_node(api, gate_node)  # open the gate
        wait_for(
            lambda: (
                sum(
                    1
                    for s in remote.log()
                    if s.startswith("reconciler: busy-") and "Succeeded" in s
                )
                == 10
            ),
            180,
            "all ten finished by the standby",
        )
        subjects = remote.log()
        for name in names:
            finals = [
                s for s in subjects if s.startswith(f"reconciler: {name} ") and "Running" not in s
            ]
            assert len(finals) == 1 and " Succeeded " in finals[0], finals
            assert core.read_namespaced_config_map(name, namespace).data == {
                "before": "1",
                "after": "1",
            }
        assert b.logs().count("resuming") >= 10  # from a's checkpoints, not started afresh
        if audit_log is not None:  # 'before' never again, 'gate' once more at most
            audit = AuditLog(audit_log)
            audit.settle(api)
            for run_id, leader in left.items():
                assert leader.done == {"before"} and leader.interrupted == {"gate"}
                check_applied_once(audit.of_run(run_id), [leader, Life(b.pid, "standby")])
        report(
            "\nleader failover under load: leader killed with 10 runs at the gate; 10/10 "
            f"finished by the standby, one final record each, {time.monotonic() - killed:.1f}s "
            "after the kill"
        )
    finally:
        core.delete_node(gate_node)
