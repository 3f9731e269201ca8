"""The e2e control plane: a kwok cluster (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok) started by kwokctl's binary runtime from the binaries build.sh made,
or the cluster in KUBECONFIG when RECONCILER_E2E_USE_KUBECONFIG=1.

One cluster per session, torn down at the end, also on failure, Ctrl-C, SIGTERM or SIGHUP
(and at interpreter exit as a last resort); clusters of sessions killed with -9 are reaped by
the next session. Ports are chosen free at run time and the cluster name is unique, so two runs
on one machine never meet.

Fixtures for every e2e test:
- `kubeconfig` (session): path of the kubeconfig (cluster-admin).
- `kwok_cluster` (session): the KwokCluster (to stop/start it), None for an external cluster.
- `audit_log` (session): the kube-apiserver audit log (Metadata level), None if external;
  also exported as RECONCILER_E2E_AUDIT_LOG.
- `namespace` (function): a fresh namespace, deleted after the test.
- `api` (session, in kubehelp.py): a kubernetes ApiClient for the kubeconfig.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import FrameType

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # kubehelp.py, daemonhelp.py, kwokcluster.py
sys.path.insert(0, str(HERE.parent))  # gitserver.py

from kwokcluster import (  # noqa: E402
    ClusterError,
    KwokCluster,
    bin_dir,
    missing_binaries,
    reap_orphans,
)
from realnode import (  # noqa: E402
    NodeError,
    RealNode,
    daemon_image,
    missing_node_binaries,
    node_bin_dir,
    unsupported_reason,
)
from realnode import reap_orphans as reap_orphan_nodes  # noqa: E402
from tenants import onboard, onboard_cluster_account  # noqa: E402

USE_KUBECONFIG = "RECONCILER_E2E_USE_KUBECONFIG"
_CLUSTER: list[KwokCluster] = []


def _interrupt_on_signals() -> None:
    """SIGTERM/SIGHUP end the session like Ctrl-C does, so the fixtures tear down."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


def _external_kubeconfig() -> str:
    path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    first = path.split(os.pathsep)[0]
    if not Path(first).exists():
        pytest.fail(f"{USE_KUBECONFIG}=1 but the kubeconfig {first} does not exist", pytrace=False)
    return path


@pytest.fixture(scope="session")
def kubeconfig(request: pytest.FixtureRequest) -> Iterator[str]:
    if os.environ.get(USE_KUBECONFIG) == "1":
        _onboard_nodes(_external_kubeconfig())
        yield _external_kubeconfig()
        return
    binaries = bin_dir()
    missing = missing_binaries(binaries)
    if missing:
        pytest.fail(
            f"control-plane binaries missing in {binaries}: {', '.join(missing)}.\n"
            "Build them with `make cluster` (bash tests/e2e/cluster/build.sh), or run the suite "
            f"against an existing cluster: {USE_KUBECONFIG}=1 KUBECONFIG=/path/to/kubeconfig.",
            pytrace=False,
        )
    cluster = KwokCluster(binaries)
    _CLUSTER.append(cluster)
    atexit.register(cluster.delete)
    _interrupt_on_signals()
    # kubectl run by tests writes its discovery cache here, not into ~/.kube/cache
    os.environ["KUBECACHEDIR"] = cluster.env["KUBECACHEDIR"]
    try:
        failure = None
        # start-up time, orphan reaping and failures go to the terminal, not to a test's capture
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            for name in reap_orphans(binaries):
                print(f"\n[e2e] deleted cluster {name} left behind by a killed session")
            try:
                cluster.create()
            except ClusterError as err:
                failure = str(err)
                print(f"\n[e2e] the control plane did not become ready: {failure}")
        if failure is not None:
            # one message for the whole session instead of the same error for every test
            pytest.exit("the e2e control plane did not become ready (details above)", returncode=1)
        os.environ["RECONCILER_E2E_AUDIT_LOG"] = str(cluster.audit_log)
        _onboard_nodes(str(cluster.kubeconfig))
        if any("real_node" in item.fixturenames for item in request.session.items):
            _NODE.start_early(cluster)
        yield str(cluster.kubeconfig)
    finally:
        _NODE.stop()
        cluster.delete()


@pytest.fixture(scope="session")
def real_node(
    request: pytest.FixtureRequest, kubeconfig: str, kwok_cluster: KwokCluster | None
) -> Iterator[RealNode]:
    """A real kubelet + containerd node beside the kwok nodes (tests/e2e/realnode.py), with
    the Job image and the daemon's image loaded: started in the background once the control
    plane is up when a collected test needs it (_NodeStarter), else when a test asks."""
    if kwok_cluster is None:
        pytest.skip(
            f"real node: joins the suite's own control plane only; with {USE_KUBECONFIG}=1 "
            "these tests need a node of your cluster labelled reconciler.dev/real-node=true"
        )
    reason = unsupported_reason()
    if reason:
        pytest.skip(f"real node: {reason}")
    missing = missing_node_binaries(node_bin_dir())
    if missing:
        pytest.fail(
            f"real-node binaries missing in {node_bin_dir()}: {', '.join(missing)}; build them"
            " with `make cluster` (bash tests/e2e/node/build.sh)",
            pytrace=False,
        )
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        node, failure = _NODE.wait(kwok_cluster)
    if failure is not None:
        pytest.fail(f"the real node did not start: {failure}", pytrace=False)
    assert node is not None
    try:
        yield node
    finally:
        _NODE.stop()


