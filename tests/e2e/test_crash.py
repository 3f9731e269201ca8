"""kill -9 of the daemon, at named points and at random ones, across a 10-step run and across
a rollback; every process that worked on the run is judged by the API server's audit log.

Named points are the daemon killing itself where a crash hurts most (reconciler/failpoints.py:
a step's apply sent but not checkpointed, a run finished but its record not spooled, a
record pushed but the spool not told, an undo sent but not checkpointed). Random kills come
from outside, each one only after the new process has resumed the run and moved it past the
previous kill, a random moment into a step. After the last restart: the run finished once,
each step was applied once as far as the checkpoints allow (auditlog.check_applied_once),
and every target is exactly as the workflow says.
"""

from __future__ import annotations

import base64
import os
import random
import time
from pathlib import Path

import pytest
from auditlog import AuditLog, Life, check_applied_once, checkpoint_of, ended
from daemonhelp import Daemon, daemons, remote  # noqa: F401  (fixtures)
from figures import report
from kubehelp import (  # noqa: F401  (fixtures)
    api,
    execution,
    own_node,
    read_deployment,
    run_ids,
    secret,
    wait_for,
)
from kubernetes import client as k8s

from reconciler.formats.packing import unpack

KILLS = int(os.environ.get("RECONCILER_CRASH_KILLS", "5"))  # random kills a round, at most 11
ROUNDS = int(os.environ.get("RECONCILER_CRASH_ROUNDS", "1"))  # make soak: 6
# One process per point, in run order; each kills itself there. The comment says what is
# durable at that moment and what the next process must do about it.
NAMED_POINTS = (
    "captured:s1",  # a capture checkpointed, nothing applied: apply it (the first time)
    "applied:s2",  # an image patch sent, not checkpointed: re-apply it, once
    "waited:s3",  # a ConfigMap merged and seen, Succeeded not written: re-apply (a no-op)
    "captured:s4",  # the capture Secret of UpdateSecret made: never make it again
    "applied:s5",  # a cordon sent: re-apply once
    "waited:s6",  # an uncordon seen: re-apply once
    "applied:s7",  # a Job created: re-creating it gets 409, and counts as the one re-apply
    "applied:s9",  # a server-side apply sent
    "waited:s10",  # the last step done in the cluster, not in the checkpoint
    "finished",  # the run's final checkpoint written, its final record not spooled
    "pushed",  # that record (written from the checkpoint) pushed, the spool not told
)
ROLLBACK_POINTS = ("undone:r6", "undone:r4", "undone:r2", "undone:r1")


def header(name: str) -> str:
    return (
        "apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\n"
        f"metadata: {{name: {name}}}\nspec:\n  timeout: 10m\n  steps:\n"
    )


def four_changes(ns: str, p: str) -> str:
    """Steps {p}1-{p}4, a chain: replicas, image, a ConfigMap merge, a Secret from another."""
    return f"""\
    - {{name: {p}1, action: ScaleDeployment, target: {{namespace: {ns}, name: a}}, params: {{replicas: 2}}, timeout: 60s}}
    - {{name: {p}2, action: UpdateImage, dependsOn: [{p}1], target: {{namespace: {ns}, name: a}}, params: {{container: app, image: "registry.example/a:2"}}, timeout: 60s}}
    - {{name: {p}3, action: UpdateConfigMap, dependsOn: [{p}2], target: {{namespace: {ns}, name: cfg}}, params: {{data: {{K: "2"}}}}}}
    - {{name: {p}4, action: UpdateSecret, dependsOn: [{p}3], target: {{namespace: {ns}, name: sec}}, params: {{fromSecret: {{name: sec-new}}}}}}
"""


def ten_steps(ns: str, node: str, name: str) -> str:
    return (
        header(name)
        + four_changes(ns, "s")
        + f"""\
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
    )


def seven_steps_then_a_failure(ns: str, node: str, name: str) -> str:
    """Six reversible changes, then a step that fails (its Deployment does not exist):
    rollback undoes r6 .. r1, in that order."""
    return (
        header(name)
        + four_changes(ns, "r")
        + f"""\
    - name: r5
      action: Apply
      dependsOn: [r4]
      params: {{manifest: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: applied, namespace: {ns}}}, data: {{X: "1"}}}}}}
    - {{name: r6, action: CordonNode, dependsOn: [r5], target: {{name: {node}}}}}
    - {{name: r7, action: ScaleDeployment, dependsOn: [r6], target: {{namespace: {ns}, name: missing}}, params: {{replicas: 2}}, timeout: 60s}}
