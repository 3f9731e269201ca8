"""The Flux side of the peers bench (issue 18): fluxcd source-controller and kustomize-controller
(built by bench/peers/build_flux.sh) as local processes against a cluster, a GitRepository and a
Kustomization reading a smart-HTTP git remote on 127.0.0.1 (tests/gitserver.py). One
trial = one pushed commit that changes a Deployment's replicas in the manifest Flux applies,
measured from the push to the Deployment's spec.replicas changing in the API (a watch; one
clock, time.time(), the clock of bench/peers/reconciler_side.py).

Triggers:
  event  what Flux's Receiver does on a webhook: the reconcile.fluxcd.io/requestedAt annotation
         (a merge patch) on the GitRepository, then on the Kustomization; the GitRepository
         polls every hour meanwhile (the fallback the Receiver guide keeps)
  poll   the GitRepository's `interval` (e.g. 10s); each push waits a random part of the
         interval first, so that pushes do not stay in one phase of the poll schedule

Alone: `python bench/peers/flux.py --trials 5` builds the controllers if needed, starts a kwok
cluster (tests/e2e/kwokcluster.py) unless --kubeconfig (default: $KUBECONFIG) names one, runs
the trials, prints min/median/p95/max and the controllers' CPU seconds and peak RSS, and
removes everything.

As a library (the side-by-side bench):

    peer = FluxPeer(kubeconfig, bare_repo, workdir).start()   # or `with FluxPeer(...) as peer`
    peer.set_mode("event")          # or peer.set_mode("poll", interval=10)
    peer.reset_usage()
    seconds = peer.trial(replicas)  # one push; peer.trials[-1] has its stage times
    peer.usage()                    # {"source-controller": Usage(cpu_seconds, peak_rss_mib), ...}
    peer.stop()
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "tests"))  # gitserver.py

from common import Usage, free_port, git, process_usage, reset_peak_rss, summary  # noqa: E402
from gitserver import GitServer, die_with_parent  # noqa: E402
from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from kubernetes.watch.watch import iter_resp_lines  # noqa: E402

BUILD_SCRIPT = HERE / "build_flux.sh"
CONTROLLERS = ("source-controller", "kustomize-controller")
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"  # meta.ReconcileRequestAnnotation
SOURCE = ("source.toolkit.fluxcd.io", "v1", "gitrepositories")
KUSTOMIZE = ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations")
MANIFEST_PATH = "flux/deploy.yaml"  # in the repository; the Kustomization's path is ./flux
# spec.interval of the GitRepository when webhooks trigger it (the fallback poll), and of the
# Kustomization always: it reconciles when its source's revision changes, its own interval
# only re-applies against drift (Flux's docs use 10m).
EVENT_MODE_SOURCE_INTERVAL = "1h"
KUSTOMIZATION_INTERVAL = "10m"
# Log lines that mark a stage of one trial (the controllers log JSON, ISO8601 milliseconds).
STAGE_MESSAGES = {
    "fetched": ("source-controller", "stored artifact for commit"),  # names the subject
    "applied": ("kustomize-controller", "server-side apply completed"),  # names the sha
}


# --- building and finding the binaries -------------------------------------------------------


def bin_dir() -> Path:
    """Where build_flux.sh puts (or has put) the controllers and their CRDs."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-bin-dir"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def build() -> Path:
    """Run build_flux.sh (nothing to do when the binaries are there); the binary directory."""
    subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)
    return bin_dir()


def version() -> str:
    """The controllers' version, as pinned in build_flux.sh (e.g. v1.9.6)."""
    for line in BUILD_SCRIPT.read_text().splitlines():
        if line.startswith("FLUX_CONTROLLERS_VERSION="):
            return line.split("=", 1)[1].strip()
    raise RuntimeError(f"no FLUX_CONTROLLERS_VERSION in {BUILD_SCRIPT}")


# --- small helpers -----------------------------------------------------------------------------


