"""What every action implements, and the small helpers they share."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar
from urllib.parse import quote

from reconciler.engine.errors import PermanentError
from reconciler.engine.interface import Captured, StepContext
from reconciler.kube.client import Kube
from reconciler.kube.errors import Conflict
from reconciler.manifest.schema import StepBase


class Action:
    """capture -> apply -> wait -> undo, each against the live API through `Kube`.

    `apply` must be idempotent: after a crash the engine may apply again a step whose effect is
    already present, and that must change nothing.
    """

    name: ClassVar[str]

    async def capture(
        self, kube: Kube, step: StepBase, ctx: StepContext, owner: dict[str, Any] | None
    ) -> Captured:
        raise NotImplementedError

    async def apply(
        self,
        kube: Kube,
        step: StepBase,
        captured: Captured,
        ctx: StepContext,
        owner: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        raise NotImplementedError

    async def wait(
        self, kube: Kube, step: StepBase, captured: Captured, ctx: StepContext
    ) -> dict[str, Any] | None:
        return None

    async def undo(
        self,
        kube: Kube,
        step: StepBase,
        captured: Captured,
        ctx: StepContext,
        owner: dict[str, Any] | None,
    ) -> str | None:
        raise NotImplementedError(f"{self.name} cannot be undone")


def target_of(step: StepBase) -> tuple[str, str]:
    assert step.target.namespace is not None and step.target.name is not None
    return step.target.namespace, step.target.name


def digest(value: bytes | str) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def keyed_digest(value: str, key: bytes) -> str:
    """A digest only a holder of the installation's key can compute: a plain sha256 of a
    weak secret value (a short password) is guessed offline by whoever may read it."""
    subkey = hmac.new(key, b"reconciler.dev/value-digest", hashlib.sha256).digest()
    return "hmac-sha256:" + hmac.new(subkey, value.encode(), hashlib.sha256).hexdigest()


def run_object_name(run_id: str, step: str, suffix: str = "") -> str:
    """A DNS-1123 name unique per run and step, short enough for a label value (63)."""
    short = hashlib.sha256(f"{run_id}/{step}".encode()).hexdigest()[:8]
    readable = re.sub(r"[^a-z0-9-]+", "-", step)  # a fan-out's `drain[worker-3]`
    base = f"{readable[: 63 - 10 - len(suffix)]}-{short}{suffix}"
    return base.strip("-")


def run_labels(ctx: StepContext, step: StepBase) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "reconciler",
        "reconciler.dev/workflow": ctx.workflow,
        "reconciler.dev/run-id": ctx.run_id[:63],
        "reconciler.dev/step": label_value(step.name),
    }


def label_value(text: str) -> str:
    """`text` as a label value (63 characters of [A-Za-z0-9_.-], alphanumeric at both ends):
    a fan-out's sub-step `drain[worker-3]` is `drain.worker-3`."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", ".", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


class NotOurs(PermanentError):
    """An object with a run's (predictable) name that the run did not make."""


async def create_owned(
    kube: Kube, what: str, collection: str, body: dict[str, Any], owner: dict[str, Any] | None
) -> dict[str, Any]:
    """Create an object the run owns (`owner`, its WorkflowExecution). One that exists
    already is adopted only if it carries that owner reference (made by this run before a
    crash), never one someone else made under the run's name: whoever may create Jobs in a
    namespace must not decide how a step ends, nor what its record says."""
    try:
        return await kube.write(what, "POST", collection, body)
    except Conflict:
        existing = await kube.get(what, f"{collection}/{quote(body['metadata']['name'])}")
    owners = (existing.get("metadata") or {}).get("ownerReferences") or []
    if owner is not None and any(ref.get("uid") == owner["uid"] for ref in owners):
        return existing
    raise NotOurs(
        f"{what} exists and is not this run's (no owner reference to its WorkflowExecution):"
        " not adopted; delete it, or rename the step"
    )


def owned_secret(
    namespace: str,
    name: str,
    labels: dict[str, str],
    owner: dict[str, Any] | None,
    data: dict[str, str],
) -> dict[str, Any]:
    """A Secret a run keeps for itself (captured values, inline inputs), owned by its
    WorkflowExecution so that deleting the run deletes it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner] if owner else [],
        },
        "type": "Opaque",
        "data": data,
    }


async def poll(
    check: Callable[[], Awaitable[str | None]],
    on_wait: Callable[[str], None],
    interval: float = 0.25,
    max_interval: float = 2.0,
) -> None:
    """Call `check` until it returns None (done); each other return says what we wait for.

    No deadline here: the engine's attempt timeout bounds every wait, and the last thing we
    were waiting for goes into its timeout message through `on_wait`.
    """
    while True:
        waiting_for = await check()
        if waiting_for is None:
            return
        on_wait(waiting_for)
        await asyncio.sleep(interval)
        interval = min(max_interval, interval * 1.5)
