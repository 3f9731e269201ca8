"""The Kubernetes API as reconciler uses it: a few REST verbs on JSON, run off the event
loop, every failure raised as a typed error of kube/errors.py.

We call the API through the official client's generic `DynamicClient.request` with explicit
paths rather than discovery: the resources we touch are fixed and well known, so this saves a
discovery round-trip per start-up and keeps every request visible in one place. Only Apply
(arbitrary kinds) uses discovery.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient

from reconciler import DEFAULT_NAMESPACE
from reconciler.attempt import Backoff, attempt
from reconciler.kube.errors import Fenced, Forbidden, NotFound, Unreachable, from_exception
from reconciler.kube.origin import AttributedHeaders, attribute_requests

log = logging.getLogger(__name__)
T = TypeVar("T")

FIELD_MANAGER = "reconciler"
REQUEST_TIMEOUT = (5, 30)  # connect, read: no call may hang on a frozen API server
# Writes that succeeded in the current task (one step attempt runs in one task): lets the
# actions tell "refused before changing anything" from "failed half-way" (a drain that
# cordoned, then could not evict), which rollback must undo.
WRITES_DONE: contextvars.ContextVar[int] = contextvars.ContextVar("writes_done", default=0)
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
LIST_PAGE = 500
OUTAGE_BACKOFF = Backoff(initial=0.5, factor=2.0, cap=5.0)
RESTART_GRACE = 30.0  # seconds after an outage in which a 403 may be the restart's


@dataclass
class DryRunWrite:
    """What the API server said a write would do (dryRun=All), with the object before it."""

    what: str
    method: str
    before: dict[str, Any] | None
    after: dict[str, Any]


@dataclass
class Kube:
    """One per process; shared by every action of every run."""

    api: k8s.ApiClient
    dry_run: bool = False
    # Objects a run creates (Jobs, capture Secrets) are owned by its WorkflowExecution.
    capture_namespace: str = DEFAULT_NAMESPACE
    _dynamic: DynamicClient | None = field(default=None, repr=False)
    dry_run_writes: list[DryRunWrite] = field(default_factory=list, repr=False)
    outage_budget: float = 120.0
    # Why this process may not write now, or None: set by the leader elector, so that a
    # leader frozen past its lease (a stalled node, a stopped process) writes nothing
    # once it thaws, before it has even noticed that another replica leads.
    fence: Callable[[], str | None] | None = field(default=None, repr=False)
    # A command run by a person (not the daemon) gives up for good once one call has spent
    # the outage budget: every later call fails at once, so the command ends in bounded time.
    interactive: bool = False
    gave_up: Unreachable | None = field(default=None, repr=False)
    _down: bool = field(default=False, repr=False)  # the last answer was "unreachable"
    _back_at: float | None = field(default=None, repr=False)  # when it answered again

    def __post_init__(self) -> None:
        if not isinstance(self.api.default_headers, AttributedHeaders):
            attribute_requests(self.api)

    @property
    def dynamic(self) -> DynamicClient:
        if self._dynamic is None:
            self._dynamic = DynamicClient(self.api)
        return self._dynamic

    def dry(self) -> Kube:
        """A client on the same connection whose every write is dryRun=All."""
        return Kube(
            self.api,
            dry_run=True,
            capture_namespace=self.capture_namespace,
            outage_budget=self.outage_budget,
            interactive=self.interactive,
        )

    async def call(self, what: str, fn: Callable[[], T], *, fenced: bool = False) -> T:
        """Run a blocking client call in a worker thread; raise its typed error. While the
        API server is unreachable (restarting, partitioned) keep trying with backoff for up
        to `outage_budget` seconds, so a short outage pauses runs instead of failing them;
        the step's attempt timeout still bounds every wait. `fenced`: a write, checked
        against the fence before every try (an outage can outlast the lease)."""

        async def once(_: int) -> T:
            if fenced:
                self._check_fence(what)
            try:
                result = await asyncio.to_thread(fn)
            except Exception as err:
                typed = from_exception(err, what)
                self._observe_outage(typed)
                raise typed from err
            self._observe_outage(None)
            return result

        def note(number: int, err: Exception, delay: float) -> None:
            if self.interactive and number > 1:  # a person is told once, then the outcome
                return
            if self.interactive:
                log.warning("%s; trying again for up to %gs", err, self.outage_budget)
                return
            log.warning("API server not answering yet (%s); retrying in %.1fs", err, delay)

        if self.gave_up is not None:
            raise self.gave_up
        try:
            return await attempt(
                once,
                retryable=lambda err: isinstance(err, Unreachable) or self._just_back(err),
                backoff=OUTAGE_BACKOFF,
                deadline=self.outage_budget,
                on_retry=note,
            )
        except Unreachable as err:
            if not self.interactive:
                raise
            host = str(self.api.configuration.host)
            named = "" if host.split("://")[-1] in str(err) else f" (server {host})"
            self.gave_up = Unreachable(
                err.what,
                f"{err}{named}; gave up after {self.outage_budget:g}s"
                " (--api-timeout waits longer)",
            )
            raise self.gave_up from err

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str | None = None,
        accept: str | None = None,
    ) -> dict[str, Any]:
        """One blocking request, no retries, the client's own exceptions (see `call`)."""
        raw = self._send(method, path, body, query, content_type, accept)
        return json.loads(raw) if raw else {}

    def raw(self, method: str, path: str, query: dict[str, Any] | None = None) -> str:
        """A request whose answer is text, not JSON (pod logs)."""
        return self._send(method, path, None, query, None, "*/*")

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        query: dict[str, Any] | None,
        content_type: str | None,
        accept: str | None,
    ) -> str:
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        response = self.dynamic.request(
            method,
            path,
            body=body,
            query_params=params,
            content_type=content_type,
            serialize=False,
            _request_timeout=REQUEST_TIMEOUT,
            **({"header_params": {"Accept": accept}} if accept else {}),
        )
        data = response.data if hasattr(response, "data") else response
        return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)

    async def get(
        self, what: str, path: str, query: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self.call(what, lambda: self.request("GET", path, query=query))

    async def version(self) -> dict[str, Any]:
        """GET /version once, no outage retries: for probes that must see an outage at once."""
        try:
            return await asyncio.to_thread(self.request, "GET", "/version")
        except Exception as err:
            raise from_exception(err, "the API server's /version") from err

    async def list_metadata(
        self, what: str, path: str, query: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The metadata of the objects a list returns, a page at a time: the daemon asks on
        every revision, and full objects (a WorkflowExecution carries its whole packed
        record) would make that cost grow with every run kept."""
        items: list[dict[str, Any]] = []
        page_query = {**(query or {}), "limit": LIST_PAGE}
        while True:
            page = await self.call(
                what,
                lambda q=dict(page_query): self.request("GET", path, query=q, accept=METADATA_LIST),
            )
            items += [item["metadata"] for item in page.get("items") or []]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            page_query["continue"] = token

    async def find(self, what: str, path: str) -> dict[str, Any] | None:
        """GET that returns None for 404 instead of failing."""
        try:
            return await self.get(what, path)
        except NotFound:
            return None

    def _observe_outage(self, err: Exception | None) -> None:
        if isinstance(err, Unreachable):
            self._down = True
        elif self._down:  # answering again: its authorizer may still be loading RBAC
            self._down, self._back_at = False, time.monotonic()

    def _just_back(self, err: Exception) -> bool:
        """A 403 in the first seconds after an outage: a restarted API server answers
        before its RBAC cache is synced, and impersonated requests (every step's) are then
        refused; they are tried again, as for the outage itself, for a few seconds."""
        return (
            isinstance(err, Forbidden)
            and self._back_at is not None
            and time.monotonic() - self._back_at < RESTART_GRACE
        )

    def _check_fence(self, what: str) -> None:
        why = self.fence() if self.fence is not None else None
        if why is not None:
            raise Fenced(what, f"{what}: not written: {why}")

    def _write_query(self, query: dict[str, Any] | None) -> dict[str, Any]:
        merged = dict(query or {})
        merged.setdefault("fieldManager", FIELD_MANAGER)
        if self.dry_run:
            merged["dryRun"] = "All"  # every write in dry-run mode, validated by the server
        return merged

    async def write(
        self,
        what: str,
        method: str,
        path: str,
        body: Any,
        content_type: str | None = None,
        query: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        q = self._write_query(query)
        result = await self.call(
            what, lambda: self.request(method, path, body, q, content_type), fenced=True
        )
        WRITES_DONE.set(WRITES_DONE.get() + 1)
        if self.dry_run:
            before = await self.find(what, path) if method != "POST" else None
            self.dry_run_writes.append(DryRunWrite(what, method, before, result))
        return result

    async def merge_patch(self, what: str, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.write(what, "PATCH", path, patch, "application/merge-patch+json")

    async def strategic_patch(self, what: str, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.write(
            what, "PATCH", path, patch, "application/strategic-merge-patch+json"
        )

    async def delete(
        self,
        what: str,
        path: str,
        query: dict[str, Any] | None = None,
        missing_ok: bool = True,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        q = {"dryRun": "All"} if self.dry_run else {}
        q.update(query or {})
        try:
            result = await self.call(
                what, lambda: self.request("DELETE", path, body, q), fenced=True
            )
        except NotFound:
            if missing_ok:
                return None  # already gone: deleting is idempotent
            raise
        WRITES_DONE.set(WRITES_DONE.get() + 1)
        return result
