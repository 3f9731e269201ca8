"""deploy/ is real and its RBAC is exactly enough (issues 6 and 12): the kustomize output
applies server-side, and deploy/tenant/ through a kustomize overlay; the daemon, running
with a token of deploy/'s ServiceAccount (TokenRequest API, so the API server enforces
exactly that RBAC), completes workflows using every action and every undo, each step acting
as the tenant or cluster account it impersonates; and the API server's audit log shows that
every permission granted to each of the three accounts was used by that account (or the
rule's comment says why it cannot show up here).

"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import yaml
from daemonhelp import Daemon, Remote, daemons, remote  # noqa: F401  (fixtures)
from deployhelp import apply_kustomization
from figures import report
from kubehelp import api, deployment, execution, own_node, secret, wait_for  # noqa: F401
from kubernetes import client as k8s
from tenants import service_account_kubeconfig

ROOT = Path(__file__).resolve().parents[2]
SA_USER = "system:serviceaccount:reconciler-system:reconciler"
CLUSTER_USER = "system:serviceaccount:reconciler-system:reconciler-cluster"
# Granted but invisible in an audit log of this cluster, with the reason:
JUSTIFIED = {
    # Server-side apply that creates an object is also authorized as `create`, but the audit
    # event records the request verb, `patch`.
    ("", "configmaps", "create"): "apply-create is audited as patch",
    # Checked only by the OwnerReferencesPermissionEnforcement admission plugin (enabled on
    # OpenShift, not on this control plane) when blockOwnerDeletion is set.
    ("reconciler.dev", "workflowexecutions/finalizers", "update"): "admission check, not a request",
}


def _settled(read, granted, timeout: float = 30):
    """Read the audit log until every grant is in it or the time is up; the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        used, denied = read()
        if not unused_grants(granted, used) or time.monotonic() > deadline:
            return used, denied
        time.sleep(1)


def _rules(path: Path, name: str | None = None) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of the Roles and ClusterRoles in `path` (only `name`, if
    given); an impersonate grant as "serviceaccounts/<name>", one per account."""
    granted = set()
    for doc in yaml.safe_load_all(path.read_text()):
        if doc["kind"] not in ("ClusterRole", "Role") or name not in (
            None,
            doc["metadata"]["name"],
        ):
            continue
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb), "no wildcards"
                        if verb == "impersonate":
                            granted |= {
                                (group, f"{resource}/{n}", verb) for n in rule["resourceNames"]
                            }
                        else:
                            granted.add((group, resource, verb))
    return granted


def granted_permissions(tenant_user: str) -> dict[str, set[tuple[str, str, str]]]:
    """What each account may do, from deploy/: the daemon, the cluster account, a tenant."""
    tenant = ROOT / "deploy" / "tenant" / "tenant.yaml"
    return {
        SA_USER: _rules(ROOT / "deploy" / "rbac.yaml") | _rules(tenant, "reconciler-impersonate"),
        CLUSTER_USER: _rules(ROOT / "deploy" / "cluster-account.yaml"),
        tenant_user: _rules(tenant, "reconciler-steps"),
    }


def unused_grants(granted, used) -> dict[str, list[tuple[str, str, str]]]:
    unused = {who: sorted(g - used.get(who, set()) - set(JUSTIFIED)) for who, g in granted.items()}
    return {who: u for who, u in unused.items() if u}


def every_action(ns: str, node: str, name: str, tail: str = "") -> str:
    return f"""apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: {name}}}
