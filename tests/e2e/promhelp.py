"""A real Prometheus for the checks' e2e tests (built by tests/e2e/prometheus/build.sh),
on 127.0.0.1, scraping every second an exporter in this process whose values each test
moves, with a rule that fires `E2ECritical` for any series `e2e_value{name="alert"} > 0`.

Every series carries a `test` label: tests share the session's Prometheus, never a value.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kwokcluster import script_bin_dir
from prometheus_client import CollectorRegistry, Gauge, start_http_server

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [{rules}]
scrape_configs:
  - job_name: e2e
    static_configs: [{{targets: ["127.0.0.1:{exporter}"]}}]
"""
RULES = """groups:
  - name: e2e
    interval: 1s
    rules:
      - alert: E2ECritical
        expr: e2e_value{name="alert"} > 0
        for: 0s
        labels: {severity: critical}
"""


def prometheus_binary() -> Path:
    return script_bin_dir(ROOT / "tests/e2e/prometheus/build.sh") / "prometheus"


class Exporter:
    """The values Prometheus scrapes: `e2e_value{test, name}`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.gauge = Gauge(
            "e2e_value", "a value a test sets", ["test", "name"], registry=self.registry
        )
        self.server, self.thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = self.server.server_port

    def set(self, test: str, name: str, value: float) -> None:
        self.gauge.labels(test=test, name=name).set(value)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PrometheusServer:
    def __init__(self, exporter: Exporter | Any, workdir: Path) -> None:  # anything with .port
        from daemonhelp import free_port

        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "rules.yml").write_text(RULES)
        config = CONFIG.format(rules=workdir / "rules.yml", exporter=exporter.port)
        (workdir / "prometheus.yml").write_text(config)
        self.log = (workdir / "prometheus.log").open("ab")
        self.args = [
            str(prometheus_binary()),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--storage.tsdb.path={workdir / 'data'}",
            "--storage.tsdb.retention.time=1h",
            "--scrape.discovery-reload-interval=100ms",  # else the first scrape waits 5 s
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"Prometheus not ready after 30 s; see {self.workdir}/prometheus.log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Metrics:
    """One test's view: its own label, the session's exporter and Prometheus."""

    def __init__(self, exporter: Exporter, server: PrometheusServer) -> None:
        self.exporter, self.server = exporter, server
        self.test = uuid.uuid4().hex[:10]

    def set(self, name: str, value: float) -> None:
        self.exporter.set(self.test, name, value)

    def series(self, name: str) -> str:
        return f'e2e_value{{test="{self.test}",name="{name}"}}'

    def value(self, query: str) -> float | None:
        """What Prometheus says `query` is now (None: no data yet)."""
        url = f"{self.server.url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(url, timeout=5) as answer:
            result = json.loads(answer.read())["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def firing(self) -> str:
        return (
            f'count(ALERTS{{alertname="E2ECritical",alertstate="firing",test="{self.test}"}})'
            " or vector(0)"
        )


@pytest.fixture(scope="session")
def prometheus_session() -> Iterator[tuple[Exporter, PrometheusServer]]:
    workdir = Path(tempfile.mkdtemp(prefix="reconciler-prometheus-"))
    exporter = Exporter()
    server = PrometheusServer(exporter, workdir)
    try:
        yield exporter, server.start()
    finally:
        server.stop()
        exporter.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def metrics(prometheus_session: tuple[Exporter, PrometheusServer]) -> Metrics:
    return Metrics(*prometheus_session)
