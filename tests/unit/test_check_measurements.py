"""How one measurement is judged (checks/measure.py), against a stand-in of Prometheus'
HTTP API on 127.0.0.1 (unit tests only; tests/e2e use a real Prometheus): the value, the
conditions, and every way a query can fail to give one."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from fakes import workflow

from reconciler.checks.measure import ClusterChecks
from reconciler.checks.prometheus import Prometheus
from reconciler.engine.interface import StepContext
from reconciler.engine.record import Measurement, Verdict
from reconciler.manifest.checkspec import Check

ANSWERS: dict[str, Any] = {}  # query -> the API's JSON answer, or ("sleep", seconds)
SEEN: list[dict[str, str]] = []


def vector(*values: str) -> dict[str, Any]:
    series = [{"metric": {"i": str(i)}, "value": [time.time(), v]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": series}}


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)["query"][0]
            SEEN.append(dict(self.headers))
            answer = ANSWERS[query]
            if isinstance(answer, tuple):
                time.sleep(answer[1])
                answer = vector("1")
            status, body = (
                (400, {"status": "error", "error": "bad"}) if answer == "error" else (200, answer)
            )
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def measure(url: str | None, answer: Any, **check: Any) -> Measurement:
    query = f"q{len(ANSWERS)}"
    ANSWERS[query] = answer
    spec = Check.model_validate(
        {"name": "c", "prometheus": {"query": query}, "successCondition": "result < 0.01", **check}
    )
    source = Prometheus(url, bearer_token="t0ken", timeout=0.5) if url else None
    checks = ClusterChecks(None, source)  # type: ignore[arg-type]  (no live checks here)
    step = workflow([{"name": "s"}]).spec.steps[0]
    return asyncio.run(checks.measure(spec, step, StepContext("r", "w", 1)))


def test_a_value_is_judged_by_its_conditions(prometheus: str) -> None:
    ok = measure(prometheus, vector("0.001"))
    assert (ok.verdict, ok.value, ok.note) == (
        Verdict.PASSED,
        "0.001",
        "result = 0.001: result < 0.01",
    )
    high = measure(prometheus, vector("0.03"), failureCondition="result > 0.05")
    assert high.verdict == Verdict.FAILED and not high.decisive
    assert high.note == "result = 0.03: not result < 0.01"
    worse = measure(prometheus, vector("0.083"), failureCondition="result > 0.05")
    assert (
        worse.verdict == Verdict.FAILED
        and worse.decisive
        and worse.note == "result = 0.083: result > 0.05"
    )
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [0, "0"]}}
    assert measure(prometheus, scalar).verdict == Verdict.PASSED
    assert SEEN[-1]["Authorization"] == "Bearer t0ken"


def test_several_series_are_results_and_result_is_then_an_error(prometheus: str) -> None:
    listed = measure(prometheus, vector("1", "2"), successCondition="size(results) == 2")
    assert listed.verdict == Verdict.PASSED and listed.value == "[1, 2]"
    many = measure(prometheus, vector(*[str(i) for i in range(50)]), successCondition="true")
    assert many.value == "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, … (50 series)]"  # the record stays small
    wrong = measure(prometheus, vector("1", "2"))
    assert wrong.verdict == Verdict.FAILED and wrong.decisive and "use `results`" in wrong.note


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (vector(), "no data"),
        (vector("NaN"), "not a finite number: nan"),
        (vector("+Inf"), "not a finite number: inf"),
        (vector(*["1"] * 10_000), "10,000 series"),
        ("error", "answered HTTP 400: bad"),
        (("sleep", 2.0), "unreachable"),
    ],
)
def test_what_gives_no_value_is_inconclusive_and_says_why(
    prometheus: str, answer: Any, fragment: str
) -> None:
    m = measure(prometheus, answer)
    assert m.verdict == Verdict.INCONCLUSIVE and fragment in m.note, m.note
    assert "t0ken" not in m.note


def test_no_prometheus_configured_or_reachable_is_inconclusive() -> None:
    assert "--prometheus-url" in measure(None, vector("0")).note
    m = measure("http://127.0.0.1:9", vector("0"))  # nothing listens on the discard port
    assert (
        m.verdict == Verdict.INCONCLUSIVE and "Prometheus http://127.0.0.1:9 unreachable" in m.note
    )


def test_a_value_equals_an_int_literal_as_people_write_it(prometheus: str) -> None:
    """CEL has no implicit int/double conversion: Prometheus' 0.0 must still == 0."""
    assert (
        measure(prometheus, vector("0"), successCondition="result == 0").verdict == Verdict.PASSED
    )
    two = measure(prometheus, vector("2"), successCondition="result == 0")
    assert two.verdict == Verdict.FAILED and two.note == "result = 2: not result == 0"


