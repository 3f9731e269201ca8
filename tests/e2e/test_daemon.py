"""The daemon end to end (issue 5): a real subprocess, real bare git remotes, the real
control plane. Push -> cluster change -> record commit; crash safety; webhook; HA."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

from auditlog import AuditLog, Life, check_applied_once, checkpoint_of, ended
from daemonhelp import (  # noqa: F401  (fixtures)
    Daemon,
    Remote,
    daemon_key,
    daemons,
    leader_and_standby,
    record_commits,
    remote,
    run_at_step,
    run_cli,
    scale_workflow,
    sh,
    unpadded,
    webhook_daemon,
)
from figures import report
from gitserver import GitServer
from kubehelp import (  # noqa: F401
    api,
    configmap_data,
    deployment,
    execution,
    fake_node,
    guarded_by_budget,
    own_node,
    read_deployment,
    wait_for,
    workflow_yaml,
)
from kubernetes import client as k8s


def test_push_runs_and_records_reformat_does_nothing_change_runs_again(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    deployment(api, namespace, "web", replicas=1)
    daemon = Daemon(str(remote.bare), tmp_path / "work", kubeconfig, "--interval", "3600").start()
    daemons.append(daemon)
    remote.write("workflows/scale.yaml", scale_workflow("scale-web", namespace, 2))
    pushed = time.time()
    remote.commit_all("scale web to 2")
    wait_for(lambda: record_commits(remote, "scale-web", "Succeeded"), 30, "record commit")
    latency = time.time() - pushed
    assert read_deployment(api, namespace, "web").spec.replicas == 2
    (done,) = record_commits(remote, "scale-web", "Succeeded")
    run_id = done.split()[2]
    assert record_commits(remote, "scale-web", "Running") == [
        f"reconciler: scale-web {run_id} Running (0/1 steps)"
    ]
    record = remote.show(f"runs/scale-web/{run_id}.yaml")
    assert "phase: Succeeded" in record and "revision: main@sha1:" in record
    markdown = remote.show(f"runs/scale-web/{run_id}.md")
    assert "```mermaid" in markdown and "flowchart LR" in markdown and "gantt" in markdown
    report(f"push-to-record latency (local watch): {latency:.2f}s")

    # a formatting-only change runs nothing
    before = len(remote.log())
    remote.write(
        "workflows/scale.yaml",
        scale_workflow("scale-web", namespace, 2, comment="# reformatted\n").replace(
            "timeout: 60s", "timeout: 1m"
        ),
    )
    remote.commit_all("reformat")
    time.sleep(3)
    assert len(remote.log()) == before + 1  # only the user's commit
    # a real change runs again
    remote.write("workflows/scale.yaml", scale_workflow("scale-web", namespace, 3))
    remote.commit_all("scale web to 3")
    wait_for(lambda: len(record_commits(remote, "scale-web", "Succeeded")) == 2, 30, "second run")
    assert read_deployment(api, namespace, "web").spec.replicas == 3
    status, metrics = daemon.get("/metrics")
    assert status == 200 and 'reconciler_runs_total{phase="Succeeded"} 2.0' in metrics


def test_polling_a_remote_url_picks_up_a_push(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    """A remote given as an http URL behind a token (`git http-backend`, as an https host
    serves it) is polled (its head asked every --interval, fetched only when it moved); no
    watch, no webhook. After git's first fetch the daemon's own smart-HTTP client asks and
    fetches (gitops/httpfetch.py); record commits are pushed by git with the token."""
    deployment(api, namespace, "web", replicas=1)
    token, log = tmp_path / "token", tmp_path / "requests.log"
    token.write_text(uuid.uuid4().hex + "\n")
    server = GitServer(remote.bare, requests_log=log, token_file=token).start()
    try:
        daemon = Daemon(
            server.url, tmp_path / "work", kubeconfig, "--interval", "2", "--token-file", str(token)
        ).start()
        daemons.append(daemon)
        for round_, replicas in enumerate((2, 3), start=1):
            remote.write("workflows/scale.yaml", scale_workflow("polled", namespace, replicas))
            pushed = time.time()
            remote.commit_all(f"scale web to {replicas}")
            wait_for(
                lambda replicas=replicas: (
                    read_deployment(api, namespace, "web").spec.replicas == replicas
                ),
                30,
                "polled",
            )
            latency = time.time() - pushed
            wait_for(
                lambda round_=round_: len(record_commits(remote, "polled", "Succeeded")) >= round_,
                30,
                "record commit",
            )
        report(f"push-to-change latency (polling over HTTP, --interval 2s): {latency:.2f}s")
    finally:
        server.stop()
    asked = [line.split(" ", 2) for line in log.read_text().splitlines()]
    by_git = [(method, path) for method, path, agent in asked if agent.startswith("git/2")]
    ours = [path for _, path, agent in asked if agent == "git/reconciler"]
    # git fetched once, at the start; every later head and fetch was the daemon's own
    assert by_git.count(("GET", "/remote.git/info/refs?service=git-upload-pack")) == 1, asked
    assert ours.count("/remote.git/git-upload-pack") >= 4, asked  # 2 fetches, 2 heads at least
    assert ("POST", "/remote.git/git-receive-pack") in by_git  # records, by git, with the token
    assert "in-process" not in daemon.log_path.read_text()  # no fall-back to git was needed


def test_invalid_manifest_is_recorded_and_valid_ones_still_run(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    deployment(api, namespace, "web", replicas=1)
    daemons.append(
        Daemon(str(remote.bare), tmp_path / "work", kubeconfig, "--interval", "3600").start()
    )
    remote.write("workflows/good.yaml", scale_workflow("good", namespace, 2))
    remote.write(
        "workflows/bad.yaml",
        scale_workflow("bad", namespace, 2).replace("ScaleDeployment", "ScaleDeploymnt"),
    )
    remote.commit_all("one good, one bad")
    wait_for(lambda: record_commits(remote, "good", "Succeeded"), 30, "good workflow ran")
    errors = unpadded(wait_for(lambda: remote.show("runs/_errors.md"), 10, "errors recorded"))
    assert (
        "| `workflows/bad.yaml` | 8 | 7 | `spec.steps[0].action` | unknown action 'ScaleDeploymnt'; did you mean 'ScaleDeployment'? |"
        in errors
    )
    # fixed -> the error file goes away and the workflow runs
    remote.write("workflows/bad.yaml", scale_workflow("bad", namespace, 2))
    remote.commit_all("fix")
    wait_for(lambda: record_commits(remote, "bad", "Succeeded"), 30, "fixed workflow ran")
    wait_for(lambda: remote.show("runs/_errors.md") is None, 10, "errors file removed")


def test_webhook_signature_and_immediate_sync(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    deployment(api, namespace, "web", replicas=1)
    secret = uuid.uuid4().hex.encode()
    daemon = webhook_daemon(remote, tmp_path, kubeconfig, secret)
    daemons.append(daemon)
    remote.write("workflows/scale.yaml", scale_workflow("hooked", namespace, 2))
    remote.commit_all("scale")
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    assert daemon.webhook(body, b"wrong-secret") == 401
    assert daemon.webhook(body, None) == 401
    time.sleep(2)
    assert not record_commits(remote, "hooked")  # nothing happened
    sent = time.time()
    assert daemon.webhook(body, secret, delivery="d-1") == 202
    assert daemon.webhook(body, secret, delivery="d-1") == 409  # replayed delivery
    wait_for(
        lambda: read_deployment(api, namespace, "web").spec.replicas == 2, 10, "sync after webhook"
    )
    report(f"webhook-to-change latency: {time.time() - sent:.2f}s")
    wait_for(lambda: record_commits(remote, "hooked", "Succeeded"), 30, "record")


def test_kill_9_mid_run_resumes_each_step_once_and_one_final_record(
    api, namespace, kubeconfig, remote, daemons, audit_log, tmp_path: Path
) -> None:
    steps = ""
    for i in range(6):
        deployment(api, namespace, f"d{i}", replicas=1)
        deps = f"      dependsOn: [s{i - 1}]\n" if i else ""
        steps += (
            f"    - name: s{i}\n      action: ScaleDeployment\n{deps}"
            f"      target: {{namespace: {namespace}, name: d{i}}}\n      params: {{replicas: 2}}\n      timeout: 60s\n"
        )
        if i == 2:
            steps += (
                f"    - name: job\n      action: Custom\n      dependsOn: [s2]\n      target: {{namespace: {namespace}}}\n"
                "      params: {image: 'busybox:1.36', command: [sh, -c, 'echo counted']}\n      timeout: 60s\n"
            )
    steps = steps.replace("dependsOn: [s3]", "dependsOn: [job]")
    generations = {
        i: read_deployment(api, namespace, f"d{i}").metadata.generation for i in range(6)
    }
    workdir = tmp_path / "work"
    first = Daemon(
        str(remote.bare), workdir, kubeconfig, "--interval", "3600", name="first"
    ).start()
    daemons.append(first)
    remote.write(
        "workflows/chain.yaml",
        f"apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: chain}}\nspec:\n  steps:\n{steps}",
    )
    remote.commit_all("chain")
    run_id = wait_for(
        lambda: next((s.split()[2] for s in record_commits(remote, "chain", "Running")), None),
        30,
        "run started",
    )
    wait_for(
        lambda: (
            (execution(api, run_id) or {}).get("status", {}).get("progress")
            in ("2/7", "3/7", "4/7")
        ),
        60,
        "mid-run",
    )
    first.kill()  # kill -9
    lives = [ended(Life(first.pid, "first"), checkpoint_of(api, run_id))]
    second = Daemon(
        str(remote.bare), workdir, kubeconfig, "--interval", "3600", name="second"
    ).start()
    daemons.append(second)
    lives.append(Life(second.pid, "second"))
    wait_for(lambda: record_commits(remote, "chain", "Succeeded"), 60, "resumed run finished")
    assert len(record_commits(remote, "chain", "Succeeded")) == 1  # exactly one final record
    assert "resuming" in second.logs()
    for i in range(6):
        d = read_deployment(api, namespace, f"d{i}")
        assert d.spec.replicas == 2
        assert d.metadata.generation == generations[i] + 1, f"d{i} applied more than once"
    jobs = (
        k8s.BatchV1Api(api)
        .list_namespaced_job(namespace, label_selector=f"reconciler.dev/run-id={run_id}")
        .items
    )
    assert len(jobs) == 1
    we = execution(api, run_id)
    assert we["status"]["phase"] == "Succeeded" and we["status"]["progress"] == "7/7"
    if audit_log is not None:  # what each process sent, as the API server saw it
        audit = AuditLog(audit_log)
        audit.settle(api)
        check_applied_once(audit.of_run(run_id), lives)


def test_workflow_changed_while_running_finishes_then_the_new_version_runs(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    """v1 waits at a gate (a Deployment whose pod needs a node that does not exist yet) when
    v2 is pushed: v1 is not interrupted, v2 waits in the queue, and runs once v1 is done."""
    core = k8s.CoreV1Api(api)
    gate_node = f"{namespace}-gate"
    deployment(api, namespace, "gated", replicas=0, node=gate_node)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "ver"}, "data": {}})
    daemon = Daemon(str(remote.bare), tmp_path / "work", kubeconfig, "--interval", "3600").start()
    daemons.append(daemon)
    gate = (
        "    - {name: gate, action: ScaleDeployment, target: {namespace: NS, name: gated},"
        " params: {replicas: 1}, timeout: 5m}\n"
    ).replace("NS", namespace)
    head = "apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\nmetadata: {name: evolving}\n"
    note = (
        "    - {name: note, action: UpdateConfigMap, dependsOn: [gate],"
        f' target: {{namespace: {namespace}, name: ver}}, params: {{data: {{v: "2"}}}}}}\n'
    )
    remote.write("workflows/evolving.yaml", head + "spec:\n  steps:\n" + gate)
    remote.commit_all("v1")
    v1 = run_at_step(api, remote, "evolving", "gate")
    remote.write("workflows/evolving.yaml", head + "spec:\n  steps:\n" + gate + note)
    remote.commit_all("v2 while v1 runs")
    wait_for(lambda: "reconciler_queue_depth 1.0" in daemon.get("/metrics")[1], 30, "v2 queued")
    time.sleep(2)
    assert len(record_commits(remote, "evolving", "Running")) == 1  # v2 has not started
    assert (execution(api, v1) or {})["status"]["phase"] == "Running"  # v1 not interrupted
    fake_node(api, gate_node)  # open the gate
    try:
        wait_for(lambda: len(record_commits(remote, "evolving", "Succeeded")) == 2, 90, "both ran")
        subjects = list(reversed(remote.log()))  # oldest first
        mine = [s for s in subjects if s.startswith("reconciler: evolving ")]
        assert [s.split()[2] == v1 for s in mine] == [True, True, False, False], mine
        assert " Succeeded (1/1 steps" in mine[1] and " Succeeded (2/2 steps" in mine[3]
        assert configmap_data(api, namespace, "ver") == {"v": "2"}
    finally:
        core.delete_node(gate_node)


def test_only_signed_revisions_run_and_a_refusal_is_recorded(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    """--verify-signatures=ssh: an unsigned head runs nothing and is recorded in
    runs/_refused.md; the same change signed by an allowed key runs and clears the refusal;
    the daemon's own record commits (signed with its --signing-key) are not judged, so they
    neither block the signed revision nor refuse themselves in a loop."""
    deployment(api, namespace, "web", replicas=1)
    key = tmp_path / "sre_ed25519"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sre", "-f", str(key), cwd=tmp_path)
    kind, public = (tmp_path / "sre_ed25519.pub").read_text().split()[:2]
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"sre@example.com {kind} {public}\n")
    daemon = Daemon(
        str(remote.bare),
        tmp_path / "work",
        kubeconfig,
        "--interval",
        "3600",
        "--verify-signatures",
        "ssh",
        "--allowed-signers",
        str(allowed),
        "--signing-key",
        str(daemon_key(tmp_path)),
    ).start()
    daemons.append(daemon)
    remote.write("workflows/scale.yaml", scale_workflow("signed", namespace, 2))
    unsigned = remote.commit_all("unsigned change")
    wait_for(lambda: unsigned in (remote.show("runs/_refused.md") or ""), 30, "refusal recorded")
    time.sleep(2)
    assert read_deployment(api, namespace, "web").spec.replicas == 1  # nothing executed
    assert not record_commits(remote, "signed")
    refusals = sum(s.startswith("reconciler: refused") for s in remote.log())
    for args in (("gpg.format", "ssh"), ("user.signingkey", str(key))):
        sh("git", "config", *args, cwd=remote.clone)
    sh("git", "pull", "--quiet", "--rebase", "origin", "main", cwd=remote.clone)
    sh("git", "commit", "--quiet", "--allow-empty", "-S", "-m", "signed", cwd=remote.clone)
    remote.push()
    wait_for(lambda: record_commits(remote, "signed", "Succeeded"), 30, "the signed head ran")
    assert read_deployment(api, namespace, "web").spec.replicas == 2
    wait_for(lambda: remote.show("runs/_refused.md") is None, 30, "the refusal cleared")
    time.sleep(2)  # the record commits (the daemon's, signed by it) were synced meanwhile
    assert sum(s.startswith("reconciler: refused") for s in remote.log()) == refusals


def test_daemon_once_runs_what_is_new_and_exits_with_its_status(
    api, namespace, kubeconfig, remote, tmp_path: Path
) -> None:
    """`reconciler daemon --once`: one sync, wait for the runs it started, push their
    records, exit 1 if any failed; run again with nothing new: exit 0, no commit."""
    deployment(api, namespace, "web", replicas=1)
    remote.write("workflows/ok.yaml", scale_workflow("once-ok", namespace, 2))
    remote.write(
        "workflows/bad.yaml", scale_workflow("once-bad", namespace, 2, deployment_name="nope")
    )
    remote.commit_all("two workflows")

    def once() -> subprocess.CompletedProcess[str]:
        work = str(tmp_path / "work")
        return run_cli(
            *("daemon", "--repo", str(remote.bare), "--workdir", work, "--kubeconfig", kubeconfig),
            *("--listen", "127.0.0.1:0", "--once"),
            log_dir=tmp_path,
        )

    first = once()
    assert first.returncode == 1, first.stderr[-2000:]
    assert record_commits(remote, "once-ok", "Succeeded")  # pushed before it exited
    assert record_commits(remote, "once-bad", "Failed")
    assert read_deployment(api, namespace, "web").spec.replicas == 2
    commits = len(remote.log())
    second = once()
    assert second.returncode == 0, second.stderr[-2000:]
    assert len(remote.log()) == commits  # nothing new ran, nothing committed


def test_workflow_deleted_while_running_is_cancelled_and_rolled_back(
    api, namespace, kubeconfig, remote, daemons, own_node, tmp_path: Path
) -> None:
    deployment(api, namespace, "web", replicas=1)
    deployment(api, namespace, "guarded", replicas=2, node=own_node)
    k8s.PolicyV1Api(api).create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": "guarded"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "guarded"}}},
        },
    )
    daemons.append(
        Daemon(str(remote.bare), tmp_path / "work", kubeconfig, "--interval", "3600").start()
    )
    remote.write(
        "workflows/maint.yaml",
        f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: maint}}
spec:
  steps:
    - {{name: scale, action: ScaleDeployment, target: {{namespace: {namespace}, name: web}}, params: {{replicas: 3}}, timeout: 60s}}
    - {{name: drain, action: DrainNode, dependsOn: [scale], target: {{name: {own_node}}}, timeout: 5m}}
""",
    )
    remote.commit_all("maintenance")
    run_id = run_at_step(api, remote, "maint", "drain")
    remote.remove("workflows/maint.yaml")
    remote.commit_all("never mind")
    wait_for(lambda: record_commits(remote, "maint", "RolledBack"), 60, "rolled back")
    record = remote.show(f"runs/maint/{run_id}.yaml")
    assert "reason: Cancelled" in record
    assert read_deployment(api, namespace, "web").spec.replicas == 1
    assert not k8s.CoreV1Api(api).read_node(own_node).spec.unschedulable


