"""DeletePod: by name or label selector, with a grace period; waits until they are gone."""

from __future__ import annotations

import contextlib
from typing import Any

from reconciler.actions.base import Action, poll
from reconciler.engine.errors import PermanentError
from reconciler.engine.interface import OUTPUTS_KEY, Captured, StepContext
from reconciler.kube.client import Kube
from reconciler.kube.errors import Conflict, NotFound
from reconciler.kube.paths import ns_path
from reconciler.manifest.schema import StepBase


class DeletePod(Action):
    name = "DeletePod"

    async def capture(self, kube: Kube, step: StepBase, ctx: StepContext, owner: Any) -> Captured:
        namespace = step.target.namespace
        assert namespace is not None
        if step.target.name:
            pod = await kube.get(
                f"pod {namespace}/{step.target.name}",
                ns_path("v1", namespace, "pods", step.target.name),
            )
            pods = [pod]
        else:
            selector = step.params.selector  # type: ignore[attr-defined]
            listing = await kube.get(
                f"pods in {namespace} matching {selector!r}",
                ns_path("v1", namespace, "pods"),
                {"labelSelector": selector},
            )
            pods = listing.get("items") or []
            if not pods:
                raise PermanentError(
                    f"no pods in namespace {namespace} match selector {selector!r}"
                )
        # UIDs, not just names: a controller may recreate a pod under the same name, and that
        # replacement must be neither deleted again nor waited for.
        return {
            "pods": [{"name": p["metadata"]["name"], "uid": p["metadata"]["uid"]} for p in pods]
        }

    async def apply(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> dict[str, Any]:
        namespace = step.target.namespace
        assert namespace is not None
        grace = step.params.grace_period  # type: ignore[attr-defined]
        for pod in captured["pods"]:
            query = {"gracePeriodSeconds": grace} if grace is not None else {}
            body = {"preconditions": {"uid": pod["uid"]}}
            what = f"pod {namespace}/{pod['name']}"
            # 404 gone already, 409 the name now belongs to a replacement: both mean done.
            with contextlib.suppress(NotFound, Conflict):
                path = ns_path("v1", namespace, "pods", pod["name"])
                await kube.delete(what, path, query, missing_ok=False, body=body)
        deleted = [p["name"] for p in captured["pods"]]
        return {"deleted": deleted, OUTPUTS_KEY: {"deletedPods": len(deleted)}}

    async def wait(self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext) -> None:
        namespace = step.target.namespace
        assert namespace is not None

        async def check() -> str | None:
            remaining = []
            for pod in captured["pods"]:
                live = await kube.find(
                    f"pod {namespace}/{pod['name']}", ns_path("v1", namespace, "pods", pod["name"])
                )
                if live is not None and live["metadata"]["uid"] == pod["uid"]:
                    remaining.append(pod["name"])
            return f"pods to terminate: {', '.join(remaining)}" if remaining else None

        if not kube.dry_run:
            await poll(check, lambda w: setattr(ctx, "waiting_for", w))
