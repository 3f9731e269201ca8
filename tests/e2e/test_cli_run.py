"""`reconciler run PATH --once` as a user runs it: a real subprocess against the cluster."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

from daemonhelp import run_cli
from kubehelp import api, deployment, read_deployment, workflow_yaml  # noqa: F401


def reconciler(*args: str, kubeconfig: str, log_dir: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--kubeconfig", kubeconfig, timeout=300, log_dir=log_dir)


def test_run_once_succeeds_then_refuses_to_run_the_same_content_twice(
    api, namespace, kubeconfig, tmp_path: Path
) -> None:
    deployment(api, namespace, "web", replicas=1)
    steps = (
        f"    - name: scale\n      action: ScaleDeployment\n      target: {{namespace: {namespace}, name: web}}\n"
        "      params: {replicas: 2}\n      timeout: 90s\n"
    )
    path = tmp_path / "wf.yaml"
    path.write_text(workflow_yaml(f"cli-{zlib.crc32(namespace.encode())}", steps))
    first = reconciler("run", str(path), "--once", kubeconfig=kubeconfig, log_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()  # not a terminal: one plain line per transition
    assert any(line.endswith("run Running") for line in lines), lines
    assert any(" step scale Succeeded" in line for line in lines), lines
    assert read_deployment(api, namespace, "web").status.available_replicas == 2
    second = reconciler("run", str(path), "--once", kubeconfig=kubeconfig, log_dir=tmp_path)
    assert second.returncode == 0
    assert "already ran (Succeeded)" in second.stderr


def test_run_once_exits_1_when_a_workflow_fails(api, namespace, kubeconfig, tmp_path: Path) -> None:
    steps = (
        f"    - name: scale\n      action: ScaleDeployment\n      target: {{namespace: {namespace}, name: nope}}\n"
        "      params: {replicas: 2}\n"
    )
    path = tmp_path / "wf.yaml"
    path.write_text(workflow_yaml(f"cli-fail-{zlib.crc32(namespace.encode())}", steps))
    result = reconciler("run", str(path), "--once", kubeconfig=kubeconfig, log_dir=tmp_path)
    assert result.returncode == 1
    assert f"deployment {namespace}/nope not found" in result.stdout


def test_invalid_file_runs_nothing(kubeconfig, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\nmetadata: {name: x}\nspec: {stepz: []}\n"
    )
    result = reconciler("run", str(path), kubeconfig=kubeconfig, log_dir=tmp_path)
    assert result.returncode == 1
    assert f"{path}:4:8: spec.stepz: unknown field 'stepz'" in result.stderr
    assert "not running anything" in result.stderr
