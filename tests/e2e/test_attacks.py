"""Attacks on reconciler, tried as an attacker would, against the real control plane.

Each test is one threat of docs/security.md: what someone with a given foothold (push access
to the workflow repository, rights in one namespace, network access to the daemon) tries,
and what must stop them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
import subprocess
import time
from pathlib import Path

from daemonhelp import (
    Daemon,
    daemon_key,
    daemons,  # noqa: F401  (fixture)
    record_commits,
    remote,  # noqa: F401  (fixture)
    scale_workflow,
    webhook_daemon,
)
from kubehelp import (
    api,  # noqa: F401  (fixture)
    deployment,
    load,
    read_deployment,
    run_workflow,
    wait_for,
    workflow_yaml,
)
from kubernetes import client as k8s

from reconciler.actions.base import run_object_name
from reconciler.engine.record import RunPhase, StepPhase
from reconciler.formats.execution import daemon_labels, execution_body


def test_a_job_planted_under_a_runs_job_name_is_not_adopted(api, namespace) -> None:
    """A tenant of the target namespace creates, before the run, a Job with the name the
    run's Custom step will use (it is predictable from the workflow's content): the step
    must not adopt it, so the tenant decides neither whether the step succeeds nor what
    its log tail in the record says."""
    steps = f"""\
    - name: job
      action: Custom
      target: {{namespace: {namespace}}}
      params: {{image: 'busybox:1.36', command: [sh, -c, 'echo from the workflow']}}
      timeout: 60s
"""
    text = workflow_yaml("planted", steps)
    planted = run_object_name(load(text).run_id, "job")
    batch = k8s.BatchV1Api(api)
    batch.create_namespaced_job(
        namespace,
        {
            "metadata": {"name": planted},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "c", "image": "busybox:1.36", "args": ["planted output"]}
                        ],
                    }
                },
            },
        },
    )
    record = run_workflow(api, text)
    step = record.steps["job"]
    assert record.phase == RunPhase.FAILED
    assert step.phase == StepPhase.FAILED
    assert "is not this run's" in (step.message or "") and planted in (step.message or "")
    assert not step.result, "the planted Job's outcome reached the record"
    job = batch.read_namespaced_job(planted, namespace)
    assert not job.metadata.owner_references, "the planted Job was taken over"


def test_a_forged_execution_is_never_resumed(
    api, namespace, kubeconfig, remote, daemons, tmp_path
) -> None:
    """Someone who may create WorkflowExecutions (or an Apply step, before those were
    refused) plants one with the daemon's labels (computable from the repository URL),
    unfinished, whose workflow scales a Deployment: the next daemon to start would resume
    it with its own authority. It must refuse: the execution is not signed with the
    installation's key."""
    deployment(api, namespace, "web", replicas=1)
    forged = load(scale_workflow(f"forged-{namespace[-8:]}", namespace, 3))
    body = execution_body(forged, None, daemon_labels(str(remote.bare), "main"))
    body["metadata"]["finalizers"] = []
    objects = k8s.CustomObjectsApi(api)
    objects.create_cluster_custom_object("reconciler.dev", "v1alpha1", "workflowexecutions", body)
    try:
        daemon = Daemon(str(remote.bare), tmp_path / "work", kubeconfig, "--interval", "3600")
        daemons.append(daemon.start())
        wait_for(
            lambda: f"not resuming: workflowexecution {forged.run_id}" in daemon.logs(), 30, ""
        )
        assert "is not signed with this installation's key" in daemon.logs()
        time.sleep(3)  # a resumed run would have scaled by now
        assert read_deployment(api, namespace, "web").spec.replicas == 1
    finally:
        objects.delete_cluster_custom_object(
            "reconciler.dev", "v1alpha1", "workflowexecutions", forged.run_id
        )


