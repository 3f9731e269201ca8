"""CordonNode, UncordonNode, DrainNode (kubectl drain's rules, through the Eviction API)."""

from __future__ import annotations

from typing import Any

from reconciler.actions.base import Action, poll
from reconciler.attempt import Backoff, attempt
from reconciler.engine.errors import PermanentError
from reconciler.engine.interface import OUTPUTS_KEY, Captured, StepContext
from reconciler.kube.client import Kube
from reconciler.kube.errors import Forbidden, NotFound, TooManyRequests
from reconciler.kube.paths import cluster_path, ns_path
from reconciler.manifest.params import DrainParams
from reconciler.manifest.schema import StepBase

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
EVICTION_BACKOFF = Backoff(initial=1.0, factor=2.0, cap=10.0)


def node(step: StepBase) -> tuple[str, str]:
    assert step.target.name is not None
    return f"node {step.target.name}", cluster_path("v1", "nodes", step.target.name)


async def _set_unschedulable(kube: Kube, step: StepBase, value: bool) -> None:
    what, path = node(step)
    await kube.merge_patch(what, path, {"spec": {"unschedulable": value or None}})


async def _wait_unschedulable(kube: Kube, step: StepBase, value: bool, ctx: StepContext) -> None:
    what, path = node(step)

    async def check() -> str | None:
        live = bool((await kube.get(what, path)).get("spec", {}).get("unschedulable"))
        return None if live == value else f"{what} unschedulable={value}"

    if not kube.dry_run:
        await poll(check, lambda w: setattr(ctx, "waiting_for", w))


