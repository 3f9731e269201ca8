"""Approvals through the daemon, a real git remote with real SSH-signed commits and the real
control plane (docs/approvals.md). A step with `approval` waits (the execution's phase, the
Running record in git saying how to decide); an unsigned commit, a stranger's key, a file
claiming someone else and a decision for no such run all do nothing and are recorded; two
real approvals (one by `reconciler approve`, one by a hand-made signed commit) let the
step run; a rejection rolls back; kill -9 while waiting resumes the wait; a timeout fails."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from daemonhelp import (  # noqa: F401  (fixtures)
    Daemon,
    Remote,
    daemons,
    record_commits,
    remote,
    run_cli,
    sh,
)
from kubehelp import (  # noqa: F401
    api,
    configmap,
    configmap_data,
    deployment,
    execution,
    read_deployment,
    wait_for,
    workflow_yaml,
)

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Real ed25519 keys; carol's is in no policy file."""
    found = {}
    for who in (ALICE, BOB, CAROL):
        key = tmp_path / "keys" / who.split("@")[0]
        key.parent.mkdir(exist_ok=True)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", who, "-f", str(key), cwd=tmp_path)
        found[who] = key
    return found


@pytest.fixture
def policy(keys: dict[str, Path], tmp_path: Path) -> Path:
    def public(who: str) -> str:
        return keys[who].with_suffix(".pub").read_text().strip()

    path = tmp_path / "policy.yaml"
    path.write_text(
        "approvers:\n  people:\n"
        f"    {ALICE}: ['{public(ALICE)}']\n    {BOB}: ['{public(BOB)}']\n"
        f"  groups:\n    sre-leads: [{ALICE}, {BOB}]\n"
    )
    return path


def targets(api, namespace: str) -> None:
    """What gated acts on: a Deployment at 1 replica, a ConfigMap in normal mode."""
    deployment(api, namespace, "web", replicas=1)
    configmap(api, namespace, "settings", {"mode": "normal"})


def gated(namespace: str, *, required: int = 2, timeout: str = "10m") -> str:
    steps = f"""\
    - name: prepare
      action: UpdateConfigMap
      target: {{namespace: {namespace}, name: settings}}
      params: {{data: {{mode: maintenance}}}}
    - name: scale
      action: ScaleDeployment
      dependsOn: [prepare]
      target: {{namespace: {namespace}, name: web}}
      params: {{replicas: 2}}
      approval: {{required: {required}, approvers: [sre-leads], timeout: {timeout}}}
"""
    return workflow_yaml("gated", steps, spec="  timeout: 30m\n")


def start(remote: Remote, tmp_path: Path, kubeconfig: str, policy: Path, name: str) -> Daemon:
    args = ("--interval", "3600", "--policy", str(policy))
    return Daemon(str(remote.bare), tmp_path / "work", kubeconfig, *args, name=name).start()


def waiting_run(api, remote: Remote) -> str:
    run_id = wait_for(
        lambda: next((s.split()[2] for s in record_commits(remote, "gated", "Running")), None),
        60,
        "the run started",
    )
    wait_for(
        lambda: (
            (execution(api, run_id) or {}).get("status", {}).get("phase") == "WaitingForApproval"
        ),
        60,
        "WaitingForApproval",
    )
    return run_id


def signed_commit(remote: Remote, files: dict[str, str], key: Path | None, message: str) -> str:
    """A commit of `files` made by hand, signed with `key` (None: unsigned), pushed."""
    for path, text in files.items():
        remote.write(path, text)
    sh("git", "add", "-A", cwd=remote.clone)
    signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}"] if key else []
    sh("git", *signing, "commit", "--quiet", *(["-S"] if key else []), "-m", message,
       cwd=remote.clone)  # fmt: skip
    remote.push()
    return sh("git", "rev-parse", "HEAD", cwd=remote.clone)


def approve(remote: Remote, tmp_path: Path, run_id: str, who: str, key: Path, *extra: str):
    sh("git", "pull", "--quiet", "--rebase", "origin", "main", cwd=remote.clone)
    return run_cli(
        "approve", run_id, "scale", "--repo", str(remote.clone), "--as", who,
        "--signing-key", str(key), *extra, log_dir=tmp_path,
    )  # fmt: skip


