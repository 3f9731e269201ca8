"""UpdateConfigMap and UpdateSecret: merge or replace `data`; undo restores it exactly.

Secret values never reach the run record (and so never git, logs or events): the record holds
key names and sha256 digests, and the original values are kept in a Secret owned by the run's
WorkflowExecution, so deleting the run deletes them too.
"""

from __future__ import annotations

import base64
from typing import Any

from reconciler.actions.base import Action, digest, run_labels, run_object_name, target_of
from reconciler.actions.kube import Kube, ns_path, poll
from reconciler.engine.errors import PermanentError
from reconciler.engine.interface import Captured, StepContext
from reconciler.manifest.schema import StepBase


def desired_data(current: dict[str, str], new: dict[str, str], mode: str) -> dict[str, str]:
    return dict(new) if mode == "replace" else {**current, **new}


def data_patch(current: dict[str, str], wanted: dict[str, str]) -> dict[str, Any]:
    """JSON merge patch turning `current` into exactly `wanted` (null removes a key)."""
    patch: dict[str, Any] = {k: None for k in current if k not in wanted}
    patch.update({k: v for k, v in wanted.items() if current.get(k) != v})
    return {"data": patch}


class UpdateConfigMap(Action):
    name = "UpdateConfigMap"

    def _where(self, step: StepBase) -> tuple[str, str]:
        namespace, name = target_of(step)
        return f"configmap {namespace}/{name}", ns_path("v1", namespace, "configmaps", name)

    async def _data(self, kube: Kube, step: StepBase) -> dict[str, str]:
        what, path = self._where(step)
        return (await kube.get(what, path)).get("data") or {}

    async def capture(self, kube: Kube, step: StepBase, ctx: StepContext, owner: Any) -> Captured:
        return {"data": await self._data(kube, step)}

    def _wanted(self, step: StepBase, captured: Captured) -> dict[str, str]:
        params = step.params  # type: ignore[attr-defined]
        return desired_data(captured["data"], params.data, params.mode)

    async def apply(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> None:
        what, path = self._where(step)
        current = await self._data(kube, step)
        await kube.merge_patch(what, path, data_patch(current, self._wanted(step, captured)))

    async def _wait_for(
        self, kube: Kube, step: StepBase, wanted: dict[str, str], ctx: StepContext
    ) -> None:
        what, _ = self._where(step)

        async def check() -> str | None:
            return None if await self._data(kube, step) == wanted else f"{what} data to match"

        if not kube.dry_run:
            await poll(check, lambda w: setattr(ctx, "waiting_for", w))

    async def wait(self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext) -> None:
        await self._wait_for(kube, step, self._wanted(step, captured), ctx)

    async def undo(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> None:
        what, path = self._where(step)
        current = await self._data(kube, step)
        await kube.merge_patch(what, path, data_patch(current, captured["data"]))
        await self._wait_for(kube, step, captured["data"], ctx)


class UpdateSecret(Action):
    name = "UpdateSecret"

    def _where(self, step: StepBase) -> tuple[str, str]:
        namespace, name = target_of(step)
        return f"secret {namespace}/{name}", ns_path("v1", namespace, "secrets", name)

    async def _data(self, kube: Kube, step: StepBase) -> dict[str, str]:
        """Current data, base64-encoded as the API holds it."""
        what, path = self._where(step)
        return (await kube.get(what, path)).get("data") or {}

    def _capture_ref(self, kube: Kube, ctx: StepContext, step: StepBase) -> tuple[str, str]:
        return kube.capture_namespace, run_object_name(ctx.run_id, step.name, "-capture")

    async def capture(
        self, kube: Kube, step: StepBase, ctx: StepContext, owner: dict[str, Any] | None
    ) -> Captured:
        original = await self._data(kube, step)
        namespace, name = self._capture_ref(kube, ctx, step)
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": run_labels(ctx, step),
                "ownerReferences": [owner] if owner else [],
            },
            "type": "Opaque",
            "data": original,
        }
        path = ns_path("v1", namespace, "secrets", name)
        existing = await kube.find(f"capture secret {namespace}/{name}", path)
        if existing is None:
            await kube.write(
                f"capture secret {namespace}/{name}",
                "POST",
                ns_path("v1", namespace, "secrets"),
                body,
            )
        return {
            "keys": {k: digest(base64.b64decode(v)) for k, v in sorted(original.items())},
            "captureSecret": f"{namespace}/{name}",
        }

    async def _new_values(self, kube: Kube, step: StepBase) -> dict[str, str]:
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
        keys = ref.keys if ref.keys is not None else sorted(source)
        missing = [k for k in keys if k not in source]
        if missing:
            raise PermanentError(
                f"secret {namespace}/{ref.name} has no key(s) {', '.join(missing)}"
            )
        return {k: source[k] for k in keys}

    async def _wanted(self, kube: Kube, step: StepBase, current: dict[str, str]) -> dict[str, str]:
        return desired_data(current, await self._new_values(kube, step), step.params.mode)  # type: ignore[attr-defined]

    async def _original(self, kube: Kube, captured: Captured) -> dict[str, str]:
        namespace, name = captured["captureSecret"].split("/", 1)
        secret = await kube.get(
            f"capture secret {namespace}/{name}", ns_path("v1", namespace, "secrets", name)
        )
        return secret.get("data") or {}

    async def apply(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> dict[str, Any]:
        what, path = self._where(step)
        current = await self._data(kube, step)
        base = await self._original(kube, captured) if not kube.dry_run else current
        wanted = await self._wanted(kube, step, base)
        await kube.merge_patch(what, path, data_patch(current, wanted))
        return {"keys": {k: digest(base64.b64decode(v)) for k, v in sorted(wanted.items())}}

    async def _wait_digests(
        self, kube: Kube, step: StepBase, wanted: dict[str, str], ctx: StepContext
    ) -> None:
        what, _ = self._where(step)

        async def check() -> str | None:
            live = await self._data(kube, step)
            return None if live == wanted else f"{what} data to match"

        if not kube.dry_run:
            await poll(check, lambda w: setattr(ctx, "waiting_for", w))

    async def wait(self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext) -> None:
        if kube.dry_run:
            return
        wanted = await self._wanted(kube, step, await self._original(kube, captured))
        await self._wait_digests(kube, step, wanted, ctx)

    async def undo(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext, owner: Any
    ) -> None:
        what, path = self._where(step)
        original = await self._original(kube, captured)
        current = await self._data(kube, step)
        await kube.merge_patch(what, path, data_patch(current, original))
        await self._wait_digests(kube, step, original, ctx)
