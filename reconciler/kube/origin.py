"""Who is asking: every request reconciler makes names its process and, inside
`request_origin`, the run, step, operation and attempt it is for, in its User-Agent. The API
server's audit log then says which run, step and process made each request (the e2e tests
count re-applies from it; operators find a step's requests the same way).

And as whom: inside `acting_as(user)` every request impersonates `user` (a step's tenant
ServiceAccount), so the API server, not reconciler, decides what the step may do."""

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
# Whom the current task's requests impersonate (Impersonate-User), or "" for the daemon itself.
ACTING_AS: contextvars.ContextVar[str] = contextvars.ContextVar("acting_as", default="")
IMPERSONATE_USER = "Impersonate-User"


def process_identity() -> str:
    """host-pid: names this process in Leases and in every request's User-Agent. In a pod the
    host is the pod's name (POD_NAME, from the downward API): with hostNetwork every pod on a
    node has the node's host name, and each container's process is pid 1."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}-{os.getpid()}"


def service_account_user(namespace: str, name: str) -> str:
    """The user name the API server gives a ServiceAccount (and accepts to impersonate)."""
    return f"system:serviceaccount:{namespace}:{name}"


@contextlib.contextmanager
def acting_as(user: str | None) -> Iterator[None]:
    """Requests made inside (by this task, and by tasks and threads it starts) impersonate
    `user`; None: the daemon's own identity, also inside a step (its capture Secrets)."""
    token = ACTING_AS.set(user or "")
    try:
        yield
    finally:
        ACTING_AS.reset(token)


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
    REQUEST_ORIGIN, and an Impersonate-User header while the task acts as someone (ACTING_AS).
    The official client merges its default headers *over* per-request ones
    (ApiClient.__call_api), so per-request headers can only come from here; every request,
    discovery included, goes through it."""

    def __init__(self, headers: Mapping[str, str], agent: str) -> None:
        self._headers = {k: v for k, v in headers.items() if k != "User-Agent"}
        self.agent = agent

    def __getitem__(self, key: str) -> str:
        if key == "User-Agent":
            origin = REQUEST_ORIGIN.get()
            return f"{self.agent} {origin}" if origin else self.agent
        if key == IMPERSONATE_USER:
            user = ACTING_AS.get()
            if not user:
                raise KeyError(key)
            return user
        return self._headers[key]

    def __setitem__(self, key: str, value: str) -> None:
        if key == "User-Agent":
            self.agent = value
        elif key == IMPERSONATE_USER:
            raise KeyError(f"{key}: set it with acting_as(), per task")
        else:
            self._headers[key] = value

    def __delitem__(self, key: str) -> None:
        del self._headers[key]

    def __iter__(self) -> Iterator[str]:
        yield "User-Agent"
        if ACTING_AS.get():
            yield IMPERSONATE_USER
        yield from self._headers

    def __len__(self) -> int:
        return len(self._headers) + 1 + bool(ACTING_AS.get())


def attribute_requests(api: k8s.ApiClient, identity: str | None = None) -> None:
    """Make every request of `api` say it is reconciler, which process, and (inside
    `request_origin`) which run and step: `reconciler/0.1.0 (host-42) run/... step/...`."""
    agent = f"reconciler/{__version__} ({identity or process_identity()})"
    if isinstance(api.default_headers, AttributedHeaders):
        api.default_headers.agent = agent
    else:
        api.default_headers = AttributedHeaders(api.default_headers, agent)
