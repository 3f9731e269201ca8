"""forEach fan-out end to end (docs/fanout.md): workflows pushed to a real git remote, run
by the daemon as a subprocess against the control plane, judged by the live objects, the
record the daemon committed and the API server's audit log.

The nodes are kwok's (the annotation its controller selects on), made per test, labelled
with a pool that names the test and tainted so that no other test's pod lands on them: a
drain here evicts nothing of anyone else's."""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from auditlog import AuditLog, Life, check_applied_once, checkpoint_of, ended, peak_overlap
from auditlog import step_spans as audit_spans
from daemonhelp import Daemon, Remote, daemons, record_commits, remote, run_cli, unpadded  # noqa: F401
from figures import report
from kubehelp import (
    api,  # noqa: F401  (fixture)
    configmap,
    configmap_data,
    deployment,
    read_deployment,
    run_ids,
    wait_for,
)
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from reconciler.formats.escaping import markdown_text

POOL = "reconciler.dev/e2e-pool"  # the label the tests' selectors match
TAINT = {"key": "reconciler.dev/fanout-e2e", "value": "true", "effect": "NoSchedule"}


def workflow(name: str, steps: str, spec: str = "") -> str:
    return (
        f"apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: {name}}}\n"
        f"spec:\n{spec}  steps:\n{steps}"
    )


@pytest.fixture
def pool(api, namespace: str):
    """make(count, prefix): `count` Ready kwok nodes `<namespace>-<prefix>NN` labelled
    POOL=<namespace>, for this test alone; every one is deleted afterwards."""
    core = k8s.CoreV1Api(api)
    made: list[str] = []

    def make(count: int, prefix: str = "n") -> list[str]:
        names = [f"{namespace}-{prefix}{i:02d}" for i in range(count)]
        for name in names:
            core.create_node(
                {
                    "metadata": {
                        "name": name,
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "type": "kwok",
                            "reconciler.dev/e2e": "true",
                            POOL: namespace,
                        },
                    },
                    "spec": {"taints": [TAINT]},
                }
            )
            made.append(name)
        for name in names:
            wait_for(
                lambda n=name: any(
                    c.type == "Ready" and c.status == "True"
                    for c in (core.read_node(n).status.conditions or [])
                ),
                60,
                f"node {name} Ready",
            )
        return names

    yield make
    for name in made:
        with contextlib.suppress(ApiException):
            core.delete_node(name)


def labelled_deployment(api, namespace: str, name: str, labels: dict[str, str]) -> None:
    """A Deployment (one replica, rolled out) whose own metadata carries `labels`: what a
    Deployment selector matches (kubehelp's `labels` label only the pods)."""
    deployment(api, namespace, name, replicas=1)
    k8s.AppsV1Api(api).patch_namespaced_deployment(
        name, namespace, {"metadata": {"labels": labels}}
    )


def unschedulable(api, node: str) -> bool:
    return bool(k8s.CoreV1Api(api).read_node(node).spec.unschedulable)


def pushed_and_recorded(
    remote: Remote, daemons: list[Daemon], workdir: Path, kubeconfig: str, files: dict[str, str]
) -> Daemon:
    """A daemon on `remote`, then `files` (workflow name -> text) pushed in one commit."""
    daemon = Daemon(str(remote.bare), workdir, kubeconfig, "--interval", "3600").start()
    daemons.append(daemon)
    for name, text in files.items():
        remote.write(f"workflows/{name}.yaml", text)
    remote.commit_all("fan out: " + ", ".join(files))
    return daemon


def final_record(remote: Remote, name: str, timeout: float = 150) -> tuple[str, dict, str]:
    """The run id, YAML record and (unpadded) Markdown of `name`'s finished run."""
    subject = wait_for(
        lambda: [s for s in record_commits(remote, name) if " Running (" not in s],
        timeout,
        f"{name}'s final record",
    )[0]
    run_id = subject.split()[2]
    doc = yaml.safe_load(remote.show(f"runs/{name}/{run_id}.yaml") or "")
    return run_id, doc, unpadded(remote.show(f"runs/{name}/{run_id}.md") or "")


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in doc["steps"]}


def subs_of(doc: dict[str, Any], parent: str) -> list[dict[str, Any]]:
    return [s for s in doc["steps"] if s.get("parent") == parent]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def needs_audit(audit_log: Path | None) -> AuditLog:
    if audit_log is None:
        pytest.skip("the API server's audit log is the witness: needs the suite's own cluster")
    return AuditLog(audit_log)


