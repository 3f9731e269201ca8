"""Checks that a remediation worked (issue 13), through the daemon and git, on the real
control plane and a real Prometheus (tests/e2e/promhelp.py): a verify that passes once the
errors drop, one whose errors stay high (rolled back, that step first), a guard on a firing
alert that holds a run until the alert resolves, a readiness condition that never holds."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from daemonhelp import Daemon, Remote, daemons, remote, unpadded  # noqa: F401  (fixtures)
from kubehelp import (  # noqa: F401
    api,
    configmap,
    configmap_data,
    deployment,
    read_deployment,
    wait_for,
    workflow_yaml,
)
from kubernetes import client as k8s
from promhelp import Metrics, metrics, prometheus_session  # noqa: F401  (fixtures)

from reconciler.engine.record import RunPhase


def record_of(remote: Remote, name: str) -> str:
    path = next(p for p in remote.files(f"runs/{name}") if p.endswith(".yaml"))
    return remote.show(path) or ""


def markdown_of(remote: Remote, name: str) -> str:
    path = next(p for p in remote.files(f"runs/{name}") if p.endswith(".md"))
    return remote.show(path) or ""


def test_verify_and_guards_decide_runs_on_real_measurements(
    api, namespace, kubeconfig, remote, daemons, metrics: Metrics, tmp_path: Path
) -> None:
    ns = namespace
    for name in ("recovers", "stays-bad", "guarded"):
        deployment(api, ns, name, replicas=1)
    configmap(api, ns, "cfg", {"MODE": "old"})
    configmap(api, ns, "cfg2", {"MODE": "old"})
    # a Deployment whose pods never get Ready: no node matches its selector
    k8s.AppsV1Api(api).create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": "never-ready"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "never-ready"}},
                "template": {
                    "metadata": {"labels": {"app": "never-ready"}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": "no-such-node"},
                        "containers": [{"name": "app", "image": "registry.example/app:1"}],
                    },
                },
            },
        },
    )
    metrics.set("errors-recovers", 0.5)  # high until the scale-up lands
    metrics.set("errors-stays-bad", 0.2)
    metrics.set("alert", 1)  # firing until the test resolves it

    def verify(series: str, extra: str = "") -> str:
        return (
            "      verify:\n"
            f"        - name: error-rate\n          prometheus: {{query: '{series}'}}\n"
            f"          successCondition: 'result < 0.01'\n{extra}"
        )

    remote.write(
        "workflows/recovers.yaml",
        workflow_yaml(
            "recovers",
            f"    - name: scale\n      action: ScaleDeployment\n"
            f"      target: {{namespace: {ns}, name: recovers}}\n      params: {{replicas: 2}}\n"
            + verify(
                metrics.series("errors-recovers"),
                "          initialDelay: 2s\n          interval: 1s\n          count: 4\n"
                "          failureLimit: 2\n",
            ),
        ),
    )
    remote.write(
        "workflows/stays-bad.yaml",
        workflow_yaml(
            "stays-bad",
            f"    - {{name: config, action: UpdateConfigMap, target: {{namespace: {ns}, name: cfg}},"
            " params: {data: {MODE: new}}}\n"
            f"    - name: scale\n      action: ScaleDeployment\n      dependsOn: [config]\n"
            f"      target: {{namespace: {ns}, name: stays-bad}}\n      params: {{replicas: 2}}\n"
            + verify(
                metrics.series("errors-stays-bad"),
                "          failureCondition: 'result > 0.1'\n          interval: 1s\n"
                "          count: 5\n          failureLimit: 3\n",
            ),
        ),
    )
    remote.write(
        "workflows/guarded.yaml",
        workflow_yaml(
            "guarded",
            f"    - name: scale\n      action: ScaleDeployment\n"
            f"      target: {{namespace: {ns}, name: guarded}}\n      params: {{replicas: 2}}\n",
            "  guards:\n    - name: no-critical-alerts\n"
            f"      prometheus: {{query: '{metrics.firing()}'}}\n"
            "      successCondition: 'result == 0'\n      interval: 1s\n",
        ),
    )
    remote.write(
        "workflows/readiness.yaml",
        workflow_yaml(
            "readiness",
            f"    - name: config\n      action: UpdateConfigMap\n"
            f"      target: {{namespace: {ns}, name: cfg2}}\n      params: {{data: {{MODE: new}}}}\n"
            "      verify:\n        - name: pods-ready\n          kubernetes:\n"
            f"            object: {{apiVersion: apps/v1, kind: Deployment, namespace: {ns},"
            " name: never-ready}\n"
            "            condition: 'has(object.status.readyReplicas) &&"
            " object.status.readyReplicas == object.spec.replicas'\n"
            "          interval: 1s\n          timeout: 4s\n",
        ),
    )
    # what the daemon will see first, seen by Prometheus already
    wait_for(lambda: metrics.value(metrics.firing()) == 1, 30, "the alert firing")
    wait_for(lambda: metrics.value(metrics.series("errors-recovers")) == 0.5, 30, "the errors")
    remote.commit_all("checked remediations")

    def recover_and_resolve() -> None:
        # the errors drop once the scale-up is in the cluster; the alert resolves later
        wait_for(lambda: read_deployment(api, ns, "recovers").spec.replicas == 2, 60, "scaled")
        metrics.set("errors-recovers", 0.001)
        time.sleep(4)
        metrics.set("alert", 0)

    side = threading.Thread(target=recover_and_resolve, daemon=True)
    side.start()
    daemon = Daemon(
        str(remote.bare),
        tmp_path / "work",
        kubeconfig,
        "--once",
        "--max-concurrent-workflows",
        "4",
        "--prometheus-url",
        metrics.server.url,
    )
    daemons.append(daemon.start(wait_ready=False))
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=180) == 1, daemon.logs()[-3000:]  # two fail by design
    side.join(timeout=5)

    recovers = record_of(remote, "recovers")
    assert f"phase: {RunPhase.SUCCEEDED}" in recovers, recovers
    assert "verdict: Passed" in recovers and "value: '0.001'" in recovers

    bad = record_of(remote, "stays-bad")
    assert f"phase: {RunPhase.ROLLED_BACK}" in bad, bad
    assert "result = 0.2: result > 0.1" in bad and "decisive: true" in bad
    assert read_deployment(api, ns, "stays-bad").spec.replicas == 1
    assert configmap_data(api, ns, "cfg") == {"MODE": "old"}
    page = unpadded(markdown_of(remote, "stays-bad"))
    summary = next(line for line in page.splitlines() if line.startswith("| message |"))
    assert "verify 'error-rate' failed: result = 0.2: result > 0.1 at " in summary, summary
    order = [
        line.split(" | ")[1]
        for line in page.splitlines()
        if line.startswith("| 1 | ") or line.startswith("| 2 | ")
    ]
    assert order == ["scale", "config"], page  # the verified step undone first

    guarded = record_of(remote, "guarded")
    assert f"phase: {RunPhase.SUCCEEDED}" in guarded, guarded
    assert "role: guard" in guarded and "value: '1'" in guarded and "value: '0'" in guarded

    readiness = record_of(remote, "readiness")
    assert f"phase: {RunPhase.ROLLED_BACK}" in readiness, readiness
    assert "not true within 4s" in readiness
    assert configmap_data(api, ns, "cfg2") == {"MODE": "old"}
    assert daemon.get("/healthz")[0] in (0, 200)  # --once: exited cleanly, not crashed


def test_a_daemon_killed_while_verifying_measures_again_and_never_applies_again(
    api, namespace, kubeconfig, remote, daemons, audit_log, metrics: Metrics, tmp_path: Path
) -> None:
    """kill -9 right after the first measurement (failpoint `measured:scale`): the next
    daemon resumes the step at its verify, takes the measurements again, and the audit log
    shows no write of the step from it."""
    deployment(api, namespace, "web", replicas=1)
    metrics.set("errors", 0.001)
    remote.write(
        "workflows/killed.yaml",
        workflow_yaml(
            "killed",
            f"    - name: scale\n      action: ScaleDeployment\n"
            f"      target: {{namespace: {namespace}, name: web}}\n      params: {{replicas: 2}}\n"
            "      verify:\n        - name: error-rate\n"
            f"          prometheus: {{query: '{metrics.series('errors')}'}}\n"
            "          successCondition: 'result < 0.01'\n          interval: 1s\n          count: 3\n",
        ),
    )
    wait_for(lambda: metrics.value(metrics.series("errors")) is not None, 30, "scraped")
    remote.commit_all("verified scale")
    args = ("--interval", "3600", "--prometheus-url", metrics.server.url)
    first = Daemon(
        str(remote.bare), tmp_path / "w1", kubeconfig, *args, failpoints="measured:scale"
    )
    daemons.append(first.start(wait_ready=False))
    assert first.proc is not None and first.proc.wait(timeout=90) == -9, first.logs()[-2000:]
    assert "failpoint measured:scale reached" in first.logs()
    second = Daemon(str(remote.bare), tmp_path / "w2", kubeconfig, *args, name="second")
    daemons.append(second.start())
    wait_for(lambda: any("killed" in s and "Succeeded" in s for s in remote.log()), 60, "done")
    record = record_of(remote, "killed")
    # one check, its three measurements taken again by the second daemon
    assert record.count("name: error-rate") == 1 and record.count("verdict: Passed") == 3 + 1
    assert read_deployment(api, namespace, "web").spec.replicas == 2
    if audit_log is not None:
        from auditlog import AuditLog

        audit = AuditLog(audit_log)
        audit.settle(api)
        run_id = next(p for p in remote.files("runs/killed") if p.endswith(".yaml")).split("/")[-1][
            :-5
        ]
        writes = [r for r in audit.of_run(run_id) if r.mutating and r.step == "scale"]
        assert writes and all(r.pid == first.proc.pid for r in writes if r.op == "apply"), writes


def test_prometheus_gone_mid_check_is_inconclusive_and_the_daemon_stays_up(
    api, namespace, kubeconfig, remote, daemons, metrics: Metrics, tmp_path: Path
) -> None:
    """A Prometheus of the workflow's own (spec.prometheus) stops after the first
    measurement: the next ones are inconclusive, counted against inconclusiveLimit; over
    it, the step fails and is undone; the daemon stays up and keeps answering."""
    from promhelp import PrometheusServer

    (tmp_path / "own").mkdir()
    own = PrometheusServer(metrics.exporter, tmp_path / "own").start()
    try:
        deployment(api, namespace, "web", replicas=1)
        metrics.set("errors", 0.001)
        wait_for(lambda: _has_value(own.url, metrics.series("errors")), 30, "the first scrape")
        remote.write(
            "workflows/blind.yaml",
            workflow_yaml(
                "blind",
                f"    - name: scale\n      action: ScaleDeployment\n"
                f"      target: {{namespace: {namespace}, name: web}}\n      params: {{replicas: 2}}\n"
                "      verify:\n        - name: error-rate\n"
                f"          prometheus: {{query: '{metrics.series('errors')}'}}\n"
                "          successCondition: 'result < 0.01'\n          interval: 2s\n"
                "          count: 5\n          inconclusiveLimit: 1\n",
                f"  prometheus: {{address: '{own.url}'}}\n",
            ),
        )
        remote.commit_all("verified against its own Prometheus")
        daemon = Daemon(str(remote.bare), tmp_path / "work", kubeconfig, "--interval", "3600")
        daemons.append(daemon.start())
        wait_for(lambda: read_deployment(api, namespace, "web").spec.replicas == 2, 60, "scaled")
        time.sleep(1)  # the first measurement, then Prometheus goes away
        own.stop()
        wait_for(
            lambda: any("blind" in s and "RolledBack" in s for s in remote.log()), 60, "undone"
        )
        record = record_of(remote, "blind")
        assert "verdict: Inconclusive" in record and "unreachable" in record, record
        assert "inconclusive: Prometheus" in record
        assert read_deployment(api, namespace, "web").spec.replicas == 1
        assert daemon.get("/healthz")[0] == 200 and daemon.proc.poll() is None
    finally:
        own.stop()


def _has_value(url: str, query: str) -> bool:
    import json
    import urllib.parse
    import urllib.request

    with urllib.request.urlopen(
        f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query}), timeout=5
    ) as r:
        return bool(json.loads(r.read())["data"]["result"])


def test_plan_measures_guards_and_checks_once_now(
    api, namespace, kubeconfig, metrics: Metrics, tmp_path: Path
) -> None:
    """`plan --server-dry-run --prometheus-url` prints what each guard and check sees now,
    against the real Prometheus and the live object, and changes nothing."""
    from daemonhelp import run_cli

    deployment(api, namespace, "web", replicas=1)
    metrics.set("errors", 0.002)
    metrics.set("alert", 0)
    wait_for(lambda: metrics.value(metrics.series("errors")) == 0.002, 30, "scraped")
    path = tmp_path / "planned.yaml"
    path.write_text(
        workflow_yaml(
            "planned",
            f"    - name: scale\n      action: ScaleDeployment\n"
            f"      target: {{namespace: {namespace}, name: web}}\n      params: {{replicas: 2}}\n"
            "      verify:\n        - name: error-rate\n"
            f"          prometheus: {{query: '{metrics.series('errors')}'}}\n"
            "          successCondition: 'result < 0.01'\n"
            "        - name: ready\n          kubernetes: {condition: 'object.spec.replicas == 2'}\n",
            "  guards:\n    - name: no-critical-alerts\n"
            f"      prometheus: {{query: '{metrics.firing()}'}}\n      successCondition: 'result == 0'\n",
        )
    )
    out = run_cli(
        "plan",
        "--server-dry-run",
        "--prometheus-url",
        metrics.server.url,
        "--kubeconfig",
        kubeconfig,
        str(path),
        log_dir=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "- guard no-critical-alerts, now: 0, Passed (result = 0: result == 0)" in out.stdout
    assert "check error-rate, now (before the change): 0.002, Passed" in out.stdout
    assert "check ready, now (before the change): false, Failed" in out.stdout  # 1 replica yet
    assert read_deployment(api, namespace, "web").spec.replicas == 1
