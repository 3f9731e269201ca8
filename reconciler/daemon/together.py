"""Awaitables run at once: all their results in order, or the first failure with the rest
cancelled and awaited. `asyncio.gather` would leave the rest running after a failure (a
second read of the manifest cache overlapping the next sync's), and a `TaskGroup` raises
an ExceptionGroup that the sync's `except GitError` / `except KubeError` would not catch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def all_of(*awaitables: Awaitable[Any]) -> list[Any]:
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