def test_a_drain_of_ten_nodes_runs_two_at_a_time_and_cordons_every_one(
    api, namespace, kubeconfig, remote, daemons, pool, audit_log, tmp_path: Path
) -> None:
    """Ten nodes of a pool, drained two at a time: each cordoned in the live API; the record
    has ten sub-steps, in target order, whose own times never overlap more than two deep and
    do reach two (so do the API server's times); the parent's outputs reach a later step."""
    audit = needs_audit(audit_log)
    nodes = pool(10)
    configmap(api, namespace, "notes", {})
    name = f"drain-pool-{namespace[-8:]}"
    out = "${{ steps.drain.outputs.%s }}"
    steps = (
        "    - name: drain\n      action: DrainNode\n      target: {}\n"
        "      params: {gracePeriod: 0}\n      timeout: 60s\n"
        f"      forEach:\n        selector: {{kind: Node, labelSelector: '{POOL}={namespace}'}}\n"
        "        maxConcurrent: 2\n"
        f"    - name: note\n      action: UpdateConfigMap\n      dependsOn: [drain]\n"
        f"      target: {{namespace: {namespace}, name: notes}}\n"
        f"      params: {{data: {{targets: '{out % 'targets'}', succeeded: '{out % 'succeeded'}',"
        f" failed: '{out % 'failed'}'}}}}\n"
    )
    pushed_and_recorded(
        remote, daemons, tmp_path / "work", kubeconfig, {name: workflow(name, steps)}
    )
    run_id, doc, markdown = final_record(remote, name)
    assert doc["phase"] == "Succeeded", doc["message"]
    assert doc["message"] == "2/2 steps succeeded"  # targets are not steps

    # the live API: every node of the pool cordoned, the outputs written where referenced
    assert [n for n in nodes if not unschedulable(api, n)] == []
    assert configmap_data(api, namespace, "notes") == {
        "targets": "10",
        "succeeded": "10",
        "failed": "0",
    }

    # the record: the frozen targets, the measured peak, ten sub-steps in target order
    parent = by_name(doc)["drain"]
    assert parent["targets"] == nodes
    assert parent["peakConcurrent"] == 2
    assert parent["outputs"] == {"targets": 10, "succeeded": 10, "failed": 0}
    assert parent["message"] == "10/10 targets succeeded, at most 2 at once"
    subs = subs_of(doc, "drain")
    assert [(s["name"], s["target"]) for s in subs] == [(f"drain[{n}]", n) for n in nodes]
    assert all(s["phase"] == "Succeeded" and len(s["attempts"]) == 1 for s in subs), subs
    assert all(s["outputs"] == {"evictedPods": 0} for s in subs)  # each its action's own
    assert doc["executionOrder"] == ["drain", *(s["name"] for s in subs), "note"]
    # the overlap, measured from the sub-steps' own times in the record
    spans = [(when(s["started"]), when(s["finished"])) for s in subs]
    assert peak_overlap(spans) == 2, spans
    # ... and as the API server saw each sub-step's requests
    audit.settle(api)
    requests = audit.of_run(run_id)
    seen = audit_spans([r for r in requests if r.step in {s["name"] for s in subs}])
    assert sorted(seen) == sorted(s["name"] for s in subs)
    assert peak_overlap(list(seen.values())) == 2
    listed = [r for r in requests if r.op == "targets"]
    assert [(r.verb, r.resource, r.code) for r in listed] == [("list", "nodes", 200)]
    cordons = [r.name for r in requests if r.op == "apply" and r.resource == "nodes" and r.mutating]
    assert sorted(cordons) == nodes  # one cordon each

    # the Markdown: each target a row of the Steps table under its step
    for sub in subs:
        assert f"| {markdown_text('↳ ' + sub['name'])} | DrainNode | Succeeded | 1 |" in markdown
    took = (when(parent["finished"]) - when(parent["started"])).total_seconds()
    report(
        f"\nforEach: 10 kwok nodes drained 2 at a time in {took:.2f} s; at most 2 at once by"
        " the record's sub-step times, by the audit log's request times and by peakConcurrent"
    )


