"""Who is asking: every request reconciler makes names its process and, inside
`request_origin`, the run, step, operation and attempt it is for, in its User-Agent. The API
server's audit log then says which run, step and process made each request (the e2e tests
count re-applies from it; operators find a step's requests the same way)."""

from __future__ import annotations

import contextlib
import contextvars
import os
import socket
from collections.abc import Iterator, Mapping, MutableMapping

from kubernetes import client as k8s

from reconciler import __version__

# What the current task works for ("run/<id> step/<name> op/apply attempt/1").
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
