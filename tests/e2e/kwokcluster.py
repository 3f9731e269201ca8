"""A kwok control plane run by kwokctl's binary runtime from the binaries build.sh made.
Used by the e2e fixtures and by `make demo`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

CLUSTER_DIR = Path(__file__).resolve().parent / "cluster"
BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "etcd",
    "kwok",
    "kwokctl",
)


class ClusterError(Exception):
    """The cluster did not start; the message carries the components' log tails."""


def bin_dir() -> Path:
    out = subprocess.run(
        ["bash", str(CLUSTER_DIR / "build.sh"), "--print-bin-dir"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def missing_binaries(binaries: Path) -> list[str]:
    return [b for b in BINARIES if not (binaries / b).exists()]


COMPONENTS = (
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok-controller",
)
NODES = 3
READY_DEADLINE = "180s"


class KwokCluster:
    def __init__(
        self, binaries: Path, name: str | None = None, workdir: Path | None = None
    ) -> None:
        self.bin = binaries
        self.name = name or f"reconciler-e2e-{uuid.uuid4().hex[:8]}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="reconciler-e2e-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = self.workdir / "kubeconfig"
        self.config = self.workdir / "kwokctl.yaml"
        self.env = {
            **os.environ,
            "KWOK_WORKDIR": str(self.workdir / "kwok"),
            "PATH": f"{binaries}:{os.environ.get('PATH', '')}",  # our kubectl, never /usr/bin's
        }
        self.up = False

    def exists(self) -> bool:
        """A cluster of this name is already running (a kept demo): reuse it."""
        return self.kubeconfig.exists() and self.reachable()

    def reachable(self) -> bool:
        try:
            configuration = k8s.Configuration()
            k8s_config.load_kube_config(
                config_file=str(self.kubeconfig), client_configuration=configuration
            )
            k8s.VersionApi(k8s.ApiClient(configuration)).get_code(_request_timeout=5)
            return True
        except Exception:
            return False

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
            raise ClusterError(
                f"kwok cluster did not become ready:\n{result.stderr[-3000:]}\n{self.component_logs()}"
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
        raise ClusterError(f"kwok nodes not Ready within 120s\n{self.component_logs()}")

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
