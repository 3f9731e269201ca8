"""The e2e control plane: a kwok cluster (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok) started by kwokctl's binary runtime from the binaries build.sh made,
or the cluster in KUBECONFIG when RECONCILER_E2E_USE_KUBECONFIG=1.

One cluster per session, torn down at the end, also on failure, Ctrl-C or SIGTERM. Ports are
chosen free by kwokctl and the cluster name is unique, so two runs on one machine never meet.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # kubehelp.py, daemonhelp.py
CLUSTER_DIR = HERE / "cluster"
BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "etcd",
    "kwok",
    "kwokctl",
)
COMPONENTS = (
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok-controller",
)
NODES = 3
READY_DEADLINE = "180s"


def bin_dir() -> Path:
    out = subprocess.run(
        ["bash", str(CLUSTER_DIR / "build.sh"), "--print-bin-dir"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


class KwokCluster:
    def __init__(self, binaries: Path) -> None:
        self.bin = binaries
        self.name = f"reconciler-e2e-{uuid.uuid4().hex[:8]}"
        self.workdir = Path(tempfile.mkdtemp(prefix="reconciler-e2e-"))
        self.kubeconfig = self.workdir / "kubeconfig"
        self.config = self.workdir / "kwokctl.yaml"
        self.env = {
            **os.environ,
            "KWOK_WORKDIR": str(self.workdir / "kwok"),
            "PATH": f"{binaries}:{os.environ.get('PATH', '')}",  # our kubectl, never /usr/bin's
        }
        self.up = False

    @property
    def audit_log(self) -> Path:
        return self.workdir / "kwok" / "clusters" / self.name / "logs" / "audit.log"

    def kwokctl(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "kwokctl"), *args, "--name", self.name],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def create(self) -> None:
        b = self.bin
        self.config.write_text(f"""apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  bindAddress: 127.0.0.1
  kubeAuthorization: true
  kubeApiserverBinary: {b}/kube-apiserver
  kubeControllerManagerBinary: {b}/kube-controller-manager
  kubeSchedulerBinary: {b}/kube-scheduler
  kubectlBinary: {b}/kubectl
  etcdBinary: {b}/etcd
  kwokControllerBinary: {b}/kwok
""")
        start = time.monotonic()
        self.up = True  # from here on, teardown must run
        result = self.kwokctl(
            "create",
            "cluster",
            "--config",
            str(self.config),
            "--kubeconfig",
            str(self.kubeconfig),
            "--kube-audit-policy",
            str(CLUSTER_DIR / "audit-policy.yaml"),
            "--wait",
            READY_DEADLINE,
            check=False,
            timeout=400,
        )
        if result.returncode != 0:
            pytest.fail(
                f"kwok cluster did not become ready:\n{result.stderr[-3000:]}\n{self.component_logs()}",
                pytrace=False,
            )
        self.kwokctl("scale", "node", "--replicas", str(NODES), "--config", str(self.config))
        self.wait_nodes_ready()
        print(
            f"\n[e2e] cluster {self.name} ready in {time.monotonic() - start:.1f}s "
            f"(kubeconfig {self.kubeconfig})",
            file=sys.stderr,
        )

    def wait_nodes_ready(self) -> None:
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(
            config_file=str(self.kubeconfig), client_configuration=configuration
        )
        core = k8s.CoreV1Api(k8s.ApiClient(configuration))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            nodes = core.list_node().items
            ready = [
                n
                for n in nodes
                if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
            ]
            if len(ready) >= NODES:
                return
            time.sleep(0.5)
        pytest.fail(f"kwok nodes not Ready within 120s\n{self.component_logs()}", pytrace=False)

    def component_logs(self, lines: int = 30) -> str:
        out = []
        for component in COMPONENTS:
            result = self.kwokctl("logs", component, check=False, timeout=30)
            tail = "\n".join((result.stdout or result.stderr).splitlines()[-lines:])
            out.append(f"--- {component} (last {lines} lines) ---\n{tail}")
        return "\n".join(out)

    def delete(self) -> None:
        if not self.up:
            return
        self.up = False
        self.kwokctl("delete", "cluster", check=False, timeout=120)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _teardown_on_signals(cluster: KwokCluster) -> None:
    atexit.register(cluster.delete)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: object) -> None:
        cluster.delete()
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)


@pytest.fixture(scope="session")
def kubeconfig() -> Iterator[str]:
    if os.environ.get("RECONCILER_E2E_USE_KUBECONFIG") == "1":
        path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        if not Path(path).exists():
            pytest.fail(f"RECONCILER_E2E_USE_KUBECONFIG=1 but {path} does not exist", pytrace=False)
        yield path
        return
    binaries = bin_dir()
    missing = [b for b in BINARIES if not (binaries / b).exists()]
    if missing:
        pytest.fail(
            f"control-plane binaries missing in {binaries}: {', '.join(missing)}. Run `make cluster` "
            "(or set RECONCILER_E2E_USE_KUBECONFIG=1 with KUBECONFIG pointing at a cluster).",
            pytrace=False,
        )
    cluster = KwokCluster(binaries)
    _teardown_on_signals(cluster)
    try:
        cluster.create()
        os.environ["RECONCILER_E2E_AUDIT_LOG"] = str(cluster.audit_log)
        yield str(cluster.kubeconfig)
    finally:
        cluster.delete()


@pytest.fixture
def namespace(kubeconfig: str) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    core = k8s.CoreV1Api(k8s.ApiClient(configuration))
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"reconciler.dev/e2e": "true"}}})
    yield name
    core.delete_namespace(name)
