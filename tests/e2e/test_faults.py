"""Faults around the daemon, with real processes (kill -9 of the daemon itself is
test_crash.py): a git remote that rejects the daemon's pushes, then disappears, then comes
back, while people push and the daemon is killed; a final record lost with its spool; a
slow remote; the API server down mid-run."""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from auditlog import AuditLog, Life, check_applied_once, checkpoint_of, ended
from daemonhelp import (  # noqa: F401  (fixtures)
    Daemon,
    Remote,
    daemons,
    leader_and_standby,
    record_commits,
    remote,
    run_at_step,
    scale_workflow,
    sh,
    webhook_daemon,
)
from figures import report
from kubehelp import (  # noqa: F401  (fixtures)
    api,
    deployment,
    execution,
    guarded_by_budget,
    own_node,
    read_deployment,
    run_ids,
    wait_for,
)

REJECT_DAEMON_PUSHES = (
    "#!/bin/sh\nwhile read old new ref; do\n"
    '  if [ -e {gate} ] && [ "$(git log -1 --format=%an $new)" = reconciler ]; then\n'
    "    echo 'remote says no' >&2; exit 1\n  fi\ndone\nexit 0\n"
)


def scale_web_to_two(api, remote, namespace: str, prefix: str, message: str) -> str:
    """Push a workflow that scales `web` to 2 and wait until the cluster shows it: the run
    happens whatever the remote does with the records. Returns the workflow's name."""
    name = f"{prefix}-{namespace[-8:]}"
    remote.write("workflows/w.yaml", scale_workflow(name, namespace, 2))
    remote.commit_all(message)
    wait_for(
        lambda: read_deployment(api, namespace, "web").spec.replicas == 2, 30, "the run happened"
    )
    return name


def push_retries(daemon: Daemon) -> float:
    metrics = daemon.get("/metrics")[1]
    found = re.search(r"^reconciler_record_push_retries_total (\S+)$", metrics, re.MULTILINE)
    assert found, "the push retry counter is not exported"
    return float(found.group(1))


def test_git_remote_down_then_rejecting_then_back_loses_nothing(
    api, namespace, kubeconfig, remote, daemons, audit_log, tmp_path: Path
) -> None:
    """The remote refuses the daemon's pushes (a pre-receive hook) and every
    non-fast-forward (receive.denyNonFastForwards: a force-push could not land either).
    Meanwhile a person pushes, the daemon is killed -9 and restarted, and the remote vanishes
    for a while. Once it accepts again, each record arrives exactly once, on top of the
    person's commit, and nothing runs twice."""
    deployment(api, namespace, "web", replicas=1)
    sh("git", "config", "receive.denyNonFastForwards", "true", cwd=remote.bare)
    hook = remote.bare / "hooks" / "pre-receive"
    gate = tmp_path / "reject"
    gate.touch()
    hook.write_text(REJECT_DAEMON_PUSHES.format(gate=gate))
    hook.chmod(0o755)
    workdir = tmp_path / "work"
    url = f"file://{remote.bare}"
    first = Daemon(url, workdir, kubeconfig, "--interval", "1", name="first").start()
    daemons.append(first)
    name = scale_web_to_two(api, remote, namespace, "offline", "offline run")
    wait_for(lambda: push_retries(first) > 0, 30, "refused pushes counted as retries")
    (run_id,) = run_ids(api, name)
    wait_for(
        lambda: (execution(api, run_id) or {}).get("status", {}).get("phase") == "Succeeded",
        30,
        "the run finished in the cluster",
    )
    wait_for(lambda: len(list((workdir / "spool").glob("*.json"))) >= 2, 10, "records spooled")
    refused_before_kill = push_retries(first)
    first.kill()  # -9, with its records only on disk
    lives = [ended(Life(first.pid, "first"), checkpoint_of(api, run_id))]
    second = Daemon(url, workdir, kubeconfig, "--interval", "1", name="second")
    daemons.append(second.start(wait_ready=False))
    wait_for(lambda: "from a previous run will be pushed" in second.logs(), 30, "spool recovered")
    lives.append(Life(second.pid, "second"))
    wait_for(lambda: push_retries(second) > 0, 30, "the restarted daemon's pushes refused")
    # a person pushes while the restarted daemon's records wait: they must land on top of it
    remote.write("docs/while-queued.md", "pushed while the daemon's records queue\n")
    theirs = remote.commit_all("a person's commit while records queue")
    assert not record_commits(remote, name), "a record got through the refusing remote"
    # the remote disappears altogether for a while
    moved = remote.bare.with_name("gone.git")
    remote.bare.rename(moved)
    wait_for(lambda: second.get("/readyz")[0] == 503, 15, "not ready without the remote")
    moved.rename(remote.bare)
    gate.unlink()  # and accepts the daemon's pushes again
    wait_for(lambda: len(record_commits(remote, name)) == 2, 90, "both records pushed")
    wait_for(lambda: second.get("/readyz")[0] == 200, 30, "ready again")
    time.sleep(2)  # a record pushed twice would follow at once
    assert [s.split()[3] for s in record_commits(remote, name)] == ["Succeeded", "Running"]
    # nothing force-pushed away: the person's commit is below the records
    sh("git", "merge-base", "--is-ancestor", theirs, "main", cwd=remote.bare)
    assert {"offline run", "a person's commit while records queue"} <= set(remote.log())
    audit = AuditLog(audit_log) if audit_log else None
    if audit is not None:
        audit.settle(api)
        check_applied_once(audit.of_run(run_id), lives)  # the second daemon ran nothing
    report(
        f"\ngit faults: {refused_before_kill:.0f} refused pushes before a kill -9,"
        f" {push_retries(second):.0f} after the restart; the spooled records pushed once each,"
        " on top of a person's commit (denyNonFastForwards on the remote)"
    )