def raw_http(port: int, request: bytes, wait: float = 5.0) -> bytes:
    """Send bytes as they are (no client library fixes them up) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as conn:
        conn.sendall(request)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def test_webhook_callers_cannot_flood_stall_or_replay_the_daemon(
    api, kubeconfig, remote, daemons, tmp_path
) -> None:
    """Whoever can reach the port: a negative or missing Content-Length (once read until
    the client closed, 400 MiB drove the process past its memory limit) is refused before
    any body is read; a client that sends half a request is cut off; a flood of idle
    connections is capped and the daemon still answers; a replayed body is refused; GitLab's
    token and Gitea's signature are understood."""
    secret = b"webhook-secret-e2e"
    daemon = webhook_daemon(remote, tmp_path, kubeconfig, secret)
    daemons.append(daemon)
    port = daemon.port
    head = b"POST /hooks/git HTTP/1.1\r\nHost: x\r\n"
    negative = raw_http(port, head + b"Content-Length: -1\r\n\r\n" + b"x" * 4096)
    assert negative.startswith(b"HTTP/1.0 400") or negative.startswith(b"HTTP/1.1 400")
    missing = raw_http(port, head + b"\r\n")
    assert b" 411 " in missing.split(b"\r\n")[0]
    chunked = raw_http(port, head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert b" 411 " in chunked.split(b"\r\n")[0]
    # half a request, then silence: the daemon closes the connection itself
    started = time.monotonic()
    stalled = raw_http(port, head + b"Content-Length: 100\r\n\r\n{", wait=30)
    assert stalled == b"" and time.monotonic() - started < 20
    # a flood of idle connections: the ones beyond the cap are closed, the daemon answers
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(80)]
    try:
        time.sleep(0.5)
        closed = 0
        for conn in idle:
            conn.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                if conn.recv(1) == b"":
                    closed += 1
        assert closed >= 80 - 32, f"only {closed} of 80 idle connections were refused"
    finally:
        for conn in idle:
            conn.close()
    wait_for(lambda: daemon.get("/healthz")[0] == 200, 15, "the daemon answers after the flood")
    # signed webhooks: GitHub's, replayed; Gitea's; GitLab's token
    body = json.dumps({"ref": "refs/heads/main", "after": "1" * 40}).encode()
    assert daemon.webhook(body, secret) == 202
    assert daemon.webhook(body, secret) == 409  # the same signed content again
    other = json.dumps({"ref": "refs/heads/main", "after": "2" * 40}).encode()
    gitea = hmac.new(secret, other, hashlib.sha256).hexdigest()
    assert daemon.post_hook(other, {"X-Gitea-Signature": gitea}) == 202
    third = json.dumps({"ref": "refs/heads/main", "after": "3" * 40}).encode()
    assert daemon.post_hook(third, {"X-Gitlab-Token": "wrong"}) == 401
    assert daemon.post_hook(third, {"X-Gitlab-Token": secret.decode()}) == 202


def test_an_unsigned_merge_cannot_make_a_signed_work_in_progress_commit_live(
    api, namespace, kubeconfig, remote, daemons, tmp_path
) -> None:
    """--verify-signatures: someone signed a work-in-progress change on a branch (web to
    3) that nobody merged. A pusher without the key merges main into it, unsigned, so that
    against its first parent (the signed commit) the merge changes only records, and pushes
    that as main: the merge touches the workflows against its other parent, so it is judged
    itself, refused, and nothing of the branch runs."""
    deployment(api, namespace, "web", replicas=1)
    key = tmp_path / "sre_ed25519"
    git = ("git", "-C", str(remote.clone))
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sre", "-f", str(key)], check=True
    )
    kind, public = (tmp_path / "sre_ed25519.pub").read_text().split()[:2]
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"sre@example.com {kind} {public}\n")
    for setting in (("gpg.format", "ssh"), ("user.signingkey", str(key))):
        subprocess.run([*git, "config", *setting], check=True)
    name = f"merged-{namespace[-8:]}"
    remote.write("workflows/w.yaml", scale_workflow(name, namespace, 2))
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-S", "-m", "signed: web to 2"], check=True)
    remote.push()
    signed_base = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
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
    )
    daemons.append(daemon.start())
    wait_for(lambda: record_commits(remote, name, "Succeeded"), 30, "the signed revision ran")
    # the branch starts below the daemon's record commits: merging main into it then
    # changes only records against the branch (its first parent)
    subprocess.run([*git, "checkout", "-q", "-b", "wip", signed_base], check=True)
    remote.write("workflows/w.yaml", scale_workflow(name, namespace, 3))
    subprocess.run(
        [*git, "commit", "-q", "-a", "-S", "-m", "WIP: web to 3, do not merge"], check=True
    )
    subprocess.run([*git, "fetch", "-q", "origin"], check=True)
    subprocess.run([*git, "merge", "-q", "--no-edit", "--no-ff", "origin/main"], check=True)
    merge = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run([*git, "push", "-q", "--force", "origin", "HEAD:main"], check=True)
    wait_for(lambda: merge in (remote.show("runs/_refused.md") or ""), 30, "the merge refused")
    time.sleep(3)  # a run of the branch would have scaled by now
    assert read_deployment(api, namespace, "web").spec.replicas == 2
    assert len(record_commits(remote, name)) == 2  # only the signed revision's two records


def test_a_push_of_many_large_compressible_files_is_refused_unread(
    api, kubeconfig, remote, daemons, tmp_path
) -> None:
    """Nine workflow files just under the 8 MiB file limit, a few KB once compressed in the
    push: the revision is over the 64 MiB revision limit, so nothing of it is read or run,
    the refusal is recorded in runs/_errors.md, and the daemon stays small and up. (Forty
    such files once took the daemon to 714 MB and 162 s of parsing on its event loop.)"""
    daemon = Daemon(str(remote.bare), tmp_path / "work", kubeconfig, "--interval", "3600")
    daemons.append(daemon.start())
    line = "# " + "x" * 1021 + "\n"  # 1 KiB of comment
    body = line * (8 * 1024 - 1)  # just under 8 MiB
    for i in range(9):
        remote.write(f"workflows/big-{i}.yaml", body)
    remote.commit_all("nine large files")
    wait_for(
        lambda: "over the 67,108,864 limit" in (remote.show("runs/_errors.md") or ""),
        60,
        "the revision refused",
    )
    rss_kib = int(
        next(
            line.split()[1]
            for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )
    )
    assert rss_kib < 200 * 1024, f"peak RSS {rss_kib // 1024} MiB"
    assert daemon.get("/healthz")[0] == 200
