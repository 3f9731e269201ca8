"""The seed's integration tests and more, on the real control plane (issue 4): workflows run
through the real engine, real actions and a real WorkflowExecution; the cluster is checked."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from pathlib import Path

import pytest
from auditlog import AuditLog, peak_overlap, step_spans
from kubehelp import (
    api,  # noqa: F401  (fixture)
    captured_state,
    configmap,
    configmap_data,
    deployment,
    execution,
    image_of,
    read_deployment,
    run_workflow,
    secret,
    wait_for,
    workflow_yaml,
)
from kubernetes import client as k8s
from kubernetes import watch

from reconciler.actions.base import run_object_name
from reconciler.engine.record import RunPhase, StepPhase, UndoResult
from reconciler.formats.packing import unpack
from reconciler.formats.run_record import record_document


def scale(name: str, target: str, ns: str, replicas: int, deps: str = "") -> str:
    return (
        f"    - name: {name}\n      action: ScaleDeployment\n{deps}"
        f"      target: {{namespace: {ns}, name: {target}}}\n      params: {{replicas: {replicas}}}\n"
        "      timeout: 90s\n"
    )


def needs_audit(audit_log: Path | None) -> AuditLog:
    if audit_log is None:
        pytest.skip("order and overlap are read from the API server's audit log: own cluster")
    return AuditLog(audit_log)


def test_br_workflow_002_diamond_on_real_deployments(api, namespace, audit_log) -> None:
    """Order and overlap as the API server saw them: step-2 and step-3 start after step-1's
    last request and run at the same time; step-4 starts after both are done."""
    audit = needs_audit(audit_log)
    deployment(api, namespace, "web", replicas=1)
    deployment(api, namespace, "api", replicas=1)
    configmap(api, namespace, "web-config", {"MODE": "old"})
    steps = (
        scale("step-1", "web", namespace, 3)
        + f"    - name: step-2\n      action: UpdateImage\n      dependsOn: [step-1]\n"
        f"      target: {{namespace: {namespace}, name: web}}\n"
        "      params: {container: app, image: 'registry.example/app:2.0'}\n"
        + f"    - name: step-3\n      action: UpdateConfigMap\n      dependsOn: [step-1]\n"
        f"      target: {{namespace: {namespace}, name: web-config}}\n      params: {{data: {{MODE: new}}}}\n"
        + scale("step-4", "api", namespace, 2, "      dependsOn: [step-2, step-3]\n")
    )
    record = run_workflow(api, workflow_yaml("diamond", steps, "  maxConcurrent: 2\n"))
    assert record.phase == RunPhase.SUCCEEDED, record.message
    audit.settle(api)
    span = step_spans(audit.of_run(record.run_id))
    one, two, three, four = (span[f"step-{i}"] for i in range(1, 5))
    assert one[1] < two[0] and one[1] < three[0], "step-2/3 began before step-1 was done"
    assert two[0] < three[1] and three[0] < two[1], "step-2 and step-3 did not overlap"
    assert two[1] < four[0] and three[1] < four[0], "step-4 began before step-2 and step-3"
    assert read_deployment(api, namespace, "web").status.ready_replicas == 3
    assert image_of(api, namespace, "web") == "registry.example/app:2.0"
    assert configmap_data(api, namespace, "web-config") == {"MODE": "new"}
    assert read_deployment(api, namespace, "api").status.available_replicas == 2
    we = execution(api, record.run_id)
    assert we["status"]["phase"] == "Succeeded" and we["status"]["progress"] == "4/4"
    assert we["metadata"].get("finalizers") in (None, [])


def test_br_workflow_003_parallel_limit_on_real_deployments(api, namespace, audit_log) -> None:
    """Six independent steps, maxConcurrent 2: as the API server saw them, exactly two at a
    time at the busiest moment (not one: they really run in parallel; never three)."""
    audit = needs_audit(audit_log)
    steps = ""
    for i in range(6):
        deployment(api, namespace, f"svc-{i}", replicas=1)
        steps += scale(f"scale-{i}", f"svc-{i}", namespace, 2)
    record = run_workflow(api, workflow_yaml("parallel", steps, "  maxConcurrent: 2\n"))
    assert record.phase == RunPhase.SUCCEEDED, record.message
    audit.settle(api)
    spans = step_spans(audit.of_run(record.run_id))
    assert sorted(spans) == [f"scale-{i}" for i in range(6)]
    assert peak_overlap(list(spans.values())) == 2
    for i in range(6):
        assert read_deployment(api, namespace, f"svc-{i}").status.available_replicas == 2


def test_br_workflow_013_rollback_cascade_restores_the_cluster(api, namespace, audit_log) -> None:
    """Three steps that really change the cluster (replicas, image, a ConfigMap that exists),
    then one that fails: each change is seen in the cluster, then undone in reverse order."""
    audit = needs_audit(audit_log)
    deployment(api, namespace, "shop", replicas=2, image="registry.example/shop:1.0")
    configmap(api, namespace, "shop-config", {"TTL": "60"})
    steps = (
        scale("scale", "shop", namespace, 4)
        + f"    - name: image\n      action: UpdateImage\n      dependsOn: [scale]\n"
        f"      target: {{namespace: {namespace}, name: shop}}\n"
        "      params: {container: app, image: 'registry.example/shop:2.0'}\n"
        + f"    - name: config\n      action: UpdateConfigMap\n      dependsOn: [image]\n"
        f"      target: {{namespace: {namespace}, name: shop-config}}\n      params: {{data: {{TTL: '30'}}}}\n"
        + scale("fail", "shop-missing", namespace, 3, "      dependsOn: [config]\n")
    )
    seen: list[dict[str, str]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=watch_data, args=(api, namespace, "shop-config", seen, stop))
    watcher.start()
    try:
        record = run_workflow(api, workflow_yaml("cascade", steps))
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert record.phase == RunPhase.ROLLED_BACK
    assert record.steps["fail"].phase == StepPhase.FAILED
    assert f"deployment {namespace}/shop-missing not found" in record.steps["fail"].message
    assert [(e.step, e.result) for e in record.rollback.entries] == [
        ("config", UndoResult.UNDONE),
        ("image", UndoResult.UNDONE),
        ("scale", UndoResult.UNDONE),
    ]
    # the ConfigMap really changed, then went back
    assert {"TTL": "30"} in seen and seen[-1] == {"TTL": "60"}, seen
    audit.settle(api)
    requests = audit.of_run(record.run_id)
    applied = [r.step for r in requests if r.mutating and r.op == "apply" and r.code == 200]
    assert applied == ["scale", "image", "config"]
    undone = [r.step for r in requests if r.mutating and r.op == "undo"]
    assert undone == ["config", "image", "scale"]
    failed_at = max(r.completed for r in requests if r.step == "fail")
    assert all(r.received > failed_at for r in requests if r.op == "undo")
    d = read_deployment(api, namespace, "shop")
    assert d.spec.replicas == 2 and d.status.available_replicas == 2
    assert image_of(api, namespace, "shop") == "registry.example/shop:1.0"
    assert configmap_data(api, namespace, "shop-config") == {"TTL": "60"}
    assert execution(api, record.run_id)["status"]["phase"] == "RolledBack"


def watch_data(api, namespace: str, name: str, seen: list, stop: threading.Event) -> None:
    """Every `data` the ConfigMap had, as a watch delivered it, until `stop`; each short
    watch resumes at the resourceVersion the last one reached, so no change falls between."""
    core = k8s.CoreV1Api(api)
    version = None
    while not stop.is_set():
        w = watch.Watch()
        for event in w.stream(
            core.list_namespaced_config_map,
            namespace,
            field_selector=f"metadata.name={name}",
            timeout_seconds=2,
            **({"resource_version": version} if version else {}),
        ):
            data = event["object"].data or {}
            if not seen or seen[-1] != data:
                seen.append(data)
        version = w.resource_version


def test_secret_values_never_reach_the_record_and_owned_objects_go_with_the_run(
    api, namespace
) -> None:
    core = k8s.CoreV1Api(api)
    secret_value = secret("s3cr3t-value-for-e2e-7f1c")
    original = secret("orig-value-for-e2e-91ab")
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "db"}, "stringData": {"PASSWORD": original}}
    )
    steps = (
        f"    - name: rotate\n      action: UpdateSecret\n"
        f"      target: {{namespace: {namespace}, name: db}}\n      params: {{data: {{PASSWORD: {secret_value}}}}}\n"
        f"    - name: check\n      action: Custom\n      dependsOn: [rotate]\n      target: {{namespace: {namespace}}}\n"
        "      params: {image: 'busybox:1.36', command: [sh, -c, 'echo ok']}\n      timeout: 90s\n"
    )
    record = run_workflow(api, workflow_yaml("secrets", steps))
    assert record.phase == RunPhase.SUCCEEDED, record.message
    live = base64.b64decode(core.read_namespaced_secret("db", namespace).data["PASSWORD"]).decode()
    assert live == secret_value
    we = execution(api, record.run_id)
    # the execution's packed manifest and record, unpacked: digests only
    text = json.dumps(
        [record.to_dict(), we, unpack(we["spec"]["manifest"]), unpack(we["status"]["record"])]
    )
    for value in (secret_value, original):
        assert value not in text and base64.b64encode(value.encode()).decode() not in text
        # nor a plain digest of it, which a weak value can be guessed back from
        assert hashlib.sha256(value.encode()).hexdigest() not in text
    inputs_ns, inputs_name = we["spec"]["inputs"].split("/")  # the values, kept for a resume
    # the captured state is in a Secret of the run; the record only says where
    assert set(record.steps["rotate"].captured) == {"stateSecret"}
    assert record.steps["rotate"].result["keys"] == {"PASSWORD": "set"}
    state_ns, state_name = record.steps["rotate"].captured["stateSecret"].split("/")
    job_ns, job_name = record.steps["check"].result["job"].split("/")
    capture_ns = state_ns
    capture_name = run_object_name(record.run_id, "rotate", "-capture")
    assert core.read_namespaced_secret(capture_name, capture_ns).data
    # deleting the finished WorkflowExecution removes what the run created (owner references)
    k8s.CustomObjectsApi(api).delete_cluster_custom_object(
        "reconciler.dev", "v1alpha1", "workflowexecutions", record.run_id
    )
    wait_for(lambda: execution(api, record.run_id) is None, 30, "WorkflowExecution gone")
    batch = k8s.BatchV1Api(api)
    wait_for(
        lambda: (
            not batch.list_namespaced_job(job_ns, field_selector=f"metadata.name={job_name}").items
        ),
        60,
        "job garbage-collected",
    )
    for secret_ns, secret_name in (
        (capture_ns, capture_name),
        (state_ns, state_name),
        (inputs_ns, inputs_name),
    ):
        wait_for(
            lambda ns=secret_ns, n=secret_name: (
                not core.list_namespaced_secret(ns, field_selector=f"metadata.name={n}").items
            ),
            60,
            f"secret {secret_ns}/{secret_name} garbage-collected",
        )


def test_a_record_holds_what_the_workflow_wrote_and_previous_values_only_on_request(
    api, namespace
) -> None:
    """The git record is reviewed by people who may not read the cluster: a step's captured
    state (the whole ConfigMap, the replicas before) stays in the run's state Secret; a
    step with recordPrevious shows what it replaced, of the keys it writes only."""
    deployment(api, namespace, "web", replicas=1)
    configmap(api, namespace, "app", {"A": "1", "DATABASE_URL": "postgres://u:pw@db"})
    configmap(api, namespace, "other", {"B": "1", "TOKEN": "t0ps3cret"})
    steps = (
        f"    - {{name: scale, action: ScaleDeployment, target: {{namespace: {namespace},"
        " name: web}, params: {replicas: 2}, timeout: 60s}\n"
        f"    - {{name: tune, action: UpdateConfigMap, target: {{namespace: {namespace},"
        " name: app}, params: {data: {A: '2'}}, recordPrevious: true}\n"
        f"    - {{name: other, action: UpdateConfigMap, target: {{namespace: {namespace},"
        " name: other}, params: {data: {B: '2'}}}\n"
    )
    record = run_workflow(api, workflow_yaml("previous", steps))
    assert record.phase == RunPhase.SUCCEEDED, record.message
    text = json.dumps(record_document(record))  # what goes to git
    for live in ("postgres://u:pw@db", "t0ps3cret", "DATABASE_URL", "TOKEN"):
        assert live not in text, live
    assert record.steps["tune"].captured["previous"] == {"data": {"A": "1"}}
    assert set(record.steps["other"].captured) == {"stateSecret"}
    assert set(record.steps["scale"].captured) == {"stateSecret"}
    assert captured_state(api, record.steps["other"])["data"] == {"B": "1", "TOKEN": "t0ps3cret"}