def test_a_sync_that_failed_is_tried_again_soon_not_at_the_next_interval(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    """A webhook arrives while the remote is gone: the sync fails. The daemon polls once an
    hour and nothing else will tell it, so it must try again by itself (a backoff from 1 s)
    and run the push once the remote is back."""
    deployment(api, namespace, "web", replicas=1)
    secret = b"retry-secret"
    daemon = webhook_daemon(remote, tmp_path, kubeconfig, secret)
    daemons.append(daemon)
    name = f"retried-{namespace[-8:]}"
    remote.write("workflows/w.yaml", scale_workflow(name, namespace, 2))
    remote.commit_all("pushed while the daemon's remote fails")
    moved = remote.bare.with_name("gone.git")
    remote.bare.rename(moved)
    assert daemon.webhook(b'{"ref": "refs/heads/main"}', secret, delivery="r-1") == 202
    wait_for(lambda: daemon.get("/readyz")[0] == 503, 15, "the sync failed: not ready")
    moved.rename(remote.bare)
    back = time.monotonic()
    wait_for(
        lambda: read_deployment(api, namespace, "web").spec.replicas == 2,
        20,
        "the push run without another webhook",
    )
    report(
        f"a failed sync tried again: the push ran {time.monotonic() - back:.1f}s after the"
        " remote came back (--interval 3600)"
    )
    assert "git sync failed" in daemon.logs()
    wait_for(lambda: record_commits(remote, name, "Succeeded"), 30, "its record")


def test_final_record_lost_with_the_pod_is_written_from_the_checkpoint(
    api, namespace, kubeconfig, remote, daemons, audit_log, tmp_path: Path
) -> None:
    """The daemon dies after its run finished in the cluster but before its final record
    reached git, and its spool dies with it (a pod rescheduled: emptyDir gone). The next
    daemon must not re-run the workflow, and must write the final record from the
    WorkflowExecution's checkpoint, once."""
    deployment(api, namespace, "web", replicas=1)
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(  # the daemon's pushes are refused: its records stay in its spool
        "#!/bin/sh\nwhile read old new ref; do\n"
        '  if [ "$(git log -1 --format=%an $new)" = reconciler ]; then exit 1; fi\n'
        "done\nexit 0\n"
    )
    hook.chmod(0o755)
    name = f"lost-{namespace[-8:]}"
    remote.write("workflows/lost.yaml", scale_workflow(name, namespace, 2, "web"))
    remote.commit_all("a run whose records will be lost")
    first = Daemon(str(remote.bare), tmp_path / "work1", kubeconfig, "--interval", "3600")
    daemons.append(first.start())
    (run_id,) = wait_for(lambda: run_ids(api, name), 30, "the run's WorkflowExecution")
    wait_for(
        lambda: (execution(api, run_id) or {}).get("status", {}).get("phase") == "Succeeded",
        60,
        "the run finished in the cluster",
    )
    first.kill()
    lives = [ended(Life(first.pid, "first"), checkpoint_of(api, run_id))]
    assert not record_commits(remote, name), "the remote refused every record"
    generation = read_deployment(api, namespace, "web").metadata.generation
    # a daemon of another repository sharing the cluster leaves the run and its record alone
    (tmp_path / "other").mkdir()
    other = Remote(tmp_path / "other")
    stranger = Daemon(str(other.bare), tmp_path / "work-other", kubeconfig, "--interval", "3600")
    daemons.append(stranger.start())
    time.sleep(2)
    stranger.stop()
    assert other.log() == ["initial"] and run_id not in stranger.logs()
    hook.unlink()
    second = Daemon(str(remote.bare), tmp_path / "work2", kubeconfig, "--interval", "3600")
    daemons.append(second.start())
    lives.append(Life(second.pid, "second"))
    wait_for(lambda: record_commits(remote, name, "Succeeded"), 30, "the final record")
    time.sleep(2)  # a duplicate would follow at once
    assert len(record_commits(remote, name, "Succeeded")) == 1
    record = remote.show(f"runs/{name}/{run_id}.yaml")
    assert record is not None and record.count("phase: Succeeded") == 2  # the run, its step
    assert read_deployment(api, namespace, "web").metadata.generation == generation  # not re-run
    assert "written from its checkpoint" in second.logs()
    if audit_log is not None:
        audit = AuditLog(audit_log)
        audit.settle(api)
        requests = audit.of_run(run_id)
        check_applied_once(requests, lives)  # the second daemon wrote no step
        assert not [r for r in requests if r.pid == stranger.pid], "the stranger touched it"


def test_slow_git_remote_delays_records_not_runs(
    api, namespace, kubeconfig, remote, daemons, audit_log, tmp_path: Path
) -> None:
    """Every push of the daemon takes 4 s (a pre-receive hook): the three runs change the
    cluster before the first record push has even completed; their records arrive later,
    all of them, those that queued meanwhile together in one push."""
    for name in ("a", "b", "c"):
        deployment(api, namespace, name, replicas=1)
    pushes = tmp_path / "pushes"
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\nwhile read old new ref; do\n"
        '  if [ "$(git log -1 --format=%an $new)" = reconciler ]; then\n'
        f"    echo start $(date +%s.%N) >> {pushes}; sleep 4; echo end $(date +%s.%N) >> {pushes}\n"
        "  fi\n"
        "done\nexit 0\n"
    )
    hook.chmod(0o755)
    daemon = Daemon(str(remote.bare), tmp_path / "work", kubeconfig, "--interval", "3600").start()
    daemons.append(daemon)
    names = [f"slow-{n}-{namespace[-6:]}" for n in "abc"]
    for name, target in zip(names, "abc", strict=True):
        remote.write(f"workflows/{target}.yaml", scale_workflow(name, namespace, 2, target))
    remote.commit_all("three runs, slow remote")
    pushed = time.monotonic()

    def records() -> list[str]:
        return [s for s in remote.log() if s.split()[1:2] and s.split()[1] in names]

    wait_for(
        lambda: all(read_deployment(api, namespace, n).spec.replicas == 2 for n in "abc"),
        30,
        "all three runs changed the cluster",
    )
    seen_changed = time.time()
    ran = time.monotonic() - pushed
    wait_for(lambda: len(records()) == 6, 120, "every record (Running + final, three runs)")
    recorded = time.monotonic() - pushed
    assert sum(" Succeeded (" in s for s in records()) == 3
    log = [line.split() for line in pushes.read_text().splitlines()]
    first_push_done = min(float(t) for what, t in log if what == "end")
    changed = [seen_changed]  # when the test saw them; the audit log says when they landed
    if audit_log is not None:
        audit = AuditLog(audit_log)
        audit.settle(api)
        changed = [
            r.completed.timestamp()
            for name in names
            for r in audit.of_run(run_ids(api, name)[0])
            if r.step == "scale" and r.op == "apply" and r.mutating
        ]
        assert len(changed) == 3, changed
    assert max(changed) < first_push_done, "a run waited for a record push"
    count = sum(1 for what, _ in log if what == "start")
    assert count < 6, "records queued behind a slow push go out together"
    report(
        f"\nslow git remote (4 s a push): the 3 runs' patches all landed"
        f" {first_push_done - max(changed):.1f}s before the first record push completed"
        f" (cluster changed {ran:.1f}s after the user's push); all 6 records on the remote"
        f" after {recorded:.1f}s, in {count} pushes"
    )


