"""Apply: server-side apply of one inline object (field manager `reconciler`).

Undo restores the captured object (a full PUT, so fields the apply added are gone again) or
deletes the object if the step created it.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.actions.base import Action, poll
from reconciler.actions.deployments import rollout_progress
from reconciler.engine.interface import OUTPUTS_KEY, Captured, StepContext
from reconciler.kube.client import FIELD_MANAGER, Kube
from reconciler.manifest.schema import StepBase

# Server-populated fields: restoring them would be refused or meaningless.
VOLATILE_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


def manifest_of(step: StepBase) -> dict[str, Any]:
    manifest = dict(step.params.manifest)  # type: ignore[attr-defined]
    meta = dict(manifest.get("metadata") or {})
    if "namespace" not in meta and step.target.namespace:
        meta["namespace"] = step.target.namespace
    manifest["metadata"] = meta
    return manifest


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in VOLATILE_METADATA}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}


class Apply(Action):
    name = "Apply"

    async def _path(self, kube: Kube, manifest: dict[str, Any]) -> tuple[str, str]:
        meta = manifest["metadata"]
        namespace = meta.get("namespace")
        what = f"{manifest['kind']} {namespace + '/' if namespace else ''}{meta['name']}"

        def resolve() -> str:
            resource = kube.dynamic.resources.get(
                api_version=manifest["apiVersion"], kind=manifest["kind"]
            )
            if resource.namespaced and not namespace:
                raise ValueError(
                    f"{what} is namespaced: set metadata.namespace or target.namespace"
                )
            if not resource.namespaced and namespace:
                # the API server ignores a namespace on a cluster-scoped kind: the policy
                # judged it as confined to that namespace, so it must not be applied
                raise ValueError(
                    f"{what} is cluster-scoped: a namespace does not confine it; remove"
                    " metadata.namespace and list the kind under cluster.kinds in the policy"
                )
            return resource.path(
                name=meta["name"], namespace=namespace if resource.namespaced else None
            )

        return what, await kube.call(what, resolve)

    async def capture(self, kube: Kube, step: StepBase, ctx: StepContext, owner: Any) -> Captured:
        manifest = manifest_of(step)
        what, path = await self._path(kube, manifest)
        existing = await kube.find(what, path)
        if existing is None:
            return {"created": True}
        return {"created": False, "object": clean(existing)}

    async def apply(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> dict[str, Any]:
        manifest = manifest_of(step)
        what, path = await self._path(kube, manifest)
        written = await kube.write(
            what,
            "PATCH",
            path,
            json.dumps(manifest),
            "application/apply-patch+yaml",
            {"fieldManager": FIELD_MANAGER, "force": "true"},
        )
        meta = written.get("metadata") or {}
        outputs = {"uid": str(meta.get("uid", "")), "created": bool(captured["created"])}
        return {OUTPUTS_KEY: {**outputs, "resourceVersion": str(meta.get("resourceVersion", ""))}}

    async def wait(self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext) -> None:
        if kube.dry_run:
            return
        manifest = manifest_of(step)
        what, path = await self._path(kube, manifest)

        async def check() -> str | None:
            obj = await kube.find(what, path)
            if obj is None:
                return f"{what} to exist"
            if manifest["kind"] == "Deployment":
                return rollout_progress(obj, what)
            return None

        await poll(check, lambda w: setattr(ctx, "waiting_for", w))

    async def undo(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> str | None:
        manifest = manifest_of(step)
        what, path = await self._path(kube, manifest)
        if captured["created"]:
            await kube.delete(what, path)
            return "deleted: the step had created it"
        current = await kube.find(what, path)
        body = dict(captured["object"])
        if current is None:
            collection = path.rsplit("/", 1)[0]
            await kube.write(what, "POST", collection, body)
            return "re-created from the captured object"
        body["metadata"] = {
            **body["metadata"],
            "resourceVersion": current["metadata"]["resourceVersion"],
        }
        await kube.write(what, "PUT", path, body)
        return None
