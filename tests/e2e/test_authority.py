"""A pusher can do only what the policy grants, and the API server is what enforces it
(issue 12): every step impersonates the tenant ServiceAccount of its namespace, so the
daemon's own ServiceAccount (deploy/rbac.yaml) holds no right on anyone's workloads. Each
test is an attack that worked when steps acted with the daemon's authority."""

from __future__ import annotations

import uuid
import zlib
from pathlib import Path

from daemonhelp import run_cli
from kubehelp import api, configmap, configmap_data, deployment, read_deployment, workflow_yaml  # noqa: F401
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from tenants import install_daemon_rbac, service_account_kubeconfig


def reconciler(*args: str, kubeconfig: str, log_dir: Path):
    return run_cli(*args, "--kubeconfig", kubeconfig, timeout=300, log_dir=log_dir)


def scale(namespace: str, name: str = "web", replicas: int = 3) -> str:
    return (
        f"    - {{name: scale, action: ScaleDeployment, target: {{namespace: {namespace},"
        f" name: {name}}}, params: {{replicas: {replicas}}}, timeout: 60s}}\n"
    )


def test_steps_can_do_only_what_their_tenant_account_may(
    api, namespace, kubeconfig, tmp_path: Path
) -> None:
    """As the daemon's own ServiceAccount: a namespace nobody onboarded (no deploy/tenant/)
    gets no step at all, because the daemon may not impersonate anyone there; an onboarded
    namespace whose Role leaves out another tool's config (argocd-rbac-cm, say) keeps it.
    Both refusals come from the API server, and the run records its reason."""
    install_daemon_rbac(api)
    as_daemon = service_account_kubeconfig(api, kubeconfig, tmp_path / "sa-kubeconfig")
    core, rbac = k8s.CoreV1Api(api), k8s.RbacAuthorizationV1Api(api)
    bare = f"t-bare-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": bare, "labels": {"reconciler.dev/e2e": "true"}}})
    try:
        deployment(api, bare, "web", replicas=1)
        deployment(api, namespace, "web", replicas=1)
        configmap(api, namespace, "app-config", {"A": "1"})
        configmap(api, namespace, "rbac-cm", {"policy.csv": "g, admins, role:admin"})
        # the tenant may change its app's config, not the RBAC config beside it
        role = rbac.read_namespaced_role("reconciler-steps", namespace)
        for rule in role.rules:
            if rule.resources == ["configmaps"]:
                rule.resource_names = ["app-config"]
                rule.verbs = ["get", "patch"]
        rbac.replace_namespaced_role("reconciler-steps", namespace, role)
        rewrite = (
            f"    - {{name: rewrite, action: UpdateConfigMap, target: {{namespace: {namespace},"
            " name: rbac-cm}, params: {data: {policy.csv: 'g, attacker, role:admin'}}}\n"
        )
        allowed = (
            f"    - {{name: tune, action: UpdateConfigMap, target: {{namespace: {namespace},"
            " name: app-config}, params: {data: {A: '2'}}}\n"
        )
        tag = zlib.crc32(namespace.encode())
        files = []
        for name, steps in (
            (f"bare-{tag}", scale(bare)),
            (f"rbac-{tag}", rewrite),
            (f"tune-{tag}", allowed),
        ):
            path = tmp_path / f"{name}.yaml"
            path.write_text(workflow_yaml(name, steps))
            files.append(str(path))
        result = reconciler("run", *files, "--once", kubeconfig=as_daemon, log_dir=tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        out = result.stdout
        daemon = "system:serviceaccount:reconciler-system:reconciler"
        # "cannot impersonate resource serviceaccounts", or with 1.35's constrained
        # impersonation "cannot impersonate-on:serviceaccount:get resource deployments"
        assert f'User "{daemon}" cannot impersonate' in out, out
        tenant = f"system:serviceaccount:{namespace}:reconciler-steps"
        assert f'User "{tenant}" cannot' in out and '"rbac-cm"' in out, out
        assert " step tune Succeeded" in out, out
        assert read_deployment(api, bare, "web").spec.replicas == 1
        assert configmap_data(api, namespace, "rbac-cm") == {"policy.csv": "g, admins, role:admin"}
        assert configmap_data(api, namespace, "app-config") == {"A": "2"}
    finally:
        core.delete_namespace(bare)


def test_a_cluster_scoped_kind_listed_in_the_policy_is_still_bounded_by_the_cluster_account(
    api, kubeconfig, tmp_path: Path
) -> None:
    """A policy may allow a cluster-scoped kind, but the step acts as reconciler-cluster,
    which deploy/ grants nodes only: even run with cluster-admin credentials, the API server
    refuses to make a ClusterRoleBinding to cluster-admin. Without a policy entry nothing
    is sent at all."""
    name = f"attacker-{uuid.uuid4().hex[:8]}"
    steps = (
        "    - name: escalate\n      action: Apply\n      params:\n        manifest:\n"
        "          apiVersion: rbac.authorization.k8s.io/v1\n          kind: ClusterRoleBinding\n"
        f"          metadata: {{name: {name}}}\n"
        "          roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\n"
        "          subjects: [{kind: ServiceAccount, name: default, namespace: default}]\n"
    )
    path = tmp_path / "escalate.yaml"
    path.write_text(workflow_yaml(f"escalate-{name}", steps))
    refused = reconciler("run", str(path), "--once", kubeconfig=kubeconfig, log_dir=tmp_path)
    assert refused.returncode == 1 and "not running anything" in refused.stderr
    assert (
        "does not allow cluster-scoped rbac.authorization.k8s.io/ClusterRoleBinding"
        in refused.stderr
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text("cluster: {kinds: [rbac.authorization.k8s.io/ClusterRoleBinding]}\n")
    result = reconciler(
        "run", str(path), "--once", "--policy", str(policy), kubeconfig=kubeconfig, log_dir=tmp_path
    )
    assert result.returncode == 1, result.stdout
    cluster = "system:serviceaccount:reconciler-system:reconciler-cluster"
    assert f'User "{cluster}" cannot' in result.stdout, result.stdout
    try:
        k8s.RbacAuthorizationV1Api(api).read_cluster_role_binding(name)
        raise AssertionError(f"ClusterRoleBinding {name} was made")
    except ApiException as err:
        assert err.status == 404


def test_what_rbac_cannot_bound_the_policy_refuses_before_anything_runs(
    api, namespace, kubeconfig, tmp_path: Path
) -> None:
    """The attacks of issue 12 that a tenant Role would let through or that no RBAC can
    express, tried against the cluster with admin credentials: a Custom pod in flux-system
    as kustomize-controller (its token), a Custom pod in a tenant namespace as another
    ServiceAccount, a Deployment force-applied over an existing one (privileged, the node's
    root mounted), Argo CD's RBAC config rewritten. All fail validation at their field;
    nothing reaches the cluster."""
    deployment(api, namespace, "web", replicas=1)
    attacks = {
        "token": (
            "    - {name: t, action: Custom, target: {namespace: flux-system}, params: {image: "
            "busybox, command: [cat, /var/run/secrets/kubernetes.io/serviceaccount/token],"
            " serviceAccountName: kustomize-controller}}\n",
            "namespace 'flux-system' is protected",
        ),
        "pod-as": (
            f"    - {{name: t, action: Custom, target: {{namespace: {namespace}}}, params: "
            "{image: busybox, serviceAccountName: ingress-nginx}}\n",
            "does not allow a Custom pod to run as ServiceAccount 'ingress-nginx'",
        ),
        "privileged": (
            "    - name: t\n      action: Apply\n      params:\n        manifest:\n"
            "          apiVersion: apps/v1\n          kind: Deployment\n"
            f"          metadata: {{name: web, namespace: {namespace}}}\n"
            "          spec: {template: {spec: {containers: [{name: app, image: busybox,"
            " securityContext: {privileged: true}}], volumes: [{name: root, hostPath:"
            " {path: /}}]}}}\n",
            "does not allow Apply of apps/Deployment",
        ),
        "argocd-rbac": (
            "    - {name: t, action: UpdateConfigMap, target: {namespace: argocd, name:"
            " argocd-rbac-cm}, params: {data: {policy.csv: 'g, attacker, role:admin'}}}\n",
            "namespace 'argocd' is protected",
        ),
    }
    for name, (steps, refusal) in attacks.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(workflow_yaml(f"attack-{name}", steps))
        result = reconciler("run", str(path), "--once", kubeconfig=kubeconfig, log_dir=tmp_path)
        assert result.returncode == 1 and "not running anything" in result.stderr, name
        assert any(r in result.stderr for r in refusal.split("|")), (name, result.stderr)
        assert f"{path}:" in result.stderr, "the error names the file"
    assert not k8s.BatchV1Api(api).list_namespaced_job(namespace).items
    web = read_deployment(api, namespace, "web").spec.template.spec
    assert not web.volumes and not web.containers[0].security_context
