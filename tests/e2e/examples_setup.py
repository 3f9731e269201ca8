"""The objects the example workflows target, created in a cluster (by the e2e test that
runs every example, and by `make demo`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from tenants import onboard, onboard_cluster_account

NAMESPACES = ("shop", "payments", "ops")
DEPLOYMENTS = {
    "shop": ("checkout", "catalog", "cart", "search", "reviews", "profile", "recommendations"),
    "payments": ("payments", "payments-canary"),
}
CONFIGMAPS = {
    ("shop", "checkout-config"): {"CACHE_TTL": "60"},
    ("shop", "catalog-config"): {"CACHE_BACKEND": "redis-v1"},
    ("payments", "payments-canary-config"): {
        "UPSTREAM_URL": "https://psp-v1.internal",
        "TIMEOUT_MS": "1000",
    },
    ("payments", "payments-config"): {
        "UPSTREAM_URL": "https://psp-v1.internal",
        "TIMEOUT_MS": "1000",
    },
    ("ops", "node-rotation"): {},
}
OLD_POOL = ("old-1", "old-2", "old-3")  # node-rotation drains these (label pool=old)
APPROVERS = ("alice@example.com", "bob@example.com")  # sre-leads, with keys made per run
MAINTENANCE_NODE = "worker-1"
CANARY = ("demo-failed-canary.yaml", "canary-check")  # the Custom step that really runs


def on_real_node(workflow_text: str, label: tuple[str, str], taint_key: str) -> str:
    """demo-failed-canary with its canary Job placed on the e2e cluster's real node (its
    nodeSelector and a toleration of its taint), so its container really runs and fails;
    every other line of the example as it is in examples-repo/."""
    marker = "    - name: canary-check\n"
    head, found, step = workflow_text.partition(marker)
    assert found, "demo-failed-canary has no step canary-check"
    params = "      params:\n"
    assert params in step, "canary-check has no params block"
    placement = (
        f"        nodeSelector: {{{label[0]}: '{label[1]}'}}\n"
        f"        tolerations: [{{key: {taint_key}, operator: Exists}}]\n"
    )
    return head + marker + step.replace(params, params + placement, 1)


def approvers_policy(policy: Path, work: Path) -> tuple[Path, dict[str, Path]]:
    """The demo's policy with its approvers' (alice's and bob's) SSH keys swapped for keys
    made here: no private key is kept in the repository. The policy file and each key."""
    keys = {}
    for who in APPROVERS:
        key = work / "approver-keys" / who.split("@")[0]
        key.parent.mkdir(parents=True, exist_ok=True)
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", who, "-f", str(key)],
                check=True,
                capture_output=True,
            )
        keys[who] = key
    text = policy.read_text()
    for who, key in keys.items():  # each approver's line, its key swapped for the new one
        line = re.compile(rf"^(    {re.escape(who)}: )\[.*\]$", re.MULTILINE)
        assert line.search(text), f"demo/policy.yaml names no approver {who}"
        new = key.with_suffix(".pub").read_text().strip()
        text = line.sub(lambda m: f"{m[1]}['{new}']", text)  # noqa: B023 (used at once)
    out = work / "policy.yaml"
    out.write_text(text)
    return out, keys


def _ignore_exists(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except ApiException as err:
        if err.status != 409:
            raise


def deployment_body(name: str, replicas: int = 2, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "image": f"registry.example/{name}:1.0"}]
    }
    if node:
        # preferred, not required: the pods start on `node`, and once it is cordoned and
        # drained their replacements can land elsewhere, as in a real cluster
        spec["affinity"] = {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "preference": {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        },
                    }
                ]
            }
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def create_example_targets(api: k8s.ApiClient) -> None:
    core, apps, policy = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.PolicyV1Api(api)
    for ns in NAMESPACES:
        _ignore_exists(core.create_namespace, {"metadata": {"name": ns}})
        onboard(api, ns)  # the account each step there acts as (deploy/tenant/)
    onboard_cluster_account(api)  # and the one node steps act as
    for ns, names in DEPLOYMENTS.items():
        for name in names:
            _ignore_exists(apps.create_namespaced_deployment, ns, deployment_body(name))
    for (ns, name), data in CONFIGMAPS.items():
        _ignore_exists(
            core.create_namespaced_config_map, ns, {"metadata": {"name": name}, "data": data}
        )
    # the node to maintain: a kwok node with pods that a PodDisruptionBudget protects;
    # and the old pool node-rotation retires
    for name, labels in [(MAINTENANCE_NODE, {}), *((n, {"pool": "old"}) for n in OLD_POOL)]:
        _ignore_exists(
            core.create_node,
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                    "labels": {"kubernetes.io/hostname": name, "type": "kwok", **labels},
                },
            },
        )
    _ignore_exists(
        apps.create_namespaced_deployment, "shop", deployment_body("inventory", 2, MAINTENANCE_NODE)
    )
    _ignore_exists(
        policy.create_namespaced_pod_disruption_budget,
        "shop",
        {
            "metadata": {"name": "inventory"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "inventory"}}},
        },
    )


class ExampleMetrics:
    """What the examples' checks measure, served for a Prometheus to scrape: the new
    recommendations image's error ratio stays at 8% (demo-verified-rollout fails)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = CollectorRegistry()
        ratio = Gauge("demo_error_ratio", "errors per request", ["service"], registry=self.registry)
        ratio.labels(service="recommendations").set(0.08)
        self.server, _ = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = self.server.server_port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
