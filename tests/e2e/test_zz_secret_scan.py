"""Runs last (by name): after the whole e2e suite, no secret value any test used (nor its
base64) is anywhere a process of ours could have put it:

- git: every commit of every remote and of every daemon's mirror, all branches; a value a
  test wrote into a workflow file itself (inline `data`) is allowed in people's commits only;
- logs: every daemon's, every CLI run's, the pytest process's own (in-process runs), and
  every control-plane component's, the API server's audit log included;
- every daemon's spool (record commits not pushed yet, base64 inside: decoded);
- the cluster: Events, WorkflowExecutions with their packed manifest and record unpacked,
  ConfigMaps, Jobs, Pods and Leases in every namespace (Secrets are where values belong).
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

from daemonhelp import LOGS, REMOTES, WORKDIRS
from figures import report
from kubehelp import IN_GIT, SECRETS, api  # noqa: F401  (fixture)
from kubernetes import client as k8s

from reconciler.formats.packing import unpack

COMPONENT_LOGS = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler")


def git_text(gitdir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "log", "--all", "-p", "--format=%H %an %s", *args],
        cwd=gitdir,
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    ).stdout


def spool_text(spool: Path) -> str:
    """Spooled record commits, their files decoded."""
    parts = []
    for path in sorted(spool.glob("*")):
        text = path.read_text(errors="replace")
        parts.append(text)
        try:
            entry = json.loads(text)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue  # pushed.json: the names of entries pushed before a stop (scanned as text)
        for content in (entry.get("files") or {}).values():
            if content:
                parts.append(base64.b64decode(content).decode(errors="replace"))
    return "\n".join(parts)


def unpacked(execution: dict) -> str:
    spec, status = execution.get("spec") or {}, execution.get("status") or {}
    inner = [unpack(text) for text in (spec.get("manifest"), status.get("record")) if text]
    return json.dumps(execution) + json.dumps(inner)


def test_no_secret_value_reached_git_logs_spools_or_the_cluster(api, kwok_cluster) -> None:
    assert SECRETS, "the suite used no secrets: this scan would prove nothing"

    def needles(values: set[str]) -> set[str]:
        return values | {base64.b64encode(v.encode()).decode() for v in values}

    places: dict[str, tuple[str, set[str]]] = {}  # where -> (text, what must not be in it)
    gitdirs = [bare for bare in REMOTES if bare.exists()]
    gitdirs += [work / "repo.git" for work in WORKDIRS if (work / "repo.git").exists()]
    for gitdir in gitdirs:
        places[f"git {gitdir} (the daemon's commits)"] = (
            git_text(gitdir, "--author=reconciler"),
            needles(SECRETS),
        )
        places[f"git {gitdir}"] = (git_text(gitdir), needles(SECRETS - IN_GIT))
    logs = [log for log in LOGS if log.exists()]
    if kwok_cluster is not None:
        logs += [kwok_cluster.log_file(c) for c in COMPONENT_LOGS]
        logs += sorted(kwok_cluster.audit_log.parent.glob("audit*.log"))
    for log in logs:
        if log.exists():
            places[f"log {log}"] = (log.read_text(errors="replace"), needles(SECRETS))
    spools = [work / "spool" for work in WORKDIRS if (work / "spool").exists()]
    for spool in spools:
        places[f"spool {spool}"] = (spool_text(spool), needles(SECRETS))
    core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
    events = core.list_event_for_all_namespaces().items
    places["events"] = ("\n".join(f"{e.reason} {e.message}" for e in events), needles(SECRETS))
    executions = custom.list_cluster_custom_object(
        "reconciler.dev", "v1alpha1", "workflowexecutions"
    )["items"]
    places["workflowexecutions"] = (
        "\n".join(unpacked(e) for e in executions),
        needles(SECRETS),
    )
    objects = {
        "configmaps": core.list_config_map_for_all_namespaces().items,
        "jobs": k8s.BatchV1Api(api).list_job_for_all_namespaces().items,
        "pods": core.list_pod_for_all_namespaces().items,
        "leases": k8s.CoordinationV1Api(api).list_lease_for_all_namespaces().items,
    }
    for kind, items in objects.items():
        text = json.dumps([api.sanitize_for_serialization(i) for i in items])
        places[kind] = (text, needles(SECRETS))
    leaks = [(where, n) for where, (text, bad) in places.items() for n in bad if n in text]
    report(
        f"\nsecret scan: {len(SECRETS)} values ({len(IN_GIT)} written inline in a workflow),"
        f" {len(gitdirs)} git repositories, {len(logs)} logs, {len(spools)} spools,"
        f" {len(events)} events, {len(executions)} executions (unpacked),"
        f" {sum(len(i) for i in objects.values())} other objects: {len(leaks)} leaks"
    )
    assert not leaks, leaks