class StubKube:
    """Just what ClusterChecks asks of Kube: discovery, a GET that may find nothing, and a
    Secret in the daemon's namespace (unit tests only; tests/e2e use the real API)."""

    capture_namespace = "reconciler-system"

    def __init__(self, objects: dict[str, Any]) -> None:
        self.objects = objects
        self.dynamic = self
        self.resources = self

    def get(self, api_version: str, kind: str) -> Any:
        class Resource:
            namespaced = kind != "Node"

            @staticmethod
            def path(name: str, namespace: str | None) -> str:
                return f"/{kind}/{namespace}/{name}"

        return Resource

    async def call(self, what: str, fn: Any) -> Any:
        return fn()

    async def find(self, what: str, path: str) -> Any:
        return self.objects.get(path)


def live(kube: StubKube, condition: str, name: str = "web") -> Measurement:
    from fakes import workflow

    check = Check.model_validate(
        {
            "name": "ready",
            "kubernetes": {
                "object": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "namespace": "shop",
                    "name": name,
                },
                "condition": condition,
            },
        }
    )
    step = workflow([{"name": "s"}]).spec.steps[0]
    return asyncio.run(ClusterChecks(kube, None).measure(check, step, StepContext("r", "w", 1)))  # type: ignore[arg-type]


def test_a_live_check_on_a_missing_object_or_field_fails_and_says_which() -> None:
    kube = StubKube({"/Deployment/shop/web": {"spec": {"replicas": 2}, "status": {}}})
    gone = live(kube, "object.spec.replicas == 2", name="nope")
    assert gone.verdict == Verdict.FAILED and gone.note == "Deployment shop/nope not found"
    field = live(kube, "object.status.readyReplicas == 2")
    assert field.verdict == Verdict.FAILED and "no field" in field.note and "has()" in field.note
    ok = live(kube, "object.spec.replicas == 2")
    assert ok.verdict == Verdict.PASSED and ok.value == "true"


def test_prometheus_credentials_come_from_a_secret_in_the_daemons_namespace() -> None:
    import base64

    from reconciler.checks.measure import prometheus_for
    from reconciler.manifest.checkspec import PrometheusSource

    kube = StubKube(
        {
            "/api/v1/namespaces/reconciler-system/secrets/prom": {
                "data": {"token": base64.b64encode(b"s3cr3t\n").decode()}
            }
        }
    )
    source = PrometheusSource.model_validate(
        {"address": "https://prometheus:9090", "bearerToken": {"name": "prom", "key": "token"}}
    )
    prometheus = asyncio.run(prometheus_for(kube, source, None))  # type: ignore[arg-type]
    assert prometheus is not None and prometheus.bearer_token == "s3cr3t"
    assert "s3cr3t" not in repr(prometheus)  # never in a log line
    assert asyncio.run(prometheus_for(kube, None, "http://p:9090")).address == "http://p:9090"  # type: ignore[arg-type,union-attr]
    assert asyncio.run(prometheus_for(kube, None, None)) is None  # type: ignore[arg-type]