def test_concurrent_writers_every_commit_and_every_record_survive(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    """Another clone pushes 50 commits while the daemon records 20 runs (issue 7)."""
    core = k8s.CoreV1Api(api)
    daemons.append(
        Daemon(str(remote.bare), tmp_path / "work", kubeconfig, "--interval", "3600").start()
    )
    for i in range(20):
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": f"cm{i}"}, "data": {"V": "0"}}
        )
        remote.write(
            f"workflows/w{i}.yaml",
            f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: busy-{i}}}
spec:
  steps:
    - {{name: set, action: UpdateConfigMap, target: {{namespace: {namespace}, name: cm{i}}}, params: {{data: {{V: "1"}}}}}}
""",
        )
    remote.commit_all("twenty workflows")
    for i in range(50):  # someone else keeps pushing while the daemon records
        remote.write(f"docs/note-{i}.md", f"note {i}\n")
        remote.commit_all(f"note {i}")
    wait_for(
        lambda: (
            sum(1 for s in remote.log() if s.startswith("reconciler: busy-") and "Succeeded" in s)
            == 20
        ),
        120,
        "20 final records",
    )
    subjects = remote.log()
    assert all(f"note {i}" in subjects for i in range(50))
    assert (
        sum(1 for s in subjects if s.startswith("reconciler: busy-")) == 40
    )  # Running + Succeeded each
    assert len(remote.files("runs")) == 40  # .yaml + .md per run, none lost


def test_two_replicas_one_leader_and_failover(
    api, namespace, kubeconfig, remote, daemons, own_node, audit_log, tmp_path: Path
) -> None:
    deployment(api, namespace, "web", replicas=1)
    relax_budget = guarded_by_budget(api, namespace, own_node)
    a, b = leader_and_standby(remote, tmp_path, kubeconfig, namespace)
    daemons.extend([a, b])
    remote.write(
        "workflows/ha.yaml",
        f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: ha}}
spec:
  steps:
    - {{name: scale, action: ScaleDeployment, target: {{namespace: {namespace}, name: web}}, params: {{replicas: 2}}, timeout: 60s}}
    - {{name: drain, action: DrainNode, dependsOn: [scale], target: {{name: {own_node}}}, timeout: 5m}}
    - {{name: uncordon, action: UncordonNode, dependsOn: [drain], target: {{name: {own_node}}}}}
""",
    )
    remote.commit_all("ha")
    run_id = run_at_step(api, remote, "ha", "drain")
    assert "run Running" in a.logs() and "run Running" not in b.logs()  # exactly one executes
    assert b.get("/readyz")[0] == 503  # the standby has not synced
    a.kill()  # the leader dies mid-run
    lives = [ended(Life(a.pid, "leader"), checkpoint_of(api, run_id)), Life(b.pid, "standby")]
    relax_budget()
    wait_for(
        lambda: record_commits(remote, "ha", "Succeeded"), 90, "the standby took over and finished"
    )
    assert "resuming" in b.logs()
    assert read_deployment(api, namespace, "web").spec.replicas == 2
    assert not k8s.CoreV1Api(api).read_node(own_node).spec.unschedulable
    if audit_log is not None:
        audit = AuditLog(audit_log)
        audit.settle(api)
        requests = audit.of_run(run_id)
        # the drain retries 429s from the budget: the same eviction is sent many times
        check_applied_once(requests, lives, one_write_each=False)
        assert {r.pid for r in requests if r.mutating and r.step == "uncordon"} == {b.pid}


