"""The daemon's image (make image, from ./Dockerfile) runs as it does in deploy/: its entrypoint,
as the non-root user, on a read-only root filesystem, with nothing but the files mounted for it
(issue 14). podman runs it here, with the project's own storage (image/podman.sh)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from realnode import daemon_image

from reconciler import __version__

ROOT = Path(__file__).resolve().parents[2]


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    """podman as image/build.sh configures it (its storage under the cache)."""
    script = f'. "{ROOT}/image/podman.sh" && "${{podman_cmd[@]}}" "$@"'
    return subprocess.run(
        ["bash", "-c", script, "podman", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def image() -> str:
    name, _archive = daemon_image()
    if podman("image", "exists", name).returncode != 0:
        pytest.fail(f"image {name} missing: build it with `make image`", pytrace=False)
    return name


def run(image: str, *args: str, mounts: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """The image's entrypoint with `args`, as deploy/ runs it: read-only, no capabilities,
    no privilege escalation, the user and group of the Dockerfile, no network."""
    options = ["--rm", "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges"]
    options += ["--network=none", "--tmpfs=/tmp", "--tmpfs=/work:mode=1777"]
    for mount in mounts:
        options += ["--volume", mount]
    return podman("run", *options, image, *args)


def test_the_image_runs_its_entrypoint_read_only_as_the_non_root_user(image: str) -> None:
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/opt/reconciler/bin/reconciler"]
    version = run(image, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"reconciler {__version__}"
    # the examples, with the demo's policy, as CI would gate a repository with the image
    examples = f"{ROOT / 'examples-repo'}:/repo:ro"
    policy = f"{ROOT / 'demo' / 'policy.yaml'}:/policy.yaml:ro"
    valid = run(image, "validate", "--policy", "/policy.yaml", "/repo", mounts=(examples, policy))
    assert valid.returncode == 0, valid.stdout + valid.stderr
    count = len(list((ROOT / "examples-repo" / "workflows").glob("*.yaml")))
    assert f"{count} workflow(s) valid" in valid.stderr, valid.stderr
    # the process is the non-root user, and nothing of the image can be written
    whoami = podman(
        "run",
        "--rm",
        "--read-only",
        "--entrypoint",
        "/opt/reconciler/bin/python",
        image,
        "-c",
        "import os, pathlib\n"
        "print(os.getuid(), os.getgid())\n"
        "try:\n    pathlib.Path('/opt/reconciler/x').write_text('x')\n"
        "except OSError as err:\n    print(err.strerror)\n",
    )
    assert whoami.stdout.split("\n")[:2] == ["10001 10001", "Read-only file system"], whoami


def test_a_shell_is_not_needed_at_run_time(image: str) -> None:
    """The entrypoint is exec form: with /bin/sh taken away the daemon still starts."""
    done = podman(
        "run",
        "--rm",
        "--read-only",
        "--volume",
        "/dev/null:/bin/sh:ro",
        "--volume",
        "/dev/null:/bin/bash:ro",
        image,
        "--version",
    )
    assert done.returncode == 0 and __version__ in done.stdout, done.stderr
