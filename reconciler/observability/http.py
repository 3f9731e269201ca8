"""The daemon's HTTP endpoints: /metrics, /healthz, /readyz, POST /hooks/git.

A stdlib threading server (no extra dependency); requests are tiny and handlers only read
state or poke the event loop with `call_soon_threadsafe`, so threads are enough.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reconciler.observability.metrics import Metrics

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024  # GitHub caps payloads at 25 MB; a ref push is a few KB
DELIVERY_MEMORY = 1000


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    """GitHub's X-Hub-Signature-256: "sha256=" + hex HMAC-SHA256 of the raw body."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256="))


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
        """Replay protection: a delivery id is accepted once."""
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
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                endpoints.metrics.webhooks.labels("too_large").inc()
                self._send(413, b"payload too large\n")
                self.close_connection = True
                return
            body = self.rfile.read(length)
            if endpoints.secret is None or not signature_ok(
                endpoints.secret, body, self.headers.get("X-Hub-Signature-256")
            ):
                endpoints.metrics.webhooks.labels("unauthorized").inc()
                self._send(401, b"bad or missing X-Hub-Signature-256\n")
                return
            delivery = self.headers.get("X-GitHub-Delivery") or self.headers.get(
                "X-Gitlab-Event-UUID"
            )
            if delivery and endpoints.seen(delivery):
                endpoints.metrics.webhooks.labels("replayed").inc()
                self._send(409, b"delivery already processed\n")
                return
            endpoints.metrics.webhooks.labels("accepted").inc()
            endpoints.on_webhook()
            self._send(202, b"sync scheduled\n")

    return Handler


class HttpServer:
    def __init__(self, listen: str, endpoints: Endpoints) -> None:
        host, _, port = listen.rpartition(":")
        self.server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), make_handler(endpoints))
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    async def serve(self) -> None:
        """Serve in a worker thread until `stop`; a supervised task (its crash is seen)."""
        await asyncio.to_thread(self.server.serve_forever)

    def stop(self) -> None:
        self.server.shutdown()  # returns at once if it is not serving
        self.server.server_close()


def threadsafe_setter(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> Callable[[], None]:
    return lambda: loop.call_soon_threadsafe(event.set)