def api_client(kubeconfig: str) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return k8s.ApiClient(configuration)


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def deployment_manifest(namespace: str, name: str, replicas: int) -> str:
    # kwok's nodes carry a NoSchedule taint: tolerate it so that the pods land (as in the e2e
    # helpers); the image is never pulled by kwok.
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: app
          image: registry.example/app:1.0
      tolerations:
        - {{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}}
"""


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Controller:
    name: str
    args: list[str]
    log: Path
    health: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=die_with_parent,  # never outlives the bench, even on kill -9
                start_new_session=True,  # a Ctrl-C is the bench's to handle: it stops us
            )

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited ({self.proc.returncode if self.proc else 'not started'}); "
                f"the last lines of {self.log}:\n{tail(self.log)}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"(no log: {err.strerror})"


# --- the watch ------------------------------------------------------------------------------------


class ReplicasWatch:
    """Every change of one Deployment's spec.replicas, stamped with time.time() when its watch
    event's line arrives (before it is parsed). The watch resumes from the last resourceVersion
    it saw, so no change is missed or stamped late across reconnects."""

    def __init__(self, api: k8s.ApiClient, namespace: str, name: str) -> None:
        self._apps = k8s.AppsV1Api(api)
        self._namespace, self._name = namespace, name
        self.changes: list[tuple[int | None, float]] = []  # (replicas, when), in order
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread = threading.Thread(target=self._run, name="replicas-watch", daemon=True)
        self._thread.start()

    def _saw(self, replicas: int | None, at: float) -> None:
        with self._cond:
            if not self.changes or self.changes[-1][0] != replicas:
                self.changes.append((replicas, at))
                self._cond.notify_all()

    def _run(self) -> None:
        selector = f"metadata.name={self._name}"
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:  # (re)list: the current value and where to watch from
                    listed = self._apps.list_namespaced_deployment(
                        self._namespace, field_selector=selector, _request_timeout=10
                    )
                    at = time.time()
                    version = listed.metadata.resource_version
                    self._saw(listed.items[0].spec.replicas if listed.items else None, at)
                self._resp = self._apps.list_namespaced_deployment(
                    self._namespace,
                    field_selector=selector,
                    watch=True,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=120,
                    _preload_content=False,
                )
                for line in iter_resp_lines(self._resp):
                    at = time.time()
                    if not line:
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:  # too old: list again
                            version = None
                        break
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if event["type"] == "DELETED":
                        self._saw(None, at)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self._saw(obj.get("spec", {}).get("replicas", 1), at)
            except ApiException as err:
                if err.status == 410:
                    version = None
                if not self._stop.is_set():
                    time.sleep(0.1)
            except Exception:
                if not self._stop.is_set():
                    time.sleep(0.1)

    def mark(self) -> int:
        """A position in the changes: wait() looks only at changes after it."""
        with self._cond:
            return len(self.changes)

    def wait(self, replicas: int, mark: int, timeout: float) -> float:
        """When spec.replicas became `replicas` after `mark`; TimeoutError if not in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for value, at in self.changes[mark:]:
                    if value == replicas:
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [v for v, _ in self.changes[mark:]]
                    raise TimeoutError(
                        f"spec.replicas of {self._namespace}/{self._name} never became "
                        f"{replicas} within {timeout:g}s (saw {seen})"
                    )
                self._cond.wait(left)

    def current(self) -> int | None:
        with self._cond:
            return self.changes[-1][0] if self.changes else None

    def stop(self) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()  # urllib3 2.3+: unblocks the read
            with contextlib.suppress(Exception):
                resp.close()
        self._thread.join(timeout=5)


# --- the peer ----------------------------------------------------------------------------------


@dataclass
class Trial:
    seconds: float  # push returned -> spec.replicas changed (the watch)
    mode: str
    replicas: int
    sha: str
    stages: dict[str, float] = field(default_factory=dict)  # seconds from the push


