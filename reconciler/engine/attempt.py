"""One attempt of an action (a step's capture-apply-wait, or an undo), bounded by the step's
timeout and classified, and the retry policy a manifest gives it: what the step runner and
the rollback share. The loop itself is reconciler/attempt.py."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from reconciler.attempt import Backoff, OnRetry, attempt
from reconciler.engine.clock import Clock
from reconciler.engine.errors import classify, describe
from reconciler.engine.record import ErrorKind
from reconciler.manifest.durations import format_duration
from reconciler.manifest.schema import RetryPolicy

T = TypeVar("T")


class AttemptFailed(Exception):
    """An attempt that did not succeed, as the record says it: its kind and message."""

    def __init__(self, kind: ErrorKind, error: str) -> None:
        super().__init__(error)
        self.kind = kind
        self.error = error


async def timed(
    fn: Callable[[], Awaitable[T]],
    timeout: float,
    label: str,
    waiting_for: Callable[[], str | None] = lambda: None,
) -> T:
    """`fn()` within `timeout`; any failure raised as AttemptFailed. A timeout says what
    the action was last waiting for; cancellation passes through untouched."""
    try:
        async with asyncio.timeout(timeout) as scope:
            return await fn()
    except TimeoutError as err:
        if not scope.expired():  # the action's own TimeoutError (a socket): may pass
            raise AttemptFailed(ErrorKind.TRANSIENT, describe(err)) from err
        waited = waiting_for()
        message = f"{label} timed out after {format_duration(timeout)}"
        raise AttemptFailed(
            ErrorKind.TIMEOUT, message + (f" waiting for {waited}" if waited else "")
        ) from err
    except Exception as err:  # classified here; nothing escapes an attempt unrecorded
        raise AttemptFailed(classify(err), describe(err)) from err


def retryable(err: Exception) -> bool:
    """Transient errors and timeouts are tried again; permanent ones never."""
    return isinstance(err, AttemptFailed) and err.kind != ErrorKind.PERMANENT


async def with_retries(
    once: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    clock: Clock,
    rng: random.Random,
    on_retry: OnRetry | None = None,
) -> T:
    """`once(n)` under the manifest's retry policy, on the engine's clock."""
    return await attempt(
        once,
        retryable=retryable,
        backoff=Backoff(policy.backoff, policy.factor, policy.max_backoff),
        retries=policy.limit,
        timer=clock,
        rng=rng,
        on_retry=on_retry,
    )
