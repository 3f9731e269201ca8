"""Real git remotes (bare repositories) and the daemon as a real subprocess."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kubehelp import execution, wait_for


def sh(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        args, cwd=cwd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}
    ).stdout.strip()


# For the secret scan after the suite (test_zz_secret_scan.py): every bare remote, every
# log of a process of ours (daemons, CLI runs, the pytest process's own), every daemon
# workdir (its spool and git mirror) the session made.
REMOTES: list[Path] = []
LOGS: list[Path] = []
WORKDIRS: list[Path] = []


def run_cli(*args: str, timeout: float = 120, log_dir: Path) -> subprocess.CompletedProcess[str]:
    """`reconciler ARGS` as a user runs it; its output is kept for the secret scan."""
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    log = log_dir / f"cli-{len(LOGS)}-{args[0]}.log"
    log.write_text(f"$ reconciler {' '.join(args)}\n{done.stdout}\n{done.stderr}")
    LOGS.append(log)
    return done


class Remote:
    """A bare repository and a people's clone of it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "remote.git"
        REMOTES.append(self.bare)
        self.clone = root / "clone"
        sh("git", "init", "--quiet", "--bare", "-b", "main", str(self.bare), cwd=root)
        # as GitHub and GitLab do: the daemon's mirror is a partial clone (gitops/partial.py)
        sh("git", "config", "uploadpack.allowFilter", "true", cwd=self.bare)
        sh("git", "clone", "--quiet", str(self.bare), str(self.clone), cwd=root)
        sh("git", "config", "user.email", "sre@example.com", cwd=self.clone)
        sh("git", "config", "user.name", "SRE", cwd=self.clone)
        (self.clone / "workflows").mkdir()
        (self.clone / "README.md").write_text("ops repo\n")
        self.commit_all("initial")

    def write(self, path: str, text: str) -> None:
        full = self.clone / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text)

    def remove(self, path: str) -> None:
        (self.clone / path).unlink()

    def commit_all(self, message: str) -> str:
        sh("git", "add", "-A", cwd=self.clone)
        sh("git", "commit", "--quiet", "--allow-empty", "-m", message, cwd=self.clone)
        self.push()
        return sh("git", "rev-parse", "HEAD", cwd=self.clone)

    def push(self) -> None:
        for _ in range(10):  # the daemon may have pushed a record meanwhile
            with contextlib.suppress(subprocess.CalledProcessError):
                sh("git", "pull", "--quiet", "--rebase", "origin", "main", cwd=self.clone)
            try:
                sh("git", "push", "--quiet", "origin", "HEAD:main", cwd=self.clone)
                return
            except subprocess.CalledProcessError:
                time.sleep(0.2)
        raise AssertionError("could not push")

    def log(self) -> list[str]:
        """Subjects on the remote branch, newest first."""
        return sh("git", "log", "--format=%s", "main", cwd=self.bare).splitlines()

    def show(self, path: str) -> str | None:
        try:
            return sh("git", "show", f"main:{path}", cwd=self.bare)
        except subprocess.CalledProcessError:
            return None

    def daemon_paths_since(self, commit: str) -> list[str]:
        """Every path the daemon's own commits touched after `commit`."""
        out = sh(
            "git",
            "log",
            "--format=",
            "--name-only",
            "--author=reconciler",
            f"{commit}..main",
            cwd=self.bare,
        )
        return [line for line in out.splitlines() if line]

    def files(self, folder: str) -> list[str]:
        out = sh("git", "ls-tree", "-r", "--name-only", "main", "--", folder, cwd=self.bare)
        return out.splitlines()


