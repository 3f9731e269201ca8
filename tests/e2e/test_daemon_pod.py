"""The daemon as the Pod deploy/ describes (issue 14), on the real node: its own image (make
image), deploy/ applied server-side through a test overlay, the in-cluster configuration (the
mounted token and CA), deploy/'s RBAC, a read-only root filesystem and the non-root user,
all proven by use. The overlay changes only what these machines need: hostNetwork on the real
node and the API server at 127.0.0.1 (no pod network, no ClusterIP traffic), one replica, the
locally built image, a git remote served on 127.0.0.1, a short poll interval and lease.

Killed mid-run, the Deployment's replacement resumes the run: each step's container runs
once, and the run's record commit comes from the new pod."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from auditlog import AuditLog
from daemonhelp import Remote, free_port, remote  # noqa: F401  (fixtures)
from deployhelp import ROOT, apply_kustomization, kubectl
from figures import report
from kubehelp import api, execution, wait_for  # noqa: F401  (fixtures)
from kubernetes import client as k8s
from realnode import LABEL, TAINT, daemon_image, jobs_image

from reconciler.actions.base import run_object_name

SYSTEM = "reconciler-system"
POD_LABEL = "app.kubernetes.io/name=reconciler"


@pytest.fixture
def git_server(remote: Remote) -> Iterator[str]:
    """`git daemon` on 127.0.0.1 serving the remote, pushes allowed: the pod's git remote."""
    port = free_port()
    base = remote.bare.parent
    process = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--listen=127.0.0.1",
            f"--port={port}",
            f"--base-path={base}",
            "--export-all",
            "--enable=receive-pack",
            "--informative-errors",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"git://127.0.0.1:{port}/{remote.bare.name}"
    wait_for(
        lambda: subprocess.run(["git", "ls-remote", url], capture_output=True).returncode == 0,
        15,
        "git daemon to serve",
    )
    yield url
    process.terminate()
    process.wait(10)


def overlay(tmp_path: Path, repo_url: str, api_port: int, listen_port: int) -> Path:
    name, _archive = daemon_image()
    image, tag = name.rsplit(":", 1)
    folder = tmp_path / "overlay"
    folder.mkdir()
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "reconciler", "namespace": SYSTEM},
        "spec": {
            "replicas": 1,
            "template": {
                "spec": {
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "nodeSelector": {LABEL[0]: LABEL[1]},
                    "tolerations": [{"key": TAINT["key"], "operator": "Exists"}],
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "reconciler",
                            "imagePullPolicy": "Never",
                            "args": [
                                "daemon",
                                f"--repo={repo_url}",
                                f"--listen=127.0.0.1:{listen_port}",
                                "--workdir=/work",
                                "--leader-elect",
                                "--lease-duration=7",  # the replacement takes over sooner
                                "--interval=1",
                                "--webhook-secret-file=/etc/reconciler/git/webhook-secret",
                            ],
                            "env": [
                                {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                                {"name": "KUBERNETES_SERVICE_PORT", "value": str(api_port)},
                            ],
                        }
                    ],
                }
            },
        },
    }
    (folder / "deployment-patch.yaml").write_text(yaml.safe_dump(patch))
    ports = [
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/ports",
            "value": [{"name": "http", "containerPort": listen_port}],
        }
    ]
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(ROOT / "deploy", folder)],
                "images": [
                    {"name": "ghcr.io/reconciler-dev/reconciler", "newName": image, "newTag": tag}
                ],
                "patches": [
                    {"path": "deployment-patch.yaml"},
                    {  # hostNetwork is a host namespace: only "privileged" admits it
                        "target": {"kind": "Namespace", "name": SYSTEM},
                        "patch": yaml.safe_dump(
                            [
                                {
                                    "op": "replace",
                                    "path": "/metadata/labels/pod-security.kubernetes.io~1enforce",
                                    "value": "privileged",
                                }
                            ]
                        ),
                    },
                    {
                        "target": {"kind": "Deployment", "name": "reconciler"},
                        "patch": yaml.safe_dump(ports),
                    },
                ],
            }
        )
    )
    return folder


