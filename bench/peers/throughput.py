"""The CNOE workflow-controller tests (the public Argo Workflows scalability study), on our
daemon (issue 18, part 2): (a) N one-step workflows pushed at once, the time until every
one has finished, workflows/min; (b) a submission rate rising every minute until the
backlog grows, the sustained workflows/min. On this machine the API server, etcd and the
daemon share 2 cores: the CPU seconds each used are printed, to say which one bound us.

`python bench/peers/throughput.py --workflows 5000 --rising` (make bench-peers runs it);
KUBECONFIG set: that cluster; else a kwok cluster of its own. Each workflow scales one
Deployment to the replicas it has (a real GET, PATCH and rollout check; nothing to wait for).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reconciler_side import Bench, free_port, git, process_usage

CNOE = (  # workflows/min on 50 nodes, from the study (Argo Workflows v3.5)
    ("default settings", 270),
    ("tuned (QPS, workers)", 810),
    ("five shards", 2100),
)


def one_step(name: str, namespace: str) -> str:
    return f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: {name}}}
spec:
  steps:
    - name: scale
      action: ScaleDeployment
      target: {{namespace: {namespace}, name: web}}
      params: {{replicas: 1}}
      timeout: 5m
"""


def finished(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return int(
        sum(float(v) for v in re.findall(r"^reconciler_runs_total\{[^}]*\} (\S+)$", text, re.M))
    )


def component_pids(names: tuple[str, ...], cluster_dir: Path | None) -> dict[str, int]:
    """The process of each name (kube-apiserver, etcd) of our cluster: its command line
    names the cluster's directory (another cluster on this host may run beside it); with a
    cluster of KUBECONFIG's, the newest of that name."""
    found: dict[str, int] = {}
    for name in names:
        out = subprocess.run(["pgrep", "-f", name], capture_output=True, text=True)
        for pid in sorted((int(p) for p in out.stdout.split()), reverse=True):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if Path(cmdline.split("\0")[0]).name == name and (
                cluster_dir is None or str(cluster_dir) in cmdline
            ):
                found[name] = pid
                break
    return found


def commit_workflows(clone: Path, names: list[str], namespace: str, message: str) -> float:
    for name in names:
        (clone / "workflows" / f"{name}.yaml").write_text(one_step(name, namespace))
    git("add", "-A", cwd=clone)
    git("commit", "--quiet", "-m", message, cwd=clone)
    for _ in range(20):
        git("pull", "--quiet", "--rebase", "origin", "main", cwd=clone)
        try:
            git("push", "--quiet", "origin", "HEAD:main", cwd=clone)
            return time.time()
        except subprocess.CalledProcessError:
            time.sleep(0.2)
    raise RuntimeError("could not push")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=5000)
    parser.add_argument("--rising", action="store_true", help="also the rising-rate test")
    parser.add_argument("--max-concurrent-workflows", type=int, default=32)
    parser.add_argument("--start-rate", type=int, default=60, help="workflows/min, (b)")
    args = parser.parse_args()
    bench = Bench.make("peers-cnoe-")
    cluster, kubeconfig, namespace = bench.cluster, bench.kubeconfig, bench.namespace
    work, bare, clone = bench.work, bench.bare, bench.clone
    port = free_port()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "daemon", "--repo", str(bare)]
        + ["--workdir", str(work / "daemon"), "--kubeconfig", kubeconfig]
        + ["--listen", f"127.0.0.1:{port}", "--interval", "5"]
        + ["--max-concurrent-workflows", str(args.max_concurrent_workflows)]
        + ["--execution-history", "100"],
        stdout=(work / "daemon.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                finished(port)
                break
            except OSError:
                time.sleep(0.5)
        others = component_pids(("kube-apiserver", "etcd"), cluster.workdir if cluster else None)
        before = {n: process_usage(p)[0] for n, p in others.items()}
        before["daemon"] = process_usage(daemon.pid)[0]
        names = [f"wf-{i:05d}" for i in range(args.workflows)]
        pushed = commit_workflows(clone, names, namespace, f"{args.workflows} workflows")
        while finished(port) < args.workflows:
            time.sleep(1.0)
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited; its log: {work / 'daemon.log'}")
        took = time.time() - pushed
        used = {n: process_usage(p)[0] - before[n] for n, p in others.items()}
        used["daemon"] = process_usage(daemon.pid)[0] - before["daemon"]
        rate = args.workflows / took * 60
        print(
            f"(a) {args.workflows} one-step workflows pushed at once: drained in {took:.1f}s,"
            f" {rate:.0f} workflows/min (--max-concurrent-workflows"
            f" {args.max_concurrent_workflows})"
        )
        print(
            "    CPU seconds over the drain: "
            + ", ".join(
                f"{n} {s:.1f}s ({s / took * 100:.0f}% of one core)" for n, s in used.items()
            )
        )
        print(
            "    CNOE's figures (50 nodes, other machines): "
            + ", ".join(f"{label} {value}/min" for label, value in CNOE)
        )
        if args.rising:
            rising(clone, namespace, port, args.start_rate)
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        if cluster is not None:
            cluster.delete()
    return 0


def rising(clone: Path, namespace: str, port: int, start: int) -> None:
    """(b): one commit every 10 s, its size making `rate` workflows/min, the rate doubled
    each minute; the backlog (pushed - finished) measured at each minute's end. Sustained:
    the highest rate whose minute ended with the backlog no larger than it began."""
    base, pushed, rate, sustained = finished(port), 0, start, 0
    print("(b) rising submission rate, one commit every 10 s:")
    while True:
        begin_backlog = pushed - (finished(port) - base)
        for tick in range(6):
            count = max(1, rate // 6)
            names = [f"r{rate}-{tick}-{i:04d}-{uuid.uuid4().hex[:4]}" for i in range(count)]
            started = time.time()
            commit_workflows(clone, names, namespace, f"{count} workflows at {rate}/min")
            pushed += count
            time.sleep(max(0.0, 10 - (time.time() - started)))
        end_backlog = pushed - (finished(port) - base)
        print(f"    {rate:>5}/min: backlog {begin_backlog} -> {end_backlog}")
        if end_backlog > max(begin_backlog, rate // 6):
            break
        sustained, rate = rate, rate * 2
    print(f"    sustained: {sustained} workflows/min (the backlog grew at {rate}/min)")


if __name__ == "__main__":
    sys.exit(main())