def test_api_server_down_for_20s_mid_run_pauses_then_completes(
    api, namespace, kubeconfig, kwok_cluster, remote, daemons, own_node, tmp_path: Path
) -> None:
    if kwok_cluster is None:
        pytest.skip(
            "stopping the API server needs the suite's own kwok cluster, not an external one"
        )
    deployment(api, namespace, "web", replicas=1)
    relax_budget = guarded_by_budget(api, namespace, own_node)
    daemon = Daemon(str(remote.bare), tmp_path / "work", kubeconfig, "--interval", "3600").start()
    daemons.append(daemon)
    name = f"outage-{namespace[-8:]}"
    remote.write(
        "workflows/o.yaml",
        f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: {name}}}
spec:
  steps:
    - {{name: scale, action: ScaleDeployment, target: {{namespace: {namespace}, name: web}}, params: {{replicas: 2}}, timeout: 60s}}
    - {{name: drain, action: DrainNode, dependsOn: [scale], target: {{name: {own_node}}}, params: {{gracePeriod: 0}}, timeout: 4m}}
    - {{name: uncordon, action: UncordonNode, dependsOn: [drain], target: {{name: {own_node}}}}}
""",
    )
    remote.commit_all("outage")
    run_id = run_at_step(api, remote, name, "drain")
    stopped = time.monotonic()
    kwok_cluster.stop()
    try:
        wait_for(
            lambda: daemon.get("/readyz")[0] == 503, 15, "not ready while the API server is down"
        )
        time.sleep(max(0.0, 20 - (time.monotonic() - stopped)))
        assert daemon.proc.poll() is None  # the daemon rides it out
    finally:
        # start() waits until every component, node and lease is healthy again, so the
        # tests after this one find the cluster as this one found it
        kwok_cluster.start()
    wait_for(lambda: daemon.get("/readyz")[0] == 200, 60, "ready again")
    wait_for(lambda: _succeeds(relax_budget), 60, "PDB relaxed once the API is back")
    wait_for(
        lambda: any(s.startswith(f"reconciler: {name} {run_id} Succeeded") for s in remote.log()),
        120,
        "the run completed",
    )
    status = execution(api, run_id)["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "3/3"


def _succeeds(call) -> bool:
    try:
        call()
        return True
    except Exception:  # the API server is still coming back
        return False


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed process whose parent has not reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


HANG_DAEMON_PUSHES = (
    "#!/bin/sh\nwhile read old new ref; do\n"
    '  if [ "$(git log -1 --format=%an $new)" = reconciler ]; then\n'
    "    echo $$ >> {pids}\n"
    "    while [ -e {gate} ]; do sleep 0.2; done\n"
    "  fi\ndone\nexit 0\n"
)


def test_a_hung_remote_makes_the_daemon_unready_and_its_records_arrive_once_it_answers(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    """The remote takes the daemon's pushes and never answers (a pre-receive hook that
    hangs). The run goes on; each push is killed at --git-timeout (its whole process group,
    the hook included) and tried again; /readyz is 503 and says why; the daemon stays up.
    Once the remote answers, both records arrive, once each."""
    deployment(api, namespace, "web", replicas=1)
    gate, pids = tmp_path / "hang", tmp_path / "hook-pids"
    gate.touch()
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(HANG_DAEMON_PUSHES.format(gate=gate, pids=pids))
    hook.chmod(0o755)
    daemon = Daemon(
        str(remote.bare), tmp_path / "work", kubeconfig, "--interval", "2", "--git-timeout", "3"
    ).start()
    daemons.append(daemon)
    name = scale_web_to_two(api, remote, namespace, "hung", "a run while the remote hangs")
    wait_for(lambda: daemon.get("/readyz")[0] == 503, 30, "not ready while pushes hang")
    status, why = daemon.get("/readyz")
    assert status == 503 and "records cannot be pushed" in why and "no answer within 3s" in why
    wait_for(lambda: push_retries(daemon) >= 2, 30, "hung pushes killed and tried again")
    assert daemon.proc.poll() is None, "the daemon died on a hung push"
    assert not record_commits(remote, name)
    time.sleep(1)  # the newest push may still be inside its 3 s
    hook_pids = [int(p) for p in pids.read_text().split()]
    left = [pid for pid in hook_pids[:-1] if running(pid)]
    assert len(hook_pids) >= 2 and not left, f"killed pushes left their hooks running: {left}"
    gate.unlink()
    wait_for(lambda: len(record_commits(remote, name)) == 2, 60, "both records pushed")
    wait_for(lambda: daemon.get("/readyz")[0] == 200, 30, "ready again")
    time.sleep(2)  # a record pushed twice would follow at once
    assert [s.split()[3] for s in record_commits(remote, name)] == ["Succeeded", "Running"]
    report(
        f"\nhung remote: {push_retries(daemon):.0f} pushes killed at the 3 s --git-timeout;"
        " /readyz 503 meanwhile; both records pushed once the remote answered"
    )


def test_a_leader_frozen_past_its_lease_writes_nothing_once_it_thaws(
    api, namespace, kubeconfig, remote, daemons, own_node, audit_log, tmp_path: Path
) -> None:
    """The leader is frozen (SIGSTOP: a stalled node, a paused VM) mid-drain, its
    evictions refused by a PodDisruptionBudget and retried. The standby takes the lease and
    the run over. When the old leader thaws, its timers are all overdue and its drain is
    due to try again before it has noticed that it lost: the lease fences it, and the audit
    log shows no write of the run's from it after the thaw (reads may go out). It exits
    (2)."""
    if audit_log is None:
        pytest.skip("needs the e2e cluster's audit log (not an external cluster)")
    deployment(api, namespace, "web", replicas=1)
    relax_budget = guarded_by_budget(api, namespace, own_node)
    a, b = leader_and_standby(remote, tmp_path, kubeconfig, namespace)
    daemons.extend([a, b])
    remote.write(
        "workflows/frozen.yaml",
        f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: frozen}}
spec:
  steps:
    - {{name: drain, action: DrainNode, target: {{name: {own_node}}}, timeout: 5m}}
    - {{name: uncordon, action: UncordonNode, dependsOn: [drain], target: {{name: {own_node}}}}}
""",
    )
    remote.commit_all("a drain the budget blocks")
    run_id = run_at_step(api, remote, "frozen", "drain")
    os.kill(a.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: "resuming" in b.logs(), 60, "the standby took the run over")
        time.sleep(12)  # the old leader's eviction retry (at most 10 s apart) is now overdue
    finally:
        thawed = datetime.now(UTC)
        os.kill(a.pid, signal.SIGCONT)
    # leadership lost: exit 2, within the daemon's stop grace of 20 s (daemon/shutdown.py).
    # Its stop took over 30 s twice, and once over 90 s, on a loaded machine; if the grace
    # runs out, what still ran is in its log, and this test reports it
    assert a.proc.wait(timeout=60) == 2, a.logs()[-2000:]
    exited_in = (datetime.now(UTC) - thawed).total_seconds()
    hung = [line for line in a.logs().splitlines() if "the stop did not finish" in line]
    relax_budget()
    wait_for(lambda: record_commits(remote, "frozen", "Succeeded"), 90, "the standby finished")
    audit = AuditLog(audit_log)
    audit.settle(api)
    late = [
        r for r in audit.of_run(run_id) if r.pid == a.pid and r.mutating and r.received > thawed
    ]
    assert late == [], "the old leader wrote after it thawed:\n" + "\n".join(map(str, late))
    fenced = "not written: the lease was last renewed" in a.logs()
    report(
        "\nfrozen leader: thawed after the standby took over; no write of the run from it"
        f" after the thaw ({'its write was fenced' if fenced else 'it noticed the loss first'});"
        f" it exited {exited_in:.1f}s after the thaw"
        + (f"; ITS STOP HUNG until the grace ran out: {hung[0]}" if hung else "")
    )
