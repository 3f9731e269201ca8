"""Runs last (by name): after the whole e2e suite, no secret value any test used appears in
any commit of any remote, any daemon log line, any Event or any WorkflowExecution (issue 7)."""

from __future__ import annotations

import base64
import json
import subprocess

from daemonhelp import LOGS, REMOTES
from figures import report
from kubehelp import SECRETS, api  # noqa: F401  (fixture)
from kubernetes import client as k8s


def test_no_secret_value_reached_git_logs_or_events(api) -> None:
    assert SECRETS, "the suite used no secrets: this scan would prove nothing"
    needles = SECRETS | {base64.b64encode(v.encode()).decode() for v in SECRETS}
    places: dict[str, str] = {}
    for bare in REMOTES:
        if bare.exists():
            places[f"git {bare}"] = subprocess.run(
                ["git", "log", "--all", "-p", "--format=%H %s"],
                cwd=bare,
                capture_output=True,
                text=True,
                check=False,
            ).stdout
    for log in LOGS:
        if log.exists():
            places[f"log {log}"] = log.read_text(errors="replace")
    events = k8s.CoreV1Api(api).list_event_for_all_namespaces().items
    places["events"] = "\n".join(f"{e.reason} {e.message}" for e in events)
    executions = k8s.CustomObjectsApi(api).list_cluster_custom_object(
        "reconciler.dev", "v1alpha1", "workflowexecutions"
    )
    places["workflowexecutions"] = json.dumps(executions)
    leaks = [(where, n) for where, text in places.items() for n in needles if n in text]
    report(
        f"\nsecret scan: {len(SECRETS)} values, {len(REMOTES)} remotes, {len(LOGS)} daemon logs, "
        f"{len(events)} events, {len(executions['items'])} executions: {len(leaks)} leaks"
    )
    assert not leaks, leaks
