"""Action name -> implementation, and the adapter the engine calls (engine.interface.Actions)."""

from __future__ import annotations

from typing import Any

from reconciler.actions.apply import Apply
from reconciler.actions.base import Action
from reconciler.actions.config import UpdateConfigMap, UpdateSecret
from reconciler.actions.deployments import RestartDeployment, ScaleDeployment, UpdateImage
from reconciler.actions.jobs import Custom
from reconciler.actions.kube import WRITES_DONE, Kube
from reconciler.actions.nodes import CordonNode, DrainNode, UncordonNode
from reconciler.actions.pods import DeletePod
from reconciler.engine.errors import PermanentError
from reconciler.engine.interface import Captured, StepContext
from reconciler.manifest.schema import ACTIONS, StepBase

REGISTRY: dict[str, Action] = {
    action.name: action
    for action in (
        ScaleDeployment(),
        UpdateImage(),
        RestartDeployment(),
        DeletePod(),
        CordonNode(),
        UncordonNode(),
        DrainNode(),
        UpdateConfigMap(),
        UpdateSecret(),
        Apply(),
        Custom(),
    )
}
assert set(REGISTRY) == set(ACTIONS), "every action in the schema needs an implementation"


class KubeActions:
    """The engine's Actions, against a real cluster. One per run: `owner` is the run's
    WorkflowExecution (an ownerReference), so the Jobs and Secrets a run creates go with it."""

    def __init__(self, kube: Kube, owner: dict[str, Any] | None = None) -> None:
        self.kube = kube
        self.owner = owner

    @staticmethod
    def _impl(step: StepBase) -> Action:
        return REGISTRY[step.action]  # type: ignore[attr-defined]

    async def capture(self, step: StepBase, ctx: StepContext) -> Captured:
        return await self._impl(step).capture(self.kube, step, ctx, self.owner)

    async def apply(
        self, step: StepBase, captured: Captured, ctx: StepContext
    ) -> dict[str, Any] | None:
        before = WRITES_DONE.get()
        try:
            return await self._impl(step).apply(self.kube, step, captured, ctx, self.owner)
        except PermanentError as err:
            if WRITES_DONE.get() > before and not err.changed:
                raise PermanentError(str(err), changed=True) from err
            raise

    async def wait(
        self, step: StepBase, captured: Captured, ctx: StepContext
    ) -> dict[str, Any] | None:
        if self.kube.dry_run:
            return None  # nothing changed, so nothing to wait for
        return await self._impl(step).wait(self.kube, step, captured, ctx)

    async def undo(self, step: StepBase, captured: Captured, ctx: StepContext) -> str | None:
        return await self._impl(step).undo(self.kube, step, captured, ctx, self.owner)
