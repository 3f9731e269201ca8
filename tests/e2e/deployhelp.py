"""kubectl from the control plane's build (or PATH with an external cluster), and deploy/'s
kustomizations applied as the README tells users to."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def kubectl(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    binary = "kubectl"
    if os.environ.get("RECONCILER_E2E_USE_KUBECONFIG") != "1":
        out = subprocess.run(
            ["bash", str(ROOT / "tests/e2e/cluster/build.sh"), "--print-bin-dir"],
            capture_output=True,
            text=True,
            check=True,
        )
        binary = str(Path(out.stdout.strip()) / "kubectl")
    return subprocess.run(
        [binary, "--kubeconfig", kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def apply_kustomization(kubeconfig: str, path: Path) -> subprocess.CompletedProcess[str]:
    """`kubectl apply --server-side -k`, as the README tells users to."""
    return kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=e2e",
        "-k",
        str(path),
    )