class _NodeStarter:
    """The session's real node, started in a thread as soon as the control plane is up when
    a collected test needs it: its 5-13 s (containerd, the image imports, the kubelet
    registering) overlap the tests before the first one that uses it."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="real-node")
        self._started: Future[tuple[RealNode | None, str | None, list[str]]] | None = None

    def start_early(self, cluster: KwokCluster) -> None:
        if (
            self._started is None
            and unsupported_reason() is None
            and not missing_node_binaries(node_bin_dir())
        ):
            self._started = self._pool.submit(self._start, cluster)

    def wait(self, cluster: KwokCluster) -> tuple[RealNode | None, str | None]:
        if self._started is None:
            self._started = self._pool.submit(self._start, cluster)
        node, failure, said = self._started.result()
        for line in said:  # printed here: a thread's output would land in a test's capture
            print(line)
        said.clear()
        return node, failure

    @staticmethod
    def _start(cluster: KwokCluster) -> tuple[RealNode | None, str | None, list[str]]:
        binaries = node_bin_dir()
        said: list[str] = []
        if not _hold_node_lock(binaries):
            return (
                None,
                (
                    "another e2e session on this machine has the real node (one per machine: its "
                    "kubelet and containerd own fixed ports and paths); run the real-node tests in "
                    "one session, as make test does"
                ),
                said,
            )
        api = cluster.api_client()
        for workdir in reap_orphan_nodes(binaries, api):
            said.append(f"\n[e2e] stopped the real node {workdir} left behind by a killed session")
        node = RealNode(binaries, cluster.kubeconfig, api)
        atexit.register(node.stop)
        try:
            ready_in = node.start([daemon_image()])
        except Exception as err:  # NodeError, or the API server failing it (a thread's end)
            node.stop()
            return None, str(err) if isinstance(err, NodeError) else repr(err), said
        said.append(f"\n[e2e] real node {node.name} Ready in {ready_in:.1f}s")
        return node, None, said

    def stop(self) -> None:
        """Stop the node (idempotent), also one started early that no test took."""
        if self._started is not None:
            node, _failure, _said = self._started.result()
            if node is not None:
                node.stop()


_NODE = _NodeStarter()
_NODE_LOCK: list[int] = []


def _hold_node_lock(binaries: Path) -> bool:
    """One real node per machine: an exclusive lock on its binaries' folder (no file left
    behind), held until this process ends, also by kill -9."""
    if _NODE_LOCK:
        return True
    fd = os.open(binaries, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _NODE_LOCK.append(fd)
    return True


@pytest.fixture(scope="session", autouse=True)
def reconciler_log_of_this_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What reconciler logs inside this process (workflows run in-process by kubehelp, at
    INFO and above) also goes to a file, which the secret scan reads like a daemon's log."""
    from daemonhelp import LOGS

    from reconciler.observability.logs import JsonFormatter

    path = tmp_path_factory.mktemp("logs") / "pytest-process.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("reconciler")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    LOGS.append(path)
    yield
    logger.removeHandler(handler)
    logger.setLevel(level)
    handler.close()


@pytest.fixture(scope="session")
def kwok_cluster(kubeconfig: str) -> KwokCluster | None:
    """The session's own cluster (to stop and start it), or None for an external one."""
    return _CLUSTER[0] if _CLUSTER else None


@pytest.fixture(scope="session")
def audit_log(kwok_cluster: KwokCluster | None) -> Path | None:
    """The kube-apiserver audit log of the session's own cluster, None for an external one."""
    return kwok_cluster.audit_log if kwok_cluster else None


@pytest.fixture
def namespace(kubeconfig: str) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for it to go)."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    core = k8s.CoreV1Api(k8s.ApiClient(configuration))
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"reconciler.dev/e2e": "true"}}})
    onboard(core.api_client, name)  # steps act as its tenant account (deploy/tenant/)
    _wait_default_service_account(core, name)
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as err:
        if err.status != 404:
            raise


def _onboard_nodes(kubeconfig: str) -> None:
    """Node steps act as deploy/cluster-account.yaml's account: made once per cluster."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    with k8s.ApiClient(configuration) as api:
        onboard_cluster_account(api)


def _wait_default_service_account(core: k8s.CoreV1Api, namespace: str) -> None:
    """Pods are refused until the controller-manager made the namespace's `default`
    ServiceAccount; wait for it so a test may create pods right away."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", namespace)
            return
        except ApiException as err:
            if err.status != 404:
                raise
        time.sleep(0.1)
    raise AssertionError(f"namespace {namespace}: no default ServiceAccount after 30s")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from figures import FIGURES

    if FIGURES:
        terminalreporter.section("figures measured by this run")
        for line in FIGURES:
            terminalreporter.write_line(line)


LOG_TAIL_LINES = 25  # per daemon log, for the newest few logs of a failed test


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """A failed test shows the end of the logs of the daemons it started: CI keeps only
    the output, and a timeout alone never says what the daemon was doing."""
    from daemonhelp import LOGS

    if call.when == "setup":
        item.stash[_LOGS_BEFORE] = len(LOGS)
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or not report.failed:
        return
    for path in LOGS[item.stash.get(_LOGS_BEFORE, len(LOGS)) :][-3:]:
        with contextlib.suppress(OSError):
            tail = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            report.sections.append((f"daemon log {path.name} (last lines)", "\n".join(tail)))


_LOGS_BEFORE = pytest.StashKey[int]()
