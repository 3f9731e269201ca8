"""Each action's apply, wait and undo on real objects; drains against real
PodDisruptionBudgets; permanent vs transient errors; cancelling by deleting the
WorkflowExecution (issue 4, e2e items 3-5)."""

from __future__ import annotations

import asyncio
import base64

from kubehelp import (
    api,  # noqa: F401  (fixture)
    captured_state,
    configmap,
    configmap_data,
    deployment,
    execution,
    image_of,
    own_node,  # noqa: F401  (fixture)
    read_deployment,
    run_workflow,
    secret,
    wait_for,
    workflow_yaml,
)
from kubernetes import client as k8s
from kubernetes import watch

from reconciler.engine.record import ErrorKind, RunPhase, StepPhase, UndoResult
from reconciler.kube.client import Kube

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def pdb(api, namespace: str, app: str, min_available: int) -> None:
    k8s.PolicyV1Api(api).create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": app},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": app}}},
        },
    )
    wait_for(
        lambda: (
            k8s.PolicyV1Api(api)
            .read_namespaced_pod_disruption_budget(app, namespace)
            .status.observed_generation
        ),
        30,
        "PDB observed by the disruption controller",
    )


def unschedulable(api, node: str) -> bool:
    return bool(k8s.CoreV1Api(api).read_node(node).spec.unschedulable)


def test_actions_apply_and_wait_for_real(api, namespace) -> None:
    deployment(api, namespace, "web", replicas=2)
    before_uids = {
        p.metadata.uid
        for p in k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="app=web").items
    }
    node = sorted(n.metadata.name for n in k8s.CoreV1Api(api).list_node().items)[0]
    steps = f"""\
    - name: restart
      action: RestartDeployment
      target: {{namespace: {namespace}, name: web}}
      timeout: 90s
    - name: kill-pods
      action: DeletePod
      dependsOn: [restart]
      target: {{namespace: {namespace}}}
      params: {{selector: app=web, gracePeriod: 0}}
      timeout: 60s
    - name: cordon
      action: CordonNode
      target: {{name: {node}}}
    - name: uncordon
      action: UncordonNode
      dependsOn: [cordon]
      target: {{name: {node}}}
    - name: apply-cm
      action: Apply
      params:
        manifest:
          apiVersion: v1
          kind: ConfigMap
          metadata: {{name: applied, namespace: {namespace}}}
          data: {{FROM: reconciler}}
    - name: job
      action: Custom
      target: {{namespace: {namespace}}}
      params: {{image: 'busybox:1.36', command: [sh, -c, 'echo hello from the job'], backoffLimit: 0}}
      timeout: 90s
"""
    record = run_workflow(api, workflow_yaml("actions", steps, "  maxConcurrent: 3\n"))
    assert record.phase == RunPhase.SUCCEEDED, record.message
    template = read_deployment(api, namespace, "web").spec.template
    assert (
        template.metadata.annotations[RESTARTED_AT] == record.steps["restart"].result["restartedAt"]
    )
    deleted = {p["uid"] for p in captured_state(api, record.steps["kill-pods"])["pods"]}
    live = {
        p.metadata.uid
        for p in k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="app=web").items
    }
    assert deleted and not deleted & live and not before_uids & live
    assert not unschedulable(api, node)
    assert configmap_data(api, namespace, "applied") == {"FROM": "reconciler"}
    job = k8s.BatchV1Api(api).read_namespaced_job(
        record.steps["job"].result["job"].split("/")[1], namespace
    )
    assert job.status.succeeded == 1
    assert job.metadata.owner_references[0].kind == "WorkflowExecution"


