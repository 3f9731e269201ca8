"""`make demo`: the product end to end on this machine.

Starts (or reuses) a local control plane, creates what the examples target, turns
examples-repo/ into a real git remote (a bare repository) with a working clone, starts the
daemon against it, pushes the examples, waits for their runs, and prints where to look.
With KUBECONFIG set, that cluster is used instead. DEMO_KEEP=1 leaves everything running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from examples_setup import (  # noqa: E402
    CANARY,
    ExampleMetrics,
    approvers_policy,
    create_example_targets,
    on_real_node,
)
from kubehelp import api_client, install_crd  # noqa: E402
from kwokcluster import KwokCluster, bin_dir, missing_binaries  # noqa: E402
from promhelp import PrometheusServer  # noqa: E402
from realnode import (  # noqa: E402
    LABEL,
    TAINT,
    NodeError,
    RealNode,
    missing_node_binaries,
    node_bin_dir,
    reap_orphans,
    unsupported_reason,
)
from ruamel.yaml import YAML  # noqa: E402

from reconciler.manifest.loader import load_paths  # noqa: E402

KEEP = os.environ.get("DEMO_KEEP") == "1"
STATE = Path(os.environ.get("RECONCILER_CACHE", Path.home() / ".cache" / "reconciler")) / "demo"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cluster() -> tuple[str, KwokCluster | None, Path | None]:
    if os.environ.get("KUBECONFIG"):
        say(f"using the cluster in KUBECONFIG={os.environ['KUBECONFIG']}")
        return os.environ["KUBECONFIG"], None, None
    binaries = bin_dir()
    missing = missing_binaries(binaries)
    if missing:
        sys.exit(f"control-plane binaries missing ({', '.join(missing)}): run `make cluster` first")
    cluster = KwokCluster(binaries, name="reconciler-demo", workdir=STATE / "cluster")
    if cluster.exists():
        say(f"reusing the running demo cluster ({cluster.kubeconfig})")
    else:
        say("starting a local control plane (etcd, apiserver, controller-manager, scheduler, kwok)")
        start = time.monotonic()
        cluster.create()
        print(f"   ready in {time.monotonic() - start:.1f}s")
    return str(cluster.kubeconfig), cluster, binaries / "kubectl"


def start_real_node(api, cluster: KwokCluster | None) -> RealNode | None:
    """A real kubelet + containerd node beside the kwok nodes, where this host can run one:
    the failing canary's container then really runs (and fails)."""
    reason = "the cluster in KUBECONFIG is not the demo's own" if cluster is None else None
    reason = reason or unsupported_reason()
    binaries = node_bin_dir()
    missing = missing_node_binaries(binaries)
    if not reason and missing:
        reason = f"its binaries are not built ({', '.join(missing)}): run `make cluster`"
    if reason:
        say(f"no real node: {reason}; the canary's Job waits on a kwok node and times out")
        return None
    assert cluster is not None
    for workdir in reap_orphans(binaries, api):
        print(f"   stopped the real node {workdir} a previous demo left running")
    node = RealNode(binaries, cluster.kubeconfig, api)
    say("starting a real node (kubelet, containerd, runc) beside the kwok nodes")
    try:
        took = node.start([])
    except NodeError as err:
        node.stop()
        say(f"no real node: it did not start ({str(err).splitlines()[0]})")
        return None
    print(f"   real node {node.name} Ready in {took:.1f}s")
    return node


def make_remote(work: Path, node: RealNode | None) -> tuple[Path, Path]:
    bare, clone = work / "ops.git", work / "ops"
    git("init", "--quiet", "--bare", "-b", "main", str(bare), cwd=work)
    git("clone", "--quiet", str(bare), str(clone), cwd=work)
    git("config", "user.name", "Demo SRE", cwd=clone)
    git("config", "user.email", "sre@example.com", cwd=clone)
    shutil.copytree(ROOT / "examples-repo", clone, dirs_exist_ok=True)
    if node is not None:  # the canary's Job on the real node: its container really runs
        canary = clone / "workflows" / CANARY[0]
        canary.write_text(on_real_node(canary.read_text(), LABEL, TAINT["key"]))
    return bare, clone


def waiting_for_approval(bare: Path, run_id: str) -> bool:
    """node-rotation's Running record in git says its drain waits for approval."""
    try:
        return "waits for approval" in git("show", f"main:runs/node-rotation/{run_id}.md", cwd=bare)
    except subprocess.CalledProcessError:
        return False


def approve(clone: Path, run_id: str, keys: dict[str, Path]) -> None:
    say("node-rotation waits for two approvals: alice and bob approve with signed commits")
    for who, key in keys.items():
        args = ["approve", run_id, "drain-old-pool", "--repo", str(clone), "--as", who]
        args += ["--signing-key", str(key), "-m", "pool retired in OPS-1234"]
        print(f"   $ reconciler {' '.join(args)}")
        git("pull", "--quiet", "--rebase", "origin", "main", cwd=clone)
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", *args], capture_output=True, text=True
        )
        print(f"   {(done.stdout or done.stderr).strip()}")


