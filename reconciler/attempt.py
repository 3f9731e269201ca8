"""The one retry loop: every retry in reconciler (steps, undos, API calls, checkpoint
writes, git pushes, record pushes) goes through `attempt`.

An attempt that fails is tried again only if `retryable` says so (a permanent error is never
retried), only while retries remain and the deadline allows the next wait, and after a
backoff delay with jitter. It imports nothing of reconciler, so the Kubernetes client and
git may use it without depending on the engine.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0

    def delay(self, retry_number: int, rng: random.Random) -> float:
        """Delay before retry `retry_number` (1 = first retry).

        "Equal jitter": half the exponential delay is fixed, half random, so retries from
        many callers hitting one overloaded server spread out but never collapse to zero.
        """
        capped = min(self.cap, self.initial * self.factor ** (retry_number - 1))
        return capped / 2 + rng.random() * capped / 2


class Timer(Protocol):
    """What `attempt` needs of a clock (engine.clock.Clock is one: virtual time in tests)."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopTimer:
    """The event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


OnRetry = Callable[[int, Exception, float], Awaitable[None] | None]


async def attempt(
    once: Callable[[int], Awaitable[T]],
    *,
    retryable: Callable[[Exception], bool],
    backoff: Backoff = Backoff(),
    retries: int | None = None,
    deadline: float | None = None,
    timer: Timer | None = None,
    rng: random.Random | None = None,
    on_retry: OnRetry | None = None,
) -> T:
    """Call `once(n)` for attempt n = 1, 2, ... until it returns; re-raise its last error.

    `retries`: how many times a failure may be tried again (None: no limit). `deadline`:
    seconds from the first attempt after which no retry starts. `on_retry(n, error, delay)`
    runs before each wait (logging, counters, recording the attempt). Cancellation is never
    retried.
    """
    clock = timer or LoopTimer()
    chance = rng or random.Random()
    start = clock.now()
    number = 0
    while True:
        number += 1
        try:
            return await once(number)
        except Exception as err:
            if not retryable(err) or (retries is not None and number > retries):
                raise
            delay = backoff.delay(number, chance)
            if deadline is not None and clock.now() - start + delay > deadline:
                raise
            if on_retry is not None:
                pending = on_retry(number, err, delay)
                if pending is not None:
                    await pending
            await clock.sleep(delay)
