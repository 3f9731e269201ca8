"""Time, in one place. Timeouts and sleeps use the event loop's clock, so a test runs the
engine on a virtual-time loop (looptime) and never sleeps for real; records get wall times
derived from the same clock, so they agree with the timeouts that produced them."""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Wall time anchored once, then advanced by the event loop's monotonic clock.

    `wall_start` makes records reproducible in tests; in production it is `time.time()` and
    the record never goes backwards even if NTP steps the system clock.
    """

    def __init__(self, wall_start: float | None = None) -> None:
        self._wall_start = time.time() if wall_start is None else wall_start
        self._loop_start: float | None = None

    def now(self) -> float:
        loop_now = asyncio.get_running_loop().time()
        if self._loop_start is None:
            self._loop_start = loop_now
        return self._wall_start + (loop_now - self._loop_start)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
