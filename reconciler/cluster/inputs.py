"""Secret values a manifest carries inline (UpdateSecret's `data`) stay out of the
WorkflowExecution.

A WorkflowExecution is cluster-scoped and keeps the run's manifest so that a restarted
daemon can resume it; whoever may read WorkflowExecutions is not whoever may read the
Secrets a run rotates. So the execution keeps the manifest with those values replaced by
digests keyed with the installation's key, and the manifest as written is kept in a Secret
in the daemon's namespace, owned by the execution (deleting the run deletes it), read back
on resume.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from reconciler.actions.base import create_owned, keyed_digest, owned_secret
from reconciler.kube.client import Kube
from reconciler.kube.paths import ns_path

KEY = "manifest"


def redact(manifest: dict[str, Any], key: bytes) -> dict[str, Any] | None:
    """The manifest with every inline Secret value replaced by its digest, keyed with the
    installation's key; None if it has none (then the execution keeps the manifest as it
    is)."""
    redacted = copy.deepcopy(manifest)
    found = False
    for step in (redacted.get("spec") or {}).get("steps") or []:
        params = step.get("params") or {}
        if step.get("action") == "UpdateSecret" and isinstance(params.get("data"), dict):
            params["data"] = {k: keyed_digest(str(v), key) for k, v in params["data"].items()}
            found = True
    return redacted if found else None


def secret_name(run_id: str) -> str:
    return f"{run_id}-inputs"


async def store(kube: Kube, run_id: str, manifest: dict[str, Any], owner: dict[str, Any]) -> str:
    """Keep the manifest as written in a Secret owned by the run; `namespace/name`."""
    namespace, name = kube.capture_namespace, secret_name(run_id)
    labels = {"app.kubernetes.io/managed-by": "reconciler", "reconciler.dev/run-id": run_id[:63]}
    data = {KEY: base64.b64encode(json.dumps(manifest).encode()).decode()}
    body = owned_secret(namespace, name, labels, owner, data)
    what = f"inputs secret {namespace}/{name}"  # made before a crash: the same content
    await create_owned(kube, what, ns_path("v1", namespace, "secrets"), body, owner)
    return f"{namespace}/{name}"


async def load(kube: Kube, ref: str) -> dict[str, Any] | None:
    """The manifest kept by `store`, or None if its Secret is gone."""
    namespace, name = ref.split("/", 1)
    secret = await kube.find(f"inputs secret {ref}", ns_path("v1", namespace, "secrets", name))
    if secret is None:
        return None
    result: dict[str, Any] = json.loads(base64.b64decode(secret["data"][KEY]))
    return result
