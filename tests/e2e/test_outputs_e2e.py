"""Step outputs, `${{ }}` references and `when` end to end (docs/outputs.md): workflows
pushed to a real git remote, run by the daemon as a subprocess against the control plane;
judged by the live objects, the API server's audit log and the record the daemon committed.
The Custom steps' containers run on the real node: their termination message is what the
kubelet read from /dev/termination-log, so this file is in the Makefile's E2E_FIRST."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import yaml
from auditlog import AuditLog
from daemonhelp import Daemon, Remote, daemons, record_commits, remote, unpadded  # noqa: F401
from kubehelp import (
    api,  # noqa: F401  (fixture)
    configmap,
    configmap_data,
    deployment,
    execution,
    read_deployment,
    secret,
    wait_for,
)
from kubernetes import client as k8s
from realnode import LABEL, TAINT, jobs_image

from reconciler.actions.base import run_object_name


def workflow(name: str, steps: str, spec: str = "") -> str:
    return (
        f"apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: {name}}}\n"
        f"spec:\n{spec}  steps:\n{steps}"
    )


def custom_step(name: str, namespace: str, script: str, outputs: str, deps: str = "") -> str:
    """A Custom step whose container runs `script` with sh on the real node."""
    return (
        f"    - name: {name}\n      action: Custom\n{deps}"
        f"      target: {{namespace: {namespace}}}\n      timeout: 120s\n      params:\n"
        f"        image: '{jobs_image()}'\n"
        f"        command: [sh, -c, {json.dumps(script)}]\n"
        f"        outputs: {outputs}\n"
        f"        nodeSelector: {{{LABEL[0]}: '{LABEL[1]}'}}\n"
        f"        tolerations: [{{key: {TAINT['key']}, operator: Exists}}]\n"
    )


def run_through_the_daemon(
    remote: Remote, daemons, tmp_path: Path, kubeconfig: str, name: str, text: str, phase: str
) -> tuple[str, dict[str, Any], str]:
    """Start a daemon on `remote`, push `text` as workflows/<name>.yaml and wait for the
    run's final record commit, which must say `phase`: the run id, the YAML record, the
    Markdown (its tables unpadded)."""
    daemon = Daemon(str(remote.bare), tmp_path / "work", kubeconfig, "--interval", "3600")
    daemons.append(daemon.start())
    remote.write(f"workflows/{name}.yaml", text)
    remote.commit_all(f"{name}: try step outputs")
    subject = wait_for(
        lambda: [s for s in record_commits(remote, name) if " Running (" not in s],
        150,
        f"{name}'s final record",
    )[0]
    run_id = subject.split()[2]
    doc = yaml.safe_load(remote.show(f"runs/{name}/{run_id}.yaml") or "")
    assert doc["phase"] == phase, (subject, doc["message"])
    markdown = unpadded(remote.show(f"runs/{name}/{run_id}.md") or "")
    return run_id, doc, markdown


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in doc["steps"]}


def test_outputs_flow_into_later_steps_and_a_false_when_skips_a_step_whose_dependents_run(
    api, namespace, kubeconfig, remote, daemons, audit_log, tmp_path: Path
) -> None:
    """up (web 2 -> 4) gives previousReplicas 2: `match` scales api to it (an integer kept
    an integer) and verifies it with a CEL literal; `note` writes it, a sentence made of
    outputs and an input, and a Secret step's count into a ConfigMap; `surge`'s `when` is
    false (4 > 5), so it is Skipped and never touches api; `after`, which depends on it
    alone, still runs and uses `note`'s output through it."""
    deployment(api, namespace, "web", replicas=2)
    deployment(api, namespace, "api", replicas=1)
    configmap(api, namespace, "notes", {})
    core = k8s.CoreV1Api(api)
    password = secret(f"pw-outputs-e2e-{uuid.uuid4().hex[:12]}", in_git=True)
    original = secret(f"orig-outputs-e2e-{uuid.uuid4().hex[:12]}")
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "db"}, "stringData": {"PASSWORD": original}}
    )
    at = f"target: {{namespace: {namespace}, name: "
    previous = "${{ steps.up.outputs.previousReplicas }}"
    steps = (
        f"    - {{name: up, action: ScaleDeployment, {at}web}}, params: {{replicas: 4}},"
        " timeout: 60s}\n"
        f"    - name: match\n      action: ScaleDeployment\n      dependsOn: [up]\n"
        f"      {at}api}}\n      params: {{replicas: '{previous}'}}\n      timeout: 60s\n"
        "      verify:\n        - name: api-at-previous\n          kubernetes:\n"
        f"            condition: 'object.spec.replicas == {previous}"
        f" && object.status.readyReplicas == {previous}'\n          timeout: 30s\n"
        # (no initialDelay: its default once broke resolving a step with a check)
        f"    - {{name: rotate, action: UpdateSecret, {at}db}},"
        f" params: {{data: {{PASSWORD: {password}}}}}}}\n"
        f"    - name: note\n      action: UpdateConfigMap\n      dependsOn: [match, rotate]\n"
        f"      {at}notes}}\n      params:\n        data:\n"
        f"          previousReplicas: '{previous}'\n"
        f"          summary: 'web {previous} -> ${{{{ steps.up.outputs.replicas }}}}"
        " by ${{ inputs.team }}'\n"
        "          secretKeysChanged: '${{ steps.rotate.outputs.changedKeys }}'\n"
        f"    - {{name: surge, action: ScaleDeployment, dependsOn: [note], {at}api}},"
        " params: {replicas: 9}, when: 'steps.up.outputs.replicas > inputs.ceiling'}\n"
        f"    - {{name: after, action: UpdateConfigMap, dependsOn: [surge], {at}notes}},"
        " params: {data: {after: 'after ${{ steps.note.outputs.changedKeys }} keys'}}}\n"
    )
    text = workflow("outputs-flow", steps, "  inputs: {team: sre, ceiling: 5}\n")
    run_id, doc, markdown = run_through_the_daemon(
        remote, daemons, tmp_path, kubeconfig, "outputs-flow", text, "Succeeded"
    )

    # the cluster: each value arrived where it was referenced, the skipped step did nothing
    assert read_deployment(api, namespace, "web").spec.replicas == 4
    api_now = read_deployment(api, namespace, "api")
    assert api_now.spec.replicas == 2 and api_now.status.ready_replicas == 2  # not 9
    notes = core.read_namespaced_config_map("notes", namespace)
    assert notes.data == {
        "previousReplicas": "2",
        "summary": "web 2 -> 4 by sre",
        "secretKeysChanged": "1",
        "after": "after 3 keys",
    }
    live = core.read_namespaced_secret("db", namespace).data["PASSWORD"]
    assert base64.b64decode(live).decode() == password

    # the YAML record: typed outputs per step, the Skipped step and why
    assert doc["message"] == "5/6 steps succeeded, 1 skipped by their `when`"
    steps_of = by_name(doc)
    assert steps_of["up"]["outputs"] == {"previousReplicas": 2, "replicas": 4}
    assert steps_of["match"]["outputs"] == {"previousReplicas": 1, "replicas": 2}
    (check,) = steps_of["match"]["checks"]
    assert check["verdict"] == "Passed"
    assert check["condition"] == "object.spec.replicas == 2 && object.status.readyReplicas == 2"
    rotate = steps_of["rotate"]["outputs"]
    assert set(rotate) == {"resourceVersion", "changedKeys"} and rotate["changedKeys"] == 1
    assert rotate["resourceVersion"].isdigit()
    assert steps_of["note"]["outputs"]["changedKeys"] == 3
    # the resourceVersion the API server gave the last write of the ConfigMap
    assert steps_of["after"]["outputs"] == {
        "resourceVersion": notes.metadata.resource_version,
        "changedKeys": 1,
    }
    surge = steps_of["surge"]
    assert surge["phase"] == "Skipped" and surge["skippedByWhen"] is True
    assert surge["message"] == "when: steps.up.outputs.replicas > inputs.ceiling was false"
    assert "outputs" not in surge and "attempts" not in surge
    assert steps_of["after"]["phase"] == "Succeeded"
    assert "surge" not in doc["executionOrder"]

    # the Markdown report: an Outputs section, the step said Skipped by its when
    assert "## Outputs" in markdown
    for row in (
        "| up | `previousReplicas` | `2` |",
        "| up | `replicas` | `4` |",
        "| rotate | `changedKeys` | `1` |",
        "| note | `changedKeys` | `3` |",
    ):
        assert row in markdown, row
    assert "| surge | ScaleDeployment | Skipped (when) |" in markdown
    assert "Skipped by its when" in markdown  # the graph's legend of the step

    # a Secret's value is nowhere in what was committed for the run
    for committed in (yaml.safe_dump(doc), markdown):
        assert password not in committed and original not in committed
    status = execution(api, run_id)["status"]
    assert (status["phase"], status["progress"]) == ("Succeeded", "5/6")  # succeeded steps
    if audit_log is not None:  # the skipped step sent nothing at all, as the API server saw
        audit = AuditLog(audit_log)
        audit.settle(api)
        requests = audit.of_run(run_id)
        assert not [r for r in requests if r.step == "surge"]
        assert any(r.step == "after" and r.mutating for r in requests)


