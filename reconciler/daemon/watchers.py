"""The daemon's small background loops: readiness's view of the API server, and the
trigger a push to a local repository pulls. Each runs as a supervised task."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from reconciler.kube.client import Kube
from reconciler.kube.errors import KubeError

API_PROBE_INTERVAL = 2.0


async def probe_api(kube: Kube, report: Callable[[bool], None]) -> None:
    """Ask /version every few seconds, one plain request each (no outage retries):
    readiness must say at once that the API server is gone."""
    while True:
        try:
            await kube.version()
            report(True)
        except KubeError:
            report(False)
        await asyncio.sleep(API_PROBE_INTERVAL)


def is_local_repo(repo: str) -> bool:
    return "://" not in repo and Path(repo).is_dir()


async def watch_local_repo(repo: str, wake: asyncio.Event) -> None:
    """A push to a local repository moves a ref file: sync at once, no polling delay."""
    from watchfiles import awatch

    def is_ref(change: object, path: str) -> bool:
        return "/refs/" in path or path.endswith(("packed-refs", "HEAD"))

    async for _ in awatch(
        repo, watch_filter=is_ref, debounce=50, step=10, recursive=True, force_polling=False
    ):
        wake.set()
