"""The Kubernetes API as the actions see it: a few REST verbs on JSON, run off the event loop,
with every failure translated into the engine's taxonomy.

We call the API through the official client's generic `DynamicClient.request` with explicit
paths rather than discovery: the resources the actions touch are fixed and well known, so this
saves a discovery round-trip per start-up and keeps every request visible in one place. Only
Apply (arbitrary kinds) uses discovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from reconciler import __version__
from reconciler.engine.errors import ActionError, PermanentError, TransientError

log = logging.getLogger(__name__)
T = TypeVar("T")

FIELD_MANAGER = "reconciler"
REQUEST_TIMEOUT = (5, 30)  # connect, read: no call may hang on a frozen API server
# Writes that succeeded in the current task (one step attempt runs in one task): lets the
# adapter tell "refused before changing anything" from "failed half-way" (a drain that
# cordoned, then could not evict), which rollback must undo.
WRITES_DONE: contextvars.ContextVar[int] = contextvars.ContextVar("writes_done", default=0)
# 409 Conflict (optimistic concurrency), 429 Too Many Requests / PDB-blocked eviction,
# 5xx from an overloaded or restarting API server, 410 Gone (stale list): may succeed later.
TRANSIENT_STATUS = {409, 410, 429, 500, 502, 503, 504}
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
LIST_PAGE = 500
API_CONNECTIONS = 32  # at most this many open to the API server at rest
# What the current task works for ("run/<id> step/<name> op/apply attempt/1"), named in the
# User-Agent of every request it makes: the API server's audit log then says which run,
# step and process made each request (the e2e tests count re-applies from it).
REQUEST_ORIGIN: contextvars.ContextVar[str] = contextvars.ContextVar("request_origin", default="")


def process_identity() -> str:
    """hostname-pid: names this process in Leases and in every request's User-Agent."""
    return f"{socket.gethostname()}-{os.getpid()}"


@contextlib.contextmanager
def request_origin(origin: str) -> Iterator[None]:
    """Requests made inside (by this task, and by tasks it starts) carry `origin`."""
    token = REQUEST_ORIGIN.set(origin)
    try:
        yield
    finally:
        REQUEST_ORIGIN.reset(token)


class AttributedHeaders(MutableMapping[str, str]):
    """The client's default headers, with a User-Agent that adds the current task's
    REQUEST_ORIGIN. The official client merges its default headers *over* per-request ones
    (ApiClient.__call_api), so a per-request User-Agent can only come from here; every
    request, discovery included, goes through it."""

    def __init__(self, headers: Mapping[str, str], agent: str) -> None:
        self._headers = {k: v for k, v in headers.items() if k != "User-Agent"}
        self.agent = agent

    def __getitem__(self, key: str) -> str:
        if key == "User-Agent":
            origin = REQUEST_ORIGIN.get()
            return f"{self.agent} {origin}" if origin else self.agent
        return self._headers[key]

    def __setitem__(self, key: str, value: str) -> None:
        if key == "User-Agent":
            self.agent = value
        else:
            self._headers[key] = value

    def __delitem__(self, key: str) -> None:
        del self._headers[key]

    def __iter__(self) -> Iterator[str]:
        yield "User-Agent"
        yield from self._headers

    def __len__(self) -> int:
        return len(self._headers) + 1


def attribute_requests(api: k8s.ApiClient, identity: str | None = None) -> None:
    """Make every request of `api` say it is reconciler, which process, and (inside
    `request_origin`) which run and step: `reconciler/0.1.0 (host-42) run/... step/...`."""
    agent = f"reconciler/{__version__} ({identity or process_identity()})"
    if isinstance(api.default_headers, AttributedHeaders):
        api.default_headers.agent = agent
    else:
        api.default_headers = AttributedHeaders(api.default_headers, agent)


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """In-cluster config when running as a Pod, else the kubeconfig (KUBECONFIG or ~/.kube)."""
    configuration = k8s.Configuration()
    # Keep-alive connections to the API server, shared by every step and checkpoint write.
    # The client's default (5 per CPU) is below the number of requests in flight under
    # load, and each request beyond the pool opens and then throws away a TLS connection.
    configuration.connection_pool_maxsize = API_CONNECTIONS
    if kubeconfig is None and context is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
            return k8s.ApiClient(configuration)
        except k8s_config.ConfigException:
            pass
    k8s_config.load_kube_config(
        config_file=kubeconfig, context=context, client_configuration=configuration
    )
    return k8s.ApiClient(configuration)


