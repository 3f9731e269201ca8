"""Hostile and broken input against the running daemon (issue 7): every broken manifest of
the corpus, a 100 MB file and a symlink out of the repository, beside a valid workflow. Each
gets a recorded error, the daemon stays up, the valid workflow runs, and nothing is written
outside the records path. Oversized webhook bodies are refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

from daemonhelp import Daemon, Remote, daemons, remote, sh  # noqa: F401  (fixtures)
from kubehelp import api, deployment, read_deployment, wait_for  # noqa: F401

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def test_hostile_manifests_are_recorded_and_valid_ones_still_run(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    deployment(api, namespace, "web", replicas=1)
    secret = tmp_path / "hook-secret"
    secret.write_text(uuid.uuid4().hex)
    daemon = Daemon(
        str(remote.bare),
        tmp_path / "work",
        kubeconfig,
        "--interval",
        "3600",
        "--webhook-secret-file",
        str(secret),
    ).start()
    daemons.append(daemon)
    for path in CORPUS.glob("*.yaml"):
        shutil.copy(path, remote.clone / "workflows" / path.name)
    with (remote.clone / "workflows" / "huge.yaml").open("wb") as f:
        f.truncate(100 * 1024 * 1024)  # 100 MB
    os.symlink("/etc/passwd", remote.clone / "workflows" / "escape.yaml")
    remote.write(
        "workflows/valid.yaml",
        f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: valid}}
spec:
  steps:
    - {{name: scale, action: ScaleDeployment, target: {{namespace: {namespace}, name: web}}, params: {{replicas: 2}}, timeout: 60s}}
""",
    )
    before = sh("git", "rev-parse", "HEAD", cwd=remote.clone)
    remote.commit_all("hostile input")
    wait_for(
        lambda: any(s.startswith("reconciler: valid ") and "Succeeded" in s for s in remote.log()),
        60,
        "valid ran",
    )
    assert read_deployment(api, namespace, "web").spec.replicas == 2
    errors = wait_for(lambda: remote.show("runs/_errors.md"), 20, "errors recorded")
    for name in [p.name for p in CORPUS.glob("*.yaml")] + ["huge.yaml", "escape.yaml"]:
        assert f"`workflows/{name}`" in errors, name
    assert "over the 8 MiB limit" in errors and "symlinks are not followed" in errors
    assert daemon.get("/healthz")[0] == 200 and daemon.proc.poll() is None
    # the daemon's commits touch only the records path
    changed = sh(
        "git",
        "log",
        "--format=",
        "--name-only",
        "--author=reconciler",
        f"{before}..main",
        cwd=remote.bare,
    )
    assert changed and all(line.startswith("runs/") for line in changed.splitlines() if line)
    # an oversized webhook body is refused without work
    big = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "--data-binary",
            "@-",
            "-H",
            "Content-Type: application/json",
            f"http://127.0.0.1:{daemon.port}/hooks/git",
        ],
        input=b"x" * (2 * 1024 * 1024),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert big.stdout == b"413"
    assert daemon.get("/healthz")[0] == 200