"""
    )


class Targets:
    """What the crash workflows change, created fresh for each test, and their exact state."""

    def __init__(self, api, namespace: str, node: str) -> None:
        from kubehelp import deployment

        self.api, self.ns, self.node = api, namespace, node
        self.core = k8s.CoreV1Api(api)
        deployment(api, namespace, "a", replicas=1)
        deployment(api, namespace, "b", replicas=1)
        self.core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "cfg"}, "data": {"K": "1"}}
        )
        self.core.create_namespaced_secret(
            namespace, {"metadata": {"name": "sec"}, "stringData": {"K": secret("crash-orig-e2e")}}
        )
        self.core.create_namespaced_secret(
            namespace,
            {"metadata": {"name": "sec-new"}, "stringData": {"K": secret("crash-new-e2e")}},
        )

    def secret_value(self, name: str) -> str:
        data = self.core.read_namespaced_secret(name, self.ns).data or {}
        return base64.b64decode(data["K"]).decode()

    def deployment(self, name: str) -> tuple[int, str]:
        d = read_deployment(self.api, self.ns, name)
        return d.spec.replicas, d.spec.template.spec.containers[0].image

    def configmap(self, name: str) -> dict[str, str] | None:
        found = self.core.list_namespaced_config_map(
            self.ns, field_selector=f"metadata.name={name}"
        )
        return (found.items[0].data or {}) if found.items else None

    def unschedulable(self) -> bool:
        return bool(self.core.read_node(self.node).spec.unschedulable)

    def assert_ten_steps_applied(self, run_id: str) -> None:
        assert self.deployment("a") == (2, "registry.example/a:2")
        assert self.deployment("b") == (2, "registry.example/b:2")
        assert self.configmap("cfg") == {"K": "2"}
        assert self.secret_value("sec") == "crash-new-e2e"
        assert self.configmap("applied") == {"X": "1"}
        assert not self.unschedulable()  # cordoned by s5, uncordoned by s6
        jobs = k8s.BatchV1Api(self.api).list_namespaced_job(
            self.ns, label_selector=f"reconciler.dev/run-id={run_id}"
        )
        assert [j.metadata.labels["reconciler.dev/step"] for j in jobs.items] == ["s7"]

    def assert_rolled_back(self) -> None:
        assert self.deployment("a") == (1, "registry.example/app:1.0")
        assert self.configmap("cfg") == {"K": "1"}
        assert self.secret_value("sec") == "crash-orig-e2e"
        assert self.configmap("applied") is None  # r5 created it, its undo deleted it
        assert not self.unschedulable()


def final_records(remote, name: str) -> list[str]:
    return [
        s for s in remote.log() if s.startswith(f"reconciler: {name} ") and " Running (" not in s
    ]


def needs_audit(audit_log: Path | None) -> AuditLog:
    if audit_log is None:
        pytest.skip("the API server's audit log is the witness: needs the suite's own cluster")
    return AuditLog(audit_log)


def lives_at_named_points(
    api, remote, kubeconfig: str, daemons, workdir: Path, name: str, points: tuple[str, ...]
) -> list[Life]:
    """One daemon per point, each killing itself there; the checkpoint each left."""
    lives = []
    for i, point in enumerate(points):
        d = Daemon(
            str(remote.bare),
            workdir,
            kubeconfig,
            "--interval",
            "3600",
            name=f"life{i}",
            failpoints=point,
        )
        daemons.append(d.start(wait_ready=False))
        d.died_at_failpoint(point)
        ids = run_ids(api, name)
        lives.append(
            ended(Life(d.pid, f"life {i} ({point})"), checkpoint_of(api, ids[0]) if ids else {})
        )
    return lives


def last_life(remote, kubeconfig: str, daemons, workdir: Path, name: str) -> Life:
    """A daemon without failpoints that finishes the run and pushes what is left."""
    d = Daemon(str(remote.bare), workdir, kubeconfig, "--interval", "3600", name="last")
    daemons.append(d.start())
    wait_for(lambda: final_records(remote, name), 120, "the final record after the last restart")
    wait_for(
        lambda: not list((workdir / "spool").glob("*.json")), 60, "the last daemon's spool empty"
    )
    return Life(d.pid, "the last life")


def test_kill_9_at_named_points_applies_each_step_once(
    api, namespace, kubeconfig, remote, daemons, own_node, audit_log, tmp_path: Path
) -> None:
    audit = needs_audit(audit_log)
    targets = Targets(api, namespace, own_node)
    name = f"named-{namespace[-8:]}"
    remote.write("workflows/crashy.yaml", ten_steps(namespace, own_node, name))
    remote.commit_all("ten steps, to be killed at every named point")
    workdir = tmp_path / "work"
    lives = lives_at_named_points(api, remote, kubeconfig, daemons, workdir, name, NAMED_POINTS)
    assert lives[-2].phase == "Succeeded"  # 'finished' was reached after the final checkpoint
    lives.append(last_life(remote, kubeconfig, daemons, workdir, name))
    (run_id,) = run_ids(api, name)
    status = execution(api, run_id)["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "10/10"
    time.sleep(1)  # a duplicate record would follow at once
    (final,) = final_records(remote, name)
    assert f" {run_id} Succeeded (10/10 steps" in final
    audit.settle(api)
    counts = check_applied_once(audit.of_run(run_id), lives)
    reapplied = sorted(s for s, per_life in counts.items() if sum(1 for c in per_life if c) > 1)
    # each point that cut a step short after its capture made the next life re-apply it
    assert reapplied == ["s10", "s2", "s3", "s5", "s6", "s7", "s9"], counts
    targets.assert_ten_steps_applied(run_id)
    record = remote.show(f"runs/{name}/{run_id}.yaml")
    assert record.count("phase: Succeeded") == 11  # the run and every step, none lost
    assert "crash-new-e2e" not in record and "crash-orig-e2e" not in record
    report(
        f"\ncrash test, named points: {len(NAMED_POINTS)} kill -9 at {', '.join(NAMED_POINTS)};"
        f" re-applied once each: {', '.join(reapplied)}; no other step written twice"
    )


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_kill_9_at_random_points_finishes_with_each_step_once(
    round_: int, api, namespace, kubeconfig, remote, daemons, own_node, audit_log, tmp_path: Path
) -> None:
    audit = needs_audit(audit_log)
    targets = Targets(api, namespace, own_node)
    rng = random.Random(f"{os.environ.get('RECONCILER_CRASH_SEED', '7')}-{round_}")
    workdir = tmp_path / "work"
    name = f"crashy-{namespace[-8:]}"  # unique: the cluster may hold earlier sessions' runs
    remote.write("workflows/crashy.yaml", ten_steps(namespace, own_node, name))
    remote.commit_all("crashy")
    # kill points: after k finished steps, for distinct random k (0: before any step
    # finished; 10: the run finished in the cluster, its final record perhaps not in git)
    wanted = sorted(rng.sample(range(0, 11), min(KILLS, 11)))
    lives: list[Life] = []
    killed_at: list[int] = []

    def progress() -> int:
        ids = run_ids(api, name)
        status = (execution(api, ids[0]) or {}).get("status", {}) if ids else {}
        return int(status.get("progress", "0/10").split("/")[0])

    while True:
        later = [k for k in wanted if k > (killed_at[-1] if killed_at else -1)]
        if not later or final_records(remote, name):
            break
        d = Daemon(
            str(remote.bare), workdir, kubeconfig, "--interval", "3600", name=f"d{len(lives)}"
        )
        daemons.append(d.start(wait_ready=False))
        # not a start-up kill: this process must have taken the run up itself
        began = "run Running" if not lives else "resuming"
        wait_for(
            lambda t=later[0], d=d, began=began: (
                (began in d.logs() and progress() >= t) or final_records(remote, name)
            ),
            90,
            f"progress {later[0]} in {d.name}",
            interval=0.05,
        )
        time.sleep(rng.uniform(0, 0.4))  # somewhere into the next step, not on its boundary
        d.kill()
        ids = run_ids(api, name)
        record = checkpoint_of(api, ids[0]) if ids else {}
        lives.append(ended(Life(d.pid, f"d{len(lives)}"), record))
        killed_at.append(progress())
    assert killed_at == sorted(set(killed_at)), f"kill points not distinct: {killed_at}"
    lives.append(last_life(remote, kubeconfig, daemons, workdir, name))
    (run_id,) = run_ids(api, name)
    status = execution(api, run_id)["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "10/10"
    time.sleep(1)
    assert len(final_records(remote, name)) == 1
    audit.settle(api)
    counts = check_applied_once(audit.of_run(run_id), lives)
    interrupted = [sorted(life.interrupted) for life in lives[:-1]]
    targets.assert_ten_steps_applied(run_id)
    record = remote.show(f"runs/{name}/{run_id}.yaml")
    assert record.count("phase: Succeeded") == 11
    assert "crash-new-e2e" not in record and "crash-orig-e2e" not in record
    reapplied = sorted(s for s, per_life in counts.items() if sum(1 for c in per_life if c) > 1)
    report(
        f"\ncrash test, random points (round {round_}): {len(killed_at)} kill -9 at progress"
        f" {[f'{k}/10' for k in killed_at]} (aimed at {wanted}), steps in flight {interrupted};"
        f" re-applied once: {reapplied or 'none'}"
    )


def test_kill_9_mid_rollback_undoes_each_step_once(
    api, namespace, kubeconfig, remote, daemons, own_node, audit_log, tmp_path: Path
) -> None:
    audit = needs_audit(audit_log)
    targets = Targets(api, namespace, own_node)
    name = f"undo-{namespace[-8:]}"
    remote.write("workflows/undo.yaml", seven_steps_then_a_failure(namespace, own_node, name))
    remote.commit_all("six changes and a failure, killed during the rollback")
    workdir = tmp_path / "work"
    lives = lives_at_named_points(api, remote, kubeconfig, daemons, workdir, name, ROLLBACK_POINTS)
    assert all(life.phase == "RollingBack" for life in lives)
    lives.append(last_life(remote, kubeconfig, daemons, workdir, name))
    (run_id,) = run_ids(api, name)
    assert execution(api, run_id)["status"]["phase"] == "RolledBack"
    time.sleep(1)
    (final,) = final_records(remote, name)
    assert f" {run_id} RolledBack " in final
    record = checkpoint_of(api, run_id)
    assert [(e["step"], e["result"]) for e in record["rollback"]["entries"]] == [
        (f"r{i}", "Undone") for i in range(6, 0, -1)
    ]
    audit.settle(api)
    requests = audit.of_run(run_id)
    check_applied_once(requests, lives)
    undo_lives = {
        step: [
            sum(
                1
                for r in requests
                if r.mutating and r.op == "undo" and r.step == step and r.pid == life.pid
            )
            for life in lives
        ]
        for step in ("r1", "r2", "r3", "r4", "r5", "r6")
    }
    # the undos cut short by a kill were sent again by the next life; the others once
    for step, per_life in undo_lives.items():
        expected = 2 if f"undone:{step}" in ROLLBACK_POINTS else 1
        assert sum(1 for c in per_life if c) == expected, (step, per_life)
    undo_order = [r.step for r in requests if r.mutating and r.op == "undo"]
    assert sorted(set(undo_order), key=undo_order.index) == ["r6", "r5", "r4", "r3", "r2", "r1"]
    assert not [r for r in requests if r.mutating and r.step == "r7"]  # it changed nothing
    targets.assert_rolled_back()
    report(
        f"\ncrash test, rollback: {len(ROLLBACK_POINTS)} kill -9 at {', '.join(ROLLBACK_POINTS)};"
        " RolledBack, undos in reverse order, each cut-short undo sent again once, every"
        " target restored"
    )


def test_inline_secret_values_stay_out_of_the_execution_and_survive_kill_9(
    api, namespace, kubeconfig, remote, daemons, audit_log, tmp_path: Path
) -> None:
    """A value written inline in the workflow (UpdateSecret `data`: the user's choice to
    keep it in git) must not reach the cluster-scoped WorkflowExecution, which people who may
    not read that Secret can read; a restarted daemon must still apply the value itself.
    Killed once after creating the execution but before keeping the values (the run is
    forgotten and starts again from git), once after the step's capture."""
    audit = needs_audit(audit_log)
    core = k8s.CoreV1Api(api)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "db"}, "stringData": {"K": secret("inline-orig-e2e")}}
    )
    value = secret("inline-rotated-e2e", in_git=True)  # in the workflow file, nowhere else
    name = f"inline-{namespace[-8:]}"
    remote.write(
        "workflows/inline.yaml",
        f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: {name}}}