def sample(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of a process, from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def main() -> int:
    kubeconfig, cluster, kubectl = start_cluster()
    api = api_client(kubeconfig)
    install_crd(api)
    say("creating what the examples target (namespaces, Deployments, ConfigMaps, node worker-1)")
    create_example_targets(api)

    work = STATE / time.strftime("run-%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    # what demo-verified-rollout's check measures: a real Prometheus (built once, cached)
    subprocess.run(["bash", str(ROOT / "tests/e2e/prometheus/build.sh")], check=True)
    example_metrics = ExampleMetrics()
    prometheus = PrometheusServer(example_metrics, work / "prometheus").start()
    say(f"Prometheus on {prometheus.url}, scraping the demo's error ratio every second")
    node = start_real_node(api, cluster)
    bare, clone = make_remote(work, node)
    port = free_port()
    # demo/policy.yaml with alice's and bob's keys, made for this run (node-rotation's approval)
    policy, approver_keys = approvers_policy(Path(__file__).resolve().parent / "policy.yaml", work)
    say(
        f"starting the daemon: reconciler daemon --repo {bare} --listen 127.0.0.1:{port}"
        " --policy demo/policy.yaml"
    )
    log_path = work / "daemon.log"
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "daemon",
            "--repo",
            str(bare),
            "--workdir",
            str(work / "daemon"),
            "--kubeconfig",
            kubeconfig,
            "--listen",
            f"127.0.0.1:{port}",
            "--log-format",
            "text",
            "--max-concurrent-workflows",
            "5",
            "--policy",
            str(policy),
            "--prometheus-url",
            prometheus.url,
        ],
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(1.5)
        say("pushing the example workflows (git push)")
        git("add", "-A", cwd=clone)
        git("commit", "--quiet", "-m", "Add remediation workflows", cwd=clone)
        git("push", "--quiet", "origin", "HEAD:main", cwd=clone)
        workflows = load_paths([clone / "workflows"]).workflows
        pending = {w.name: w.run_id for w in workflows}
        phases: dict[str, str] = {}
        peak_rss, deadline = 0.0, time.monotonic() + 300
        say(f"waiting for {len(pending)} runs (two are designed to fail and roll back)")
        rotation = pending.get("node-rotation")
        while pending and time.monotonic() < deadline:
            rss, _ = sample(daemon.pid)
            peak_rss = max(peak_rss, rss)
            if rotation and waiting_for_approval(bare, rotation):
                approve(clone, rotation, approver_keys)
                rotation = None
            for name, run_id in list(pending.items()):
                try:
                    record = git("show", f"main:runs/{name}/{run_id}.yaml", cwd=bare)
                except subprocess.CalledProcessError:
                    continue
                phase = next(
                    line.split(": ", 1)[1]
                    for line in record.splitlines()
                    if line.startswith("phase: ")
                )
                if phase not in ("Running", "RollingBack", "Pending"):
                    phases[name] = phase
                    print(f"   {name:<32} {phase}")
                    del pending[name]
            time.sleep(0.5)
        rss, cpu = sample(daemon.pid)
        if pending:
            print(f"   still running after 5 minutes: {', '.join(pending)} (see {log_path})")

        say("record commits on the remote (git log)")
        print(git("log", "--format=   %h %s  (%an)", "main", cwd=bare))
        say("reports to read (Markdown with Mermaid DAG, timeline and rollback table)")
        for w in workflows:
            print(f"   {bare}:runs/{w.name}/{w.run_id}.md")
        print(
            f"   e.g. git -C {bare} show main:runs/demo-failed-canary/"
            f"{next(w.run_id for w in workflows if w.name == 'demo-failed-canary')}.md"
            "\n   and the check that failed on Prometheus:"
            f" git -C {bare} show main:runs/demo-verified-rollout/"
            f"{next(w.run_id for w in workflows if w.name == 'demo-verified-rollout')}.md"
        )
        canary_run = next(w.run_id for w in workflows if w.name == "demo-failed-canary")
        with contextlib.suppress(subprocess.CalledProcessError):
            canary = git("show", f"main:runs/demo-failed-canary/{canary_run}.yaml", cwd=bare)
            message = str(YAML(typ="safe").load(canary).get("message") or "")
            say("why the canary failed (its record's message)")
            print("\n".join(f"   {line}" for line in message.splitlines()[:8]))
        say("kubectl get workflowexecutions")
        kubectl_bin = str(kubectl) if kubectl else "kubectl"
        print(
            subprocess.run(
                [kubectl_bin, "--kubeconfig", kubeconfig, "get", "workflowexecutions"],
                capture_output=True,
                text=True,
            ).stdout
        )
        say(f"metrics (http://127.0.0.1:{port}/metrics)")
        metrics = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        )
        print(
            "\n".join(
                f"   {line}"
                for line in metrics.splitlines()
                if line.startswith("reconciler_runs_total")
            )
        )
        say("daemon resources during the demo")
        print(
            f"   peak RSS {peak_rss:.1f} MiB, now {rss:.1f} MiB, CPU {cpu:.2f}s (log: {log_path})"
        )
        succeeded = sum(1 for p in phases.values() if p == "Succeeded")
        rolled_back = sum(1 for p in phases.values() if p == "RolledBack")
        say(f"done: {succeeded} succeeded, {rolled_back} rolled back, {len(pending)} unfinished")
        ok = not pending and rolled_back == 2 and succeeded == len(phases) - 2
        if KEEP:
            print(
                f"   DEMO_KEEP=1: daemon pid {daemon.pid} and the cluster stay up.\n"
                f"   KUBECONFIG={kubeconfig}; clone to push more: {clone}"
            )
        return 0 if ok else 1
    finally:
        if not KEEP:
            daemon.terminate()
            daemon.wait(timeout=30)
            prometheus.stop()
            example_metrics.stop()
            if node is not None:
                node.stop()
            if cluster is not None:
                cluster.delete()


if __name__ == "__main__":
    raise SystemExit(main())
