"""The control plane is real (issue 3): controllers roll Deployments out onto kwok nodes, the
Eviction API honours PodDisruptionBudgets, and RBAC is enforced."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from kubehelp import api, deployment, wait_for  # noqa: F401  (fixture)
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException


def kubectl(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    binary = "kubectl"
    if os.environ.get("RECONCILER_E2E_USE_KUBECONFIG") != "1":
        out = subprocess.run(
            ["bash", "tests/e2e/cluster/build.sh", "--print-bin-dir"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[2],
        )
        binary = str(Path(out.stdout.strip()) / "kubectl")
    return subprocess.run(
        [binary, "--kubeconfig", kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ready_pods(api, namespace: str, app: str) -> list:
    pods = k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [
        p
        for p in pods
        if not p.metadata.deletion_timestamp
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def test_version_is_stamped(api, kubeconfig) -> None:
    version = k8s.VersionApi(api).get_code()
    assert version.git_version.startswith("v1.") and version.git_version != "v0.0.0"
    out = kubectl(kubeconfig, "version", "-o", "json")
    assert out.returncode == 0 and '"gitVersion": "v1.' in out.stdout


def test_deployment_rolls_out_on_kwok_nodes_and_scales(api, namespace, kubeconfig) -> None:
    deployment(api, namespace, "web", replicas=2)
    rs = k8s.AppsV1Api(api).list_namespaced_replica_set(namespace).items
    assert len(rs) == 1 and rs[0].metadata.owner_references[0].name == "web"
    pods = ready_pods(api, namespace, "web")
    nodes = {n.metadata.name: n for n in k8s.CoreV1Api(api).list_node().items}
    assert len(pods) == 2 and all(
        nodes[p.spec.node_name].metadata.labels.get("type") == "kwok" for p in pods
    )
    k8s.AppsV1Api(api).patch_namespaced_deployment_scale(
        "web", namespace, {"spec": {"replicas": 4}}
    )
    wait_for(lambda: len(ready_pods(api, namespace, "web")) == 4, 60, "4 ready pods")
    status = kubectl(
        kubeconfig, "-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s"
    )
    assert status.returncode == 0, status.stderr
    assert "successfully rolled out" in status.stdout
    k8s.AppsV1Api(api).patch_namespaced_deployment_scale(
        "web", namespace, {"spec": {"replicas": 1}}
    )
    wait_for(lambda: len(ready_pods(api, namespace, "web")) == 1, 60, "1 ready pod")


def evict(api, namespace: str, pod: str) -> None:
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": namespace},
    }
    k8s.CoreV1Api(api).create_namespaced_pod_eviction(pod, namespace, body)


def test_cordon_eviction_and_pdb(api, namespace) -> None:
    deployment(api, namespace, "web", replicas=2)
    core = k8s.CoreV1Api(api)
    pod = ready_pods(api, namespace, "web")[0]
    node = pod.spec.node_name
    core.patch_node(node, {"spec": {"unschedulable": True}})
    try:
        evict(api, namespace, pod.metadata.name)
        wait_for(
            lambda: all(
                p.metadata.uid != pod.metadata.uid
                for p in core.list_namespaced_pod(namespace).items
            ),
            60,
            "evicted pod gone",
        )
        wait_for(lambda: len(ready_pods(api, namespace, "web")) == 2, 60, "replacement ready")
        assert all(
            p.spec.node_name != node
            for p in ready_pods(api, namespace, "web")
            if p.metadata.uid != pod.metadata.uid
        )
    finally:
        core.patch_node(node, {"spec": {"unschedulable": None}})
    k8s.PolicyV1Api(api).create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
        },
    )
    wait_for(
        lambda: (
            k8s.PolicyV1Api(api)
            .read_namespaced_pod_disruption_budget("web", namespace)
            .status.current_healthy
            == 2
        ),
        30,
        "PDB status",
    )
    with pytest.raises(ApiException) as blocked:
        evict(api, namespace, ready_pods(api, namespace, "web")[0].metadata.name)
    assert blocked.value.status == 429
    assert "disruption budget" in blocked.value.body


def test_rbac_is_enforced(api, namespace) -> None:
    core, rbac = k8s.CoreV1Api(api), k8s.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "narrow"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "read-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "narrow"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "read-configmaps",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "narrow", "namespace": namespace}],
        },
    )
    token = core.create_namespaced_service_account_token(
        "narrow", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    configuration = k8s.Configuration()
    configuration.host = api.configuration.host
    configuration.ssl_ca_cert = api.configuration.ssl_ca_cert
    configuration.verify_ssl = api.configuration.verify_ssl
    configuration.api_key = {"authorization": f"Bearer {token}"}
    narrow = k8s.CoreV1Api(k8s.ApiClient(configuration))
    assert narrow.list_namespaced_config_map(namespace).items is not None  # allowed
    with pytest.raises(ApiException) as denied:
        narrow.list_namespaced_secret(namespace)
    assert denied.value.status == 403
    with pytest.raises(ApiException) as denied_write:
        narrow.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    assert denied_write.value.status == 403
