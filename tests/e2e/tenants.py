"""Namespaces and nodes made ready for steps, exactly as deploy/ tells users to: the objects
of deploy/tenant/tenant.yaml in each namespace workflows act on (the account steps
impersonate, its Role, the daemon's right to act as it), and deploy/cluster-account.yaml
once (the account node steps act as). Created through the API from the same files, so a
change to the templates is what every e2e test runs with."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
HOME = "reconciler-system"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _create(api: k8s.ApiClient, doc: dict[str, Any]) -> None:
    core, rbac = k8s.CoreV1Api(api), k8s.RbacAuthorizationV1Api(api)
    ns = doc["metadata"].get("namespace")
    create = {
        "Namespace": lambda: core.create_namespace(doc),
        "ServiceAccount": lambda: core.create_namespaced_service_account(ns, doc),
        "Role": lambda: rbac.create_namespaced_role(ns, doc),
        "RoleBinding": lambda: rbac.create_namespaced_role_binding(ns, doc),
        "ClusterRole": lambda: rbac.create_cluster_role(doc),
        "ClusterRoleBinding": lambda: rbac.create_cluster_role_binding(doc),
    }[doc["kind"]]
    try:
        create()
    except ApiException as err:
        if err.status != 409:
            raise


def onboard(api: k8s.ApiClient, namespace: str, *, skip: tuple[str, ...] = ()) -> None:
    """deploy/tenant/ in `namespace`; `skip`: names of objects to leave out (a test of what
    a namespace without them gets)."""
    for doc in _docs(DEPLOY / "tenant" / "tenant.yaml"):
        if (doc["kind"], doc["metadata"]["name"]) in {tuple(s.split("/")) for s in skip}:
            continue
        doc["metadata"]["namespace"] = namespace
        _create(api, doc)


def onboard_cluster_account(api: k8s.ApiClient) -> None:
    _create(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": HOME}})
    for doc in _docs(DEPLOY / "cluster-account.yaml"):
        _create(api, doc)


def install_daemon_rbac(api: k8s.ApiClient) -> None:
    """The daemon's ServiceAccount and its RBAC from deploy/, without its Deployment."""
    onboard_cluster_account(api)
    for name in ("serviceaccount.yaml", "rbac.yaml"):
        for doc in _docs(DEPLOY / name):
            _create(api, doc)


def service_account_kubeconfig(api, admin_kubeconfig: str, path: Path) -> str:
    token = (
        k8s.CoreV1Api(api)
        .create_namespaced_service_account_token(
            "reconciler", "reconciler-system", {"spec": {"expirationSeconds": 3600}}
        )
        .status.token
    )
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        cluster = {
            "server": cluster["server"],
            "certificate-authority-data": base64.b64encode(
                Path(cluster["certificate-authority"]).read_bytes()
            ).decode(),
        }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "reconciler", "user": {"token": token}}],
        "contexts": [{"name": "reconciler", "context": {"cluster": "c", "user": "reconciler"}}],
        "current-context": "reconciler",
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)