class FluxPeer:
    """Flux's two controllers against `kubeconfig`, reading the bare repository `bare` through
    a git server of its own (or `repo_url` if one is given), applying one Deployment.

    The trials commit in a clone of `bare` and push to `push_remote` (default: the bare
    repository's path; the push is timed to its end either way). If another writer (our
    daemon's records) pushes to the same remote, a trial rebases its commit onto theirs.
    """

    def __init__(
        self,
        kubeconfig: str | Path,
        bare: Path,
        workdir: Path | None = None,
        *,
        namespace: str | None = None,
        deployment: str = "flux-web",
        repo_url: str | None = None,
        push_remote: str | None = None,
        binaries: Path | None = None,
        receiver_resources: tuple[str, ...] = ("GitRepository", "Kustomization"),
        seed: int = 20261203,
    ) -> None:
        self.kubeconfig = str(kubeconfig)
        self.bare = Path(bare).resolve()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="peers-flux-")).resolve()
        self.namespace = namespace or f"peers-flux-{uuid.uuid4().hex[:6]}"
        self.deployment = deployment
        self.repo_url = repo_url
        self.push_remote = push_remote or str(self.bare)
        self.binaries = binaries
        self.receiver_resources = receiver_resources
        self.rng = random.Random(seed)
        self.mode = "event"
        self.interval = 0.0
        self.replicas = 1
        self.trials: list[Trial] = []
        self.controllers: dict[str, Controller] = {}
        self.git_server: GitServer | None = None
        self.watch: ReplicasWatch | None = None
        self.api: k8s.ApiClient | None = None
        self._cpu_base: dict[str, float] = {}
        self._pushes = 0
        self._created_namespace = False

    # -- life cycle --

    def start(self, timeout: float = 120) -> FluxPeer:
        """CRDs, namespace, controllers, git server, the first commit (replicas 1), the
        GitRepository and Kustomization; returns once that commit is applied."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        binaries = self.binaries or bin_dir()
        missing = [c for c in CONTROLLERS if not os.access(binaries / c, os.X_OK)]
        if missing:
            raise RuntimeError(
                f"{', '.join(missing)} not built in {binaries}: run bash {BUILD_SCRIPT}"
            )
        (self.workdir / "home").mkdir(parents=True, exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        self.api = api_client(self.kubeconfig)
        self._apply_crds(binaries / "crds")
        try:
            k8s.CoreV1Api(self.api).create_namespace({"metadata": {"name": self.namespace}})
            self._created_namespace = True
        except ApiException as err:
            if err.status != 409:  # a namespace of the caller's: used, never deleted
                raise
        if self.repo_url is None:
            self.git_server = GitServer(self.bare, log=self.workdir / "gitserver.log").start()
            self.repo_url = self.git_server.url
        self._start_controllers(binaries, timeout)
        self._clone()
        self.watch = ReplicasWatch(self.api, self.namespace, self.deployment)
        sha, _ = self.push(1)
        custom = k8s.CustomObjectsApi(self.api)
        custom.create_namespaced_custom_object(
            *SOURCE[:2],
            self.namespace,
            SOURCE[2],
            {
                "apiVersion": f"{SOURCE[0]}/{SOURCE[1]}",
                "kind": "GitRepository",
                "metadata": {"name": "bench", "namespace": self.namespace},
                "spec": {
                    "interval": EVENT_MODE_SOURCE_INTERVAL,
                    "url": self.repo_url,
                    "ref": {"branch": "main"},
                    "timeout": "60s",
                },
            },
        )
        custom.create_namespaced_custom_object(
            *KUSTOMIZE[:2],
            self.namespace,
            KUSTOMIZE[2],
            {
                "apiVersion": f"{KUSTOMIZE[0]}/{KUSTOMIZE[1]}",
                "kind": "Kustomization",
                "metadata": {"name": "bench", "namespace": self.namespace},
                "spec": {
                    "interval": KUSTOMIZATION_INTERVAL,
                    "path": "./flux",
                    "prune": True,
                    "sourceRef": {"kind": "GitRepository", "name": "bench"},
                    "timeout": "60s",
                },
            },
        )
        self._settle(sha, timeout)

    def _apply_crds(self, crds: Path) -> None:
        import yaml

        assert self.api is not None
        ext = k8s.ApiextensionsV1Api(self.api)
        names = []
        for path in sorted(crds.glob("*.yaml")):
            for body in yaml.safe_load_all(path.read_text()):
                if not body:
                    continue
                name = body["metadata"]["name"]
                names.append(name)
                try:
                    ext.create_custom_resource_definition(body)
                except ApiException as err:
                    if err.status != 409:
                        raise
                    current = ext.read_custom_resource_definition(name)
                    body["metadata"]["resourceVersion"] = current.metadata.resource_version
                    ext.replace_custom_resource_definition(name, body)
        if not names:
            raise RuntimeError(f"no CRDs in {crds}: run bash {BUILD_SCRIPT}")

        def established() -> bool:
            for name in names:
                crd = ext.read_custom_resource_definition(name)
                if not any(
                    c.type == "Established" and c.status == "True"
                    for c in (crd.status.conditions or [])
                ):
                    return False
            return True

        wait_until(established, 60, "the Flux CRDs established", interval=0.2)

    def _start_controllers(self, binaries: Path, timeout: float) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir / "home"),
            "TMPDIR": str(self.workdir / "tmp"),
            "KUBECONFIG": self.kubeconfig,  # read by controller-runtime's GetConfigOrDie
            "RUNTIME_NAMESPACE": self.namespace,
            "NO_PROXY": "127.0.0.1,localhost",
        }
        common = [
            "--enable-leader-election=false",
            "--log-encoding=json",
            "--log-level=info",
            "--events-addr=",  # no notification-controller: Kubernetes Events only
        ]
        storage = free_port()
        storage_dir = self.workdir / "storage"
        storage_dir.mkdir(exist_ok=True)
        specific = {
            "source-controller": [
                f"--storage-path={storage_dir}",
                f"--storage-addr=127.0.0.1:{storage}",
                f"--storage-adv-addr=127.0.0.1:{storage}",
            ],
            "kustomize-controller": [],
        }
        for name in CONTROLLERS:
            health, metrics = free_port(), free_port()
            args = [str(binaries / name), *common, *specific[name]]
            args += [f"--health-addr=127.0.0.1:{health}", f"--metrics-addr=127.0.0.1:{metrics}"]
            controller = Controller(name, args, self.workdir / f"{name}.log", health)
            self.controllers[name] = controller
            controller.start(env)
        for controller in self.controllers.values():
            wait_until(controller.ready, timeout, f"{controller.name} /readyz", interval=0.1)

    def _clone(self) -> None:
        clone = self.workdir / "clone"
        git("clone", "--quiet", str(self.bare), str(clone), cwd=self.workdir)
        git("config", "user.email", "sre@example.com", cwd=clone)
        git("config", "user.name", "SRE", cwd=clone)
        if git("ls-remote", "origin", "refs/heads/main", cwd=clone):
            git("checkout", "--quiet", "-B", "main", "origin/main", cwd=clone)
        else:  # an empty remote: the first push makes main
            git("symbolic-ref", "HEAD", "refs/heads/main", cwd=clone)
        if self.push_remote != str(self.bare):
            git("remote", "set-url", "--push", "origin", self.push_remote, cwd=clone)

    def stop(self) -> None:
        """Delete the Kustomization and GitRepository while the controllers still run (their
        finalizers: Flux prunes the Deployment), stop the controllers, the watch and the git
        server, delete the namespace if start() made it, and the temporary directory if this
        object made it. Safe to call twice."""
        if self.watch is not None:
            self.watch.stop()
            self.watch = None
        if self.api is not None:
            self._delete_flux_objects()
        for controller in self.controllers.values():
            controller.stop()
        if self.git_server is not None:
            self.git_server.stop()
            self.git_server = None
        if self.api is not None:
            if self._created_namespace:
                with contextlib.suppress(Exception):
                    k8s.CoreV1Api(self.api).delete_namespace(self.namespace, _request_timeout=10)
            self.api.close()
            self.api = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _delete_flux_objects(self, timeout: float = 30) -> None:
        """Delete our Kustomization, then our GitRepository; if a finalizer is still there
        after `timeout` (a controller is not running), remove it, so the namespace can go."""
        custom = k8s.CustomObjectsApi(self.api)
        for group, api_version, plural in (KUSTOMIZE, SOURCE):
            ref = (group, api_version, self.namespace, plural, "bench")
            try:
                custom.delete_namespaced_custom_object(*ref, _request_timeout=10)
            except Exception:
                continue  # not there (or no CRD)

            def gone(ref: tuple[str, ...] = ref) -> bool:
                try:
                    custom.get_namespaced_custom_object(*ref, _request_timeout=10)
                except ApiException as err:
                    return err.status == 404
                return False

            running = all(
                c.proc is not None and c.proc.poll() is None for c in self.controllers.values()
            )
            try:
                wait_until(gone, timeout if running else 0.5, f"{plural}/bench deleted", 0.1)
            except TimeoutError:
                with contextlib.suppress(Exception):
                    custom.patch_namespaced_custom_object(
                        *ref,
                        {"metadata": {"finalizers": None}},
                        _content_type="application/merge-patch+json",
                        _request_timeout=10,
                    )

    def __enter__(self) -> FluxPeer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- trials --

    def set_mode(self, mode: str, interval: float = 10) -> None:
        """ "event" (the Receiver's annotations; the source polls hourly meanwhile) or "poll"
        (the GitRepository's spec.interval = `interval` seconds)."""
        if mode not in ("event", "poll"):
            raise ValueError(f"mode must be 'event' or 'poll', not {mode!r}")
        self.mode, self.interval = mode, float(interval)
        spec_interval = EVENT_MODE_SOURCE_INTERVAL if mode == "event" else f"{interval:g}s"
        k8s.CustomObjectsApi(self.api).patch_namespaced_custom_object(
            *SOURCE[:2],
            self.namespace,
            SOURCE[2],
            "bench",
            {"spec": {"interval": spec_interval}},
            _content_type="application/merge-patch+json",
        )

    def push(self, replicas: int) -> tuple[str, float]:
        """Commit the Deployment at `replicas` and push it; (the commit, when the push
        returned, time.time())."""
        clone = self.workdir / "clone"
        manifest = clone / MANIFEST_PATH
        manifest.parent.mkdir(exist_ok=True)
        manifest.write_text(deployment_manifest(self.namespace, self.deployment, replicas))
        git("add", MANIFEST_PATH, cwd=clone)
        self._pushes += 1
        subject = f"flux: scale {self.deployment} to {replicas} (push {self._pushes})"
        git("commit", "--quiet", "-m", subject, cwd=clone)
        for _ in range(20):
            try:
                git("push", "--quiet", "origin", "HEAD:main", cwd=clone)
            except subprocess.CalledProcessError:
                # another writer pushed first (our daemon's records): go on top of theirs
                git("pull", "--quiet", "--rebase", "origin", "main", cwd=clone)
                continue
            pushed = time.time()
            self.replicas = replicas
            return git("rev-parse", "HEAD", cwd=clone), pushed
        raise RuntimeError(f"could not push to {self.push_remote} in 20 attempts")

    def request_reconcile(self) -> None:
        """What Flux's Receiver does on a webhook: annotate each of its resources (merge
        patch of reconcile.fluxcd.io/requestedAt = now), in order."""
        custom = k8s.CustomObjectsApi(self.api)
        for kind in self.receiver_resources:
            group, api_version, plural = SOURCE if kind == "GitRepository" else KUSTOMIZE
            now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")  # Go's String()
            custom.patch_namespaced_custom_object(
                group,
                api_version,
                self.namespace,
                plural,
                "bench",
                {"metadata": {"annotations": {REQUESTED_AT: now}}},
                _content_type="application/merge-patch+json",
            )

    def trial(self, replicas: int | None = None, timeout: float | None = None) -> float:
        """One trial in the current mode: push one commit changing the Deployment's replicas
        (to `replicas`, default the current value + 1) and return the seconds from the push
        returning to spec.replicas changing in the API. Before returning, waits (unmeasured)
        until the Kustomization is Ready at that commit, so trials do not overlap. Its stage
        times are in self.trials[-1].stages."""
        assert self.watch is not None, "start() first"
        if replicas is None:
            replicas = self.replicas + 1
        if replicas == self.replicas:
            raise ValueError(f"the Deployment is at {replicas} already: no change to measure")
        if timeout is None:
            timeout = (self.interval * 2 if self.mode == "poll" else 0) + 60
        if self.mode == "poll":
            time.sleep(self.rng.uniform(0, self.interval))  # a random phase of the poll
        offsets = self._log_sizes()
        mark = self.watch.mark()
        sha, pushed = self.push(replicas)
        subject = git("log", "-1", "--format=%s", sha, cwd=self.workdir / "clone")
        if self.mode == "event":
            self.request_reconcile()
        changed = self.watch.wait(replicas, mark, timeout)
        self._settle(sha, timeout)
        result = Trial(changed - pushed, self.mode, replicas, sha)
        result.stages = {
            stage: at - pushed for stage, at in self._stage_times(offsets, (sha, subject)).items()
        }
        result.stages["changed"] = result.seconds
        self.trials.append(result)
        return result.seconds

    def _settle(self, sha: str, timeout: float) -> None:
        """Wait until the Kustomization is Ready with `sha` applied."""
        custom = k8s.CustomObjectsApi(self.api)

        def applied() -> bool:
            try:
                obj = custom.get_namespaced_custom_object(
                    *KUSTOMIZE[:2], self.namespace, KUSTOMIZE[2], "bench", _request_timeout=10
                )
            except ApiException:
                return False
            status = obj.get("status") or {}
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or []
            )
            # "main@sha1:<sha>"; a later commit of another writer on top of ours counts
            applied = str(status.get("lastAppliedRevision", "")).rpartition(":")[2]
            return ready and (applied == sha or self._descends(applied, sha))

        wait_until(applied, timeout, f"Kustomization Ready at {sha[:12]}", interval=0.05)

    def _descends(self, commit: str, ancestor: str) -> bool:
        if not commit:
            return False
        done = subprocess.run(
            ["git", "-C", str(self.bare), "merge-base", "--is-ancestor", ancestor, commit],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def _log_sizes(self) -> dict[str, int]:
        return {n: c.log.stat().st_size for n, c in self.controllers.items() if c.log.exists()}

    def _stage_times(self, offsets: dict[str, int], names: tuple[str, str]) -> dict[str, float]:
        """The first log line of each stage written since `offsets` that names the commit
        (its sha or its subject)."""
        found: dict[str, float] = {}
        for stage, (name, message) in STAGE_MESSAGES.items():
            log = self.controllers[name].log
            with log.open("rb") as f:
                f.seek(offsets.get(name, 0))
                for raw in f:
                    if message.encode() not in raw:
                        continue
                    if not any(name.encode() in raw for name in names):
                        continue
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        continue
                    found[stage] = datetime.fromisoformat(entry["ts"]).timestamp()
                    break
        return found

    # -- resources --

    def pids(self) -> dict[str, int]:
        return {n: c.proc.pid for n, c in self.controllers.items() if c.proc is not None}

    def reset_usage(self) -> None:
        """From now on, usage() counts CPU from here and peak RSS from the current RSS."""
        for name, pid in self.pids().items():
            self._cpu_base[name] = process_usage(pid).cpu_seconds
            reset_peak_rss(pid)

    def usage(self) -> dict[str, Usage]:
        """Per controller: CPU seconds and peak RSS (MiB) since reset_usage() (or the start),
        and "flux" for both together (CPU summed; RSS the sum of the two peaks, an upper
        bound of the peak together)."""
        out: dict[str, Usage] = {}
        for name, pid in self.pids().items():
            now = process_usage(pid)
            out[name] = Usage(now.cpu_seconds - self._cpu_base.get(name, 0.0), now.peak_rss_mib)
        out["flux"] = Usage(
            sum(u.cpu_seconds for u in out.values()), sum(u.peak_rss_mib for u in out.values())
        )
        return out


# --- the runnable check ----------------------------------------------------------------------


RUN_PREFIX = "peers-flux-run-"
OWNER_FILE = "owner.pid"


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def reap_orphans() -> list[Path]:
    """Remove what runs killed with -9 left: their temporary directories (the controllers and
    the git server died with them, PR_SET_PDEATHSIG) and their kwok clusters (the e2e
    suite's own reaper, which only touches clusters whose owner process is gone)."""
    reaped = []
    for work in Path(tempfile.gettempdir()).glob(f"{RUN_PREFIX}*"):
        try:
            pid = int((work / OWNER_FILE).read_text().split()[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(work, ignore_errors=True)
            reaped.append(work)
        except (OSError, ValueError, IndexError):
            continue
    with contextlib.suppress(Exception):
        from kwokcluster import bin_dir as cluster_bin_dir
        from kwokcluster import reap_orphans as reap_clusters

        reap_clusters(cluster_bin_dir())
    return reaped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--mode", choices=("event", "poll"), default="event")
    parser.add_argument("--interval", type=float, default=10, help="poll mode: seconds")
    parser.add_argument(
        "--receiver-resources",
        default="GitRepository,Kustomization",
        help="event mode: the kinds annotated, in order (Receiver.spec.resources)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="a running cluster (default: $KUBECONFIG; none: start a kwok cluster)",
    )
    args = parser.parse_args()
    # Clean up on kill as on Ctrl-C (also when started in the background, where the shell
    # leaves SIGINT ignored).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)

    binaries = build()
    reap_orphans()
    work = Path(tempfile.mkdtemp(prefix=RUN_PREFIX))
    (work / OWNER_FILE).write_text(f"{os.getpid()}\n")
    cluster = None
    peer = None
    try:
        kubeconfig = args.kubeconfig
        if not kubeconfig:
            from kwokcluster import KwokCluster
            from kwokcluster import bin_dir as cluster_bin_dir

            subprocess.run(["bash", str(ROOT / "tests/e2e/cluster/build.sh")], check=True)
            cluster = KwokCluster(cluster_bin_dir())  # its own temp dir: reaped if we die
            cluster.create()
            kubeconfig = str(cluster.kubeconfig)
        bare = work / "remote.git"
        git("init", "--quiet", "--bare", "-b", "main", str(bare), cwd=work)
        started = time.monotonic()
        peer = FluxPeer(
            kubeconfig,
            bare,
            work / "flux",
            binaries=binaries,
            receiver_resources=tuple(args.receiver_resources.split(",")),
        ).start()
        print(
            f"flux {version()}: controllers up, first commit applied in "
            f"{time.monotonic() - started:.1f}s",
            file=sys.stderr,
        )
        peer.set_mode(args.mode, args.interval)
        peer.reset_usage()
        for i in range(args.trials):
            seconds = peer.trial()
            stages = "  ".join(f"{k} {v:.3f}" for k, v in peer.trials[-1].stages.items())
            print(f"  trial {i + 1}: {seconds:.3f}s  ({stages})", file=sys.stderr)
        usage = peer.usage()
        mode = args.mode if args.mode == "event" else f"poll every {args.interval:g}s"
        print(f"Flux {version()}, {mode}, {args.trials} trials (seconds from push):")
        print(f"  {'changed':<10} {summary([t.seconds for t in peer.trials])}")
        for stage in STAGE_MESSAGES:
            got = [t.stages[stage] for t in peer.trials if stage in t.stages]
            if got:
                print(f"  {stage:<10} {summary(got)}")
        for name, u in usage.items():
            print(f"  {name:<21} CPU {u.cpu_seconds:6.2f}s  peak RSS {u.peak_rss_mib:6.1f} MiB")
        return 0
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if peer is not None:
            peer.stop()
        if cluster is not None:
            cluster.delete()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
