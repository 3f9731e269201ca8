"""Where a step's captured state lives: in a Secret the run owns, in the daemon's namespace,
never in the run record or the WorkflowExecution (docs/security.md). The state is what
undo needs (whole ConfigMaps, an object before an Apply, a Deployment's replicas): cluster
data the workflow did not write, which must not reach git, nor a cluster-scoped object that
more people may read than may read the target. The engine keeps only a reference to it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from reconciler.actions.base import create_owned, owned_secret, run_labels, run_object_name
from reconciler.engine.errors import PermanentError
from reconciler.engine.interface import Captured, StepContext
from reconciler.kube.client import Kube
from reconciler.kube.origin import acting_as
from reconciler.kube.paths import ns_path
from reconciler.manifest.schema import StepBase

REF = "stateSecret"  # the one key of what the engine and the record hold
DATA_KEY = "state"


class CapturedStates:
    """One per run (KubeActions): keeps each step's state, and a copy in memory so that
    only a resumed run reads it back."""

    def __init__(self, kube: Kube, owner: dict[str, Any] | None) -> None:
        self.kube = kube
        self.owner = owner
        self._known: dict[str, Captured] = {}

    async def keep(self, step: StepBase, ctx: StepContext, state: Captured) -> Captured:
        """Store `state`; what the engine records instead: where it is."""
        text = json.dumps(state, sort_keys=True)
        namespace = self.kube.capture_namespace
        # named by content too: a step captured again after a crash (its reference not yet
        # checkpointed) gets its own Secret if the state changed meanwhile, and adopts the
        # same one if not; the run's owner reference collects them all
        short = hashlib.sha256(text.encode()).hexdigest()[:8]
        name = run_object_name(ctx.run_id, step.name, f"-state-{short}")
        ref = f"{namespace}/{name}"
        self._known[ref] = state
        handle: Captured = {REF: ref}
        if step.record_previous:  # the author asked to see what the step replaces
            handle["previous"] = previous_values(step, state)
        if self.kube.dry_run:
            return handle  # a dry run keeps nothing
        data = {DATA_KEY: base64.b64encode(text.encode()).decode()}
        body = owned_secret(namespace, name, run_labels(ctx, step), self.owner, data)
        with acting_as(None):  # the daemon's own Secret, never the tenant's
            await create_owned(
                self.kube,
                f"state secret {ref}",
                ns_path("v1", namespace, "secrets"),
                body,
                self.owner,
            )
        return handle

    async def read(self, captured: Captured) -> Captured:
        """The state a reference names (a checkpoint of a run before this change holds the
        state itself: used as it is)."""
        ref = captured.get(REF)
        if not isinstance(ref, str):
            return captured
        if ref in self._known:
            return self._known[ref]
        namespace, name = ref.split("/", 1)
        with acting_as(None):
            secret = await self.kube.find(
                f"state secret {ref}", ns_path("v1", namespace, "secrets", name)
            )
        if secret is None or DATA_KEY not in (secret.get("data") or {}):
            raise PermanentError(
                f"the captured state of this step (Secret {ref}) is gone: it cannot be undone or"
                " resumed; restore the target by hand"
            )
        state: Captured = json.loads(base64.b64decode(secret["data"][DATA_KEY]))
        self._known[ref] = state
        return state


def previous_values(step: StepBase, state: Captured) -> Captured:
    """What `recordPrevious` shows: the captured state, narrowed for a ConfigMap merge to
    the keys the step writes (the other keys are neither the author's nor changed)."""
    params = getattr(step, "params", None)
    if getattr(params, "mode", None) == "merge" and isinstance(state.get("data"), dict):
        keys = set(getattr(params, "data", None) or {})
        return {**state, "data": {k: v for k, v in state["data"].items() if k in keys}}
    return state
