"""UpdateConfigMap and UpdateSecret: merge or replace `data`; undo restores it exactly.

Secret values never reach the run record (and so never git, logs or events): the record holds
key names and sha256 digests, and the original values are kept in a Secret owned by the run's
WorkflowExecution, so deleting the run deletes them too.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from reconciler.actions.base import (
    Action,
    create_owned,
    digest,
    owned_secret,
    poll,
    run_labels,
    run_object_name,
    target_of,
)
from reconciler.engine.errors import PermanentError
from reconciler.engine.interface import OUTPUTS_KEY, Captured, StepContext
from reconciler.kube.client import Kube
from reconciler.kube.origin import acting_as
from reconciler.kube.paths import ns_path
from reconciler.manifest.schema import StepBase


@dataclass(frozen=True)
class DataTarget:
    """What a step makes `data` look like. `values` maps the keys the step owns to their
    value (None: absent); `exact` says every other key must go too (replace mode, and the
    undo of replace). A merge owns only its own keys, so two steps that merge different
    keys into one object, even at the same time, never undo each other's work."""

    values: dict[str, str | None]
    exact: bool

    def patch(self, current: dict[str, str]) -> dict[str, Any]:
        """The JSON merge patch from `current` to this target (null removes a key)."""
        patch: dict[str, Any] = {}
        if self.exact:
            patch.update({k: None for k in current if k not in self.values})
        patch.update({k: v for k, v in self.values.items() if current.get(k) != v})
        return {"data": patch}

    def reached(self, live: dict[str, str]) -> bool:
        if self.exact and set(live) - set(self.values):
            return False
        return all(live.get(k) == v for k, v in self.values.items())


def apply_target(new: dict[str, str], mode: str) -> DataTarget:
    return DataTarget(dict(new), exact=mode == "replace")


def undo_target(original: dict[str, str], new_keys: list[str], mode: str) -> DataTarget:
    """Replace restores the captured data exactly; merge restores exactly the keys it set
    (their captured values, or absent if the step added them)."""
    if mode == "replace":
        return DataTarget(dict(original), exact=True)
    return DataTarget({k: original.get(k) for k in new_keys}, exact=False)


def data_outputs(written: dict[str, Any], keys: int) -> dict[str, Any]:
    """What later steps may use of a data write: never a value (a Secret's stays secret)."""
    version = str((written.get("metadata") or {}).get("resourceVersion", ""))
    return {OUTPUTS_KEY: {"resourceVersion": version, "changedKeys": keys}}


async def wait_for_data(
    kube: Kube,
    what: str,
    read: Callable[[], Awaitable[dict[str, str]]],
    target: DataTarget,
    ctx: StepContext,
) -> None:
    """Until the object's data (as `read` returns it) has reached `target`."""

    async def check() -> str | None:
        return None if target.reached(await read()) else f"{what} data"

    if not kube.dry_run:
        await poll(check, lambda w: setattr(ctx, "waiting_for", w))


class DataAction(Action):
    """An action on the `data` of one ConfigMap or Secret (the target)."""

    kind: ClassVar[str]  # "configmap" | "secret"

    def _where(self, step: StepBase) -> tuple[str, str]:
        namespace, name = target_of(step)
        return f"{self.kind} {namespace}/{name}", ns_path("v1", namespace, f"{self.kind}s", name)

    async def _data(self, kube: Kube, step: StepBase) -> dict[str, str]:
        """Current data as the API holds it (a Secret's base64-encoded)."""
        what, path = self._where(step)
        return (await kube.get(what, path)).get("data") or {}