spec:
  steps:
    - {{name: rotate, action: UpdateSecret, target: {{namespace: {namespace}, name: db}}, params: {{data: {{K: {value}}}}}}}
""",
    )
    remote.commit_all("rotate with an inline value")
    workdir = tmp_path / "work"
    lives = lives_at_named_points(
        api, remote, kubeconfig, daemons, workdir, name, ("created", "captured:rotate")
    )
    lives.append(last_life(remote, kubeconfig, daemons, workdir, name))
    (run_id,) = run_ids(api, name)
    data = core.read_namespaced_secret("db", namespace).data
    assert base64.b64decode(data["K"]).decode() == value  # the value, not its digest
    assert "never started" in daemons[1].logs()  # life 1 forgot the run life 0 created
    we = execution(api, run_id)
    packed = [we["spec"]["manifest"], we["status"]["record"]]
    for text in [str(we), *(str(unpack(p)) for p in packed)]:
        assert value not in text and base64.b64encode(value.encode()).decode() not in text
    ref = we["spec"]["inputs"]
    kept = core.read_namespaced_secret(ref.split("/")[1], ref.split("/")[0])
    assert [o.uid for o in kept.metadata.owner_references] == [we["metadata"]["uid"]]
    audit.settle(api)
    check_applied_once(audit.of_run(run_id), lives)  # life 0 never got to the step
    record = remote.show(f"runs/{name}/{run_id}.yaml")
    assert value not in record and "inline-orig-e2e" not in record
