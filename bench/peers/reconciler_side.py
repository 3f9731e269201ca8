"""Our side of the peers bench (issue 18): the daemon on a git remote, one trial = one
pushed commit that changes a one-step ScaleDeployment workflow, measured from the push to
the Deployment's spec changing in the API (a watch; one clock, time.time()), with the
daemon's own stage times from its debug log (webhook received, fetched, refreshed,
WorkflowExecution created, first API write).

Used by bench/peers/run.py beside Flux; alone: `python bench/peers/reconciler_side.py
--trials 10` starts a kwok cluster (or uses KUBECONFIG) and a file:// remote.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "tests"))  # gitserver.py

from common import free_port, git, process_usage, summary  # noqa: E402
from kubernetes import client as k8s  # noqa: E402
from kubernetes import watch  # noqa: E402

STAGES = ("webhook", "fetched", "refreshed", "created", "apply")
SECRET = b"peers-bench-secret"


def workflow(namespace: str, deployment: str, replicas: int) -> str:
    return f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: peers-scale}}
spec:
  steps:
    - name: scale
      action: ScaleDeployment
      target: {{namespace: {namespace}, name: {deployment}}}
      params: {{replicas: {replicas}}}
      timeout: 60s
"""


class ReplicasWatch:
    """When a Deployment's spec.replicas became each value: a watch in a thread, stamped on
    arrival with time.time() (the clock the pushes are stamped with)."""

    def __init__(self, api: k8s.ApiClient, namespace: str, name: str) -> None:
        self.seen: queue.Queue[tuple[int, float]] = queue.Queue()
        self._stop = threading.Event()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(api, namespace, name), daemon=True)
        self._thread.start()

    def _run(self, api: k8s.ApiClient, namespace: str, name: str) -> None:
        apps = k8s.AppsV1Api(api)
        while not self._stop.is_set():
            try:
                self._stream(apps, namespace, name)
            except Exception:  # the API server closed the watch (or we did): watch again
                time.sleep(0.05)

    def _stream(self, apps: k8s.AppsV1Api, namespace: str, name: str) -> None:
        for event in self._watch.stream(
            apps.list_namespaced_deployment,
            namespace,
            field_selector=f"metadata.name={name}",
            timeout_seconds=30,
        ):
            self.seen.put((event["object"].spec.replicas, time.time()))
            if self._stop.is_set():
                return

    def until(self, replicas: int, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value, at = self.seen.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if value == replicas:
                return at
        raise TimeoutError(f"spec.replicas never became {replicas} within {timeout:g}s")

    def stop(self) -> None:
        self._stop.set()
        self._watch.stop()


@dataclass
class Ours:
    """The daemon on `repo_url` (a clone of it in `clone` is where trials commit)."""

    kubeconfig: str
    repo_url: str
    clone: Path
    workdir: Path
    namespace: str
    deployment: str = "web"
    interval: int = 3600
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    extra: tuple[str, ...] = ()  # more daemon flags (the bench's baseline: --git-client-fetch)
    log_path: Path = field(default_factory=lambda: Path(tempfile.mktemp(suffix=".log")))

    def start(self) -> Ours:
        self.port = free_port()
        secret = self.workdir / "webhook-secret"
        self.workdir.mkdir(parents=True, exist_ok=True)
        secret.write_bytes(SECRET)
        args = [sys.executable, "-m", "reconciler", "daemon", "--repo", self.repo_url]
        args += ["--workdir", str(self.workdir / "daemon"), "--kubeconfig", self.kubeconfig]
        args += ["--listen", f"127.0.0.1:{self.port}", "--interval", str(self.interval)]
        args += ["--webhook-secret-file", str(secret), "--log-format", "json"]
        args += ["--log-level", "DEBUG", *self.extra]
        self.proc = subprocess.Popen(
            args, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the daemon did not get ready; its log: {self.log_path}")

    def webhook(self) -> None:
        body = json.dumps({"ref": "refs/heads/main", "delivery": uuid.uuid4().hex}).encode()
        signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/hooks/git",
            data=body,
            headers={"X-Hub-Signature-256": signature, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 202, r.status

    def push(self, replicas: int) -> float:
        """Commit the workflow at `replicas` and push it; the time the push returned."""
        (self.clone / "workflows").mkdir(exist_ok=True)
        (self.clone / "workflows" / "peers.yaml").write_text(
            workflow(self.namespace, self.deployment, replicas)
        )
        git("add", "-A", cwd=self.clone)
        git("commit", "--quiet", "-m", f"scale to {replicas}", cwd=self.clone)
        for _ in range(20):  # the daemon may push a record meanwhile
            git("pull", "--quiet", "--rebase", "origin", "main", cwd=self.clone)
            try:
                git("push", "--quiet", "origin", "HEAD:main", cwd=self.clone)
                return time.time()
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        raise RuntimeError("could not push")

    def stages_since(self, since: float) -> dict[str, float]:
        """The first time of each stage logged after `since` (epoch seconds)."""
        found: dict[str, float] = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            stage = entry.get("stage")
            if stage in STAGES and stage not in found:
                at = _epoch(entry["time"])
                if at >= since - 0.002:  # the log has milliseconds
                    found[stage] = at
        return found

    def usage(self) -> tuple[float, float]:
        """(CPU seconds, peak RSS MiB) of the daemon process, from /proc."""
        assert self.proc is not None
        return process_usage(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def trial(ours: Ours, watcher: ReplicasWatch, replicas: int, polling: bool) -> dict[str, float]:
    pushed = ours.push(replicas)
    if not polling:
        ours.webhook()
    changed = watcher.until(replicas, timeout=ours.interval * 2 + 30)
    time.sleep(1.0)  # the run's records land before the next push (not measured)
    stages = ours.stages_since(pushed)
    return {"total": changed - pushed, **{k: v - pushed for k, v in stages.items()}}


@dataclass
class Bench:
    """What every peers bench starts from: a cluster (KUBECONFIG's, or a kwok cluster of its
    own, `cluster`), a namespace onboarded as a tenant with Deployment `web` at 1 replica,
    and a bare remote with a clone that has one commit."""

    work: Path
    cluster: Any
    kubeconfig: str
    api: k8s.ApiClient
    namespace: str
    bare: Path
    clone: Path

    @classmethod
    def make(cls, prefix: str) -> Bench:
        from kubehelp import api_client, deployment, install_crd
        from kwokcluster import KwokCluster, bin_dir
        from tenants import onboard

        work = Path(tempfile.mkdtemp(prefix=prefix))
        cluster, kubeconfig = None, os.environ.get("KUBECONFIG")
        if not kubeconfig:
            cluster = KwokCluster(bin_dir(), workdir=work / "cluster")
            cluster.create()
            kubeconfig = str(cluster.kubeconfig)
        api = api_client(kubeconfig)
        install_crd(api)
        namespace = f"{prefix.split('-')[1]}-{uuid.uuid4().hex[:6]}"
        k8s.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
        onboard(api, namespace)
        deployment(api, namespace, "web", replicas=1)
        bare, clone = work / "remote.git", work / "clone"
        git("init", "--quiet", "--bare", "-b", "main", str(bare), cwd=work)
        # as GitHub's: the daemon's partial mirror gets blobs over its limit filtered out
        git("config", "uploadpack.allowFilter", "true", cwd=bare)
        git("clone", "--quiet", str(bare), str(clone), cwd=work)
        git("config", "user.email", "sre@example.com", cwd=clone)
        git("config", "user.name", "SRE", cwd=clone)
        (clone / "workflows").mkdir()
        git("commit", "--quiet", "--allow-empty", "-m", "initial", cwd=clone)
        git("push", "--quiet", "origin", "HEAD:main", cwd=clone)
        return cls(work, cluster, kubeconfig, api, namespace, bare, clone)

    def watch(self) -> ReplicasWatch:
        """The trials' witness: Deployment `web`'s spec.replicas, from a watch."""
        return ReplicasWatch(self.api, self.namespace, "web")

    def delete(self) -> None:
        """The cluster, if the bench made its own."""
        if self.cluster is not None:
            self.cluster.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument(
        "--git-client-fetch",
        action="store_true",
        help="the daemon's --git-client-fetch: every fetch by the git client (the baseline)",
    )
    parser.add_argument(
        "--remote",
        choices=("file", "http"),
        default="file",
        help="the daemon reads file://, or the smart-HTTP server the peers bench uses",
    )
    args = parser.parse_args()
    bench = Bench.make("peers-ours-")
    watcher = bench.watch()
    with contextlib.ExitStack() as stack:
        url = f"file://{bench.bare}"
        if args.remote == "http":
            from gitserver import GitServer

            url = stack.enter_context(GitServer(bench.bare)).url
        ours = Ours(bench.kubeconfig, url, bench.clone, bench.work / "ours", bench.namespace)
        ours.extra = ("--git-client-fetch",) * args.git_client_fetch
        try:
            _alone(ours, watcher, args.trials)
        finally:
            watcher.stop()
            ours.stop()
            bench.delete()
    return 0


def _alone(ours: Ours, watcher: ReplicasWatch, trials: int) -> None:
    ours.start()
    results = [trial(ours, watcher, 2 + i, polling=False) for i in range(trials)]
    print(f"ours, event-driven, {trials} trials, {ours.repo_url} (seconds from push):")
    for key in ("total", *STAGES):
        got = [r[key] for r in results if key in r]
        if got:
            print(f"  {key:<10} {summary(got)}")
    cpu, rss = ours.usage()
    print(f"  daemon CPU {cpu:.2f}s, peak RSS {rss:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
