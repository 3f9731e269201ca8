"""Helpers for e2e tests that drive reconciler against the real control plane: create target
objects, run workflows through the real engine + actions + WorkflowExecution, read results.

Nothing here mocks Kubernetes: every call goes to the API server of the session's cluster.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from reconciler.cluster.namespaces import ensure_namespace
from reconciler.cluster.run import run_in_cluster
from reconciler.engine.record import RunRecord
from reconciler.engine.runner import Engine
from reconciler.kube.client import Kube
from reconciler.manifest.loader import LoadedWorkflow, load_text
from reconciler.manifest.policy import Policy

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "deploy" / "crds" / "workflowexecutions.reconciler.dev.yaml"
CAPTURE_NS = "reconciler-system"
# Every secret value a test puts in the cluster; test_zz_secret_scan.py checks, after the
# whole suite, that none reached a commit, a log of ours, a spool, an Event, a checkpoint or
# another object. IN_GIT: values a test wrote into a workflow file itself (inline `data`,
# the user's choice), allowed in people's commits and nowhere else.
SECRETS: set[str] = set()
IN_GIT: set[str] = set()


def secret(value: str, in_git: bool = False) -> str:
    SECRETS.add(value)
    if in_git:
        IN_GIT.add(value)
    return value


def api_client(kubeconfig: str) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return k8s.ApiClient(configuration)


def install_crd(api: k8s.ApiClient) -> None:
    import yaml

    body = yaml.safe_load(CRD_FILE.read_text())
    ext = k8s.ApiextensionsV1Api(api)
    try:
        ext.create_custom_resource_definition(body)
    except ApiException as err:
        if err.status != 409:
            raise
        current = ext.read_custom_resource_definition(body["metadata"]["name"])
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(body["metadata"]["name"], body)
    wait_for(
        lambda: any(
            c.type == "Established" and c.status == "True"
            for c in (
                ext.read_custom_resource_definition(body["metadata"]["name"]).status.conditions
                or []
            )
        ),
        60,
        "CRD established",
    )


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def workflow_yaml(name: str, steps: str, spec: str = "") -> str:
    """A workflow whose run id is new every time (the re-run annotation), so tests that
    happen to write the same steps never meet "already ran"."""
    return (
        "apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\n"
        f"metadata:\n  name: {name}\n  annotations: {{reconciler.dev/run: '{uuid.uuid4().hex}'}}\n"
        f"spec:\n{spec}  steps:\n{steps}"
    )


def load(text: str) -> LoadedWorkflow:
    result = load_text(text, "test.yaml")
    assert result.ok, [str(i) for i in result.issues]
    return result.workflows[0]


def run_workflow(
    api: k8s.ApiClient,
    text: str,
    *,
    global_limit: int | None = None,
    during: Callable[[], None] | None = None,
    after: float = 0.0,
) -> RunRecord:
    """Run a workflow in the cluster through the real engine and WorkflowExecution.

    `during` is called from a worker thread `after` seconds into the run (e.g. to relax a
    PodDisruptionBudget or delete the WorkflowExecution), while the run goes on.
    """
    loaded = load(text)
    kube = Kube(api, capture_namespace=CAPTURE_NS)

    async def main() -> RunRecord:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32))
        await ensure_namespace(kube, CAPTURE_NS)
        engine = Engine(global_limit=global_limit)
        if during is not None:

            async def later() -> None:
                await asyncio.sleep(after)
                await asyncio.to_thread(during)

            side = asyncio.create_task(later())
        record = await run_in_cluster(kube, engine, loaded, policy=Policy())
        if during is not None:
            await side
        return record

    return asyncio.run(main())


def fake_node(api: k8s.ApiClient, name: str) -> str:
    """A node of this test's own, managed by kwok (the annotation kwokctl's controller
    selects on), so a drain touches only this test's pods."""
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "type": "kwok",
                "reconciler.dev/e2e": "true",
            },
        },
    }
    core = k8s.CoreV1Api(api)
    core.create_node(body)
    wait_for(
        lambda: any(
            c.type == "Ready" and c.status == "True"
            for c in (core.read_node(name).status.conditions or [])
        ),
        60,
        f"node {name} Ready",
    )
    return name


