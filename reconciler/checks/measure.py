"""One measurement of a check (the engine's `Checks`, engine/interface.py): a Prometheus
query judged by its conditions, or a live object judged by its condition. What went wrong
is the measurement's note (and, for what no later measurement can fix, its `decisive`
flag), never an exception: the engine decides what a measurement means."""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable
from typing import Any

from reconciler import failpoints
from reconciler.checks.prometheus import Prometheus, QueryFailed
from reconciler.engine.interface import StepContext
from reconciler.engine.record import Measurement, Verdict
from reconciler.kube.client import Kube
from reconciler.kube.errors import KubeError
from reconciler.kube.origin import acting_as, service_account_user
from reconciler.kube.paths import ns_path
from reconciler.manifest.checkrules import live_object
from reconciler.manifest.checkspec import Check, ObjectRef, PrometheusSource, SecretKey
from reconciler.manifest.expressions import ExpressionError, compile_condition, evaluate
from reconciler.manifest.schema import StepBase

AccountFor = Callable[[StepBase], tuple[str, str]]


class ClusterChecks:
    """Measures one run's checks: Prometheus at `prometheus` (None: a Prometheus check is
    inconclusive, saying how to configure one), live objects as the step's tenant account
    (`account_for`), so a check reads only what its step may read."""

    def __init__(
        self,
        kube: Kube,
        prometheus: Prometheus | None,
        account_for: AccountFor | None = None,
        observe: Callable[[str, Measurement], None] | None = None,
    ) -> None:
        self.kube = kube
        self.prometheus = prometheus
        self.account_for = account_for
        self.observe = observe  # metrics: each measurement, by source

    async def measure(self, check: Check, step: StepBase, ctx: StepContext) -> Measurement:
        started = time.monotonic()
        if check.prometheus is not None:
            measured = await self._query(check)
        else:
            measured = await self._live(check, step)
        measured.took = round(time.monotonic() - started, 4)
        if self.observe is not None:
            self.observe("prometheus" if check.prometheus is not None else "kubernetes", measured)
        failpoints.reached(f"measured:{step.name}")
        return measured

    async def _query(self, check: Check) -> Measurement:
        assert check.prometheus is not None and check.success_condition is not None
        now = time.time()
        if self.prometheus is None:
            note = "no Prometheus: set spec.prometheus.address or the daemon's --prometheus-url"
            return Measurement(now, Verdict.INCONCLUSIVE, None, note)
        try:
            values = await self.prometheus.values(check.prometheus.query)
        except QueryFailed as err:
            return Measurement(now, Verdict.INCONCLUSIVE, None, str(err))
        if not values:
            return Measurement(
                now, Verdict.INCONCLUSIVE, "[]", "no data: the query returned nothing"
            )
        shown = _text(values[0]) if len(values) == 1 else _listed(values)
        if not all(math.isfinite(v) for v in values):
            return Measurement(now, Verdict.INCONCLUSIVE, shown, f"not a finite number: {shown}")
        variables: dict[str, Any] = {"results": values}
        if len(values) == 1:
            variables["result"] = values[0]
        said = f"result = {shown}" if len(values) == 1 else f"results = {shown}"
        try:
            failure = getattr(check, "failure_condition", None)  # a guard has none
            if failure and _holds(failure, variables):
                return Measurement(now, Verdict.FAILED, shown, f"{said}: {failure}", True)
            if _holds(check.success_condition, variables):
                return Measurement(now, Verdict.PASSED, shown, f"{said}: {check.success_condition}")
        except ExpressionError as err:
            several = " (several series: use `results`)" if len(values) > 1 else ""
            return Measurement(now, Verdict.FAILED, shown, f"{err}{several}", True)
        return Measurement(now, Verdict.FAILED, shown, f"{said}: not {check.success_condition}")

    async def _live(self, check: Check, step: StepBase) -> Measurement:
        assert check.kubernetes is not None
        now = time.time()
        ref = live_object(check, step)
        assert ref is not None  # validation makes sure of it
        user = service_account_user(*self.account_for(step)) if self.account_for else None
        try:
            with acting_as(user):
                obj = await self._read(ref)
        except KubeError as err:
            return Measurement(now, Verdict.FAILED, None, str(err))
        if obj is None:
            return Measurement(now, Verdict.FAILED, None, f"{_name(ref)} not found")
        try:
            holds = _holds(check.kubernetes.condition, {"object": obj})
        except ExpressionError as err:
            return Measurement(now, Verdict.FAILED, None, f"{_name(ref)}: {err}")
        verdict = Verdict.PASSED if holds else Verdict.FAILED
        note = check.kubernetes.condition if holds else f"not {check.kubernetes.condition}"
        return Measurement(now, verdict, str(holds).lower(), f"{_name(ref)}: {note}")

    async def _read(self, ref: ObjectRef) -> dict[str, Any] | None:
        what = _name(ref)

        def resolve() -> str:
            resource = self.kube.dynamic.resources.get(api_version=ref.api_version, kind=ref.kind)
            return resource.path(
                name=ref.name, namespace=ref.namespace if resource.namespaced else None
            )

        return await self.kube.find(what, await self.kube.call(what, resolve))


def _holds(condition: str, variables: dict[str, Any]) -> bool:
    return evaluate(compile_condition(condition), variables)


def _listed(values: list[float], shown: int = 10) -> str:
    """Several series as the record shows them: the first few, and how many in all."""
    more = f", … ({len(values)} series)" if len(values) > shown else ""
    return "[" + ", ".join(map(_text, values[:shown])) + more + "]"


def _text(value: float) -> str:
    return f"{value:.6g}"


def _name(ref: ObjectRef) -> str:
    return f"{ref.kind} {ref.namespace + '/' if ref.namespace else ''}{ref.name}"


async def prometheus_for(
    kube: Kube, source: PrometheusSource | None, default_url: str | None
) -> Prometheus | None:
    """The Prometheus a workflow's checks query: its own `spec.prometheus`, else the
    daemon's --prometheus-url; credentials only from Secrets in the daemon's namespace."""
    if source is None:
        return Prometheus(default_url) if default_url else None
    token = await _secret_value(kube, source.bearer_token) if source.bearer_token else None
    ca = await _secret_value(kube, source.ca) if source.ca else None
    return Prometheus(source.address, token, ca)


async def _secret_value(kube: Kube, ref: SecretKey) -> str | None:
    namespace = kube.capture_namespace
    what = f"secret {namespace}/{ref.name}"
    with acting_as(None):  # the daemon's own namespace: its Secrets, not a tenant's
        secret = await kube.find(what, ns_path("v1", namespace, "secrets", ref.name))
    data = (secret or {}).get("data") or {}
    if ref.key not in data:
        return None  # the query then fails with Prometheus' own 401, named in the record
    return base64.b64decode(data[ref.key]).decode("utf-8", errors="replace").strip()
