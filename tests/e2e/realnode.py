"""A real node beside the kwok nodes: containerd, runc and a kubelet built by
tests/e2e/node/build.sh, run as local processes from a private temporary folder.

Network: loopback only. The kubelet listens on 127.0.0.1, and the node's address is 127.0.0.1
(set here: the kubelet refuses a loopback node IP, so it reports none, and the API server needs
one to reach it for logs). A pod that is not hostNetwork gets a network namespace with its
loopback interface only (node/cni/isolated): nothing it sends leaves it. There is no pod network
and no kube-proxy.

The node is tainted (TAINT) and labelled (LABEL): only pods that choose it run on it, so the
kwok-faked workloads of the other tests never land here.

Leaving the host as it was: stop() stops the kubelet, every container and containerd, kills what
is left in the cgroups they made, unmounts every mount under the node's folder, removes the
iptables chains and /run/containerd entries that were not there before, and deletes the folder.
host_changes() says what would still differ from the snapshot taken before start().
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client as k8s
from kwokcluster import env_file, free_ports, script_bin_dir, script_output

NODE_DIR = Path(__file__).resolve().parent / "node"
REPO = NODE_DIR.parents[2]
NAME = "reconciler-real-node"
LABEL = ("reconciler.dev/real-node", "true")
TAINT = {"key": "reconciler.dev/real-node", "value": "true", "effect": "NoSchedule"}
TEMP_PREFIX = "reconciler-node-"
OWNER_FILE = "owner.pid"
EXAMPLE_BUSYBOX = "docker.io/library/busybox:1.35"
SNAPSHOT_FILE = "host-before.json"
BINARIES = (
    "kubelet",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "cni/loopback",
    "cni/isolated",
    "pause.oci.tar",
    "jobs.oci.tar",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
SHIM_DIR = Path("/run/containerd")  # containerd's shims put their sockets here, always


def node_bin_dir() -> Path:
    return script_bin_dir(NODE_DIR / "build.sh")


def missing_node_binaries(binaries: Path) -> list[str]:
    return [b for b in BINARIES if not (binaries / b).exists()]


def daemon_image() -> tuple[str, Path]:
    """The daemon's image (`make image`): its name and OCI archive."""
    script = REPO / "image" / "build.sh"
    return script_output(script, "--print-name"), Path(script_output(script, "--print-archive"))


def jobs_image() -> str:
    """The image of the test Jobs (busybox: sh, sleep, echo), loaded on every start."""
    return env_file(NODE_DIR / "versions.env")["JOBS_IMAGE"]


def unsupported_reason() -> str | None:
    """Why this host cannot run a real node, or None. Only facts of the host count here;
    binaries that were not built are a failure, not a reason to skip."""
    if os.uname().sysname != "Linux":
        return "a real node needs Linux"
    if os.geteuid() != 0:
        return "a real node (kubelet, containerd) needs root"
    if not (CGROUP_ROOT / "memory").is_dir() and not (CGROUP_ROOT / "cgroup.controllers").exists():
        return f"no cgroup hierarchy at {CGROUP_ROOT}"
    if shutil.which("iptables-save") is None:
        return "iptables-save is missing (tests/e2e/node/build.sh installs Debian's iptables)"
    return None


@dataclass
class HostSnapshot:
    """What of the host a node may change: mounts, iptables chains, cgroups, shim sockets."""

    mounts: set[str] = field(default_factory=set)
    chains: set[str] = field(default_factory=set)
    cgroups: set[str] = field(default_factory=set)
    shim_entries: set[str] = field(default_factory=set)
    log_links: set[str] = field(default_factory=set)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({k: sorted(v) for k, v in vars(self).items()}))

    @classmethod
    def load(cls, path: Path) -> HostSnapshot:
        return cls(**{k: set(v) for k, v in json.loads(path.read_text()).items()})

    def added_since(self, before: HostSnapshot) -> HostSnapshot:
        """What this snapshot has that `before` had not, field by field."""
        return HostSnapshot(**{k: v - getattr(before, k) for k, v in vars(self).items()})

    @classmethod
    def take(cls) -> HostSnapshot:
        return cls(
            mounts=set(_mount_points()),
            chains=set(_iptables_chains()),
            cgroups=set(_cgroup_dirs()),
            shim_entries=_listing(SHIM_DIR),
            log_links=_listing(Path("/var/log/containers")),
        )