def deployment(
    api: k8s.ApiClient,
    namespace: str,
    name: str,
    *,
    replicas: int = 2,
    image: str = "registry.example/app:1.0",
    node: str | None = None,
    labels: dict[str, str] | None = None,
) -> None:
    pod_labels = {"app": name, **(labels or {})}
    pod_spec: dict[str, Any] = {
        "containers": [
            {"name": "app", "image": image},
            {"name": "sidecar", "image": "registry.example/proxy:2"},
        ]
    }
    if node:
        pod_spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    # kwok nodes carry a NoSchedule taint; tolerate it so pods really land on them
    pod_spec["tolerations"] = [
        {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
    ]
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }
    k8s.AppsV1Api(api).create_namespaced_deployment(namespace, body)
    wait_rollout(api, namespace, name)


def wait_rollout(api: k8s.ApiClient, namespace: str, name: str, timeout: float = 90) -> None:
    apps = k8s.AppsV1Api(api)

    def done() -> bool:
        d = apps.read_namespaced_deployment(name, namespace)
        s = d.status
        want = d.spec.replicas
        return (
            (s.observed_generation or 0) >= d.metadata.generation
            and (s.updated_replicas or 0) == want
            and (s.available_replicas or 0) == want
            and (s.replicas or 0) == want
        )

    wait_for(done, timeout, f"deployment {namespace}/{name} rollout")


def guarded_by_budget(api: k8s.ApiClient, namespace: str, node: str) -> Callable[[], None]:
    """A Deployment `guarded` of two pods on `node` whose PodDisruptionBudget refuses every
    eviction (a drain of the node retries 429s); returns what relaxes the budget."""
    deployment(api, namespace, "guarded", replicas=2, node=node)
    policy = k8s.PolicyV1Api(api)
    policy.create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": "guarded"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "guarded"}}},
        },
    )
    return lambda: policy.patch_namespaced_pod_disruption_budget(
        "guarded", namespace, {"spec": {"minAvailable": 0}}
    )


def read_deployment(api: k8s.ApiClient, namespace: str, name: str) -> Any:
    return k8s.AppsV1Api(api).read_namespaced_deployment(name, namespace)


def image_of(api: k8s.ApiClient, namespace: str, name: str, container: str = "app") -> str:
    d = read_deployment(api, namespace, name)
    return next(c.image for c in d.spec.template.spec.containers if c.name == container)


def configmap(api: k8s.ApiClient, namespace: str, name: str, data: dict[str, str]) -> None:
    k8s.CoreV1Api(api).create_namespaced_config_map(
        namespace, {"metadata": {"name": name}, "data": data}
    )


def configmap_data(api: k8s.ApiClient, namespace: str, name: str) -> dict[str, str]:
    return k8s.CoreV1Api(api).read_namespaced_config_map(name, namespace).data or {}


def execution(api: k8s.ApiClient, name: str) -> dict[str, Any] | None:
    try:
        return k8s.CustomObjectsApi(api).get_cluster_custom_object(
            "reconciler.dev", "v1alpha1", "workflowexecutions", name
        )
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def run_ids(api: k8s.ApiClient, workflow: str) -> list[str]:
    """The WorkflowExecutions (run ids) of a workflow."""
    items = k8s.CustomObjectsApi(api).list_cluster_custom_object(
        "reconciler.dev",
        "v1alpha1",
        "workflowexecutions",
        label_selector=f"reconciler.dev/workflow={workflow}",
    )["items"]
    return [i["metadata"]["name"] for i in items]


def nodes(api: k8s.ApiClient) -> list[str]:
    return sorted(n.metadata.name for n in k8s.CoreV1Api(api).list_node().items)


@pytest.fixture
def own_node(api: k8s.ApiClient, namespace: str):
    """A kwok node for this test alone, deleted afterwards."""
    name = fake_node(api, f"{namespace}-node")
    yield name
    k8s.CoreV1Api(api).delete_node(name)


@pytest.fixture(scope="session")
def api(kubeconfig: str) -> k8s.ApiClient:
    client = api_client(kubeconfig)
    install_crd(client)
    return client


def captured_state(api: k8s.ApiClient, step: Any) -> dict[str, Any]:
    """What a step captured for its undo: in the state Secret its record names."""
    namespace, name = step.captured["stateSecret"].split("/")
    data = k8s.CoreV1Api(api).read_namespaced_secret(name, namespace).data["state"]
    state: dict[str, Any] = json.loads(base64.b64decode(data))
    return state
