"""A kwok control plane run by kwokctl's binary runtime from the binaries build.sh made.

etcd, kube-apiserver (RBAC on, audit log), kube-controller-manager, kube-scheduler and the kwok
controller run as local processes bound to 127.0.0.1, on ports the kernel hands out at run
time, from a private KWOK_WORKDIR. Nothing is downloaded and no container runtime is tried.
Used by the e2e fixtures (tests/e2e/conftest.py) and by `make demo`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

CLUSTER_DIR = Path(__file__).resolve().parent / "cluster"
AUDIT_POLICY = CLUSTER_DIR / "audit-policy.yaml"
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
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok-controller",
)
# The KwokctlConfiguration option of each component's port (binary runtime).
PORT_OPTIONS = (
    "etcdPort",
    "etcdPeerPort",
    "kubeApiserverPort",
    "kubeControllerManagerPort",
    "kubeSchedulerPort",
    "kwokControllerPort",
)
NODES = 3
KWOK_NODE_SELECTOR = "kwok.x-k8s.io/node=fake"  # the annotation of the nodes kwokctl makes
TEMP_PREFIX = "reconciler-e2e-"
OWNER_FILE = "owner.pid"


def ready_timeout() -> float:
    """Seconds the control plane (and then its nodes) may take to become ready."""
    return float(os.environ.get("RECONCILER_E2E_READY_TIMEOUT", "180"))


class ClusterError(Exception):
    """The cluster did not start; the message carries the components' log tails."""


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of a versions.env (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def versions() -> dict[str, str]:
    """The pinned versions from tests/e2e/cluster/versions.env."""
    return env_file(CLUSTER_DIR / "versions.env")


def script_output(script: Path, flag: str) -> str:
    """What a build script prints for one of its --print-* flags (a path, an image name)."""
    out = subprocess.run(["bash", str(script), flag], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def script_bin_dir(script: Path) -> Path:
    """Where a build script puts (or has put) its binaries: `script --print-bin-dir`."""
    return Path(script_output(script, "--print-bin-dir"))


def bin_dir() -> Path:
    """Where build.sh puts (or has put) the binaries of the pinned versions."""
    return script_bin_dir(CLUSTER_DIR / "build.sh")


def missing_binaries(binaries: Path) -> list[str]:
    return [b for b in BINARIES if not os.access(binaries / b, os.X_OK)]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports on 127.0.0.1 the kernel considers free right now.

    kwokctl's own choice counts down from 32767, so two clusters created at the same moment
    would pick the same ports; kernel-assigned ports are spread over the ephemeral range.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextlib.contextmanager
def _creation_lock() -> Iterator[None]:
    """Serialise cluster creation between processes on this machine: the ports picked are
    only taken once the components listen, which is when `kwokctl create --wait` returns."""
    path = Path(tempfile.gettempdir()) / f"{TEMP_PREFIX}create.lock"
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans(binaries: Path) -> list[str]:
    """Delete clusters left behind by e2e sessions that died without tearing down (kill -9).

    Only temp dirs made by KwokCluster whose owner process is gone are touched.
    """
    reaped = []
    for workdir in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        owner = workdir / OWNER_FILE
        try:
            pid_text, name = owner.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if _pid_alive(pid):
            continue
        KwokCluster(binaries, name=name, workdir=workdir).delete(force=True)
        reaped.append(name)
    return reaped


class KwokCluster:
    def __init__(
        self, binaries: Path, name: str | None = None, workdir: Path | None = None
    ) -> None:
        self.bin = binaries
        self.name = name or f"{TEMP_PREFIX}{uuid.uuid4().hex[:8]}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = self.workdir / "kubeconfig"
        self.config = self.workdir / "kwokctl.yaml"
        home = self.workdir / "home"
        self.env = {
            **os.environ,
            "KWOK_WORKDIR": str(self.workdir / "kwok"),
            # a private home: nothing of this cluster lands in ~/.kwok or ~/.kube
            "HOME": str(home),
            "KUBECACHEDIR": str(home / ".kube" / "cache"),
            # our kubectl first, never /usr/bin's
            "PATH": f"{binaries}:{os.environ.get('PATH', '')}",
        }
        self.ports: dict[str, int] = {}
        self._api: k8s.ApiClient | None = None
        self._restarting = False
        self.up = False

    @property
    def cluster_dir(self) -> Path:
        return self.workdir / "kwok" / "clusters" / self.name

    @property
    def audit_log(self) -> Path:
        """The kube-apiserver's audit log (Metadata level for every request)."""
        return self.cluster_dir / "logs" / "audit.log"

    def log_file(self, component: str) -> Path:
        return self.cluster_dir / "logs" / f"{component}.log"

    def exists(self) -> bool:
        """A cluster of this name is already running (a kept demo): reuse it."""
        return self.kubeconfig.exists() and self.reachable()

    def reachable(self) -> bool:
        try:
            k8s.VersionApi(self.api_client()).get_code(_request_timeout=5)
            return True
        except Exception:
            return False

    def api_client(self) -> k8s.ApiClient:
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(
            config_file=str(self.kubeconfig), client_configuration=configuration
        )
        return k8s.ApiClient(configuration)

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

    def _write_config(self) -> None:
        b = self.bin
        self.ports = dict(zip(PORT_OPTIONS, free_ports(len(PORT_OPTIONS)), strict=True))
        ports = "".join(f"  {option}: {port}\n" for option, port in self.ports.items())
        self.config.write_text(
            "apiVersion: config.kwok.x-k8s.io/v1alpha1\n"
            "kind: KwokctlConfiguration\n"
            "options:\n"
            "  runtime: binary\n"
            "  bindAddress: 127.0.0.1\n"
            "  kubeAuthorization: true\n"
            # Kubernetes' own heartbeats (node lease 40 s, node-monitor grace 40 s, status every
            # 10 s) instead of kwokctl's 5x: a restarted kwok takes its nodes back once the
            # previous process's node leases expire, 40 s at most instead of 200 s.
            "  heartbeatFactor: 1\n"
            f"  kubeAuditPolicy: {AUDIT_POLICY}\n"
            f"  cacheDir: {self.workdir / 'kwok' / 'cache'}\n"
            f"  kubeApiserverBinary: {b}/kube-apiserver\n"
            f"  kubeControllerManagerBinary: {b}/kube-controller-manager\n"
            f"  kubeSchedulerBinary: {b}/kube-scheduler\n"
            f"  kubectlBinary: {b}/kubectl\n"
            f"  etcdBinary: {b}/etcd\n"
            f"  kwokControllerBinary: {b}/kwok\n"
            + ports
            # kwok fakes its own nodes only (kwokctl's node template annotates them), never the
            # real node (tests/e2e/realnode.py) or the pods the real kubelet runs.
            + "componentsPatches:\n"
            "  - name: kwok-controller\n"
            "    extraArgs:\n"
            "      - {key: manage-all-nodes, value: 'false', override: true}\n"
            f"      - {{key: manage-nodes-with-annotation-selector, value: '{KWOK_NODE_SELECTOR}'}}\n"
            # the real node's address is 127.0.0.1; its host name must never be looked up
            "  - name: kube-apiserver\n"
            "    extraArgs:\n"
            "      - {key: kubelet-preferred-address-types, value: InternalIP}\n"
        )

    def create(self) -> None:
        """Start the control plane and NODES kwok nodes; ClusterError (with the components'
        log tails) if anything is not ready within ready_timeout() or a component exits."""
        start = time.monotonic()
        since = datetime.now(UTC)
        deadline = start + ready_timeout()
        self.up = True  # from here on, teardown must run
        (self.workdir / OWNER_FILE).write_text(f"{os.getpid()} {self.name}\n")
        if self.cluster_dir.exists():  # a stale cluster of this name (a demo before a reboot)
            self.kwokctl("delete", "cluster", check=False, timeout=120)
        try:
            with _creation_lock():
                self._write_config()
                # No --wait: kwokctl only logs a failed wait and exits 0; wait_ready() checks.
                result = self.kwokctl(
                    "create",
                    "cluster",
                    "--config",
                    str(self.config),
                    "--kubeconfig",
                    str(self.kubeconfig),
                    check=False,
                    timeout=max(deadline - time.monotonic(), 1.0),
                )
                if result.returncode != 0:
                    raise ClusterError(
                        f"kwokctl create cluster failed (exit {result.returncode}):\n"
                        f"{_kwokctl_messages(result.stderr)}\n{self.component_logs()}"
                    )
                # hold the lock until every component listens on the ports picked
                self.wait_ready(deadline, nodes=False)
            self.kwokctl(
                "scale",
                "node",
                "--replicas",
                str(NODES),
                "--config",
                str(self.config),
                timeout=max(deadline - time.monotonic(), 1.0),
            )
            self.wait_ready(deadline, nodes=True, since=since)
        except subprocess.TimeoutExpired as err:
            raise ClusterError(
                f"not ready within {ready_timeout():.0f}s: {' '.join(map(str, err.cmd))} "
                f"did not finish\n{self.component_logs()}"
            ) from None
        except subprocess.CalledProcessError as err:
            raise ClusterError(
                f"{' '.join(map(str, err.cmd))} failed:\n{_kwokctl_messages(err.stderr)}\n"
                f"{self.component_logs()}"
            ) from None
        print(
            f"\n[e2e] cluster {self.name} ready in {time.monotonic() - start:.1f}s "
            f"(kubeconfig {self.kubeconfig})",
            file=sys.stderr,
        )

    def stop(self) -> None:
        """Stop every component, keeping the cluster's state (an API-server outage)."""
        self.kwokctl("stop", "cluster", timeout=120)

    def start(self) -> None:
        """Start a stopped cluster again and wait until it works as before: the restarted
        controller-manager and scheduler lead again and kwok has taken its nodes back (the
        leases the stopped processes held are released rather than left to expire)."""
        since = datetime.now(UTC)
        try:
            self.kwokctl("start", "cluster", timeout=120)
        except subprocess.CalledProcessError as err:
            raise ClusterError(
                f"kwokctl start cluster failed:\n{_kwokctl_messages(err.stderr)}\n"
                f"{self.component_logs()}"
            ) from None
        self._restarting = True
        try:
            self.wait_ready(time.monotonic() + ready_timeout(), nodes=True, since=since)
        finally:
            self._restarting = False

    def wait_ready(
        self, deadline: float, nodes: bool = True, since: datetime | None = None
    ) -> None:
        """Poll until the API server is ready, the controller-manager, scheduler and kwok
        controller are healthy, the controller-manager has made the `default` ServiceAccount
        and (with nodes) NODES kwok nodes are Ready. With `since`, the leader leases of the
        controller-manager and scheduler and every node lease must have been renewed after it
        (the components started then are the ones at work). A component process that exits
        fails at once; not ready by `deadline` (time.monotonic()) fails with what is pending."""
        pending = ["(not checked yet)"]
        while True:
            dead = self.dead_components()
            if dead:
                raise ClusterError(
                    f"component(s) exited during start-up: {', '.join(dead)}\n"
                    f"{self.component_logs()}"
                )
            pending = self._pending(nodes, since)
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"not ready within {ready_timeout():.0f}s (RECONCILER_E2E_READY_TIMEOUT); "
                    f"still pending: {'; '.join(pending)}\n{self.component_logs()}"
                )
            time.sleep(0.25)

    def dead_components(self) -> list[str]:
        dead = []
        for component in COMPONENTS:
            try:
                pid = int((self.cluster_dir / "pids" / f"{component}.pid").read_text().strip())
            except (OSError, ValueError):
                continue  # not started (yet)
            if not _pid_alive(pid) or _is_zombie(pid):
                dead.append(component)
        return dead

    def _pending(self, nodes: bool, since: datetime | None) -> list[str]:
        pending = []
        kwok_nodes: set[str] = set()
        if not self.kubeconfig.exists():
            return ["kubeconfig not written"]
        if self._api is None:
            self._api = self.api_client()
        api = self._api
        try:
            if self._get(api, api.configuration.host + "/readyz") != "ok":
                pending.append("kube-apiserver /readyz")
        except OSError as err:
            return [f"kube-apiserver /readyz: {err}"]
        if not self.ports and self.config.exists():  # a cluster this object did not create
            for line in self.config.read_text().splitlines():
                key, _, value = line.strip().partition(": ")
                if key in PORT_OPTIONS:
                    self.ports[key] = int(value)
        for component, option in (
            ("kube-controller-manager", "kubeControllerManagerPort"),
            ("kube-scheduler", "kubeSchedulerPort"),
            ("kwok-controller", "kwokControllerPort"),
        ):
            try:
                if self._get(api, f"https://127.0.0.1:{self.ports[option]}/healthz") != "ok":
                    pending.append(f"{component} /healthz")
            except OSError as err:
                pending.append(f"{component} /healthz: {err}")
        core = k8s.CoreV1Api(api)
        try:
            core.read_namespaced_service_account("default", "default", _request_timeout=5)
        except Exception:
            pending.append("ServiceAccount default/default (made by kube-controller-manager)")
        if nodes:
            try:
                listed = core.list_node(_request_timeout=10).items
            except Exception as err:
                listed = []
                pending.append(f"list nodes: {err}")
            key, _, value = KWOK_NODE_SELECTOR.partition("=")
            kwok_nodes = {
                n.metadata.name for n in listed if (n.metadata.annotations or {}).get(key) == value
            }
            ready = [
                n.metadata.name
                for n in listed
                if n.metadata.name in kwok_nodes
                and any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
            ]
            if len(ready) < NODES:
                pending.append(f"{len(ready)} of {NODES} kwok nodes Ready")
        if since is not None:
            pending += self._stale_leases(api, since, kwok_nodes, release=self._restarting)
        return pending

    @staticmethod
    def _stale_leases(
        api: k8s.ApiClient, since: datetime, nodes: set[str], release: bool
    ) -> list[str]:
        coordination = k8s.CoordinationV1Api(api)
        stale = []
        try:
            leases = [
                coordination.read_namespaced_lease(name, "kube-system", _request_timeout=5)
                for name in ("kube-controller-manager", "kube-scheduler")
            ]
            if nodes:  # kwok's nodes; the real node's kubelet renews its own
                leases += [
                    lease
                    for lease in coordination.list_namespaced_lease(
                        "kube-node-lease", _request_timeout=10
                    ).items
                    if lease.metadata.name in nodes
                ]
        except Exception as err:
            return [f"leases: {err}"]
        for lease in leases:
            renewed = lease.spec.renew_time
            if renewed is None or renewed < since:
                meta = lease.metadata
                stale.append(f"lease {meta.namespace}/{meta.name} not renewed")
                if release:
                    # Its holder was stopped with the cluster; without this the restarted
                    # component waits for the lease to expire (node leases: up to 40 s).
                    with contextlib.suppress(Exception):
                        coordination.delete_namespaced_lease(
                            meta.name,
                            meta.namespace,
                            body=k8s.V1DeleteOptions(
                                preconditions=k8s.V1Preconditions(
                                    uid=meta.uid, resource_version=meta.resource_version
                                )
                            ),
                            _request_timeout=5,
                        )
        return stale

    @staticmethod
    def _get(api: k8s.ApiClient, url: str) -> str:
        """GET with the kubeconfig's client certificate (health endpoints of components
        serve self-signed certificates; the API server's is checked against the CA)."""
        conf = api.configuration
        context = ssl.create_default_context()
        if url.startswith(conf.host):
            context.load_verify_locations(conf.ssl_ca_cert)
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if conf.cert_file:
            context.load_cert_chain(conf.cert_file, conf.key_file)
        try:
            with urllib.request.urlopen(url, context=context, timeout=5) as response:
                return response.read().decode(errors="replace").strip()
        except urllib.error.HTTPError as err:
            return f"HTTP {err.code}"

    def component_logs(self, lines: int = 30) -> str:
        """The last lines of every component's log, for a failure message."""
        out = []
        for component in COMPONENTS:
            try:
                text = self.log_file(component).read_text(errors="replace")
            except OSError as err:
                text = f"(no log: {err.strerror})"
            out.append(f"--- {component} (last {lines} lines) ---\n{_tail(text, lines)}")
        return "\n".join(out)

    def delete(self, force: bool = False) -> None:
        """Stop every component and remove the cluster and its workdir."""
        if not (self.up or force):
            return
        self.up = False
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self.kwokctl("delete", "cluster", check=False, timeout=120)
        # kwokctl stops the components it has pid files for; one it started while start-up
        # was failing may have none yet. Every process of this cluster names its workdir.
        _stop_processes_naming(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _stop_processes_naming(workdir: Path, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace`, every process whose command line names
    `workdir` (this harness's processes only: the workdir is a fresh temporary folder)."""

    def alive() -> list[int]:
        out = subprocess.run(
            ["pgrep", "-f", str(workdir)], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split() if int(p) != os.getpid()]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = alive()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = alive()
        if not pids:
            return


def _kwokctl_messages(stderr: str | None, lines: int = 20) -> str:
    """kwokctl logs JSON lines when not on a terminal; keep level, message and details."""
    out = []
    for line in (stderr or "").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        if not isinstance(entry, dict):
            out.append(line)
            continue
        details = " ".join(
            f"{k}={v}" for k, v in entry.items() if k not in ("time", "level", "source", "msg")
        )
        out.append(f"kwokctl {entry.get('level', '')}: {entry.get('msg', '')} {details}".rstrip())
    return "\n".join(out[-lines:])


def _tail(text: str | None, lines: int) -> str:
    return "\n".join((text or "").splitlines()[-lines:])
