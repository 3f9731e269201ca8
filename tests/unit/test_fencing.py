"""Writes are fenced by the lease: a leader whose renewals stop (a frozen process, a
partition) stops writing before another replica can consider the lease expired, well
before it notices itself that it lost; and a fenced write is never sent."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from test_request_origin import kube_for, server  # noqa: F401  (fixture)

from reconciler.cluster.lease import FENCE_MARGIN, LeaderElector
from reconciler.kube.errors import Fenced


class RenewsOnceThenHangs:
    """The Lease is created, then every later read hangs (the API server stops answering
    this process: the renewals stop)."""

    def __init__(self) -> None:
        self.reads = 0

    async def find(self, what: str, path: str) -> dict[str, Any] | None:
        self.reads += 1
        if self.reads > 1:
            await asyncio.sleep(3600)
        return None

    async def call(self, what: str, fn: Any) -> dict[str, Any]:
        return {}


def test_writes_stop_before_the_lease_could_expire_and_before_leadership_is_noticed_lost() -> None:
    async def main() -> tuple[str | None, str | None, bool]:
        elector = LeaderElector(
            RenewsOnceThenHangs(), "ns", "l", "me", duration=FENCE_MARGIN + 0.5, retry=0.05
        )  # type: ignore[arg-type]
        task = asyncio.create_task(elector.run())
        await asyncio.wait_for(elector.is_leader.wait(), 5)
        fresh = elector.fence_reason()
        await asyncio.sleep(0.8)
        stale = elector.fence_reason()
        still_leader = elector.is_leader.is_set()  # the elector has not given up yet
        task.cancel()
        return fresh, stale, still_leader

    fresh, stale, still_leader = asyncio.run(main())
    assert fresh is None
    assert stale is not None and "another replica may lead" in stale
    assert still_leader


def test_a_fenced_write_is_never_sent(server) -> None:  # noqa: F811
    url, seen = server
    kube = kube_for(url)
    kube.fence = lambda: "the lease was last renewed 14s ago: another replica may lead"

    async def main() -> None:
        await kube.merge_patch("configmap shop/cfg", "/api/v1/namespaces/shop/configmaps/cfg", {})

    started = time.monotonic()
    with pytest.raises(Fenced, match="configmap shop/cfg: not written: the lease"):
        asyncio.run(main())
    assert seen == [] and time.monotonic() - started < 1
    kube.fence = lambda: None
    asyncio.run(main())
    # unfenced, it goes out (after the client's own discovery requests)
    assert [path for path, _ in seen].count("/api/v1/namespaces/shop/configmaps/cfg") == 1