def _listing(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {str(p) for p in path.rglob("*")} | {str(path)}


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        points.append(line.split()[4].replace("\\040", " "))
    return points


def _iptables_chains() -> list[str]:
    chains = []
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool) is None:
            continue
        out = subprocess.run([tool], capture_output=True, text=True, check=False).stdout
        table = ""
        for line in out.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                chains.append(f"{tool.removesuffix('-save')} {table} {line[1:].split()[0]}")
    return chains


def _cgroup_dirs() -> list[str]:
    dirs = []
    for hierarchy in CGROUP_ROOT.iterdir():
        for dirpath, _dirnames, _files in os.walk(hierarchy):
            dirs.append(dirpath)
    return dirs


def reap_orphans(binaries: Path, api: k8s.ApiClient) -> list[Path]:
    """Stop and undo the nodes of e2e sessions that died without stopping them (kill -9), as
    their own stop() would have: their folder has the snapshot of the host before them."""
    reaped = []
    for workdir in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        try:
            owner = int((workdir / OWNER_FILE).read_text())
            before = HostSnapshot.load(workdir / SNAPSHOT_FILE)
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{owner}").exists():
            continue
        node = RealNode(binaries, Path("/dev/null"), api, workdir=workdir)
        node.before, node.up = before, True
        node.stop()
        reaped.append(workdir)
    return reaped


class NodeError(Exception):
    """The node did not start; the message has the kubelet's and containerd's log tails."""


