"""ScaleDeployment, UpdateImage, RestartDeployment: change a Deployment, wait for its rollout."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reconciler.actions.base import Action, poll, target_of
from reconciler.engine.errors import PermanentError
from reconciler.engine.interface import OUTPUTS_KEY, Captured, StepContext
from reconciler.kube.client import Kube
from reconciler.kube.paths import ns_path
from reconciler.manifest.schema import StepBase

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def deployment(step: StepBase) -> tuple[str, str]:
    namespace, name = target_of(step)
    return f"deployment {namespace}/{name}", ns_path("apps/v1", namespace, "deployments", name)


def rollout_progress(obj: dict[str, Any], what: str) -> str | None:
    """None when the rollout is complete; else what it is waiting for.

    The same checks as `kubectl rollout status` (its DeploymentStatusViewer), so "done" here
    means what SREs already take it to mean.
    """
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    generation, observed = meta.get("generation", 0), status.get("observedGeneration", 0)
    if observed < generation:
        return f"{what} rollout: controller has not observed generation {generation} yet"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            raise PermanentError(
                f"{what} rollout exceeded its progress deadline: {cond.get('message')}"
            )
    want = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    replicas = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < want:
        return f"{what} rollout: {updated} of {want} replicas updated"
    if replicas > updated:
        return f"{what} rollout: {replicas - updated} old replicas pending termination"
    if available < updated:
        return f"{what} rollout: {available} of {updated} updated replicas available"
    # Beyond kubectl's rollout check: a scale-down is done when the extra pods are gone, not
    # when the controller has merely observed the new replica count.
    if replicas > want:
        return f"{what} scale: {replicas - want} extra replicas still terminating"
    if available < want:
        return f"{what} scale: {available} of {want} replicas available"
    return None


async def wait_rollout(kube: Kube, step: StepBase, ctx: StepContext) -> None:
    what, path = deployment(step)

    async def check() -> str | None:
        return rollout_progress(await kube.get(what, path), what)

    await poll(check, lambda w: setattr(ctx, "waiting_for", w))


class DeploymentAction(Action):
    """An action on one Deployment: done once its rollout has converged."""

    async def wait(self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext) -> None:
        await wait_rollout(kube, step, ctx)


class ScaleDeployment(DeploymentAction):
    name = "ScaleDeployment"

    async def capture(self, kube: Kube, step: StepBase, ctx: StepContext, owner: Any) -> Captured:
        what, path = deployment(step)
        obj = await kube.get(what, path)
        return {"replicas": obj["spec"].get("replicas", 1)}

    async def apply(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> dict[str, Any]:
        what, path = deployment(step)
        replicas = step.params.replicas  # type: ignore[attr-defined]
        await kube.merge_patch(what, path, {"spec": {"replicas": replicas}})
        return {OUTPUTS_KEY: {"previousReplicas": captured["replicas"], "replicas": replicas}}

    async def undo(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> None:
        what, path = deployment(step)
        await kube.merge_patch(what, path, {"spec": {"replicas": captured["replicas"]}})
        if not kube.dry_run:
            await wait_rollout(kube, step, ctx)


def container_image(obj: dict[str, Any], container: str, what: str) -> str:
    containers = obj["spec"]["template"]["spec"].get("containers", [])
    for c in containers:
        if c.get("name") == container:
            return str(c.get("image", ""))
    names = ", ".join(c.get("name", "?") for c in containers) or "none"
    raise PermanentError(f"{what} has no container {container!r}; its containers: {names}")


def image_patch(container: str, image: str) -> dict[str, Any]:
    # Strategic merge patch: containers merge by name, so other containers are untouched.
    return {"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}}


class UpdateImage(DeploymentAction):
    name = "UpdateImage"

    async def capture(self, kube: Kube, step: StepBase, ctx: StepContext, owner: Any) -> Captured:
        what, path = deployment(step)
        obj = await kube.get(what, path)
        container = step.params.container  # type: ignore[attr-defined]
        return {"container": container, "image": container_image(obj, container, what)}

    async def apply(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> dict[str, Any]:
        what, path = deployment(step)
        params = step.params  # type: ignore[attr-defined]
        await kube.strategic_patch(what, path, image_patch(params.container, params.image))
        return {OUTPUTS_KEY: {"previousImage": captured["image"], "image": params.image}}

    async def undo(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> None:
        what, path = deployment(step)
        await kube.strategic_patch(
            what, path, image_patch(captured["container"], captured["image"])
        )
        if not kube.dry_run:
            await wait_rollout(kube, step, ctx)


class RestartDeployment(DeploymentAction):
    name = "RestartDeployment"

    async def capture(self, kube: Kube, step: StepBase, ctx: StepContext, owner: Any) -> Captured:
        what, path = deployment(step)
        obj = await kube.get(what, path)
        annotations = obj["spec"]["template"].get("metadata", {}).get("annotations") or {}
        # The value is fixed at capture, so re-applying after a crash writes the same value
        # and does not start a second rollout.
        value = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"previousRestartedAt": annotations.get(RESTARTED_AT), "restartedAt": value}

    async def apply(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> dict[str, Any]:
        what, path = deployment(step)
        patch = {
            "spec": {
                "template": {"metadata": {"annotations": {RESTARTED_AT: captured["restartedAt"]}}}
            }
        }
        await kube.strategic_patch(what, path, patch)
        wrote = captured["restartedAt"]  # what it wrote, for the record and later steps
        return {"restartedAt": wrote, OUTPUTS_KEY: {"restartedAt": wrote}}