def test_status_and_manual_rollback_of_a_finished_run(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:

    deployment(api, namespace, "web", replicas=1, image="registry.example/web:1")
    core = k8s.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"A": "1"}})
    daemons.append(
        Daemon(str(remote.bare), tmp_path / "work", kubeconfig, "--interval", "3600").start()
    )
    remote.write(
        "workflows/change.yaml",
        f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: change}}
spec:
  steps:
    - {{name: scale, action: ScaleDeployment, target: {{namespace: {namespace}, name: web}}, params: {{replicas: 2}}, timeout: 60s}}
    - {{name: image, action: UpdateImage, dependsOn: [scale], target: {{namespace: {namespace}, name: web}}, params: {{container: app, image: "registry.example/web:2"}}, timeout: 60s}}
    - {{name: config, action: UpdateConfigMap, dependsOn: [image], target: {{namespace: {namespace}, name: cfg}}, params: {{data: {{A: "2", B: "3"}}}}}}
""",
    )
    remote.commit_all("change")
    run_id = wait_for(
        lambda: next((s.split()[2] for s in record_commits(remote, "change", "Succeeded")), None),
        30,
        "ran",
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, log_dir=tmp_path)

    status = cli("status", "--repo", str(remote.bare))
    assert status.returncode == 0
    assert status.stdout.splitlines()[1].split()[:4] == ["change", run_id, "Succeeded", "3/3"]
    undo = cli("rollback", run_id, "--repo", str(remote.bare), "--kubeconfig", kubeconfig)
    assert undo.returncode == 0, undo.stderr
    assert [line.split()[:2] for line in undo.stdout.splitlines()] == [
        ["config", "Undone"],
        ["image", "Undone"],
        ["scale", "Undone"],
    ]
    d = read_deployment(api, namespace, "web")
    assert (
        d.spec.replicas == 1
        and d.spec.template.spec.containers[0].image == "registry.example/web:1"
    )
    assert core.read_namespaced_config_map("cfg", namespace).data == {"A": "1"}
    assert f"reconciler: change {run_id} RolledBack (manual rollback)" in remote.log()
    assert "reason: ManualRollback" in remote.show(f"runs/change/{run_id}.yaml")
    again = cli("rollback", run_id, "--kubeconfig", kubeconfig)
    assert again.returncode == 1 and "already rolled back" in again.stderr
    assert "RolledBack" in cli("status", "--repo", str(remote.bare)).stdout


def test_plan_branches_show_what_merging_would_do_without_running_it(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    from daemonhelp import sh

    deployment(api, namespace, "web", replicas=1)
    live = "postgres://app:hunter2@db.internal/shop"  # in the cluster, never in git
    k8s.CoreV1Api(api).create_namespaced_config_map(
        namespace, {"metadata": {"name": "db"}, "data": {"DATABASE_URL": live, "POOL": "5"}}
    )
    daemons.append(
        Daemon(
            str(remote.bare),
            tmp_path / "work",
            kubeconfig,
            "--interval",
            "1",
            "--plan-branches",
            "plan/*",
        ).start()
    )
    sh("git", "checkout", "--quiet", "-b", "plan/scale-up", cwd=remote.clone)
    remote.write("workflows/scale.yaml", scale_workflow("pr-scale", namespace, 5))
    # an unsigned plan branch trying to read the cluster: a replace shows what it removes
    remote.write(
        "workflows/peek.yaml",
        workflow_yaml(
            "pr-peek",
            f"    - {{name: peek, action: UpdateConfigMap, target: {{namespace: {namespace},"
            " name: db}, params: {mode: replace, data: {POOL: '10'}}}\n",
        ),
    )
    sh("git", "add", "-A", cwd=remote.clone)
    sh("git", "commit", "--quiet", "-m", "proposal", cwd=remote.clone)
    sh("git", "push", "--quiet", "origin", "plan/scale-up", cwd=remote.clone)
    plan = wait_for(
        lambda: (
            sh("git", "show", "plan/scale-up:runs/plans/plan/scale-up/pr-scale.md", cwd=remote.bare)
            if "runs/plans"
            in sh("git", "ls-tree", "-r", "--name-only", "plan/scale-up", cwd=remote.bare)
            else None
        ),
        30,
        "plan committed to the branch",
    )
    assert "Nothing here was executed" in plan
    assert "start order:    scale" in plan
    assert (
        '-    "replicas": "<live value>",' in plan and '+    "replicas": 5,' in plan
    )  # the server's dry-run diff: what the workflow writes, never the live value
    peek = sh("git", "show", "plan/scale-up:runs/plans/plan/scale-up/pr-peek.md", cwd=remote.bare)
    assert '-    "DATABASE_URL": "<live value>"' in peek and '+    "POOL": "10"' in peek, peek
    assert "hunter2" not in peek and '"5"' not in peek
    assert read_deployment(api, namespace, "web").spec.replicas == 1  # nothing ran
    assert not record_commits(remote, "pr-scale")  # main untouched
    assert execution(api, "pr-scale") is None
