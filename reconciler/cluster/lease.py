"""Leader election with a coordination.k8s.io/v1 Lease, the way client-go does it: acquire
when the lease is free or expired, renew every `retry` seconds, and give up leadership if it
cannot be renewed within the lease duration. Written here because the official Python
client's leaderelection helper is thread-based and blocks; this one is a small asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from reconciler.kube.client import Kube
from reconciler.kube.errors import Conflict, KubeError
from reconciler.kube.paths import ns_path

log = logging.getLogger(__name__)
FENCE_MARGIN = 3.0  # seconds before the lease could expire that writes stop
DEFAULT_DURATION = 15.0  # client-go's default lease duration
RETRY = 2.0  # seconds between renewals (client-go's retry period)
# Shorter, a leader would fence its own writes between two renewals.
MIN_DURATION = FENCE_MARGIN + 2 * RETRY


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> float:
    if not value:
        return 0.0
    # MicroTime has microseconds; accept any RFC 3339 time a client may have written.
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        duration: float = DEFAULT_DURATION,
        retry: float = RETRY,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.retry = retry
        self.is_leader = asyncio.Event()
        self.lost = asyncio.Event()
        self._last_renew = 0.0

    @property
    def path(self) -> str:
        return ns_path("coordination.k8s.io/v1", self.namespace, "leases", self.name)

    async def try_acquire(self) -> bool:
        what = f"lease {self.namespace}/{self.name}"
        lease = await self.kube.find(what, self.path)
        now = _now()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": int(self.duration),
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            }
            try:
                await self.kube.call(
                    what,
                    lambda: self.kube.request(
                        "POST", ns_path("coordination.k8s.io/v1", self.namespace, "leases"), body
                    ),
                )
                return True
            except Conflict:  # another candidate created it first
                return False
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        expired = (
            _parse(spec.get("renewTime")) + float(spec.get("leaseDurationSeconds") or self.duration)
            < datetime.now(UTC).timestamp()
        )
        if holder not in (self.identity, None, "") and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        new_spec = {
            **spec,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        if holder != self.identity:
            new_spec["acquireTime"] = now
        body = {**lease, "spec": new_spec}
        try:
            # PUT with the resourceVersion we read: two candidates cannot both win.
            await self.kube.call(what, lambda: self.kube.request("PUT", self.path, body))
            return True
        except Conflict:
            return False

    async def run(self) -> None:
        """Campaign until leader, then renew; sets `lost` and returns if leadership is lost.
        However this ends (an exception of its own, cancellation), a leader first stops
        being one: no process may act as leader without renewing."""
        try:
            await self._campaign()
        finally:
            if self.is_leader.is_set():
                self.is_leader.clear()
                self.lost.set()

    def fence_reason(self) -> str | None:
        """Why this process may not write now (None: it may): not the leader, or its last
        renewal is so old that another replica may already consider the lease expired."""
        if not self.is_leader.is_set():
            return "this process is not the leader"
        age = time.monotonic() - self._last_renew
        if age > self.duration - FENCE_MARGIN:
            return f"the lease was last renewed {age:.0f}s ago: another replica may lead"
        return None

    async def _campaign(self) -> None:
        while True:
            sent = time.monotonic()  # the renewal counts from when it was asked for
            try:
                won = await self.try_acquire()
            except KubeError as err:
                log.warning("leader election: %s", err)
                won = False
            now = time.monotonic()
            if won:
                self._last_renew = sent
                if not self.is_leader.is_set():
                    log.info("became leader (%s)", self.identity)
                    self.is_leader.set()
            elif self.is_leader.is_set() and now - self._last_renew > self.duration:
                log.error(
                    "lost leadership (%s could not renew for %.0fs)", self.identity, self.duration
                )
                self.is_leader.clear()
                self.lost.set()
                return
            await asyncio.sleep(self.retry)

    async def release(self) -> None:
        """Step down at shutdown so another replica takes over at once, not after expiry."""
        if not self.is_leader.is_set():
            return
        lease = await self.kube.find("lease", self.path)
        if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
            lease["spec"]["holderIdentity"] = None
            lease["spec"]["renewTime"] = None
            try:
                await self.kube.call("lease", lambda: self.kube.request("PUT", self.path, lease))
            except KubeError as err:
                log.warning("could not release the lease: %s", err)