def test_an_error_budget_spent_fails_the_step_and_rollback_restores_newest_first(
    api, namespace, kubeconfig, remote, daemons, audit_log, tmp_path: Path
) -> None:
    """Seven items, one at a time, maxFailures "20%" (1 of 7: a percentage rounds down):
    three Deployments are scaled, the next two do not exist, so the budget is spent and the
    last two (which exist) are never started; rollback undoes the three scales newest
    first, then the step before them, and the live objects are as before."""
    audit = needs_audit(audit_log)
    real = ["app-1", "app-2", "app-3", "web-1", "web-2"]
    for d in real:
        deployment(api, namespace, d, replicas=1)
    configmap(api, namespace, "mark", {"STATE": "before"})
    name = f"budget-{namespace[-8:]}"
    steps = (
        f"    - name: mark\n      action: UpdateConfigMap\n"
        f"      target: {{namespace: {namespace}, name: mark}}\n"
        "      params: {data: {STATE: scaling}}\n"
        f"    - name: scale\n      action: ScaleDeployment\n      dependsOn: [mark]\n"
        f"      target: {{namespace: {namespace}}}\n      params: {{replicas: 2}}\n"
        "      timeout: 60s\n      forEach:\n"
        "        items: [web-2, gone-2, app-1, web-1, gone-1, app-3, app-2]\n"
        "        maxConcurrent: 1\n        maxFailures: '20%'\n"
    )
    pushed_and_recorded(
        remote, daemons, tmp_path / "work", kubeconfig, {name: workflow(name, steps)}
    )
    run_id, doc, markdown = final_record(remote, name)
    assert doc["phase"] == "RolledBack", doc["message"]
    steps_of = by_name(doc)
    parent = steps_of["scale"]
    assert parent["phase"] == "Failed"
    assert parent["targets"] == ["app-1", "app-2", "app-3", "gone-1", "gone-2", "web-1", "web-2"]
    missing = f"deployment {namespace}/gone-%s not found"
    assert parent["message"].startswith(
        f"2 target(s) failed, over maxFailures 20% (1 of 7): gone-1: {missing % 1}"
    ), parent["message"]
    assert f"gone-2: {missing % 2}" in parent["message"]
    assert parent["message"].endswith("; 3/7 targets succeeded, at most 1 at once")
    assert parent["outputs"] == {"targets": 7, "succeeded": 3, "failed": 2}
    phases = {s["target"]: (s["phase"], s.get("message")) for s in subs_of(doc, "scale")}
    assert phases == {
        "app-1": ("Succeeded", None),
        "app-2": ("Succeeded", None),
        "app-3": ("Succeeded", None),
        "gone-1": ("Failed", missing % 1),
        "gone-2": ("Failed", missing % 2),
        "web-1": ("Skipped", "not started: the error budget was spent"),
        "web-2": ("Skipped", "not started: the error budget was spent"),
    }
    scaled = [s for s in subs_of(doc, "scale") if s["phase"] == "Succeeded"]
    assert [s["outputs"] for s in scaled] == [{"previousReplicas": 1, "replicas": 2}] * 3
    # rollback: the sub-steps that changed, newest first, then the step before them
    order = ["scale[app-3]", "scale[app-2]", "scale[app-1]", "mark"]
    entries = doc["rollback"]["entries"]
    assert [(e["step"], e["result"]) for e in entries] == [(s, "Undone") for s in order]

    # the live API: restored (and the never-started targets never touched)
    for d in real:
        live = read_deployment(api, namespace, d)
        assert (d, live.spec.replicas, live.status.available_replicas) == (d, 1, 1)
    assert configmap_data(api, namespace, "mark") == {"STATE": "before"}
    # the API server saw the scales land, then the undos in the record's order
    audit.settle(api)
    requests = audit.of_run(run_id)
    applied = [r.step for r in requests if r.mutating and r.op == "apply" and r.code < 300]
    assert applied == ["mark", "scale[app-1]", "scale[app-2]", "scale[app-3]"]
    undos = [r.step for r in requests if r.mutating and r.op == "undo"]
    assert sorted(set(undos), key=undos.index) == order
    failed_at = max(r.completed for r in requests if r.step == "scale[gone-2]")
    assert all(r.received > failed_at for r in requests if r.op == "undo")
    assert not [r for r in requests if r.step in ("scale[web-1]", "scale[web-2]")]
    for target, (phase, _) in phases.items():
        assert f"| {markdown_text('↳ scale[' + target + ']')} | ScaleDeployment | {phase} |" in (
            markdown
        )