class UpdateConfigMap(DataAction):
    name = "UpdateConfigMap"
    kind = "configmap"

    async def capture(self, kube: Kube, step: StepBase, ctx: StepContext, owner: Any) -> Captured:
        return {"data": await self._data(kube, step)}

    def _target(self, step: StepBase) -> DataTarget:
        params = step.params  # type: ignore[attr-defined]
        return apply_target(params.data, params.mode)

    async def apply(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> dict[str, Any]:
        what, path = self._where(step)
        current = await self._data(kube, step)
        patch = self._target(step).patch(current)
        return data_outputs(await kube.merge_patch(what, path, patch), len(patch["data"]))

    async def wait(self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext) -> None:
        await wait_for_data(
            kube, self._where(step)[0], lambda: self._data(kube, step), self._target(step), ctx
        )

    async def undo(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> None:
        what, path = self._where(step)
        params = step.params  # type: ignore[attr-defined]
        target = undo_target(captured["data"], list(params.data), params.mode)
        current = await self._data(kube, step)
        await kube.merge_patch(what, path, target.patch(current))
        await wait_for_data(kube, self._where(step)[0], lambda: self._data(kube, step), target, ctx)


class UpdateSecret(DataAction):
    name = "UpdateSecret"
    kind = "secret"

    def _capture_ref(self, kube: Kube, ctx: StepContext, step: StepBase) -> tuple[str, str]:
        return kube.capture_namespace, run_object_name(ctx.run_id, step.name, "-capture")

    async def capture(
        self, kube: Kube, step: StepBase, ctx: StepContext, owner: dict[str, Any] | None
    ) -> Captured:
        original = await self._data(kube, step)
        namespace, name = self._capture_ref(kube, ctx, step)
        body = owned_secret(namespace, name, run_labels(ctx, step), owner, original)
        what = f"capture secret {namespace}/{name}"
        with acting_as(None):  # the daemon's own Secret, not the tenant's
            await create_owned(kube, what, ns_path("v1", namespace, "secrets"), body, owner)
        return {
            "keys": {k: digest(base64.b64decode(v)) for k, v in sorted(original.items())},
            "captureSecret": f"{namespace}/{name}",
            # the keys this step sets, fixed now: a fromSecret source may change before undo
            "sets": sorted(await self._new_values(kube, step)),
        }

    async def _new_values(
        self, kube: Kube, step: StepBase, keys: list[str] | None = None
    ) -> dict[str, str]:
        """The base64 values the step writes. `keys`: the ones fixed at capture; a source
        Secret that gained a key since must not widen what the step changes (its undo
        restores exactly these)."""
        params = step.params  # type: ignore[attr-defined]
        if params.data is not None:
            return {k: base64.b64encode(v.encode()).decode() for k, v in params.data.items()}
        namespace = step.target.namespace
        assert namespace is not None
        ref = params.from_secret
        source = (
            await kube.get(
                f"secret {namespace}/{ref.name}", ns_path("v1", namespace, "secrets", ref.name)
            )
        ).get("data") or {}
        if keys is None:
            keys = ref.keys if ref.keys is not None else sorted(source)
        missing = [k for k in keys if k not in source]
        if missing:
            raise PermanentError(
                f"secret {namespace}/{ref.name} has no key(s) {', '.join(missing)}"
            )
        return {k: source[k] for k in keys}

    async def _target(self, kube: Kube, step: StepBase, captured: Captured) -> DataTarget:
        values = await self._new_values(kube, step, captured.get("sets"))
        return apply_target(values, step.params.mode)  # type: ignore[attr-defined]

    async def _original(self, kube: Kube, captured: Captured) -> dict[str, str]:
        namespace, name = captured["captureSecret"].split("/", 1)
        with acting_as(None):
            secret = await kube.get(
                f"capture secret {namespace}/{name}", ns_path("v1", namespace, "secrets", name)
            )
        return secret.get("data") or {}

    async def apply(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> dict[str, Any]:
        what, path = self._where(step)
        current = await self._data(kube, step)
        target = await self._target(kube, step, captured)
        patch = target.patch(current)
        written = await kube.merge_patch(what, path, patch)
        return {  # what the step did to each key; never a value, nor a digest of one
            # the keys it writes, changed or not: how many differed would tell the record
            # whether a written value equalled the live one
            **data_outputs(written, len(target.values)),
            "keys": {
                k: "set" if v is not None else "removed" for k, v in sorted(target.values.items())
            },
            "mode": step.params.mode,  # type: ignore[attr-defined]
        }

    async def wait(self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext) -> None:
        if kube.dry_run:
            return
        await wait_for_data(
            kube,
            self._where(step)[0],
            lambda: self._data(kube, step),
            await self._target(kube, step, captured),
            ctx,
        )

    async def undo(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> None:
        what, path = self._where(step)
        original = await self._original(kube, captured)
        new_keys = captured.get("sets") or list(await self._new_values(kube, step))
        target = undo_target(original, new_keys, step.params.mode)  # type: ignore[attr-defined]
        current = await self._data(kube, step)
        await kube.merge_patch(what, path, target.patch(current))
        await wait_for_data(kube, self._where(step)[0], lambda: self._data(kube, step), target, ctx)