def api_error(err: BaseException, what: str) -> ActionError:
    """Translate a client exception into Transient/PermanentError naming the resource."""
    if isinstance(err, ActionError):
        return err
    if isinstance(err, ApiException):
        status = int(err.status or 0)
        reason = _api_message(err) or err.reason or "error"
        if status == 404:
            return PermanentError(f"{what} not found")
        if status == 403:
            return PermanentError(f"forbidden to act on {what}: {reason}")
        if status in TRANSIENT_STATUS or status == 0:
            return TransientError(f"{what}: HTTP {status}: {reason}")
        return PermanentError(f"{what}: HTTP {status}: {reason}")
    if isinstance(err, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError)):
        return TransientError(f"{what}: cannot reach the API server: {type(err).__name__}: {err}")
    return PermanentError(f"{what}: {type(err).__name__}: {err}")


def _api_message(err: ApiException) -> str | None:
    body = getattr(err, "body", None)
    if not body:
        return None
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return str(body)[:300]
    return data.get("message") if isinstance(data, dict) else None


def _unreachable(err: BaseException) -> bool:
    """The API server could not be reached or is restarting (not: it answered no)."""
    if isinstance(err, ApiException):
        return int(err.status or 0) in (0, 502, 503, 504)
    return isinstance(err, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def is_status(err: BaseException, status: int) -> bool:
    return isinstance(err, ApiException) and int(err.status or 0) == status


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
    capture_namespace: str = "reconciler-system"
    _dynamic: DynamicClient | None = field(default=None, repr=False)
    dry_run_writes: list[DryRunWrite] = field(default_factory=list, repr=False)
    outage_budget: float = 120.0

    def __post_init__(self) -> None:
        if not isinstance(self.api.default_headers, AttributedHeaders):
            attribute_requests(self.api)

    @property
    def dynamic(self) -> DynamicClient:
        if self._dynamic is None:
            self._dynamic = DynamicClient(self.api)
        return self._dynamic

    async def _run(self, fn: Callable[[], T]) -> T:
        """Run a blocking client call in a worker thread. While the API server is unreachable
        (restarting, partitioned) keep trying with backoff for up to `outage_budget` seconds,
        so a short outage pauses runs instead of failing them; the step's attempt timeout
        still bounds every wait."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.outage_budget
        delay = 0.5
        while True:
            try:
                return await asyncio.to_thread(fn)
            except Exception as err:
                if not _unreachable(err) or loop.time() + delay > give_up:
                    raise
                log.warning(
                    "API server unreachable (%s); retrying in %.1fs", type(err).__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run a blocking client call off the event loop; translate its errors."""
        try:
            return await self._run(fn)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            raise api_error(err, what) from err

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str | None = None,
        accept: str | None = None,
    ) -> dict[str, Any]:
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
        raw = response.data.decode("utf-8") if hasattr(response, "data") else response
        return json.loads(raw) if raw else {}

    def raw(self, method: str, path: str, query: dict[str, Any] | None = None) -> str:
        """A request whose answer is text, not JSON (pod logs)."""
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        response = self.dynamic.request(
            method,
            path,
            query_params=params,
            serialize=False,
            header_params={"Accept": "*/*"},
            _request_timeout=REQUEST_TIMEOUT,
        )
        return response.data.decode("utf-8", errors="replace")

    async def get(
        self, what: str, path: str, query: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self.call(what, lambda: self._request("GET", path, query=query))

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
                lambda q=dict(page_query): self._request(
                    "GET", path, query=q, accept=METADATA_LIST
                ),
            )
            items += [item["metadata"] for item in page.get("items") or []]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            page_query["continue"] = token

    async def find(self, what: str, path: str) -> dict[str, Any] | None:
        """GET that returns None for 404 instead of failing."""
        try:
            return await self._run(lambda: self._request("GET", path))
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if is_status(err, 404):
                return None
            raise api_error(err, what) from err

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
        result = await self.call(what, lambda: self._request(method, path, body, q, content_type))
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
        self, what: str, path: str, query: dict[str, Any] | None = None, missing_ok: bool = True
    ) -> dict[str, Any] | None:
        q = {"dryRun": "All"} if self.dry_run else {}
        q.update(query or {})
        try:
            result = await self._run(lambda: self._request("DELETE", path, None, q))
            WRITES_DONE.set(WRITES_DONE.get() + 1)
            return result
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if missing_ok and is_status(err, 404):
                return None  # already gone: deleting is idempotent
            raise api_error(err, what) from err


def ns_path(group_version: str, namespace: str, plural: str, name: str | None = None) -> str:
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    path = f"{base}/namespaces/{quote(namespace)}/{plural}"
    return f"{path}/{quote(name)}" if name else path


def cluster_path(group_version: str, plural: str, name: str | None = None) -> str:
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    return f"{base}/{plural}/{quote(name)}" if name else f"{base}/{plural}"


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