def test_a_selector_matching_nothing_fails_unless_allow_empty(
    api, namespace, kubeconfig, remote, daemons, tmp_path: Path
) -> None:
    """A node selector that matches nothing fails its step (and says so) before doing
    anything; a Deployment selector that matches nothing with allowEmpty: true succeeds
    with zero targets, and the step after it runs with those counts."""
    labelled_deployment(api, namespace, "web", {"tier": "web"})
    configmap(api, namespace, "notes", {})
    strict, lenient = f"empty-strict-{namespace[-8:]}", f"empty-ok-{namespace[-8:]}"
    nothing = f"{POOL}={namespace}-none"
    strict_steps = (
        "    - {name: drain, action: DrainNode, target: {},"
        f" forEach: {{selector: {{kind: Node, labelSelector: '{nothing}'}}}}}}\n"
    )
    lenient_steps = (
        f"    - {{name: scale, action: ScaleDeployment, target: {{namespace: {namespace}}},"
        " params: {replicas: 3}, forEach: {selector: {kind: Deployment, labelSelector:"
        " 'tier in (batch, cache)'}, allowEmpty: true}}\n"
        f"    - {{name: note, action: UpdateConfigMap, dependsOn: [scale],"
        f" target: {{namespace: {namespace}, name: notes}},"
        " params: {data: {scaled: '${{ steps.scale.outputs.targets }}'}}}\n"
    )
    pushed_and_recorded(
        remote,
        daemons,
        tmp_path / "work",
        kubeconfig,
        {strict: workflow(strict, strict_steps), lenient: workflow(lenient, lenient_steps)},
    )
    _, doc, markdown = final_record(remote, strict)
    said = (
        f"forEach: Node with labelSelector '{nothing}' matches nothing, so nothing was done;"
        " set allowEmpty: true if that is fine"
    )
    drain = by_name(doc)["drain"]
    assert (drain["phase"], drain["message"]) == ("Failed", said)
    assert doc["phase"] in ("Failed", "RolledBack") and said in doc["message"], doc["message"]
    assert subs_of(doc, "drain") == [] and "targets" not in drain
    assert markdown_text(said) in markdown

    _, doc, _ = final_record(remote, lenient)
    assert doc["phase"] == "Succeeded", doc["message"]
    scale = by_name(doc)["scale"]
    assert scale["message"] == "no targets matched; allowEmpty: true"
    assert scale["outputs"] == {"targets": 0, "succeeded": 0, "failed": 0}
    assert subs_of(doc, "scale") == []
    assert configmap_data(api, namespace, "notes") == {"scaled": "0"}
    assert read_deployment(api, namespace, "web").spec.replicas == 1


