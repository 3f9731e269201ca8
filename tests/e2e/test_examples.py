"""Every example in examples-repo/ runs for real (issue 6): pushed to a bare repository, run by
the daemon against the control plane, with the objects the examples target created first."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from daemonhelp import (  # noqa: F401  (fixtures)
    Daemon,
    Remote,
    daemons,
    remote,
    run_cli,
    sh,
    unpadded,
)
from examples_setup import (
    CANARY,
    MAINTENANCE_NODE,
    OLD_POOL,
    ExampleMetrics,
    approvers_policy,
    create_example_targets,
    on_real_node,
)
from kubehelp import api, execution, image_of, wait_for  # noqa: F401
from kubernetes import client as k8s
from promhelp import PrometheusServer
from realnode import LABEL, TAINT

from reconciler.manifest.loader import load_paths
from reconciler.manifest.policy import DEFAULT_PROTECTED, Policy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples-repo"
POLICY = EXAMPLES.parent / "demo" / "policy.yaml"  # what the demo's daemon runs with
EXPECTED = {
    "checkout-latency-remediation": "Succeeded",
    "node-maintenance": "Succeeded",
    "payments-config-rotation": "Succeeded",
    "storefront-fanout-restart": "Succeeded",
    "demo-failed-canary": "RolledBack",  # designed to fail and show its rollback record
    "demo-verified-rollout": "RolledBack",  # its error-rate check fails on a real Prometheus
    "node-rotation": "Succeeded",  # once alice and bob approve, by signed commits
}


def test_every_example_runs_against_the_cluster(
    api, kubeconfig, remote, daemons, real_node, tmp_path: Path
) -> None:
    metrics = ExampleMetrics()
    prometheus = PrometheusServer(metrics, tmp_path / "prometheus")
    try:
        run_examples(api, kubeconfig, remote, daemons, tmp_path, prometheus.start().url)
    finally:
        prometheus.stop()
        metrics.stop()


def run_examples(api, kubeconfig, remote, daemons, tmp_path: Path, prometheus_url: str) -> None:
    policy, keys = approvers_policy(POLICY, tmp_path)
    loaded = load_paths([EXAMPLES / "workflows"], Policy.load(DEFAULT_PROTECTED, policy))
    assert loaded.ok and {w.name for w in loaded.workflows} == set(EXPECTED)
    create_example_targets(api)
    shutil.copytree(EXAMPLES / "workflows", remote.clone / "workflows", dirs_exist_ok=True)
    canary = remote.clone / "workflows" / CANARY[0]  # its Job runs on the real node
    canary.write_text(on_real_node(canary.read_text(), LABEL, TAINT["key"]))
    loaded = load_paths([remote.clone / "workflows"], Policy.load(DEFAULT_PROTECTED, policy))
    remote.commit_all("examples")
    daemon = Daemon(
        str(remote.bare),
        tmp_path / "work",
        kubeconfig,
        "--once",
        "--max-concurrent-workflows",
        "5",
        "--policy",
        str(policy),
        "--prometheus-url",
        prometheus_url,
    )
    daemon.start(wait_ready=False)
    daemons.append(daemon)
    assert daemon.proc is not None
    rotation = next(w.run_id for w in loaded.workflows if w.name == "node-rotation")
    wait_for(
        lambda: (
            (execution(api, rotation) or {}).get("status", {}).get("phase") == "WaitingForApproval"
        ),
        120,
        "node-rotation waiting for approval",
    )
    assert all(not k8s.CoreV1Api(api).read_node(n).spec.unschedulable for n in OLD_POOL)
    for who, key in keys.items():  # as the report says: reconciler approve RUN STEP
        sh("git", "pull", "--quiet", "--rebase", "origin", "main", cwd=remote.clone)
        done = run_cli(
            "approve", rotation, "drain-old-pool", "--repo", str(remote.clone), "--as", who,
            "--signing-key", str(key), "-m", "pool retired in OPS-1234", log_dir=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert daemon.proc.wait(timeout=300) == 1  # one example is designed to fail
    phases = {}
    for w in loaded.workflows:
        record = remote.show(f"runs/{w.name}/{w.run_id}.yaml")
        assert record is not None, f"no record for {w.name}"
        phases[w.name] = next(
            line.split(": ", 1)[1] for line in record.splitlines() if line.startswith("phase: ")
        )
        assert execution(api, w.run_id)["status"]["phase"] == phases[w.name]
    assert phases == EXPECTED
    apps = k8s.AppsV1Api(api)
    checkout = apps.read_namespaced_deployment("checkout", "shop")
    assert checkout.spec.replicas == 6 and checkout.spec.template.spec.containers[0].image.endswith(
        "checkout:1.4.2"
    )
    catalog = apps.read_namespaced_deployment("catalog", "shop")
    assert catalog.spec.replicas == 2  # the failed canary's scale-up was undone
    assert k8s.CoreV1Api(api).read_namespaced_config_map("catalog-config", "shop").data == {
        "CACHE_BACKEND": "redis-v1"
    }
    assert not k8s.CoreV1Api(api).read_node(MAINTENANCE_NODE).spec.unschedulable
    assert all(k8s.CoreV1Api(api).read_node(n).spec.unschedulable for n in OLD_POOL)
    assert k8s.CoreV1Api(api).read_namespaced_config_map("node-rotation", "ops").data == {
        "pool": "old",
        "ticket": "OPS-1234",
        "drained": "3 of 3",
    }
    rotated = yaml.safe_load(remote.show(f"runs/node-rotation/{rotation}.yaml") or "")
    drain = next(s for s in rotated["steps"] if s["name"] == "drain-old-pool")
    assert drain["targets"] == list(OLD_POOL) and drain["peakConcurrent"] == 2
    assert [d["approver"] for d in drain["approval"]["approvedBy"]] == list(keys)
    failed = unpadded(
        remote.show(
            f"runs/demo-failed-canary/{next(w.run_id for w in loaded.workflows if w.name == 'demo-failed-canary')}.md"
        )
    )
    assert "## Rollback" in failed and "| 2 | switch-cache | UpdateConfigMap | Undone |" in failed
    # the canary's container ran and failed: its exit code and its output are in the report
    assert "container step exited with code 1 (Error)" in failed, failed
    assert "probing http://catalog.shop/healthz" in failed and "wget: bad address" in failed

    verified = unpadded(
        remote.show(
            f"runs/demo-verified-rollout/{next(w.run_id for w in loaded.workflows if w.name == 'demo-verified-rollout')}.md"
        )
    )
    summary = next(line for line in verified.splitlines() if line.startswith("| message |"))
    assert "verify 'error-rate' failed: result = 0.08: result > 0.05 at " in summary, summary
    assert "## Checks" in verified and "| new-image | error-rate |" in verified
    assert image_of(api, "shop", "recommendations") == "registry.example/recommendations:1.0"
