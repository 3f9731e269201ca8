"""REST paths of Kubernetes objects, built one way everywhere (names are URL-quoted)."""

from __future__ import annotations

from urllib.parse import quote


def ns_path(group_version: str, namespace: str, plural: str, name: str | None = None) -> str:
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    path = f"{base}/namespaces/{quote(namespace)}/{plural}"
    return f"{path}/{quote(name)}" if name else path


def cluster_path(group_version: str, plural: str, name: str | None = None) -> str:
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    return f"{base}/{plural}/{quote(name)}" if name else f"{base}/{plural}"