def test_a_custom_steps_termination_message_gives_its_outputs_to_later_steps(
    api, namespace, kubeconfig, remote, daemons, real_node, tmp_path: Path
) -> None:
    """The container writes a JSON object to /dev/termination-log, its host name (its
    pod's name) among the values: a later step scales to its integer, another, whose `when`
    holds on its boolean and number, writes its values into a ConfigMap."""
    deployment(api, namespace, "web", replicas=1)
    configmap(api, namespace, "probe-notes", {})
    script = (
        'echo measuring lag; printf \'{"lag": 3, "host": "%s", "healthy": false,'
        ' "ratio": 0.25}\' "$(hostname)" > /dev/termination-log'
    )
    probe = "steps.probe.outputs"
    steps = (
        custom_step(
            "probe",
            namespace,
            script,
            "{lag: integer, host: string, healthy: boolean, ratio: number}",
        )
        + f"    - {{name: scale, action: ScaleDeployment, dependsOn: [probe],"
        f" target: {{namespace: {namespace}, name: web}},"
        f" params: {{replicas: '${{{{ {probe}.lag }}}}'}}, timeout: 60s}}\n"
        f"    - name: note\n      action: UpdateConfigMap\n      dependsOn: [probe]\n"
        f"      when: '!{probe}.healthy && {probe}.ratio < 0.5'\n"
        f"      target: {{namespace: {namespace}, name: probe-notes}}\n"
        "      params:\n        data:\n"
        f"          host: '${{{{ {probe}.host }}}}'\n"
        f"          healthy: '${{{{ {probe}.healthy }}}}'\n"
        f"          ratio: '${{{{ {probe}.ratio }}}}'\n"
        f"          summary: 'lag ${{{{ {probe}.lag }}}}s on ${{{{ {probe}.host }}}}'\n"
    )
    text = workflow("custom-outputs", steps)
    run_id, doc, markdown = run_through_the_daemon(
        remote, daemons, tmp_path, kubeconfig, "custom-outputs", text, "Succeeded"
    )
    job = run_object_name(run_id, "probe")
    (pod,) = (
        k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    )
    assert pod.spec.node_name == real_node.name
    ended = pod.status.container_statuses[0].state.terminated
    assert ended.exit_code == 0
    written = {"lag": 3, "host": pod.metadata.name, "healthy": False, "ratio": 0.25}
    assert json.loads(ended.message) == written  # what the kubelet read from the file

    steps_of = by_name(doc)
    assert steps_of["probe"]["outputs"] == written
    assert "measuring lag" in steps_of["probe"]["result"]["logTail"]
    assert read_deployment(api, namespace, "web").spec.replicas == 3
    assert steps_of["scale"]["outputs"] == {"previousReplicas": 1, "replicas": 3}
    assert steps_of["note"]["phase"] == "Succeeded"
    assert configmap_data(api, namespace, "probe-notes") == {
        "host": pod.metadata.name,
        "healthy": "false",
        "ratio": "0.25",
        "summary": f"lag 3s on {pod.metadata.name}",
    }
    assert f'| probe | `host` | `"{pod.metadata.name}"` |' in markdown
    assert "| probe | `healthy` | `false` |" in markdown


