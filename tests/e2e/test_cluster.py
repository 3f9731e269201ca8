"""The control plane is real (issue 3): controllers roll Deployments out onto kwok nodes, the
Eviction API honours cordons and PodDisruptionBudgets, RBAC is enforced and audited, and the
binaries report the version they were built from."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kubehelp import api, deployment, wait_for  # noqa: F401  (fixture)
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kwokcluster import BINARIES, ClusterError, KwokCluster, bin_dir, versions


def kubectl_binary(kwok_cluster: KwokCluster | None) -> str:
    """Our built kubectl for our cluster; for an external one, the built kubectl if the cache
    has it, else the kubectl on PATH."""
    built = bin_dir() / "kubectl"
    if kwok_cluster is not None or built.exists():
        return str(built)
    return shutil.which("kubectl") or "kubectl"


def kubectl(
    kwok_cluster: KwokCluster | None, kubeconfig: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl_binary(kwok_cluster), "--kubeconfig", kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ready_pods(api: k8s.ApiClient, namespace: str, app: str) -> list[k8s.V1Pod]:
    pods = k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [
        p
        for p in pods
        if not p.metadata.deletion_timestamp
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def test_version_is_stamped(
    api: k8s.ApiClient, kubeconfig: str, kwok_cluster: KwokCluster | None
) -> None:
    server = k8s.VersionApi(api).get_code().git_version
    assert server.startswith("v1.") and server != "v0.0.0"
    out = kubectl(kwok_cluster, kubeconfig, "version", "-o", "json")
    assert out.returncode == 0, out.stderr
    reported = json.loads(out.stdout)
    assert reported["serverVersion"]["gitVersion"] == server
    if kwok_cluster is not None:  # our binaries: exactly the pinned release, client and server
        pinned = versions()["KUBERNETES_VERSION"]
        assert server == pinned
        assert reported["clientVersion"]["gitVersion"] == pinned
        assert reported["clientVersion"]["gitTreeState"] == "clean"


def test_deployment_rolls_out_on_kwok_nodes_and_scales(
    api: k8s.ApiClient, namespace: str, kubeconfig: str, kwok_cluster: KwokCluster | None
) -> None:
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    deployment(api, namespace, "web", replicas=2)  # waits until 2 replicas are available
    rs = apps.list_namespaced_replica_set(namespace).items
    assert len(rs) == 1 and rs[0].metadata.owner_references[0].name == "web"
    pods = ready_pods(api, namespace, "web")
    assert len(pods) == 2
    assert all(p.metadata.owner_references[0].name == rs[0].metadata.name for p in pods)
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert all(p.spec.node_name in nodes for p in pods)  # scheduled by kube-scheduler
    if kwok_cluster is not None:
        assert all(nodes[p.spec.node_name].metadata.labels.get("type") == "kwok" for p in pods)

    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 4}})
    wait_for(lambda: len(ready_pods(api, namespace, "web")) == 4, 60, "4 ready pods")
    status = kubectl(
        kwok_cluster,
        kubeconfig,
        "-n",
        namespace,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=60s",
    )
    assert status.returncode == 0, status.stderr
    assert "successfully rolled out" in status.stdout

    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 1}})
    wait_for(lambda: len(ready_pods(api, namespace, "web")) == 1, 60, "1 ready pod")


def evict(api: k8s.ApiClient, namespace: str, pod: str) -> None:
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": namespace},
    }
    k8s.CoreV1Api(api).create_namespaced_pod_eviction(pod, namespace, body)


def test_cordon_eviction_and_pdb(api: k8s.ApiClient, namespace: str) -> None:
    core, policy = k8s.CoreV1Api(api), k8s.PolicyV1Api(api)
    deployment(api, namespace, "web", replicas=2)
    pod = ready_pods(api, namespace, "web")[0]
    node = pod.spec.node_name
    core.patch_node(node, {"spec": {"unschedulable": True}})  # cordon
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
        replacements = [
            p for p in ready_pods(api, namespace, "web") if p.metadata.uid != pod.metadata.uid
        ]
        assert all(p.spec.node_name != node for p in replacements)  # not onto the cordoned node
    finally:
        core.patch_node(node, {"spec": {"unschedulable": None}})  # uncordon

    policy.create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
        },
    )
    wait_for(
        lambda: (
            policy.read_namespaced_pod_disruption_budget("web", namespace).status.current_healthy
            == 2
        ),
        30,
        "PDB status",
    )
    victim = ready_pods(api, namespace, "web")[0]
    with pytest.raises(ApiException) as blocked:
        evict(api, namespace, victim.metadata.name)
    assert blocked.value.status == 429
    assert "disruption budget" in blocked.value.body
    assert (
        core.read_namespaced_pod(victim.metadata.name, namespace).metadata.deletion_timestamp
        is None
    )


def test_rbac_is_enforced(api: k8s.ApiClient, namespace: str, audit_log: Path | None) -> None:
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

    # RoleBindings take effect asynchronously in the authorizer's cache
    wait_for(lambda: _allowed(lambda: narrow.list_namespaced_config_map(namespace)), 30, "allowed")
    with pytest.raises(ApiException) as denied:
        narrow.list_namespaced_secret(namespace)
    assert denied.value.status == 403
    with pytest.raises(ApiException) as denied_write:
        narrow.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    assert denied_write.value.status == 403
    with pytest.raises(ApiException) as denied_elsewhere:
        narrow.list_namespaced_config_map("default")
    assert denied_elsewhere.value.status == 403

    if audit_log is not None:  # the audit log records who was refused what
        user = f"system:serviceaccount:{namespace}:narrow"

        def refused() -> set[tuple[str, str]]:
            found = set()
            for line in audit_log.read_text().splitlines():
                event = json.loads(line)
                if (
                    event.get("user", {}).get("username") == user
                    and event.get("responseStatus", {}).get("code") == 403
                ):
                    found.add((event["verb"], event["objectRef"]["resource"]))
            return found

        wanted = {("list", "secrets"), ("create", "configmaps"), ("list", "configmaps")}
        wait_for(lambda: wanted <= refused(), 30, f"403s of {user} in {audit_log}")


def _allowed(call: Callable[[], object]) -> bool:
    try:
        call()
        return True
    except ApiException as err:
        if err.status == 403:
            return False
        raise


def _own_binaries(kwok_cluster: KwokCluster | None) -> Path:
    if kwok_cluster is None:
        pytest.skip(
            "starts extra control planes from the built binaries; an external cluster is in use"
        )
    return kwok_cluster.bin


def _processes_of(cluster: KwokCluster) -> list[str]:
    out = subprocess.run(
        ["pgrep", "-f", str(cluster.workdir)], capture_output=True, text=True, check=False
    )
    return out.stdout.split()


def test_two_clusters_started_at_once_do_not_collide(
    api: k8s.ApiClient, kwok_cluster: KwokCluster | None
) -> None:
    binaries = _own_binaries(kwok_cluster)
    others = [KwokCluster(binaries), KwokCluster(binaries)]
    errors: list[BaseException] = []

    def start(cluster: KwokCluster) -> None:
        try:
            cluster.create()
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=start, args=(c,)) for c in others]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        ports = [set(c.ports.values()) for c in (kwok_cluster, *others)]  # type: ignore[union-attr]
        assert all(len(p) == 6 for p in ports)
        assert not (ports[0] & ports[1] or ports[0] & ports[2] or ports[1] & ports[2])
        hosts = {c.api_client().configuration.host for c in others} | {api.configuration.host}
        assert len(hosts) == 3
        for cluster in others:
            core = k8s.CoreV1Api(cluster.api_client())
            assert len(core.list_node().items) == 3  # its own nodes, not the session's
    finally:
        for cluster in others:
            cluster.delete()
    assert all(not _processes_of(c) and not c.workdir.exists() for c in others)
    assert k8s.VersionApi(api).get_code().git_version  # the session's cluster is untouched


def test_a_component_that_dies_fails_start_up_with_its_log(
    kwok_cluster: KwokCluster | None, tmp_path: Path
) -> None:
    binaries = _own_binaries(kwok_cluster)
    broken = tmp_path / "bin"
    broken.mkdir()
    for b in BINARIES:
        (broken / b).symlink_to(binaries / b)
    (broken / "kube-scheduler").unlink()
    # answers kwokctl's `kube-scheduler version` probe, then dies when started for real
    (broken / "kube-scheduler").write_text(
        f'#!/bin/sh\ncase "$1" in --version|version) exec {binaries / "kube-scheduler"} "$@";; esac\n'
        "echo 'kube-scheduler: injected start-up failure' >&2\nexit 1\n"
    )
    (broken / "kube-scheduler").chmod(0o755)
    cluster = KwokCluster(broken)
    started = time.monotonic()
    try:
        with pytest.raises(ClusterError) as failed:
            cluster.create()
    finally:
        cluster.delete()
    message = str(failed.value)
    assert "exited during start-up: kube-scheduler" in message.splitlines()[0]
    assert "injected start-up failure" in message  # the tail of its log
    assert "--- kube-apiserver (last" in message  # and of the others
    assert time.monotonic() - started < 60  # fails as soon as it dies, not at the deadline
    assert not _processes_of(cluster) and not cluster.workdir.exists()


def test_stop_and_start_keeps_state_and_works_again(
    api: k8s.ApiClient, namespace: str, kwok_cluster: KwokCluster | None
) -> None:
    if kwok_cluster is None:
        pytest.skip("stops the control plane; an external cluster is in use")
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    deployment(api, namespace, "before", replicas=1)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "kept"}, "data": {"k": "v"}})
    kwok_cluster.stop()
    assert not kwok_cluster.reachable()
    started = time.monotonic()
    kwok_cluster.start()  # returns once the new controllers lead and kwok holds its nodes
    recovered = time.monotonic() - started
    assert core.read_namespaced_config_map("kept", namespace).data == {"k": "v"}  # etcd kept it
    assert apps.read_namespaced_deployment("before", namespace).status.available_replicas == 1
    rollout = time.monotonic()
    deployment(api, namespace, "after", replicas=2)  # controllers, scheduler and kwok work
    assert time.monotonic() - rollout < 30
    assert recovered < 90, recovered