def test_only_signed_approvals_of_allowed_approvers_count(
    api, namespace, kubeconfig, remote, daemons, keys, policy, tmp_path: Path
) -> None:
    targets(api, namespace)
    daemon = start(remote, tmp_path, kubeconfig, policy, "approvals")
    daemons.append(daemon)
    remote.write("workflows/gated.yaml", gated(namespace))
    remote.commit_all("gated scale")
    run_id = waiting_run(api, remote)
    folder = f"approvals/{run_id}/scale"
    assert configmap_data(api, namespace, "settings")["mode"] == "maintenance"  # prepare ran
    markdown = wait_for(
        lambda: (
            (m := remote.show(f"runs/gated/{run_id}.md") or "") and "waits for approval" in m and m
        ),
        30,
        "the Running record saying how to approve",
    )
    assert f"reconciler approve {run_id} scale" in markdown

    # what an attacker tries: none of it counts, the daemon stays up, the step waits
    unsigned = signed_commit(remote, {f"{folder}/{ALICE}.yaml": "decision: approve\n"}, None, "u")
    stranger = signed_commit(
        remote, {f"{folder}/{CAROL}.yaml": "decision: approve\n"}, keys[CAROL], "c"
    )
    forged = signed_commit(
        remote, {f"{folder}/{ALICE}.yaml": "decision: approve\ncomment: me\n"}, keys[BOB], "f"
    )
    ghost = signed_commit(
        remote, {f"approvals/gated-0000000000/scale/{BOB}.yaml": "decision: approve\n"},
        keys[BOB], "g",
    )  # fmt: skip
    wait_for(lambda: remote.show("runs/_approvals.md"), 30, "_approvals.md")
    assert "no run 'gated-0000000000' exists" in (remote.show("runs/_approvals.md") or "")
    time.sleep(2)
    assert read_deployment(api, namespace, "web").spec.replicas == 1
    assert execution(api, run_id)["status"]["phase"] == "WaitingForApproval"
    assert daemon.get("/healthz")[0] == 200

    # alice, by the command, over the file someone else made at her path; then bob by hand
    done = approve(remote, tmp_path, run_id, ALICE, keys[ALICE], "--replace", "-m", "go")
    assert done.returncode == 0, done.stderr
    time.sleep(2)
    assert read_deployment(api, namespace, "web").spec.replicas == 1  # 1 of 2
    bobs = signed_commit(remote, {f"{folder}/{BOB}.yaml": "decision: approve\n"}, keys[BOB], "b")
    wait_for(lambda: record_commits(remote, "gated", "Succeeded"), 60, "the run finished")
    assert read_deployment(api, namespace, "web").spec.replicas == 2

    record = yaml.safe_load(remote.show(f"runs/gated/{run_id}.yaml") or "")
    (step,) = [s for s in record["steps"] if s["name"] == "scale"]
    approval = step["approval"]
    assert approval["outcome"] == "approved"
    assert [(d["approver"], d["comment"]) for d in approval["approvedBy"]] == [
        (ALICE, "go"),
        (BOB, ""),
    ]
    assert approval["approvedBy"][1]["commit"] == bobs  # the commit each approval came from
    refused = "\n".join(approval["refused"])
    for commit, why in (
        (unsigned, "unsigned commit"),
        (stranger, "which is not an approver's"),
        (forged, f"the file name claims {ALICE}, but {BOB} signed"),
    ):
        assert f"{why}" in refused and commit[:12] in refused, (why, refused)
    assert ghost[:12] not in refused  # another run's
    final = remote.show(f"runs/gated/{run_id}.md") or ""
    assert "## Approvals" in final and "approved (2 required)" in final


def test_kill_9_while_waiting_then_a_rejection_rolls_back(
    api, namespace, kubeconfig, remote, daemons, keys, policy, tmp_path: Path
) -> None:
    targets(api, namespace)
    first = start(remote, tmp_path, kubeconfig, policy, "first")
    daemons.append(first)
    remote.write("workflows/gated.yaml", gated(namespace))
    remote.commit_all("gated scale")
    run_id = waiting_run(api, remote)
    asked = execution(api, run_id)["status"]["phase"]
    first.kill()  # kill -9 while the step waits
    second = start(remote, tmp_path, kubeconfig, policy, "second")
    daemons.append(second)
    wait_for(lambda: "resuming" in second.logs(), 60, "the second daemon resumed the run")
    assert asked == "WaitingForApproval"
    done = approve(remote, tmp_path, run_id, BOB, keys[BOB], "--reject", "-m", "not during peak")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: record_commits(remote, "gated", "RolledBack"), 60, "rolled back")
    assert read_deployment(api, namespace, "web").spec.replicas == 1  # never scaled
    assert configmap_data(api, namespace, "settings")["mode"] == "normal"  # prepare undone
    record = remote.show(f"runs/gated/{run_id}.yaml") or ""
    assert f"approval: rejected by {BOB}" in record and "not during peak" in record
    assert len(record_commits(remote, "gated", "RolledBack")) == 1


def test_no_decision_by_the_timeout_fails_the_step(
    api, namespace, kubeconfig, remote, daemons, keys, policy, tmp_path: Path
) -> None:
    targets(api, namespace)
    daemons.append(start(remote, tmp_path, kubeconfig, policy, "timeout"))
    remote.write("workflows/gated.yaml", gated(namespace, required=1, timeout="3s"))
    remote.commit_all("gated scale, 3 s to decide")
    wait_for(lambda: record_commits(remote, "gated", "RolledBack"), 60, "rolled back")
    (done,) = record_commits(remote, "gated", "RolledBack")
    record = remote.show(f"runs/gated/{done.split()[2]}.yaml") or ""
    assert "approval: 0 of 1 approval(s) within 3s; timed out" in record
    assert read_deployment(api, namespace, "web").spec.replicas == 1