class _NodeFlag(Action):
    target_value: bool

    async def capture(self, kube: Kube, step: StepBase, ctx: StepContext, owner: Any) -> Captured:
        what, path = node(step)
        return {
            "unschedulable": bool((await kube.get(what, path)).get("spec", {}).get("unschedulable"))
        }

    async def apply(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> dict[str, Any]:
        await _set_unschedulable(kube, step, self.target_value)
        return {OUTPUTS_KEY: {"wasUnschedulable": captured["unschedulable"]}}

    async def wait(self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext) -> None:
        await _wait_unschedulable(kube, step, self.target_value, ctx)

    async def undo(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> None:
        await _set_unschedulable(kube, step, captured["unschedulable"])
        await _wait_unschedulable(kube, step, captured["unschedulable"], ctx)


class CordonNode(_NodeFlag):
    name = "CordonNode"
    target_value = True


class UncordonNode(_NodeFlag):
    name = "UncordonNode"
    target_value = False


def pods_to_evict(pods: list[dict[str, Any]], params: Any, node_name: str) -> list[dict[str, Any]]:
    """kubectl drain's filters: skip mirror and (with ignoreDaemonSets) DaemonSet pods; refuse
    emptyDir data and unmanaged pods unless the matching flag says so."""
    chosen, daemonset, local, unmanaged = [], [], [], []
    for pod in pods:
        meta = pod["metadata"]
        label = f"{meta['namespace']}/{meta['name']}"
        if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
            continue
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            chosen.append(pod)  # finished pods go without ceremony, as with kubectl
            continue
        owners = meta.get("ownerReferences") or []
        controller = next((o for o in owners if o.get("controller")), None)
        if controller and controller.get("kind") == "DaemonSet":
            if not params.ignore_daemon_sets:
                daemonset.append(label)
            continue
        if controller is None and not params.force:
            unmanaged.append(label)
        volumes = pod.get("spec", {}).get("volumes") or []
        if any("emptyDir" in v for v in volumes) and not params.delete_empty_dir_data:
            local.append(label)
        chosen.append(pod)
    problems = []
    if daemonset:
        problems.append(f"DaemonSet-managed pods (set ignoreDaemonSets): {', '.join(daemonset)}")
    if local:
        problems.append(f"pods with emptyDir data (set deleteEmptyDirData): {', '.join(local)}")
    if unmanaged:
        problems.append(f"pods no controller will recreate (set force): {', '.join(unmanaged)}")
    if problems:
        raise PermanentError(f"cannot drain node {node_name}: " + "; ".join(problems))
    return chosen


class DrainNode(Action):
    name = "DrainNode"

    async def capture(self, kube: Kube, step: StepBase, ctx: StepContext, owner: Any) -> Captured:
        what, path = node(step)
        return {
            "unschedulable": bool((await kube.get(what, path)).get("spec", {}).get("unschedulable"))
        }

    async def _remaining(self, kube: Kube, step: StepBase) -> list[dict[str, Any]]:
        node_name = step.target.name
        assert node_name is not None
        listing = await kube.get(
            f"pods on node {node_name}",
            "/api/v1/pods",
            {"fieldSelector": f"spec.nodeName={node_name}"},
        )
        return pods_to_evict(listing.get("items") or [], step.params, node_name)

    async def apply(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> dict[str, Any]:
        await _set_unschedulable(kube, step, True)
        evicted: list[str] = []
        blocked: set[str] = set()

        async def evict_round(number: int) -> None:
            pending = await self._remaining(kube, step)
            if number > 1:  # a later round tries again only what a budget blocked
                pending = [p for p in pending if _label(p) in blocked]
            blocked.clear()
            for pod in pending:
                if not pod["metadata"].get("deletionTimestamp"):  # else wait() sees it go
                    await _evict(kube, pod, step.params, evicted, blocked)  # type: ignore[arg-type]
            if blocked and not kube.dry_run:
                raise EvictionsBlocked(sorted(blocked))

        def note(_: int, err: Exception, delay: float) -> None:
            ctx.waiting_for = str(err)

        # Like kubectl drain: a PodDisruptionBudget answers 429, and we try again until the
        # budget allows it; the step timeout bounds the whole drain.
        await attempt(
            evict_round,
            retryable=lambda err: isinstance(err, EvictionsBlocked),
            backoff=EVICTION_BACKOFF,
            on_retry=note,
        )
        return {"evicted": evicted, OUTPUTS_KEY: {"evictedPods": len(evicted)}}

    async def wait(self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext) -> None:
        async def check() -> str | None:
            left = [
                f"{p['metadata']['namespace']}/{p['metadata']['name']}"
                for p in await self._remaining(kube, step)
                if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            ]
            return f"pods to leave the node: {', '.join(left[:10])}" if left else None

        if not kube.dry_run:
            await poll(check, lambda w: setattr(ctx, "waiting_for", w))

    async def undo(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> str:
        await _set_unschedulable(kube, step, captured["unschedulable"])
        await _wait_unschedulable(kube, step, captured["unschedulable"], ctx)
        return "node uncordoned; evicted pods are not restored (their controllers rescheduled them)"


class EvictionsBlocked(Exception):
    def __init__(self, pods: list[str]) -> None:
        super().__init__(f"evictions blocked by a PodDisruptionBudget: {', '.join(pods)}")


def _label(pod: dict[str, Any]) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


async def _evict(
    kube: Kube, pod: dict[str, Any], params: DrainParams, evicted: list[str], blocked: set[str]
) -> None:
    """One Eviction; a pod gone already counts as done, one a budget protects as blocked."""
    meta, label = pod["metadata"], _label(pod)
    body: dict[str, Any] = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
    }
    if params.grace_period is not None:
        body["deleteOptions"] = {"gracePeriodSeconds": params.grace_period}
    pod_path = ns_path("v1", meta["namespace"], "pods", meta["name"])
    try:
        await kube.write(f"eviction of pod {label}", "POST", pod_path + "/eviction", body)
    except NotFound:
        return
    except TooManyRequests:
        blocked.add(label)
        return
    except Forbidden as err:
        if "being terminated" not in str(err):
            raise
        # As kubectl drain does: an Eviction cannot be created in a terminating
        # namespace, so delete the pod instead.
        await kube.delete(f"pod {label}", pod_path)
    evicted.append(label)
