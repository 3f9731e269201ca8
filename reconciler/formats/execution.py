"""The WorkflowExecution, one cluster object per run: its body, labels and finalizer, and
the way back from one to the run it holds. The one owner of this wire format; its status
packing is formats/packing.py, its CRD deploy/crds/."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from reconciler.engine.record import RunPhase, RunRecord, record_from_dict
from reconciler.formats.packing import pack, unpack
from reconciler.kube.paths import cluster_path
from reconciler.manifest.loader import LoadedWorkflow
from reconciler.manifest.schema import Workflow

API_VERSION = "reconciler.dev/v1alpha1"
KIND = "WorkflowExecution"
PLURAL = "workflowexecutions"
# Held while a run runs: `kubectl delete` then means "cancel and roll back first".
FINALIZER = "reconciler.dev/rollback-before-delete"
WORKFLOW_LABEL = "reconciler.dev/workflow"
CONTENT_HASH_LABEL = "reconciler.dev/content-hash"
RUNNER_LABEL = {"app.kubernetes.io/managed-by": "reconciler-daemon"}
SOURCE_LABEL = "reconciler.dev/source"
# HMAC-SHA256 over the name, labels and spec with a key only the daemon reads
# (cluster/keys.py): an execution someone else wrote is never resumed.
SIGNATURE_ANNOTATION = "reconciler.dev/signature"


def execution_path(name: str | None = None) -> str:
    return cluster_path(API_VERSION, PLURAL, name)


def source_label_value(repo: str, branch: str) -> str:
    """Which repository and branch made an execution: daemons of other repositories that
    share the cluster must neither resume its run nor write its record into their git."""
    if "://" not in repo and not repo.startswith("git@"):
        repo = str(Path(repo).resolve())
    return hashlib.sha256(f"{repo.rstrip('/')}#{branch}".encode()).hexdigest()[:16]


def daemon_labels(repo: str, branch: str) -> dict[str, str]:
    """The labels of the executions one daemon owns: made by a daemon, from this branch."""
    return {**RUNNER_LABEL, SOURCE_LABEL: source_label_value(repo, branch)}


def label_selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def owner_reference(execution: dict[str, Any]) -> dict[str, Any]:
    """Makes an object the run creates (a Job, a capture Secret) go when the run's
    execution is deleted."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": execution["metadata"]["name"],
        "uid": execution["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def manifest_of(loaded: LoadedWorkflow) -> dict[str, Any]:
    return loaded.workflow.model_dump(mode="json", by_alias=True, exclude_defaults=True)


def execution_body(
    loaded: LoadedWorkflow,
    revision: str | None,
    labels: dict[str, str] | None = None,
    *,
    redacted: dict[str, Any] | None = None,
    inputs_ref: str | None = None,
) -> dict[str, Any]:
    """The execution of a new run. `redacted`: the manifest with its inline Secret values
    replaced by digests, kept instead of the manifest; the values are in `inputs_ref`."""
    spec = {
        "workflow": loaded.name,
        "contentHash": loaded.digest,
        "source": loaded.file,
        "manifest": pack(redacted or manifest_of(loaded)),
    }
    if inputs_ref is not None:
        spec["inputs"] = inputs_ref
    if revision:
        spec["revision"] = revision
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": loaded.run_id,
            "labels": {
                WORKFLOW_LABEL: loaded.name,
                CONTENT_HASH_LABEL: loaded.digest[:63],
                **(labels or {}),
            },
            "finalizers": [FINALIZER],
        },
        "spec": spec,
    }


def phase_of(execution: dict[str, Any]) -> RunPhase:
    phase = (execution.get("status") or {}).get("phase", RunPhase.PENDING.value)
    # the status says WaitingForApproval for a run whose step waits (packing.status_of)
    return RunPhase.RUNNING if phase == "WaitingForApproval" else RunPhase(phase)


def packed_record(execution: dict[str, Any]) -> dict[str, Any] | None:
    """The record as a plain document (None before the first checkpoint)."""
    status = execution.get("status") or {}
    return unpack(status["record"]) if status.get("record") else None


def record_of(execution: dict[str, Any]) -> RunRecord | None:
    """The run's last checkpoint (None before the first)."""
    document = packed_record(execution)
    return record_from_dict(document) if document is not None else None


def inputs_ref(execution: dict[str, Any]) -> str | None:
    """`namespace/name` of the Secret with the run's inline Secret values, if it has any."""
    return execution["spec"].get("inputs") or None


def stored_workflow(execution: dict[str, Any], manifest: dict[str, Any] | None = None) -> Workflow:
    """The workflow the execution runs: its kept manifest (inline Secret values as
    digests) unless `manifest`, the one with the values, is given."""
    return Workflow.model_validate(manifest or unpack(execution["spec"]["manifest"]))


def loaded_of(execution: dict[str, Any], workflow: Workflow) -> LoadedWorkflow:
    """Back to the run: the workflow as the loader gave it when the run was created."""
    spec = execution["spec"]
    return LoadedWorkflow(
        workflow, spec.get("source", ""), 0, spec["contentHash"], execution["metadata"]["name"]
    )


def source_of(execution: dict[str, Any]) -> str:
    return str(execution["spec"].get("source") or "")


def revision_of(execution: dict[str, Any]) -> str | None:
    return execution["spec"].get("revision")


def _signed_content(execution: dict[str, Any]) -> bytes:
    meta = execution.get("metadata") or {}
    content = {"name": meta.get("name"), "labels": meta.get("labels") or {}}
    content["spec"] = execution.get("spec") or {}
    return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()


def sign(body: dict[str, Any], key: bytes) -> dict[str, Any]:
    """`body` with its signature annotation (set before it is created)."""
    mac = hmac.new(key, _signed_content(body), hashlib.sha256).hexdigest()
    annotations = body["metadata"].setdefault("annotations", {})
    annotations[SIGNATURE_ANNOTATION] = mac
    return body


def signed_with(execution: dict[str, Any], key: bytes) -> bool:
    """Made by a holder of `key`, and its name, labels and spec unchanged since."""
    annotations = (execution.get("metadata") or {}).get("annotations") or {}
    mac = annotations.get(SIGNATURE_ANNOTATION)
    expected = hmac.new(key, _signed_content(execution), hashlib.sha256).hexdigest()
    return isinstance(mac, str) and hmac.compare_digest(mac, expected)
