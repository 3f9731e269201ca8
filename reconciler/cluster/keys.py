"""The key that signs this installation's WorkflowExecutions (formats/execution.py):
random, made once, kept in a Secret in the daemon's namespace that only reconciler reads.
Whoever cannot read it cannot write an execution the daemon will resume."""

from __future__ import annotations

import base64
import contextlib
import secrets

from reconciler.kube.client import Kube
from reconciler.kube.errors import Conflict
from reconciler.kube.paths import ns_path

KEY_SECRET = "reconciler-execution-key"
KEY_FIELD = "key"


async def execution_key(kube: Kube) -> bytes:
    """The key, made if this is the first process of the installation to need it."""
    namespace = kube.capture_namespace
    what = f"secret {namespace}/{KEY_SECRET}"
    path = ns_path("v1", namespace, "secrets", KEY_SECRET)
    found = await kube.find(what, path)
    if found is None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": KEY_SECRET,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "reconciler"},
            },
            "type": "Opaque",
            "data": {KEY_FIELD: base64.b64encode(secrets.token_bytes(32)).decode()},
        }
        with contextlib.suppress(Conflict):  # another process made it first: use theirs
            await kube.write(what, "POST", ns_path("v1", namespace, "secrets"), body)
        found = await kube.get(what, path)
    return base64.b64decode(found["data"][KEY_FIELD])
