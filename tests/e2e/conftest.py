"""The e2e control plane: a kwok cluster (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok) started by kwokctl's binary runtime from the binaries build.sh made,
or the cluster in KUBECONFIG when RECONCILER_E2E_USE_KUBECONFIG=1.

One cluster per session, torn down at the end, also on failure, Ctrl-C or SIGTERM. Ports are
chosen free by kwokctl and the cluster name is unique, so two runs on one machine never meet.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # kubehelp.py, daemonhelp.py, kwokcluster.py

from kwokcluster import ClusterError, KwokCluster, bin_dir, missing_binaries  # noqa: E402

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
    missing = missing_binaries(binaries)
    if missing:
        pytest.fail(
            f"control-plane binaries missing in {binaries}: {', '.join(missing)}. Run `make cluster` "
            "(or set RECONCILER_E2E_USE_KUBECONFIG=1 with KUBECONFIG pointing at a cluster).",
            pytrace=False,
        )
    cluster = KwokCluster(binaries)
    _CLUSTER.append(cluster)
    _teardown_on_signals(cluster)
    try:
        try:
            cluster.create()
        except ClusterError as err:
            pytest.fail(str(err), pytrace=False)
        os.environ["RECONCILER_E2E_AUDIT_LOG"] = str(cluster.audit_log)
        yield str(cluster.kubeconfig)
    finally:
        cluster.delete()


_CLUSTER: list[KwokCluster] = []


@pytest.fixture(scope="session")
def kwok_cluster(kubeconfig: str) -> KwokCluster | None:
    """The session's own cluster (to stop and start it), or None for an external one."""
    return _CLUSTER[0] if _CLUSTER else None


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
