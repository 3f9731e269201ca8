"""Namespaces reconciler keeps its own objects in, made if missing; and the size of the
worker pool every blocking API call runs on."""

from __future__ import annotations

import contextlib

from reconciler.kube.client import Kube
from reconciler.kube.errors import Conflict

# The Kubernetes client is blocking; every call runs in a worker thread. Enough threads for
# many steps polling at once (the default pool is only cores + 4).
API_THREADS = 64


async def ensure_namespace(kube: Kube, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    if await kube.find(f"namespace {name}", f"/api/v1/namespaces/{name}") is None:
        with contextlib.suppress(Conflict):  # made meanwhile by another process
            await kube.write(f"namespace {name}", "POST", "/api/v1/namespaces", body)
