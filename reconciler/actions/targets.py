"""What a fan-out step's selector matches now (docs/fanout.md): a list call as the step's
own account, so the API server decides what the pusher may even see."""

from __future__ import annotations

from reconciler.kube.client import Kube
from reconciler.kube.paths import cluster_path, ns_path
from reconciler.manifest.fanout import MAX_TARGETS, TARGET_KINDS
from reconciler.manifest.schema import StepBase

COLLECTIONS = {
    "Node": ("v1", "nodes"),
    "Deployment": ("apps/v1", "deployments"),
    "ConfigMap": ("v1", "configmaps"),
    "Secret": ("v1", "secrets"),
}


async def list_targets(kube: Kube, step: StepBase) -> list[str]:
    """Sorted names; at most MAX_TARGETS + 1, enough to tell a match that is too large."""
    assert step.for_each is not None and step.for_each.selector is not None
    kind = TARGET_KINDS[step.action]  # type: ignore[attr-defined]
    group_version, plural = COLLECTIONS[kind]
    namespace = step.target.namespace
    if kind == "Node" or namespace is None:
        path, where = cluster_path(group_version, plural), f"{plural}"
    else:
        path, where = ns_path(group_version, namespace, plural), f"{plural} in {namespace}"
    selector = step.for_each.selector.label_selector
    query = {"labelSelector": selector, "limit": MAX_TARGETS + 1}
    listing = await kube.get(f"{where} matching {selector!r}", path, query)
    return sorted(item["metadata"]["name"] for item in listing.get("items") or [])