def unpadded(markdown: str) -> str:
    """A record's Markdown with its tables' padding taken out (formats/tables.py pads columns
    for terminals), so a test compares rows as `| a | b |`."""
    lines = []
    for line in markdown.splitlines():
        if line.startswith("|") and not line.startswith("|-"):
            cells = re.split(r"(?<!\\)\|", line)[1:-1]
            line = "| " + " | ".join(c.strip() for c in cells) + " |"
        lines.append(line)
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(
        self,
        repo: str,
        workdir: Path,
        kubeconfig: str,
        *extra: str,
        name: str = "daemon",
        failpoints: str | None = None,
    ) -> None:
        self.port = free_port()
        self.name = name
        # RECONCILER_FAILPOINTS: the process kills itself there (reconciler/failpoints.py)
        self.env = {k: v for k, v in os.environ.items() if k != "RECONCILER_FAILPOINTS"}
        if failpoints:
            self.env["RECONCILER_FAILPOINTS"] = failpoints
        self.log_path = workdir.parent / f"{name}-{self.port}.log"
        LOGS.append(self.log_path)
        WORKDIRS.append(workdir)
        self.args = [
            sys.executable,
            "-m",
            "reconciler",
            "daemon",
            "--repo",
            repo,
            "--workdir",
            str(workdir),
            "--kubeconfig",
            kubeconfig,
            "--listen",
            f"127.0.0.1:{self.port}",
            "--log-format",
            "json",
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> Daemon:
        self.log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, stdout=self.log_file, stderr=subprocess.STDOUT, env=self.env
        )
        try:
            wait_for(
                lambda: self.get("/healthz")[0] == 200 or self.proc.poll() is not None,
                30,
                "daemon /healthz",
            )
            if wait_ready:
                wait_for(lambda: self.get("/readyz")[0] == 200, 60, "daemon /readyz")
        except BaseException:  # not handed to the test, so no fixture would ever stop it
            self.stop()
            raise
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except OSError:
            return 0, ""

    def webhook(self, body: bytes, secret: bytes | None, delivery: str | None = None) -> int:
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "push"}
        if secret is not None:
            headers["X-Hub-Signature-256"] = (
                "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
            )
        if delivery:
            headers["X-GitHub-Delivery"] = delivery
        return self.post_hook(body, headers)

    def post_hook(self, body: bytes, headers: dict[str, str]) -> int:
        """POST /hooks/git with exactly these headers; the HTTP status."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/hooks/git", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as err:
            return err.code

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def died_at_failpoint(self, point: str, timeout: float = 90) -> None:
        """Wait for the process to kill itself at `point`; fail if it ends any other way."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not reach failpoint {point} in {timeout}s"
            ) from None
        assert code == -signal.SIGKILL, f"{self.name} exited {code}, not at failpoint {point}"
        assert f"failpoint {point} reached" in self.logs(), f"{self.name} died elsewhere"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        if hasattr(self, "log_file"):
            self.log_file.close()


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path)


@pytest.fixture
def daemons(tmp_path: Path):
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


def webhook_daemon(remote: Remote, tmp_path: Path, kubeconfig: str, secret: bytes) -> Daemon:
    """A daemon on a file:// URL (treated as remote: no local watcher, only polling, 1 h,
    and the webhook) that takes webhooks signed with `secret`; started."""
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_bytes(secret)
    return Daemon(
        f"file://{remote.bare}",
        tmp_path / "work",
        kubeconfig,
        *("--interval", "3600", "--webhook-secret-file", str(secret_file)),
    ).start()


def leader_and_standby(
    remote: Remote, tmp_path: Path, kubeconfig: str, lease_namespace: str
) -> tuple[Daemon, Daemon]:
    """Two daemons with --leader-elect on one Lease: `a` started first (it leads), then `b`.
    An 8 s lease (15 s by default): `b` takes over sooner; `a`, renewing every 2 s, fences
    its writes only when 5 s pass without a renewal."""
    ha = ("--interval", "2", "--leader-elect", "--lease-namespace", lease_namespace)
    ha += ("--lease-duration", "8")
    a = Daemon(str(remote.bare), tmp_path / "a", kubeconfig, *ha, name="a").start()
    b = Daemon(str(remote.bare), tmp_path / "b", kubeconfig, *ha, name="b")
    return a, b.start(wait_ready=False)


def scale_workflow(
    name: str, namespace: str, replicas: int, deployment_name: str = "web", comment: str = ""
) -> str:
    return f"""{comment}apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata:
  name: {name}
spec:
  steps:
    - name: scale
      action: ScaleDeployment
      target: {{namespace: {namespace}, name: {deployment_name}}}
      params: {{replicas: {replicas}}}
      timeout: 60s
"""


def record_commits(remote: Remote, workflow: str, phase: str | None = None) -> list[str]:
    return [
        s
        for s in remote.log()
        if s.startswith(f"reconciler: {workflow} ") and (phase is None or f" {phase} (" in s)
    ]


def run_at_step(api, remote: Remote, workflow: str, step: str, timeout: float = 30) -> str:
    """The id of the workflow's run once its Running record is on the remote and its
    WorkflowExecution says `step` is running."""
    run_id = wait_for(
        lambda: next((s.split()[2] for s in record_commits(remote, workflow, "Running")), None),
        timeout,
        f"{workflow} started",
    )
    wait_for(
        lambda: (execution(api, run_id) or {}).get("status", {}).get("currentStep") == step,
        timeout,
        f"{workflow} at {step}",
    )
    return run_id


def daemon_key(tmp_path: Path) -> Path:
    """An SSH key for the daemon's --signing-key: with --verify-signatures its record
    commits are skipped unjudged only when signed by it."""
    key = tmp_path / "daemon_ed25519"
    if not key.exists():
        sh(
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "reconciler",
            "-f",
            str(key),
            cwd=tmp_path,
        )
    return key
