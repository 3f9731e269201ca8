"""The daemon's HTTP endpoints: /metrics, /healthz, /readyz, POST /hooks/git.

A stdlib threading server (no extra dependency); requests are tiny and handlers only read
state or poke the event loop with `call_soon_threadsafe`, so threads are enough. Whoever can
reach the port is a stranger: a body must declare its length (at most 1 MiB), every socket
times out (a slow client cannot hold a thread), connections beyond a cap are closed at
once, and a webhook must be signed (GitHub, Gitea) or carry the shared token (GitLab);
the same signed content is accepted once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reconciler.observability.metrics import Metrics

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024  # GitHub caps payloads at 25 MB; a ref push is a few KB
DELIVERY_MEMORY = 1000
SOCKET_TIMEOUT = 10.0  # seconds a connection may stay silent (headers, body, keep-alive)
MAX_CONNECTIONS = 32  # at once; more are closed unanswered


def authenticated(secret: bytes, body: bytes, headers: Mapping[str, str]) -> bool:
    """GitHub's X-Hub-Signature-256 ("sha256=" + hex HMAC-SHA256 of the raw body), Gitea's
    X-Gitea-Signature (the hex HMAC alone), or GitLab's X-Gitlab-Token (the secret itself)."""
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    github = headers.get("X-Hub-Signature-256")
    if github is not None:
        return github.startswith("sha256=") and hmac.compare_digest(
            expected, github.removeprefix("sha256=")
        )
    gitea = headers.get("X-Gitea-Signature")
    if gitea is not None:
        return hmac.compare_digest(expected, gitea)
    gitlab = headers.get("X-Gitlab-Token")
    return gitlab is not None and hmac.compare_digest(secret, gitlab.encode())


def declared_length(headers: Mapping[str, str]) -> tuple[int | None, int, bytes]:
    """The body length a request declares, or (None, status, reason) to refuse it with."""
    if headers.get("Transfer-Encoding"):
        return None, 411, b"send a Content-Length; chunked bodies are not accepted\n"
    raw = headers.get("Content-Length")
    if raw is None:
        return None, 411, b"Content-Length required\n"
    if not raw.strip().isdigit():
        return None, 400, b"Content-Length must be a non-negative integer\n"
    length = int(raw)
    if length > MAX_BODY:
        return None, 413, b"payload too large\n"
    return length, 0, b""


class Endpoints:
    def __init__(
        self,
        metrics: Metrics,
        readiness: Callable[[], str | None],
        on_webhook: Callable[[], None],
        secret: bytes | None,
    ) -> None:
        self.metrics = metrics
        self.readiness = readiness  # None when ready, else why not
        self.on_webhook = on_webhook
        self.secret = secret
        self.deliveries: OrderedDict[str, float] = OrderedDict()
        self.lock = threading.Lock()

    def seen(self, delivery: str) -> bool:
        """Replay protection: the same signed content is accepted once (a delivery id
        header is not signed, so it cannot be what decides)."""
        with self.lock:
            if delivery in self.deliveries:
                return True
            self.deliveries[delivery] = time.time()
            while len(self.deliveries) > DELIVERY_MEMORY:
                self.deliveries.popitem(last=False)
            return False


def make_handler(endpoints: Endpoints) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "reconciler"
        timeout = SOCKET_TIMEOUT  # read and idle: socket.settimeout on every connection

        def log_message(self, format: str, *args: object) -> None:  # quiet; we log ourselves
            pass

        def _send(
            self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(endpoints.metrics.registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._send(200, b"ok\n")
            elif self.path == "/readyz":
                why = endpoints.readiness()
                self._send(503 if why else 200, (why or "ready").encode() + b"\n")
            else:
                self._send(404, b"not found\n")

        def do_POST(self) -> None:
            if self.path != "/hooks/git":
                self._send(404, b"not found\n")
                return
            length, status, reason = declared_length(self.headers)
            if length is None:
                endpoints.metrics.webhooks.labels("too_large" if status == 413 else "bad").inc()
                self.close_connection = True  # the body, if any, is never read
                self._send(status, reason)
                return
            body = self.rfile.read(length)
            if endpoints.secret is None or not authenticated(endpoints.secret, body, self.headers):
                endpoints.metrics.webhooks.labels("unauthorized").inc()
                self._send(
                    401,
                    b"bad or missing signature (X-Hub-Signature-256,"
                    b" X-Gitea-Signature) or X-Gitlab-Token\n",
                )
                return
            if endpoints.seen(hashlib.sha256(body).hexdigest()):
                endpoints.metrics.webhooks.labels("replayed").inc()
                self._send(409, b"delivery already processed\n")
                return
            endpoints.metrics.webhooks.labels("accepted").inc()
            endpoints.on_webhook()
            self._send(202, b"sync scheduled\n")

    return Handler


class CappedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS at once: beyond, closed unanswered
    (a flood of idle sockets must not become a flood of threads)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class HttpServer:
    def __init__(self, listen: str, endpoints: Endpoints) -> None:
        host, _, port = listen.rpartition(":")
        self.server = CappedServer((host or "127.0.0.1", int(port)), make_handler(endpoints))
        self._lock = threading.Lock()
        self._serving = self._stopped = False

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    async def serve(self) -> None:
        """Serve in a worker thread until `stop`; a supervised task (its crash is seen)."""
        await asyncio.to_thread(self._serve_until_stopped)

    def _serve_until_stopped(self) -> None:
        with self._lock:
            if self._stopped:  # its thread started only after `stop`
                return
            self._serving = True
        self.server.serve_forever()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            serving = self._serving
        # socketserver's shutdown waits for serve_forever to end: for ever if it never began
        if serving:
            self.server.shutdown()
        self.server.server_close()
