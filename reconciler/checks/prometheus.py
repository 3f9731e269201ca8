"""The Prometheus HTTP API, as checks use it: one instant query, bounded in time and size.

`GET /api/v1/query`; the answer is a scalar or an instant vector of numbers. Every failure
(unreachable, slow, an error status, a body that is not the API's) is a `QueryFailed`
with a message that names the server and never the credentials.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

REQUEST_TIMEOUT = 5.0  # seconds, connect and read: a slow Prometheus is an inconclusive measurement
MAX_BODY = 8 * 1024 * 1024
MAX_SERIES = 1_000  # more is a query that needs narrowing, not a measurement


class QueryFailed(Exception):
    """No value: the measurement is inconclusive, the message says why."""


@dataclass(frozen=True)
class Prometheus:
    address: str  # http(s)://host:port
    bearer_token: str | None = field(default=None, repr=False)  # never in a log line
    ca_pem: str | None = None
    timeout: float = REQUEST_TIMEOUT

    async def values(self, query: str) -> list[float]:
        """The query's numbers (one per series; a scalar is one), in a worker thread."""
        return await asyncio.to_thread(self._values, query)

    def _values(self, query: str) -> list[float]:
        url = f"{self.address.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self.bearer_token:
            request.add_header("Authorization", f"Bearer {self.bearer_token}")
        context = ssl.create_default_context(cadata=self.ca_pem) if self.ca_pem else None
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout, context=context
            ) as answer:
                body = answer.read(MAX_BODY + 1)
        except urllib.error.HTTPError as err:
            raise QueryFailed(
                f"Prometheus {self.address} answered HTTP {err.code}: {_error_of(err)}"
            ) from None
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            reason = getattr(err, "reason", err)
            raise QueryFailed(f"Prometheus {self.address} unreachable: {reason}") from None
        if len(body) > MAX_BODY:
            raise QueryFailed(f"Prometheus {self.address}: answer over {MAX_BODY // 2**20} MiB")
        return parse_answer(body, self.address)


def parse_answer(body: bytes, address: str) -> list[float]:
    try:
        doc = json.loads(body)
        data = doc["data"]
        kind, result = data["resultType"], data["result"]
    except (ValueError, KeyError, TypeError):
        raise QueryFailed(f"Prometheus {address}: not an API answer") from None
    if kind == "scalar":
        return [_number(result[1])]
    if kind != "vector":
        raise QueryFailed(f"the query returns a {kind}, not a number or an instant vector")
    if len(result) > MAX_SERIES:
        raise QueryFailed(
            f"the query returns {len(result):,} series (over {MAX_SERIES:,}):"
            " aggregate it, e.g. sum(...)"
        )
    return [_number(series["value"][1]) for series in result]


def _number(text: object) -> float:
    try:
        return float(str(text))  # "NaN", "+Inf" parse; the caller judges them
    except ValueError:
        raise QueryFailed(f"not a number: {text!r}") from None


def _error_of(err: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(err.read(64 * 1024)).get("error") or err.reason)[:300]
    except (ValueError, OSError, AttributeError):
        return str(err.reason)[:300]


def finite(values: list[float]) -> bool:
    return all(math.isfinite(v) for v in values)