spec:
  timeout: 5m
  steps:
    - {{name: scale, action: ScaleDeployment, target: {{namespace: {ns}, name: web}}, params: {{replicas: 3}}, timeout: 60s}}
    - {{name: image, action: UpdateImage, dependsOn: [scale], target: {{namespace: {ns}, name: web}}, params: {{container: app, image: "registry.example/web:2"}}, timeout: 60s}}
    - {{name: restart, action: RestartDeployment, dependsOn: [image], target: {{namespace: {ns}, name: web}}, timeout: 60s}}
    - {{name: kill, action: DeletePod, dependsOn: [restart], target: {{namespace: {ns}}}, params: {{selector: app=web, gracePeriod: 0}}, timeout: 60s}}
    - {{name: cordon, action: CordonNode, dependsOn: [kill], target: {{name: {node}}}}}
    - {{name: drain, action: DrainNode, dependsOn: [cordon], target: {{name: {node}}}, params: {{gracePeriod: 0}}, timeout: 60s}}
    - {{name: uncordon, action: UncordonNode, dependsOn: [drain], target: {{name: {node}}}}}
    - {{name: cm, action: UpdateConfigMap, dependsOn: [uncordon], target: {{namespace: {ns}, name: cfg}}, params: {{data: {{A: "2"}}}}}}
    - {{name: secret, action: UpdateSecret, dependsOn: [cm], target: {{namespace: {ns}, name: sec}}, params: {{fromSecret: {{name: new-sec}}}}}}
    - name: create
      action: Apply
      dependsOn: [secret]
      params: {{manifest: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: created-{name}, namespace: {ns}}}, data: {{X: "1"}}}}}}
    - name: modify
      action: Apply
      dependsOn: [create]
      params: {{manifest: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: existing, namespace: {ns}}}, data: {{B: "2"}}}}}}
    - name: job
      action: Custom
      dependsOn: [modify]
      target: {{namespace: {ns}}}
      params: {{image: busybox, command: [sh, -c, "echo ok"], rollback: {{image: busybox, command: [sh, -c, "echo undo"]}}}}
      timeout: 60s
    - {{name: fan-nodes, action: UncordonNode, dependsOn: [job], target: {{}}, forEach: {{selector: {{kind: Node, labelSelector: "kubernetes.io/hostname={node}"}}}}}}
    - {{name: fan-web, action: ScaleDeployment, dependsOn: [fan-nodes], target: {{namespace: {ns}}}, params: {{replicas: 3}}, forEach: {{selector: {{kind: Deployment, labelSelector: "fan=none"}}, allowEmpty: true}}, timeout: 60s}}
{tail}"""


def test_deploy_applies_server_side_and_its_rbac_is_exactly_enough(
    api, namespace, kubeconfig, remote, daemons, own_node, tmp_path: Path
) -> None:
    applied = apply_kustomization(kubeconfig, ROOT / "deploy")
    assert applied.returncode == 0, applied.stderr
    assert "clusterrole.rbac.authorization.k8s.io/reconciler serverside-applied" in applied.stdout
    # the tenant template through an overlay, as a user onboards a namespace
    overlay = tmp_path / "overlay"
    shutil.copytree(ROOT / "deploy" / "tenant", overlay / "tenant")
    (overlay / "kustomization.yaml").write_text(f"namespace: {namespace}\nresources: [tenant]\n")
    onboarded = apply_kustomization(kubeconfig, overlay)
    assert onboarded.returncode == 0, onboarded.stderr
    assert (
        "rolebinding.rbac.authorization.k8s.io/reconciler-steps serverside-applied"
        in onboarded.stdout
    )
    tenant_user = f"system:serviceaccount:{namespace}:reconciler-steps"
    core = k8s.CoreV1Api(api)
    # The daemon under test runs here, with the ServiceAccount's token; the Deployment's
    # own (kwok) pods are not used, and one scheduled onto this test's node would block its
    # drain (emptyDir data): none of them stays.
    k8s.AppsV1Api(api).patch_namespaced_deployment_scale(
        "reconciler", "reconciler-system", {"spec": {"replicas": 0}}
    )
    wait_for(
        lambda: (
            not core.list_namespaced_pod(
                "reconciler-system", label_selector="app.kubernetes.io/name=reconciler"
            ).items
        ),
        60,
        "the deployed daemon's pods gone",
    )
    deployment(api, namespace, "web", replicas=2)
    deployment(api, namespace, "onnode", replicas=1, node=own_node)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"A": "1"}})
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "existing"}, "data": {"A": "1"}}
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "sec"}, "stringData": {"K": secret("old-e2e-value")}}
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "new-sec"}, "stringData": {"K": secret("new-e2e-value")}}
    )
    remote.write("workflows/all.yaml", every_action(namespace, own_node, "all-actions"))
    missing = (
        "    - {name: missing, action: ScaleDeployment, dependsOn: [fan-web], "
        f"target: {{namespace: {namespace}, name: nope}}, params: {{replicas: 1}}}}\n"
    )
    # the same actions again, ending in a failure: every undo runs too
    undo = (
        every_action(namespace, own_node, "undo-all", missing)
        .replace("name: web", "name: web")
        .replace("created-undo-all", "created-undo-all")
    )
    remote.write(
        "workflows/undo.yaml",
        undo.replace("drain, action: DrainNode", "drain2, action: DrainNode").replace(
            "dependsOn: [drain]", "dependsOn: [drain2]"
        ),
    )
    remote.commit_all("every action")
    sa_kubeconfig = service_account_kubeconfig(api, kubeconfig, tmp_path / "sa-kubeconfig")
    daemon = Daemon(
        str(remote.bare),
        tmp_path / "work",
        sa_kubeconfig,
        "--once",
        "--max-concurrent-workflows",
        "1",
        "--leader-elect",
        "--lease-namespace",
        "reconciler-system",
    )
    daemon.start(wait_ready=False)
    daemons.append(daemon)
    assert daemon.proc.wait(timeout=400) == 1, daemon.logs()[-3000:]  # undo-all fails by design
    records = {
        name: remote.show(
            f"runs/{name}/"
            + next(p.split("/")[-1] for p in remote.files(f"runs/{name}") if p.endswith(".yaml"))
        )
        for name in ("all-actions", "undo-all")
    }
    assert "phase: Succeeded" in records["all-actions"], records["all-actions"]
    assert "phase: RolledBack" in records["undo-all"], records["undo-all"]
    assert "result: Failed" not in records["undo-all"]
    assert "forbidden" not in daemon.logs().lower()
    # once their records are in git, finished executions beyond --execution-history go,
    # with the Jobs and capture Secrets they own (the same ServiceAccount deletes them)
    run_ids = [
        next(
            p.split("/")[-1][: -len(".yaml")]
            for p in remote.files(f"runs/{n}")
            if p.endswith(".yaml")
        )
        for n in ("all-actions", "undo-all")
    ]
    assert all(execution(api, r) is not None for r in run_ids)
    pruner = Daemon(
        str(remote.bare),
        tmp_path / "work",
        sa_kubeconfig,
        "--once",
        "--execution-history",
        "0",
        "--leader-elect",
        "--lease-namespace",
        "reconciler-system",
        name="pruner",
    )
    pruner.start(wait_ready=False)
    daemons.append(pruner)
    assert pruner.proc.wait(timeout=120) == 0, pruner.logs()[-3000:]  # nothing new to run
    wait_for(lambda: all(execution(api, r) is None for r in run_ids), 60, "executions deleted")
    assert len(remote.files("runs/all-actions")) == 2  # the record in git stays

    audit = os.environ.get("RECONCILER_E2E_AUDIT_LOG")
    if not audit or not Path(audit).exists():
        report("\nno audit log on this cluster: RBAC proven sufficient, minimality not checked")
        return

    def read_audit() -> tuple[dict[str, set[tuple[str, str, str]]], list[tuple[str, ...]]]:
        """What each account did: a request the daemon made as someone else counts for the
        account it impersonated, and as the daemon's use of its impersonate grant."""
        used: dict[str, set[tuple[str, str, str]]] = {}
        denied = []
        # the live file and any rotated one (audit-<time>.log): a busy suite rotates it
        for path in sorted(Path(audit).parent.glob("audit*.log")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line still being written
                if event.get("user", {}).get("username") != SA_USER or "objectRef" not in event:
                    continue
                if not any(p in event.get("userAgent", "") for p in ours):
                    continue  # another test's process with the same ServiceAccount
                ref = event["objectRef"]
                resource = ref.get("resource", "") + (
                    f"/{ref['subresource']}" if ref.get("subresource") else ""
                )
                who = (event.get("impersonatedUser") or {}).get("username") or SA_USER
                if who != SA_USER:
                    account = who.rsplit(":", 1)[-1]
                    used.setdefault(SA_USER, set()).add(
                        ("", f"serviceaccounts/{account}", "impersonate")
                    )
                used.setdefault(who, set()).add((ref.get("apiGroup", ""), resource, event["verb"]))
                if event.get("responseStatus", {}).get("code") == 403:
                    denied.append((who, ref.get("apiGroup", ""), resource, event["verb"]))
        return used, denied

    # the API server writes audit events in batches: read until every grant shows up (or
    # the time is up, and the assertion below names what is missing)
    # this test's daemons only, by the process each request's User-Agent names
    ours = [f"({socket.gethostname()}-{d.proc.pid})" for d in (daemon, pruner)]
    granted = granted_permissions(tenant_user)
    used, denied = _settled(read_audit, granted)
    assert not denied, f"an account was refused: {sorted(set(denied))}"
    assert set(used) <= set(granted), (
        f"requests as accounts deploy/ does not make: {set(used) - set(granted)}"
    )
    report(
        "\npermissions used, per account:\n  "
        + "\n  ".join(f"{who}: {sorted(u)}" for who, u in sorted(used.items()))
    )
    unused = unused_grants(granted, used)
    assert not unused, f"granted but never used by any e2e run (remove or justify): {unused}"