class RealNode:
    def __init__(
        self, binaries: Path, kubeconfig: Path, api: k8s.ApiClient, workdir: Path | None = None
    ) -> None:
        self.bin = binaries
        self.cluster_kubeconfig = kubeconfig
        self.api = api
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        self.before = HostSnapshot()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.kubelet_port, self.healthz_port = free_ports(2)
        self.name = NAME
        self.up = False
        self.undone: dict[str, int] = {}  # what stop() found to undo, by kind

    # --- paths -------------------------------------------------------------------------------
    @property
    def socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def log_file(self, component: str) -> Path:
        return self.workdir / "logs" / f"{component}.log"

    # --- start -------------------------------------------------------------------------------
    def start(self, images: list[tuple[str, Path]], timeout: float = 120) -> float:
        """Start containerd, load `images` (name, OCI archive), start the kubelet and wait until
        the node is Ready, labelled and tainted; returns the seconds that took."""
        started = time.monotonic()
        self.before = HostSnapshot.take()
        self.up = True
        # for reap_orphans(): whose node this is, and what the host was like before it
        self.before.save(self.workdir / SNAPSHOT_FILE)
        (self.workdir / OWNER_FILE).write_text(str(os.getpid()))
        (self.workdir / "logs").mkdir()
        self._write_containerd_config()
        self._spawn(
            "containerd",
            [str(self.bin / "containerd"), "--config", str(self.workdir / "containerd.toml")],
        )
        self._wait(
            lambda: self.socket.exists() and self._ctr("version").returncode == 0,
            "containerd to answer",
            started + 30,
        )
        versions = env_file(NODE_DIR / "versions.env")
        own = [
            (versions["PAUSE_IMAGE"], self.bin / "pause.oci.tar"),
            (versions["JOBS_IMAGE"], self.bin / "jobs.oci.tar"),
        ]
        for name, archive in [*own, *images]:
            self._import(name, archive)
        # the examples' Custom image: what the Jobs' image is (Debian's busybox 1.35)
        self._ctr("images", "tag", "--force", versions["JOBS_IMAGE"], EXAMPLE_BUSYBOX)
        self._write_kubelet_config()
        self._spawn(
            "kubelet",
            [
                str(self.bin / "kubelet"),
                f"--config={self.workdir / 'kubelet.yaml'}",
                f"--kubeconfig={self.cluster_kubeconfig}",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--cert-dir={self.workdir / 'kubelet-pki'}",
                f"--hostname-override={self.name}",
                # refused (loopback) but it keeps the kubelet from picking another address
                "--node-ip=127.0.0.1",
                f"--node-labels={LABEL[0]}={LABEL[1]}",
                f"--register-with-taints={TAINT['key']}={TAINT['value']}:{TAINT['effect']}",
                "--v=1",
            ],
        )
        self._wait(self._ready, f"node {self.name} to be Ready", started + timeout)
        self._set_address()
        return time.monotonic() - started

    def _spawn(self, component: str, argv: list[str]) -> None:
        log = open(self.log_file(component), "ab")  # noqa: SIM115 - the child keeps it
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ.get('PATH', '')}"}
        self.processes[component] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "ctr"), "--address", str(self.socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def _import(self, name: str, archive: Path) -> None:
        if not archive.is_file():
            raise NodeError(f"image archive {archive} missing: run `make cluster`")
        done = self._ctr("images", "import", "--local", "--platform", "linux/amd64", str(archive))
        if done.returncode != 0 or name not in self._ctr("images", "ls", "-q").stdout.split():
            raise NodeError(f"ctr images import {archive} ({name}) failed: {done.stderr.strip()}")

    def _ready(self) -> bool:
        for component, process in self.processes.items():
            if process.poll() is not None:
                raise NodeError(
                    f"{component} exited ({process.returncode}) during start-up\n{self.logs()}"
                )
        try:
            node = k8s.CoreV1Api(self.api).read_node(self.name, _request_timeout=5)
        except Exception:
            return False
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

    def _set_address(self) -> None:
        """127.0.0.1 as the node's InternalIP: the kubelet validates its node IP and refuses
        loopback, leaving the addresses to whoever sets them; it never clears them."""
        k8s.CoreV1Api(self.api).patch_node_status(
            self.name,
            {
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                    ]
                }
            },
            _request_timeout=10,
        )

    def _wait(self, condition: Callable[[], bool], what: str, deadline: float) -> None:
        while not condition():
            if time.monotonic() >= deadline:
                raise NodeError(f"timed out waiting for {what}\n{self.logs()}")
            time.sleep(0.25)

    def _write_containerd_config(self) -> None:
        w = self.workdir
        cni_conf = w / "cni" / "net.d"
        cni_conf.mkdir(parents=True)
        (cni_conf / "10-isolated.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "reconciler-isolated",
                    "plugins": [{"type": "isolated"}],
                }
            )
        )
        pause = env_file(NODE_DIR / "versions.env")["PAUSE_IMAGE"]
        (w / "containerd.toml").write_text(
            f"""version = 3
root = "{w}/containerd/root"
state = "{w}/containerd/state"
temp = "{w}/containerd/tmp"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{w}/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/containerd/opt"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{pause}"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      snapshotter = "overlayfs"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{self.bin}/runc"
        Root = "{w}/runc"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{self.bin}/cni"]
    conf_dir = "{cni_conf}"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""
        )

    def _write_kubelet_config(self) -> None:
        w = self.workdir
        (w / "pod-logs").mkdir()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.healthz_port,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podLogsDir": str(w / "pod-logs"),
            # the API server reads logs with its client certificate; nothing else listens
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            # this host: cgroup v1 (refused by default since 1.35), swap, no systemd
            "failCgroupV1": False,
            "failSwapOn": False,
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "makeIPTablesUtilChains": False,
            "resolvConf": "/etc/resolv.conf",
            "registerNode": True,
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "volumePluginDir": str(w / "volume-plugins"),
            "staticPodPath": "",
            "shutdownGracePeriod": "0s",
            "nodeStatusUpdateFrequency": "10s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
        }
        (w / "kubelet.yaml").write_text(json.dumps(config, indent=1))

    # --- logs --------------------------------------------------------------------------------
    def logs(self, lines: int = 25) -> str:
        out = []
        for component in ("containerd", "kubelet"):
            try:
                text = self.log_file(component).read_text(errors="replace")
            except OSError as err:
                text = f"(no log: {err.strerror})"
            tail = "\n".join(text.splitlines()[-lines:])
            out.append(f"--- {component} (last {lines} lines) ---\n{tail}")
        return "\n".join(out)

    # --- stop --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop everything and undo what the node did to the host (see the module doc)."""
        if not self.up:
            return
        # `up` stays set until the end: a stop cut short (a second Ctrl-C or SIGTERM during
        # teardown) is finished by the next call, the atexit one; every part is idempotent
        core = k8s.CoreV1Api(self.api)
        self._terminate("kubelet", grace=10)
        # the containers: their tasks first (killed), then containerd itself
        if "containerd" in self.processes and self.processes["containerd"].poll() is None:
            for task in self._ctr("tasks", "ls", "-q").stdout.split():
                self._ctr("tasks", "kill", "--signal", "SIGKILL", task)
            deadline = time.monotonic() + 10
            for task in self._ctr("tasks", "ls", "-q").stdout.split():
                while time.monotonic() < deadline:
                    if self._ctr("tasks", "delete", "--force", task).returncode == 0:
                        break
                    time.sleep(0.2)
        self._terminate("containerd", grace=10)
        left = HostSnapshot.take().added_since(self.before)
        self.undone = {
            "mounts": len(left.mounts),
            "cgroups": len(left.cgroups),
            "chains": len(left.chains),
            "processes": len(_processes_naming(self.workdir)),
        }
        _kill_naming(self.workdir)  # shims and anything else started from the node's folder
        self._clean_cgroups(left.cgroups)
        self._unmount_all()
        self._remove_new_chains(left.chains)
        self._remove_new_entries(SHIM_DIR, self.before.shim_entries)
        self._remove_new_entries(Path("/var/log/containers"), self.before.log_links)
        shutil.rmtree(self.workdir, ignore_errors=True)
        with contextlib.suppress(Exception):
            core.delete_node(self.name, _request_timeout=10)
        with contextlib.suppress(Exception):
            k8s.CoordinationV1Api(self.api).delete_namespaced_lease(
                self.name, "kube-node-lease", _request_timeout=10
            )
        self.up = False

    def _terminate(self, component: str, grace: float) -> None:
        process = self.processes.get(component)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    @staticmethod
    def _clean_cgroups(cgroups: set[str]) -> None:
        new = sorted(cgroups, key=len, reverse=True)
        for path in new:
            with contextlib.suppress(OSError):
                for pid in Path(path, "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
        for path in new:  # deepest first; a cgroup goes once its processes are gone
            deadline = time.monotonic() + 5
            while Path(path).exists():
                try:
                    os.rmdir(path)
                except OSError:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.1)

    def _unmount_all(self) -> None:
        for _ in range(3):  # a mount may hide another below it
            points = [
                p
                for p in _mount_points()
                if p not in self.before.mounts
                and (p.startswith(str(self.workdir)) or p.startswith(str(SHIM_DIR)))
            ]
            if not points:
                return
            for point in sorted(points, key=len, reverse=True):
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    @staticmethod
    def _remove_new_chains(new: set[str]) -> None:
        for chain in new:  # references first: flush every new chain, then delete them
            tool, table, name = chain.split()
            subprocess.run([tool, "-t", table, "-F", name], capture_output=True, check=False)
        for chain in new:
            tool, table, name = chain.split()
            for builtin in ("INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"):
                while (
                    subprocess.run(
                        [tool, "-t", table, "-D", builtin, "-j", name],
                        capture_output=True,
                        check=False,
                    ).returncode
                    == 0
                ):
                    pass
            subprocess.run([tool, "-t", table, "-X", name], capture_output=True, check=False)

    @staticmethod
    def _remove_new_entries(root: Path, before: set[str]) -> None:
        if not root.exists():
            return
        if str(root) not in before:
            shutil.rmtree(root, ignore_errors=True)
            return
        for path in sorted(_listing(root) - before, key=len, reverse=True):
            with contextlib.suppress(OSError):
                p = Path(path)
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink()

    def host_changes(self) -> list[str]:
        """What still differs from the host before start(): empty when all was undone."""
        new = HostSnapshot.take().added_since(self.before)
        changes = [f"mount {m}" for m in sorted(new.mounts)]
        changes += [f"iptables chain {c}" for c in sorted(new.chains)]
        changes += [f"cgroup {c}" for c in sorted(new.cgroups)]
        changes += [f"file {f}" for f in sorted(new.shim_entries | new.log_links)]
        changes += [f"process {p}" for p in _processes_naming(self.workdir)]
        changes += [f"process {p}" for p in _processes_of(self.bin)]
        if self.workdir.exists():
            changes.append(f"folder {self.workdir}")
        return changes


def _processes_naming(path: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(path)], capture_output=True, text=True, check=False)
    return [line for line in out.stdout.splitlines() if int(line.split()[0]) != os.getpid()]


def _processes_of(binaries: Path) -> list[str]:
    """Processes running one of the node's binaries (whatever their arguments)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            exe = os.readlink(proc / "exe")
            if exe.startswith(str(binaries)):
                found.append(f"{proc.name} {exe}")
    return found


def _kill_naming(path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(line.split()[0]) for line in _processes_naming(path)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while _processes_naming(path) and time.monotonic() < deadline:
            time.sleep(0.1)