def test_every_reversible_action_is_undone_and_404_is_permanent(api, namespace) -> None:
    core = k8s.CoreV1Api(api)
    deployment(api, namespace, "web", replicas=2, image="registry.example/web:1.0")
    configmap(api, namespace, "cfg", {"KEEP": "1", "CHANGE": "old"})
    configmap(api, namespace, "existing", {"A": "1"})
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "sec"}, "stringData": {"K": secret("original-e2e-value")}}
    )
    node = sorted(n.metadata.name for n in core.list_node().items)[-1]
    steps = f"""\
    - name: scale
      action: ScaleDeployment
      target: {{namespace: {namespace}, name: web}}
      params: {{replicas: 3}}
      timeout: 90s
    - name: image
      action: UpdateImage
      dependsOn: [scale]
      target: {{namespace: {namespace}, name: web}}
      params: {{container: app, image: 'registry.example/web:2.0'}}
      timeout: 90s
    - name: cordon
      action: CordonNode
      dependsOn: [image]
      target: {{name: {node}}}
    - name: cm
      action: UpdateConfigMap
      dependsOn: [cordon]
      target: {{namespace: {namespace}, name: cfg}}
      params: {{data: {{CHANGE: new, ADDED: x}}, mode: replace}}
    - name: secret
      action: UpdateSecret
      dependsOn: [cm]
      target: {{namespace: {namespace}, name: sec}}
      params: {{data: {{K: {secret("replaced-e2e-value")}, NEW: {secret("added-e2e-value")}}}}}
    - name: create
      action: Apply
      dependsOn: [secret]
      params:
        manifest: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: created, namespace: {namespace}}}, data: {{X: "1"}}}}
    - name: modify
      action: Apply
      dependsOn: [create]
      params:
        manifest: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: existing, namespace: {namespace}}}, data: {{A: "2", B: "3"}}}}
    - name: job
      action: Custom
      dependsOn: [modify]
      target: {{namespace: {namespace}}}
      params:
        image: 'busybox:1.36'
        command: [sh, -c, 'echo apply']
        rollback: {{image: 'busybox:1.36', command: [sh, -c, 'echo undo']}}
      timeout: 90s
    - name: missing
      action: ScaleDeployment
      dependsOn: [job]
      target: {{namespace: {namespace}, name: does-not-exist}}
      params: {{replicas: 1}}
      retry: {{limit: 3, backoff: 1s}}
"""
    record = run_workflow(api, workflow_yaml("undo-all", steps))
    # 404 is permanent: failed at once, no retries, and the message names the deployment
    missing = record.steps["missing"]
    assert missing.phase == StepPhase.FAILED and len(missing.attempts) == 1
    assert missing.attempts[0].error_kind == ErrorKind.PERMANENT
    assert f"deployment {namespace}/does-not-exist not found" in missing.message
    assert record.phase == RunPhase.ROLLED_BACK, record.rollback
    assert [e.step for e in record.rollback.entries] == [
        "job",
        "modify",
        "create",
        "secret",
        "cm",
        "cordon",
        "image",
        "scale",
    ]
    assert all(e.result == UndoResult.UNDONE for e in record.rollback.entries), (
        record.rollback.entries
    )
    d = read_deployment(api, namespace, "web")
    assert d.spec.replicas == 2 and image_of(api, namespace, "web") == "registry.example/web:1.0"
    assert not unschedulable(api, node)
    assert configmap_data(api, namespace, "cfg") == {"KEEP": "1", "CHANGE": "old"}
    secret_data = core.read_namespaced_secret("sec", namespace).data
    assert set(secret_data) == {"K"}
    assert (
        core.list_namespaced_config_map(namespace, field_selector="metadata.name=created").items
        == []
    )
    assert configmap_data(api, namespace, "existing") == {"A": "1"}
    rollback_job = record.rollback.entries[0].note
    assert "rollback job" in rollback_job and "completed" in rollback_job


def test_drain_blocked_by_pdb_times_out_then_is_rolled_back(api, namespace, own_node) -> None:
    node = own_node
    deployment(api, namespace, "guarded", replicas=2, node=node)
    pdb(api, namespace, "guarded", 2)
    steps = f"""\
    - name: drain
      action: DrainNode
      target: {{name: {node}}}
      params: {{gracePeriod: 0}}
      timeout: 8s
"""
    record = run_workflow(api, workflow_yaml("drain-blocked", steps))
    step = record.steps["drain"]
    assert step.phase == StepPhase.FAILED
    assert step.attempts[0].error_kind == ErrorKind.TIMEOUT, step.message
    assert "blocked by a PodDisruptionBudget" in step.message
    assert record.phase == RunPhase.ROLLED_BACK
    assert "evicted pods are not restored" in record.rollback.entries[0].note
    assert not unschedulable(api, node)
    assert read_deployment(api, namespace, "guarded").status.available_replicas == 2


def test_drain_retries_429_and_succeeds_once_the_budget_relaxes(api, namespace, own_node) -> None:
    node = own_node
    deployment(api, namespace, "guarded", replicas=2, node=node)
    pdb(api, namespace, "guarded", 2)

    def relax() -> None:
        k8s.PolicyV1Api(api).patch_namespaced_pod_disruption_budget(
            "guarded", namespace, {"spec": {"minAvailable": 0}}
        )

    steps = f"""\
    - name: drain
      action: DrainNode
      target: {{name: {node}}}
      params: {{gracePeriod: 0}}
      timeout: 90s
    - name: back-in-service
      action: UncordonNode
      dependsOn: [drain]
      target: {{name: {node}}}
"""
    before = {
        p.metadata.uid
        for p in k8s.CoreV1Api(api)
        .list_namespaced_pod(namespace, label_selector="app=guarded")
        .items
    }
    record = run_workflow(api, workflow_yaml("drain-relaxed", steps), during=relax, after=4)
    assert record.phase == RunPhase.SUCCEEDED, record.message
    drained = record.steps["drain"]
    assert drained.result["evicted"], drained
    assert drained.finished - drained.started >= 4  # it waited for the budget, retrying 429s
    assert len(drained.result["evicted"]) == 2
    after = {
        p.metadata.uid
        for p in k8s.CoreV1Api(api)
        .list_namespaced_pod(namespace, label_selector="app=guarded")
        .items
    }
    assert not before & after  # every original pod was evicted
    assert not unschedulable(api, node)