def test_a_custom_step_whose_termination_message_is_not_json_fails_and_the_run_rolls_back(
    api, namespace, kubeconfig, remote, daemons, real_node, tmp_path: Path
) -> None:
    """The container exits 0 but writes `lag=3`: the step fails, saying what it wrote and
    how to write outputs; the step that would use them never runs; the scale before it is
    undone."""
    deployment(api, namespace, "web", replicas=1)
    steps = (
        f"    - {{name: up, action: ScaleDeployment, target: {{namespace: {namespace},"
        " name: web}, params: {replicas: 2}, timeout: 60s}\n"
        + custom_step(
            "probe",
            namespace,
            "echo probing; printf 'lag=3' > /dev/termination-log",
            "{lag: integer}",
            "      dependsOn: [up]\n",
        )
        + f"    - {{name: use, action: ScaleDeployment, dependsOn: [probe],"
        f" target: {{namespace: {namespace}, name: web}},"
        " params: {replicas: '${{ steps.probe.outputs.lag }}'}}\n"
    )
    text = workflow("custom-not-json", steps)
    run_id, doc, markdown = run_through_the_daemon(
        remote, daemons, tmp_path, kubeconfig, "custom-not-json", text, "RolledBack"
    )
    job = run_object_name(run_id, "probe")
    (pod,) = (
        k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    )
    ended = pod.status.container_statuses[0].state.terminated
    assert (ended.exit_code, ended.message) == (0, "lag=3")  # it ran, and said something else

    steps_of = by_name(doc)
    probe = steps_of["probe"]
    assert probe["phase"] == "Failed" and "outputs" not in probe
    assert (
        f"outputs: job {job}'s container wrote 'lag=3' as its termination message, not a JSON"
        " object; write one (e.g. echo '{\"lag\": 3}' > /dev/termination-log) as its last act"
    ) in probe["message"], probe["message"]
    use = steps_of["use"]  # cut by the failure, not by a `when`: it never started
    assert use["phase"] == "Skipped" and "skippedByWhen" not in use and "attempts" not in use
    assert [(e["step"], e["result"]) for e in doc["rollback"]["entries"]] == [
        ("probe", "Irreversible"),
        ("up", "Undone"),
    ]
    assert read_deployment(api, namespace, "web").spec.replicas == 1
    assert "## Rollback" in markdown and "not a JSON object" in markdown
