"""Faults with real processes (issue 7): kill -9 of the daemon at random points across a
10-step run; a git remote that disappears, then rejects pushes, then comes back."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
from daemonhelp import (  # noqa: F401  (fixtures)
    Daemon,
    Remote,
    daemons,
    record_commits,
    remote,
    run_at_step,
    scale_workflow,
    sh,
)
from figures import report
from kubehelp import api, deployment, execution, own_node, read_deployment, secret, wait_for  # noqa: F401
from kubernetes import client as k8s

KILLS = int(os.environ.get("RECONCILER_CRASH_KILLS", "5"))  # per round, at most 11
ROUNDS = int(os.environ.get("RECONCILER_CRASH_ROUNDS", "1"))  # make soak: 6 rounds = 30 kills


def ten_steps(ns: str, node: str, name: str) -> str:
    return f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: {name}}}
spec:
  timeout: 10m
  steps:
    - {{name: s1, action: ScaleDeployment, target: {{namespace: {ns}, name: a}}, params: {{replicas: 2}}, timeout: 60s}}
    - {{name: s2, action: UpdateImage, dependsOn: [s1], target: {{namespace: {ns}, name: a}}, params: {{container: app, image: "registry.example/a:2"}}, timeout: 60s}}
    - {{name: s3, action: UpdateConfigMap, dependsOn: [s2], target: {{namespace: {ns}, name: cfg}}, params: {{data: {{K: "2"}}}}}}
    - {{name: s4, action: UpdateSecret, dependsOn: [s3], target: {{namespace: {ns}, name: sec}}, params: {{fromSecret: {{name: sec-new}}}}}}
    - {{name: s5, action: CordonNode, dependsOn: [s4], target: {{name: {node}}}}}
    - {{name: s6, action: UncordonNode, dependsOn: [s5], target: {{name: {node}}}}}
    - name: s7
      action: Custom
      dependsOn: [s6]
      target: {{namespace: {ns}}}
      params: {{image: busybox, command: [sh, -c, "echo counted"]}}
      timeout: 60s
    - {{name: s8, action: ScaleDeployment, dependsOn: [s7], target: {{namespace: {ns}, name: b}}, params: {{replicas: 2}}, timeout: 60s}}
    - name: s9
      action: Apply
      dependsOn: [s8]
      params: {{manifest: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: applied, namespace: {ns}}}, data: {{X: "1"}}}}}}
    - {{name: s10, action: UpdateImage, dependsOn: [s9], target: {{namespace: {ns}, name: b}}, params: {{container: app, image: "registry.example/b:2"}}, timeout: 60s}}
"""


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_kill_9_at_random_points_finishes_with_each_step_once(
    round_: int, api, namespace, kubeconfig, remote, daemons, own_node, tmp_path: Path
) -> None:
    core = k8s.CoreV1Api(api)
    deployment(api, namespace, "a", replicas=1)
    deployment(api, namespace, "b", replicas=1)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"K": "1"}})
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "sec"}, "stringData": {"K": secret("crash-orig-e2e")}}
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "sec-new"}, "stringData": {"K": secret("crash-new-e2e")}}
    )
    gen = {d: read_deployment(api, namespace, d).metadata.generation for d in ("a", "b")}
    rng = random.Random(f"{os.environ.get('RECONCILER_CRASH_SEED', '7')}-{round_}")
    workdir = tmp_path / "work"
    name = f"crashy-{namespace[-8:]}"  # unique: the cluster may hold earlier sessions' runs
    remote.write("workflows/crashy.yaml", ten_steps(namespace, own_node, name))
    remote.commit_all("crashy")
    kills, progress_at_kill = 0, []
    # kill points: after k finished steps, for KILLS distinct random k (0 = before any step;
    # 10 = the run finished in the cluster, its final record perhaps not yet in git)
    points = sorted(rng.sample(range(0, 11), min(KILLS, 11)))

    def finished() -> bool:
        return any(s.startswith(f"reconciler: {name} ") and "Succeeded" in s for s in remote.log())

    def progress() -> int:
        runs = _run_ids(api, name)
        status = (execution(api, runs[0]) or {}).get("status", {}) if runs else {}
        return int(status.get("progress", "0/10").split("/")[0])

    while not finished():
        d = Daemon(
            str(remote.bare), workdir, kubeconfig, "--interval", "3600", name=f"d{kills}"
        ).start(wait_ready=False)
        daemons.append(d)
        if kills < len(points):
            target = points[kills]
            wait_for(
                lambda t=target: progress() >= t or finished(),
                60,
                f"progress {target}",
                interval=0.05,
            )
            d.kill()
            progress_at_kill.append(f"{progress()}/10")
            kills += 1
        else:
            wait_for(finished, 120, "run finished after the last restart")
    report(f"\ncrash test: {kills} kill -9 at progress {progress_at_kill}, then the run finished")
    (run_id,) = _run_ids(api, name)
    status = execution(api, run_id)["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "10/10"
    assert (
        len([s for s in remote.log() if s.startswith(f"reconciler: {name} {run_id} Succeeded")])
        == 1
    )
    for deploy, expected in (
        ("a", 2),
        ("b", 2),
    ):  # scale + image each: two spec changes, never more
        assert read_deployment(api, namespace, deploy).metadata.generation == gen[deploy] + expected
    jobs = (
        k8s.BatchV1Api(api)
        .list_namespaced_job(namespace, label_selector=f"reconciler.dev/run-id={run_id}")
        .items
    )
    assert len(jobs) == 1
    record = remote.show(f"runs/{name}/{run_id}.yaml")
    assert record.count("phase: Succeeded") == 11  # the run and every step, none lost
    assert "crash-new-e2e" not in record and "crash-orig-e2e" not in record


def _run_ids(api, workflow: str) -> list[str]:
    items = k8s.CustomObjectsApi(api).list_cluster_custom_object(
        "reconciler.dev",
        "v1alpha1",
        "workflowexecutions",
        label_selector=f"reconciler.dev/workflow={workflow}",
    )["items"]
    return [i["metadata"]["name"] for i in items]


def test_git_remote_down_then_rejecting_then_back_loses_nothing(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    deployment(api, namespace, "web", replicas=1)
    daemon = Daemon(
        f"file://{remote.bare}", tmp_path / "work", kubeconfig, "--interval", "1"
    ).start()
    daemons.append(daemon)
    remote.write(
        "workflows/w.yaml",
        f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: offline}}
spec:
  steps:
    - {{name: s, action: ScaleDeployment, target: {{namespace: {namespace}, name: web}}, params: {{replicas: 2}}, timeout: 60s}}
""",
    )
    # The remote rejects the daemon's pushes (pre-receive hook on the author) until the test
    # says otherwise: records must queue, and people's pushes still land.
    hook = remote.bare / "hooks" / "pre-receive"
    gate = tmp_path / "reject"
    gate.touch()
    hook.write_text(
        "#!/bin/sh\nwhile read old new ref; do\n"
        f'  if [ -e {gate} ] && [ "$(git log -1 --format=%an $new)" = reconciler ]; then\n'
        "    echo 'remote says no' >&2; exit 1\n  fi\ndone\nexit 0\n"
    )
    hook.chmod(0o755)
    remote.commit_all("offline run")
    wait_for(
        lambda: read_deployment(api, namespace, "web").spec.replicas == 2, 30, "the run happened"
    )
    time.sleep(3)
    assert not any(s.startswith("reconciler: offline") for s in remote.log())  # nothing got through
    assert "reconciler_record_push_retries_total" in daemon.get("/metrics")[1]
    # the remote disappears altogether for a while
    moved = remote.bare.with_name("gone.git")
    remote.bare.rename(moved)
    time.sleep(3)
    assert daemon.get("/readyz")[0] == 503
    moved.rename(remote.bare)
    gate.unlink()  # and accepts pushes again
    wait_for(
        lambda: len([s for s in remote.log() if s.startswith("reconciler: offline")]) == 2,
        90,
        "records pushed",
    )
    assert daemon.get("/readyz")[0] == 200
    subjects = remote.log()
    assert "offline run" in subjects  # nothing force-pushed away


def test_final_record_lost_with_the_pod_is_written_from_the_checkpoint(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
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
    (run_id,) = wait_for(lambda: _run_ids(api, name), 30, "the run's WorkflowExecution")
    wait_for(
        lambda: (execution(api, run_id) or {}).get("status", {}).get("phase") == "Succeeded",
        60,
        "the run finished in the cluster",
    )
    first.kill()
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
    wait_for(lambda: record_commits(remote, name, "Succeeded"), 30, "the final record")
    time.sleep(2)  # a duplicate would follow at once
    assert len(record_commits(remote, name, "Succeeded")) == 1
    record = remote.show(f"runs/{name}/{run_id}.yaml")
    assert record is not None and record.count("phase: Succeeded") == 2  # the run, its step
    assert read_deployment(api, namespace, "web").metadata.generation == generation  # not re-run
    assert "written from its checkpoint" in second.logs()


def test_slow_git_remote_delays_records_not_runs(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    """Every push of the daemon takes 4 s (a pre-receive hook): three runs still change the
    cluster at once; their records arrive later, all of them, those that queued meanwhile
    together in one push."""
    for name in ("a", "b", "c"):
        deployment(api, namespace, name, replicas=1)
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\nwhile read old new ref; do\n"
        '  if [ "$(git log -1 --format=%an $new)" = reconciler ]; then\n'
        f"    echo push >> {tmp_path / 'pushes'}; sleep 4\n"
        "  fi\n"
        "done\nexit 0\n"
    )
    hook.chmod(0o755)
    daemon = Daemon(str(remote.bare), tmp_path / "work", kubeconfig, "--interval", "3600").start()
    daemons.append(daemon)
    for name in ("a", "b", "c"):
        remote.write(f"workflows/{name}.yaml", scale_workflow(f"slow-{name}", namespace, 2, name))
    remote.commit_all("three runs, slow remote")
    pushed = time.monotonic()

    def records() -> list[str]:
        return [s for s in remote.log() if s.startswith("reconciler: slow-")]

    wait_for(
        lambda: all(read_deployment(api, namespace, n).spec.replicas == 2 for n in "abc"),
        30,
        "all three runs changed the cluster",
    )
    ran = time.monotonic() - pushed
    assert len(records()) < 6, "the runs waited for the slow remote"
    wait_for(lambda: len(records()) == 6, 120, "every record (Running + final, three runs)")
    recorded = time.monotonic() - pushed
    assert sum(" Succeeded (" in s for s in records()) == 3
    pushes = (tmp_path / "pushes").read_text().count("push")
    assert pushes < 6, "records queued behind a slow push go out together"
    report(
        f"\nslow git remote (4 s a push): 3 runs changed the cluster {ran:.1f}s after the push;"
        f" all 6 records on the remote after {recorded:.1f}s, in {pushes} pushes"
    )


def test_api_server_down_for_20s_mid_run_pauses_then_completes(
    api, namespace, kubeconfig, kwok_cluster, remote, daemons, own_node, tmp_path: Path
) -> None:
    if kwok_cluster is None:
        pytest.skip(
            "stopping the API server needs the suite's own kwok cluster, not an external one"
        )
    deployment(api, namespace, "web", replicas=1)
    deployment(api, namespace, "guarded", replicas=2, node=own_node)
    policy = k8s.PolicyV1Api(api)
    policy.create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": "guarded"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "guarded"}}},
        },
    )
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
    wait_for(lambda: _relax(policy, namespace), 60, "PDB relaxed once the API is back")
    wait_for(
        lambda: any(s.startswith(f"reconciler: {name} {run_id} Succeeded") for s in remote.log()),
        120,
        "the run completed",
    )
    status = execution(api, run_id)["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "3/3"


def _relax(policy, namespace: str) -> bool:
    try:
        policy.patch_namespaced_pod_disruption_budget(
            "guarded", namespace, {"spec": {"minAvailable": 0}}
        )
        return True
    except Exception:
        return False