def test_deleting_the_execution_while_running_cancels_and_rolls_back_first(
    api, namespace, own_node
) -> None:
    """`kubectl delete` of a running WorkflowExecution, watched from the delete until the
    object is gone: it stays (finalizer) while the run is cancelled and rolled back, its last
    status is RolledBack, every target is restored and nothing it owned is left."""
    core = k8s.CoreV1Api(api)
    deployment(api, namespace, "web", replicas=1)
    deployment(api, namespace, "guarded", replicas=2, node=own_node)
    pdb(api, namespace, "guarded", 2)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "db"}, "stringData": {"K": secret("delete-orig-e2e")}}
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "db-new"}, "stringData": {"K": secret("delete-new-e2e")}}
    )
    steps = f"""\
    - {{name: scale, action: ScaleDeployment, target: {{namespace: {namespace}, name: web}}, params: {{replicas: 3}}, timeout: 90s}}
    - {{name: rotate, action: UpdateSecret, dependsOn: [scale], target: {{namespace: {namespace}, name: db}}, params: {{fromSecret: {{name: db-new}}}}}}
    - {{name: job, action: Custom, dependsOn: [rotate], target: {{namespace: {namespace}}}, params: {{image: busybox, command: [sh, -c, 'echo ok']}}, timeout: 60s}}
    - {{name: drain, action: DrainNode, dependsOn: [job], target: {{name: {own_node}}}, timeout: 5m}}
"""
    text = workflow_yaml("delete-me", steps)
    from kubehelp import load

    run_id = load(text).run_id
    seen: list[tuple[str, str | None, bool]] = []  # (event, status phase, being deleted)

    def delete_when_draining_and_watch_until_gone() -> None:
        wait_for(
            lambda: (execution(api, run_id) or {}).get("status", {}).get("currentStep") == "drain",
            60,
            "drain running",
        )
        version = execution(api, run_id)["metadata"]["resourceVersion"]
        k8s.CustomObjectsApi(api).delete_cluster_custom_object(
            "reconciler.dev", "v1alpha1", "workflowexecutions", run_id
        )
        w = watch.Watch()
        for event in w.stream(
            k8s.CustomObjectsApi(api).list_cluster_custom_object,
            "reconciler.dev",
            "v1alpha1",
            "workflowexecutions",
            field_selector=f"metadata.name={run_id}",
            resource_version=version,
            timeout_seconds=90,
        ):
            obj = event["object"]
            phase = (obj.get("status") or {}).get("phase")
            seen.append((event["type"], phase, bool(obj["metadata"].get("deletionTimestamp"))))
            if event["type"] == "DELETED":
                w.stop()

    record = run_workflow(api, text, during=delete_when_draining_and_watch_until_gone, after=0)
    assert record.reason == "Cancelled"
    assert record.phase == RunPhase.ROLLED_BACK
    assert record.steps["drain"].phase == StepPhase.CANCELLED
    assert [(e.step, e.result) for e in record.rollback.entries] == [
        ("drain", UndoResult.UNDONE),
        ("job", UndoResult.IRREVERSIBLE),
        ("rotate", UndoResult.UNDONE),
        ("scale", UndoResult.UNDONE),
    ]
    assert seen and seen[-1][0] == "DELETED", seen
    assert all(deleting for _, _, deleting in seen), "not held by the finalizer"
    phases = [phase for _, phase, _ in seen]
    assert "RollingBack" in phases and phases[-1] == "RolledBack", phases
    assert phases.index("RollingBack") < len(phases) - 1 - phases[::-1].index("RolledBack")
    assert execution(api, run_id) is None
    # every target restored
    assert read_deployment(api, namespace, "web").spec.replicas == 1
    value = base64.b64decode(core.read_namespaced_secret("db", namespace).data["K"]).decode()
    assert value == "delete-orig-e2e"
    assert not unschedulable(api, own_node)
    # and nothing the run owned is left (garbage collection follows the owner references)
    selector = f"reconciler.dev/run-id={run_id}"
    batch = k8s.BatchV1Api(api)
    wait_for(
        lambda: not batch.list_namespaced_job(namespace, label_selector=selector).items,
        60,
        "the run's Job collected",
    )
    wait_for(
        lambda: not core.list_namespaced_secret("reconciler-system", label_selector=selector).items,
        60,
        "the run's capture Secret collected",
    )
    assert record.steps["job"].result and record.steps["rotate"].captured["stateSecret"]


def test_metadata_list_of_nothing_is_empty(api, namespace) -> None:
    """The API server answers an empty PartialObjectMetadataList with `items: null` (a nil
    Go slice), where a full list says `[]`: a fresh cluster without a single
    WorkflowExecution once crashed the daemon's first sync on it."""
    kube = Kube(api)
    core = k8s.CoreV1Api(api)
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    query = {"labelSelector": "reconciler.dev/e2e=listed"}
    assert asyncio.run(kube.list_metadata("configmaps", path, query)) == []
    for i in range(3):
        core.create_namespaced_config_map(
            namespace,
            {"metadata": {"name": f"listed-{i}", "labels": {"reconciler.dev/e2e": "listed"}}},
        )
    names = [m["name"] for m in asyncio.run(kube.list_metadata("configmaps", path, query))]
    assert sorted(names) == ["listed-0", "listed-1", "listed-2"]
