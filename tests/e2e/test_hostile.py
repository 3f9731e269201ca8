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

import yaml as pyyaml
from daemonhelp import Daemon, Remote, daemons, remote, sh, unpadded  # noqa: F401  (fixtures)
from figures import report
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubehelp import api, deployment, read_deployment, wait_for  # noqa: F401

from reconciler.manifest.errors import format_path
from reconciler.manifest.loader import load_paths, reject_duplicate_names
from reconciler.manifest.policy import DEFAULT_PROTECTED, Policy

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
# the daemon's own policy: the default protected namespaces and its own
ORACLE_POLICY = Policy(protected=frozenset([*DEFAULT_PROTECTED, "reconciler-system"]))


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
    remote.write("workflows/valid.yaml", _valid("valid", namespace))
    before = sh("git", "rev-parse", "HEAD", cwd=remote.clone)
    remote.commit_all("hostile input")
    wait_for(
        lambda: any(s.startswith("reconciler: valid ") and "Succeeded" in s for s in remote.log()),
        60,
        "valid ran",
    )
    assert read_deployment(api, namespace, "web").spec.replicas == 2
    errors = unpadded(wait_for(lambda: remote.show("runs/_errors.md"), 20, "errors recorded"))
    # the loader, run here on the same files, says where each error is: the daemon's record
    # must say the same (file, line, column, field), for every file it rejects
    files = sorted(p for p in (remote.clone / "workflows").glob("*.yaml") if not p.is_symlink())
    oracle = reject_duplicate_names(load_paths(files, ORACLE_POLICY))
    rejected = {Path(issue.file).name for issue in oracle.issues}
    assert rejected == {p.name for p in CORPUS.glob("*.yaml")} | {"huge.yaml"}
    # a symlink in git is refused as such (the loader here would follow it)
    assert "| `workflows/escape.yaml` | 0 | 0 | `—` | symlinks are not followed" in errors
    for issue in oracle.issues:
        where = format_path(issue.path) or "—"
        row = f"| `workflows/{Path(issue.file).name}` | {issue.line} | {issue.column} | `{where}` |"
        assert row in errors, (row, errors)
    assert "over the 8 MiB limit" in errors and "symlinks are not followed" in errors
    # the 100 MB file was never even downloaded: the mirror is a partial clone
    mirror, no_fetch = tmp_path / "work" / "repo.git", {**os.environ, "GIT_NO_LAZY_FETCH": "1"}
    for name, fetched in (("huge.yaml", False), ("valid.yaml", True)):
        sha = sh("git", "rev-parse", f"HEAD:workflows/{name}", cwd=remote.clone)
        has = subprocess.run(["git", "cat-file", "-e", sha], cwd=mirror, env=no_fetch, check=False)
        assert (has.returncode == 0) is fetched, f"{name} in the daemon's mirror: {not fetched}"
    assert daemon.get("/healthz")[0] == 200 and daemon.proc.poll() is None
    # the daemon's commits touch only the records path
    changed = remote.daemon_paths_since(before)
    assert changed and all(path.startswith("runs/") for path in changed)
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


# Generated input: hypothesis draws a batch of 30 manifests, half random structures in the
# Workflow's shape, half the valid manifest with a random slice replaced by random text.
# The oracle is the loader itself, run here on the same files: every file it rejects must
# be in runs/_errors.md at the line it names, every file it accepts must have run.
SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
STEP = st.dictionaries(
    st.sampled_from(["name", "action", "dependsOn", "target", "params", "timeout", "retry"]),
    VALUES | st.sampled_from(["ScaleDeployment", "DrainNode", "5m", "web"]),
    max_size=6,
)
SPEC = st.fixed_dictionaries({"steps": st.lists(STEP, max_size=4)}, optional={"timeout": VALUES})
MANGLE = st.tuples(st.integers(0, 400), st.integers(0, 40), st.text(max_size=30))


def _valid(name: str, namespace: str) -> str:
    return f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: {name}}}
spec:
  steps:
    - {{name: scale, action: ScaleDeployment, target: {{namespace: {namespace}, name: web}}, params: {{replicas: 2}}, timeout: 60s}}
"""


@settings(
    max_examples=1,
    deadline=None,
    suppress_health_check=list(HealthCheck),  # one example; fixtures are per test by design
)
@given(batch=st.lists(st.one_of(SPEC, MANGLE), min_size=30, max_size=30))
def test_generated_manifests_each_get_their_recorded_error_and_the_daemon_stays_up(
    batch, api, namespace, kubeconfig, tmp_path: Path
) -> None:
    root = tmp_path / uuid.uuid4().hex[:8]
    root.mkdir()
    remote = Remote(root)
    deployment(api, namespace, "web", replicas=1)
    files: dict[str, str] = {}
    for i, item in enumerate(batch):
        if isinstance(item, dict):
            doc = {
                "apiVersion": "reconciler.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": f"gen-{i}"},
                "spec": item,
            }
            files[f"gen-{i}.yaml"] = pyyaml.safe_dump(doc)
        else:
            at, length, text = item
            good = _valid(f"gen-{i}", namespace)
            files[f"gen-{i}.yaml"] = good[:at] + text + good[at + length :]
    files["valid.yaml"] = _valid("valid", namespace)
    for name, text in files.items():
        remote.write(f"workflows/{name}", text)
    oracle = reject_duplicate_names(
        load_paths(sorted((remote.clone / "workflows").glob("*.yaml")), ORACLE_POLICY)
    )
    daemon = Daemon(str(remote.bare), root / "work", kubeconfig, "--interval", "3600").start()
    try:
        before = sh("git", "rev-parse", "HEAD", cwd=remote.clone)
        remote.commit_all("generated input")
        wait_for(
            lambda: any(s.startswith("reconciler: valid ") for s in remote.log()), 60, "valid ran"
        )
        errors = unpadded(wait_for(lambda: remote.show("runs/_errors.md"), 30, "errors recorded"))
        rejected = {Path(issue.file).name: issue for issue in oracle.issues}
        assert rejected, "a batch of random manifests with no invalid one: the oracle is broken"
        for name, issue in rejected.items():
            assert f"| `workflows/{name}` | {issue.line} |" in errors, (name, files[name])
        for loaded in oracle.workflows:
            if loaded.name != "valid":
                wait_for(
                    lambda n=loaded.name: any(
                        s.startswith(f"reconciler: {n} ") for s in remote.log()
                    ),
                    60,
                    f"{loaded.name} (valid) ran",
                )
        assert daemon.get("/healthz")[0] == 200 and daemon.proc.poll() is None
        assert all(path.startswith("runs/") for path in remote.daemon_paths_since(before))
        report(
            f"\ngenerated manifests: {len(batch)} drawn, {len(rejected)} rejected and recorded "
            f"at their line, {len(oracle.workflows) - 1} valid and run; daemon up"
        )
    finally:
        daemon.stop()