def test_plan_server_dry_run_lists_the_targets_each_selector_matches_now(
    api, namespace, kubeconfig, pool, tmp_path: Path
) -> None:
    """`plan --server-dry-run` lists what each forEach step matches now, as its own account
    sees it, with its concurrency and budget; an empty match is said; nothing changes."""
    nodes = pool(3)
    for d in ("api", "web"):
        labelled_deployment(api, namespace, d, {"tier": "front"})
    labelled_deployment(api, namespace, "batch", {"tier": "back"})
    path = tmp_path / "plan.yaml"
    path.write_text(
        workflow(
            f"plan-{namespace[-8:]}",
            "    - {name: drain, action: DrainNode, target: {}, forEach: {selector:"
            f" {{kind: Node, labelSelector: '{POOL}={namespace}'}}, maxConcurrent: 2,"
            " maxFailures: '50%'}}\n"
            f"    - {{name: scale, action: ScaleDeployment, target: {{namespace: {namespace}}},"
            " params: {replicas: 3}, forEach: {selector: {labelSelector: tier=front}}}\n"
            f"    - {{name: none, action: CordonNode, target: {{}}, forEach: {{selector:"
            f" {{labelSelector: '{POOL}={namespace}-none'}}}}}}\n",
        )
    )
    out = run_cli(
        "plan", "--server-dry-run", "--kubeconfig", kubeconfig, str(path), log_dir=tmp_path
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert (
        f"- drain (DrainNode, forEach): 3 target(s) now, 2 at once, up to 1 may fail:"
        f" {', '.join(nodes)}"
    ) in lines, out.stdout
    assert (
        "- scale (ScaleDeployment, forEach): 2 target(s) now, 1 at once, up to 0 may fail: api, web"
    ) in lines, out.stdout
    assert "- none (CordonNode, forEach): matches no target now: would fail" in lines
    assert [n for n in nodes if unschedulable(api, n)] == []
    assert [read_deployment(api, namespace, d).spec.replicas for d in ("api", "web")] == [1, 1]


def test_kill_9_mid_fan_out_the_restarted_daemon_finishes_the_frozen_set_once(
    api, namespace, kubeconfig, remote, daemons, pool, audit_log, tmp_path: Path
) -> None:
    """The daemon kills itself (-9) right after one target's cordon reached the API server,
    before its checkpoint said so. Meanwhile the pool changes: a new node joins it, one not
    yet cordoned leaves it. The restarted daemon does the set frozen at the start (the node
    that left is cordoned, the one that joined is not), never lists again, and writes no
    target its predecessor's checkpoint had finished; only the cut-short one is re-applied."""
    audit = needs_audit(audit_log)
    nodes = pool(6)
    name = f"fan-crash-{namespace[-8:]}"
    steps = (
        "    - {name: cordon, action: CordonNode, target: {}, forEach: {selector:"
        f" {{kind: Node, labelSelector: '{POOL}={namespace}'}}, maxConcurrent: 2}}}}\n"
    )
    remote.write(f"workflows/{name}.yaml", workflow(name, steps))
    remote.commit_all("a fan-out to be killed in the middle")
    workdir = tmp_path / "work"
    point = f"applied:cordon[{nodes[3]}]"
    first = Daemon(
        str(remote.bare), workdir, kubeconfig, "--interval", "3600", name="first", failpoints=point
    )
    daemons.append(first.start(wait_ready=False))
    first.died_at_failpoint(point, timeout=45)  # about 1 s here
    (run_id,) = run_ids(api, name)
    checkpoint = checkpoint_of(api, run_id)
    lives = [ended(Life(first.pid, f"first ({point})"), checkpoint)]
    assert checkpoint["steps"]["cordon"]["targets"] == nodes
    assert f"cordon[{nodes[3]}]" in lives[0].interrupted
    assert unschedulable(api, nodes[3])  # its cordon landed; the checkpoint does not know
    done_before = {s for s in lives[0].done if s.startswith("cordon[")}
    assert len(done_before) >= 2 and done_before <= {f"cordon[{n}]" for n in nodes[:5]}
    assert checkpoint["steps"][f"cordon[{nodes[5]}]"]["phase"] == "Pending"  # not started
    # the pool changes while no daemon runs
    (late,) = pool(1, prefix="late")
    core = k8s.CoreV1Api(api)
    core.patch_node(nodes[5], {"metadata": {"labels": {POOL: None}}})

    second = Daemon(str(remote.bare), workdir, kubeconfig, "--interval", "3600", name="second")
    daemons.append(second.start())
    lives.append(Life(second.pid, "second"))
    run_id_again, doc, _ = final_record(remote, name, timeout=120)
    assert run_id_again == run_id
    assert doc["phase"] == "Succeeded", doc["message"]
    parent = by_name(doc)["cordon"]
    assert parent["targets"] == nodes
    assert parent["outputs"] == {"targets": 6, "succeeded": 6, "failed": 0}
    assert 1 <= parent["peakConcurrent"] <= 2
    assert [s["phase"] for s in subs_of(doc, "cordon")] == ["Succeeded"] * 6
    assert [n for n in nodes if not unschedulable(api, n)] == []  # nodes[5] too: frozen
    assert not unschedulable(api, late)  # joined after the freeze: not a target

    audit.settle(api)
    requests = audit.of_run(run_id)
    listed = [r for r in requests if r.op == "targets"]
    assert [r.pid for r in listed] == [first.pid], [str(r) for r in listed]  # listed once
    counts = check_applied_once(requests, lives)
    reapplied = sorted(s for s, per_life in counts.items() if all(per_life))
    assert f"cordon[{nodes[3]}]" in reapplied and set(reapplied) <= lives[0].interrupted
    by_second = {r.step for r in requests if r.mutating and r.pid == second.pid}
    assert not by_second & lives[0].done, by_second & lives[0].done
    assert not [r for r in requests if r.name == late]
    report(
        f"\nforEach crash: kill -9 at {point}, {len(done_before)}/6 targets done in the"
        f" checkpoint; the restarted daemon did the other {6 - len(done_before)} of the frozen"
        f" set, listed nothing, re-applied only {', '.join(reapplied)} (cut short)"
    )
