"""Action name -> implementation, and the adapter the engine calls (engine.interface.Actions)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from reconciler import failpoints
from reconciler.actions.apply import Apply
from reconciler.actions.base import Action
from reconciler.actions.config import UpdateConfigMap, UpdateSecret
from reconciler.actions.deployments import RestartDeployment, ScaleDeployment, UpdateImage
from reconciler.actions.errors import engine_error
from reconciler.actions.jobs import Custom
from reconciler.actions.nodes import CordonNode, DrainNode, UncordonNode
from reconciler.actions.pods import DeletePod
from reconciler.actions.states import CapturedStates
from reconciler.actions.targets import list_targets
from reconciler.engine.errors import PermanentError
from reconciler.engine.interface import Captured, StepContext
from reconciler.kube.client import WRITES_DONE, Kube
from reconciler.kube.errors import KubeError
from reconciler.kube.origin import acting_as, request_origin, service_account_user
from reconciler.manifest.schema import ACTIONS, StepBase

log = logging.getLogger("reconciler.actions")

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


# A step -> (namespace, name) of the ServiceAccount its calls impersonate (Policy.account_for).
AccountFor = Callable[[StepBase], tuple[str, str]]


class KubeActions:
    """The engine's Actions, against a real cluster. One per run: `owner` is the run's
    WorkflowExecution (an ownerReference), so the Jobs and Secrets a run creates go with it.
    Every call of a step impersonates the tenant ServiceAccount `account_for` names, so the
    API server, with that account's RBAC, decides what the step may do; None: the caller's
    own identity (tests of the actions alone)."""

    def __init__(
        self,
        kube: Kube,
        owner: dict[str, Any] | None = None,
        account_for: AccountFor | None = None,
    ) -> None:
        self.kube = kube
        self.owner = owner
        self.account_for = account_for
        self.states = CapturedStates(kube, owner)

    def _as(self, step: StepBase, ctx: StepContext, op: str) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(request_origin(_origin(ctx, step, op)))
        if self.account_for is not None:
            stack.enter_context(acting_as(service_account_user(*self.account_for(step))))
        stack.enter_context(_as_engine_errors())
        return stack

    @staticmethod
    def _impl(step: StepBase) -> Action:
        return REGISTRY[step.action]  # type: ignore[attr-defined]

    async def targets(self, step: StepBase, ctx: StepContext) -> list[str]:
        with self._as(step, ctx, "targets"):
            return await list_targets(self.kube, step)

    async def capture(self, step: StepBase, ctx: StepContext) -> Captured:
        with self._as(step, ctx, "capture"):
            state = await self._impl(step).capture(self.kube, step, ctx, self.owner)
            return await self.states.keep(step, ctx, state)  # as the daemon

    async def apply(
        self, step: StepBase, captured: Captured, ctx: StepContext
    ) -> dict[str, Any] | None:
        failpoints.reached(f"captured:{step.name}")  # the engine made the capture durable
        log.debug("applying %s", step.name, extra={"stage": "apply", "step": step.name})
        before = WRITES_DONE.get()
        try:
            with self._as(step, ctx, "apply"):
                captured = await self.states.read(captured)
                result = await self._impl(step).apply(self.kube, step, captured, ctx, self.owner)
        except PermanentError as err:
            if WRITES_DONE.get() > before and not err.changed:
                raise PermanentError(str(err), changed=True) from err
            raise
        failpoints.reached(f"applied:{step.name}")
        return result

    async def wait(
        self, step: StepBase, captured: Captured, ctx: StepContext
    ) -> dict[str, Any] | None:
        if self.kube.dry_run:
            return None  # nothing changed, so nothing to wait for
        with self._as(step, ctx, "wait"):
            captured = await self.states.read(captured)
            result = await self._impl(step).wait(self.kube, step, captured, ctx)
        failpoints.reached(f"waited:{step.name}")
        return result

    async def undo(self, step: StepBase, captured: Captured, ctx: StepContext) -> str | None:
        with self._as(step, ctx, "undo"):
            captured = await self.states.read(captured)
            note = await self._impl(step).undo(self.kube, step, captured, ctx, self.owner)
        failpoints.reached(f"undone:{step.name}")
        return note


@contextlib.contextmanager
def _as_engine_errors() -> Iterator[None]:
    """Every Kubernetes error an action lets through reaches the engine as its own."""
    try:
        yield
    except KubeError as err:
        raise engine_error(err) from err


def _origin(ctx: StepContext, step: StepBase, op: str) -> str:
    """What the audit log's User-Agent says a request was for."""
    return f"run/{ctx.run_id} step/{step.name} op/{op} attempt/{ctx.attempt}"
