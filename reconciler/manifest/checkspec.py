"""Checks in the workflow language (docs/checks.md): `verify` after a step, `guards` before
every step, measured on Prometheus or on a live object, judged by CEL conditions.

The models only; the rules a schema cannot say (exactly one source, conditions and queries
that parse) are manifest/checkrules.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from reconciler.manifest.fields import Duration, Model, Name, ObjectName, Token


class PrometheusQuery(Model):
    query: str = Field(
        min_length=1, max_length=10_000, description="PromQL; its value is `result`"
    )


class ObjectRef(Model):
    api_version: Token
    kind: Token
    namespace: Name | None = Field(None, description="omit for a cluster-scoped object")
    name: ObjectName


class LiveCondition(Model):
    object: ObjectRef | None = Field(None, description="default: the step's target")
    condition: str = Field(
        min_length=1, max_length=4_096, description="CEL over `object`, true when it holds"
    )


class CheckSource(Model):
    name: Name
    prometheus: PrometheusQuery | None = None
    kubernetes: LiveCondition | None = None
    success_condition: str | None = Field(
        None, max_length=4_096, description="CEL over `result` (or `results`); Prometheus"
    )


class Check(CheckSource):
    """A step's `verify` entry: measured after the step's own wait; a failure fails the
    step, which rollback then undoes too."""

    failure_condition: str | None = Field(
        None, max_length=4_096, description="fail at once when true; no more measurements"
    )
    initial_delay: Duration = Field(0.0, description="before the first measurement")
    interval: Duration = Field(10.0, description="between measurements (and polls)")
    count: int = Field(1, ge=1, le=1_000, description="Prometheus measurements taken")
    failure_limit: int = Field(0, ge=0, le=1_000, description="failed measurements tolerated")
    inconclusive_limit: int = Field(
        0, ge=0, le=1_000, description="empty or NaN results tolerated"
    )
    timeout: Duration = Field(60.0, description="kubernetes: poll until true or this long")


class Guard(CheckSource):
    """Must hold before the first step and before each step starts."""

    on_fail: Literal["wait", "fail"] = Field(
        "wait", description="wait: re-check each interval until the workflow timeout"
    )
    interval: Duration = Field(30.0, description="between checks while waiting")


class SecretKey(Model):
    name: ObjectName = Field(description="a Secret in the daemon's namespace")
    key: Token


class PrometheusSource(Model):
    address: Token = Field(description="http(s)://host:port of the Prometheus API")
    bearer_token: SecretKey | None = Field(None, description="from a Secret, never inline")
    ca: SecretKey | None = Field(None, description="PEM CA bundle from a Secret")