def daemon_pods(api) -> list[k8s.V1Pod]:
    pods = k8s.CoreV1Api(api).list_namespaced_pod(SYSTEM, label_selector=POD_LABEL).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def ready(pod: k8s.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def chain(namespace: str, seconds: int) -> str:
    image = jobs_image()
    placement = (
        f"nodeSelector: {{{LABEL[0]}: '{LABEL[1]}'}}, "
        f"tolerations: [{{key: {TAINT['key']}, operator: Exists}}]"
    )
    steps = ""
    for i, name in enumerate(("one", "two", "three")):
        deps = f"      dependsOn: [{('one', 'two')[i - 1]}]\n" if i else ""
        steps += (
            f"    - name: {name}\n      action: Custom\n{deps}"
            f"      target: {{namespace: {namespace}}}\n"
            f"      params: {{image: '{image}', command: [sh, -c, 'sleep {seconds}; echo {name} done'],"
            f" {placement}}}\n      timeout: 120s\n"
        )
    return (
        "apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\n"
        f"metadata: {{name: pod-chain}}\nspec:\n  steps:\n{steps}"
    )


def test_the_daemon_runs_as_the_deploy_pod_and_its_replacement_resumes_a_run(
    api, kubeconfig, kwok_cluster, namespace, real_node, remote, git_server, tmp_path: Path
) -> None:
    core = k8s.CoreV1Api(api)
    api_port = int(re.search(r":(\d+)$", api.configuration.host).group(1))
    folder = overlay(tmp_path, git_server, api_port, free_port())
    kubectl(kubeconfig, "create", "namespace", SYSTEM)  # may exist (other tests)
    core.create_namespaced_secret(
        SYSTEM,
        {
            "metadata": {"name": "reconciler-git"},
            "data": {"webhook-secret": base64.b64encode(os.urandom(24)).decode()},
        },
    )
    try:
        started = time.monotonic()
        applied = apply_kustomization(kubeconfig, folder)
        assert applied.returncode == 0, applied.stderr
        # Ready only through the real readiness probe: /readyz answers 200 once the daemon
        # reached the API server with its mounted token and synced the git remote
        waiting(api, lambda: [p for p in daemon_pods(api) if ready(p)], 120, "the pod Ready")
        (first,) = daemon_pods(api)
        to_ready = time.monotonic() - started
        assert first.spec.node_name == real_node.name
        spec = first.spec.containers[0]
        assert spec.security_context.read_only_root_filesystem is True
        assert first.spec.security_context.run_as_user == 10001
        assert first.status.container_statuses[0].restart_count == 0
        lease = k8s.CoordinationV1Api(api).read_namespaced_lease("reconciler", SYSTEM).spec
        assert (lease.holder_identity, lease.lease_duration_seconds) == (
            f"{first.metadata.name}-1",
            7,
        )

        remote.write("workflows/chain.yaml", chain(namespace, 2))
        remote.commit_all("a chain of three real Jobs")
        batch = k8s.BatchV1Api(api)

        def job_of(step: str) -> list[k8s.V1Job]:
            return [
                j
                for j in batch.list_namespaced_job(namespace).items
                if j.metadata.labels.get("reconciler.dev/step") == step
            ]

        waiting(api, lambda: job_of("two"), 90, "step two's Job (the run mid-way)")
        run_id = job_of("two")[0].metadata.labels["reconciler.dev/run-id"]
        pushed_to_two = time.monotonic() - started - to_ready
        # the pod dies at once (no grace): the Deployment's ReplicaSet makes a new one
        core.delete_namespaced_pod(first.metadata.name, SYSTEM, grace_period_seconds=0)
        killed = time.monotonic()
        wait_for(
            lambda: [p for p in daemon_pods(api) if p.metadata.name != first.metadata.name],
            60,
            "the replacement pod",
        )
        record = f"runs/pod-chain/{run_id}.yaml"
        waiting(
            api,
            lambda: "phase: Succeeded" in (remote.show(record) or ""),
            180,
            "the run's Succeeded record from the replacement",
        )
        (second,) = daemon_pods(api)
        assert second.metadata.name != first.metadata.name
        report(
            f"daemon pod: Ready {to_ready:.1f}s after apply; push to step two {pushed_to_two:.1f}s;"
            f" killed, the replacement's Succeeded record {time.monotonic() - killed:.1f}s later"
        )

        # each step's container ran once: one Job each, one pod each, exit 0, its output
        for step in ("one", "two", "three"):
            (job,) = job_of(step)
            assert job.metadata.name == run_object_name(run_id, step)
            pods = core.list_namespaced_pod(
                namespace, label_selector=f"job-name={job.metadata.name}"
            ).items
            assert len(pods) == 1, f"step {step}: {len(pods)} pods"
            ended = pods[0].status.container_statuses[0].state.terminated
            assert ended.exit_code == 0 and pods[0].spec.node_name == real_node.name
        assert "one done" in remote.show(record) and "three done" in remote.show(record)

        # as the API server saw it: both pods worked on the run, each Job was created once
        audit = AuditLog(kwok_cluster.audit_log)
        audit.settle(api)
        requests = audit.of_run(run_id)
        workers = {r.identity for r in requests if r.mutating}
        assert {f"{first.metadata.name}-1", f"{second.metadata.name}-1"} <= workers, workers
        created = [r for r in requests if r.verb == "create" and r.resource == "jobs"]
        assert sorted(r.name for r in created if r.code == 201) == sorted(
            run_object_name(run_id, s) for s in ("one", "two", "three")
        )
        assert execution(api, run_id)["status"]["phase"] == "Succeeded"
    finally:
        kubectl(kubeconfig, "delete", "deployment", "reconciler", "-n", SYSTEM, "--wait=false")
        kubectl(kubeconfig, "delete", "secret", "reconciler-git", "-n", SYSTEM)
        restored = kubectl(
            kubeconfig,
            "label",
            "--overwrite",
            "namespace",
            SYSTEM,
            "pod-security.kubernetes.io/enforce=restricted",
        )
        assert restored.returncode == 0, restored.stderr
        wait_for(lambda: not _pods_left(api), 60, "the daemon pods gone")
        # the cluster as the test found it: deploy/'s Lease is made again by its next holder
        kubectl(kubeconfig, "delete", "lease", "reconciler", "-n", SYSTEM, "--ignore-not-found")


def waiting(api, predicate, timeout: float, what: str):
    """wait_for, and on a timeout the daemon pods' states and log tails in the message."""
    try:
        return wait_for(predicate, timeout, what)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{diagnosis(api)}") from None


def diagnosis(api) -> str:
    core = k8s.CoreV1Api(api)
    out = []
    for pod in core.list_namespaced_pod(SYSTEM, label_selector=POD_LABEL).items:
        states = [(s.name, s.state, s.restart_count) for s in pod.status.container_statuses or []]
        out.append(f"pod {pod.metadata.name} {pod.status.phase} on {pod.spec.node_name}: {states}")
        try:
            log = core.read_namespaced_pod_log(pod.metadata.name, SYSTEM, tail_lines=30)
        except Exception as err:
            log = f"(no log: {err})"
        out.append(log)
    events = core.list_namespaced_event(SYSTEM).items[-15:]
    out += [
        f"event {e.first_timestamp or e.event_time} {e.involved_object.name}: {e.reason}: "
        f"{e.message}"
        for e in events
    ]
    return "\n".join(out)


def _pods_left(api) -> list[str]:
    pods = k8s.CoreV1Api(api).list_namespaced_pod(SYSTEM, label_selector=POD_LABEL).items
    return [p.metadata.name for p in pods]
