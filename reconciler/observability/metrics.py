"""Prometheus metrics, one registry per daemon (names follow the gotk_/argo_ conventions SREs
already alert on: a `reconciler_` prefix, seconds, _total counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reconciler.engine.record import Measurement, RunRecord, StepPhase, Transition

DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    def __init__(self) -> None:
        # One declaration per metric, in the order of the dashboard: long, but a list to
        # read, and each name appears exactly once (tests/unit/test_dashboard.py).
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter(
            "reconciler_runs_total", "Finished runs by final phase", ["phase"], registry=r
        )
        self.run_duration = Histogram(
            "reconciler_run_duration_seconds",
            "Run duration",
            ["phase"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.step_duration = Histogram(
            "reconciler_step_duration_seconds",
            "Step duration (all attempts)",
            ["action", "phase"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.steps_running = Gauge("reconciler_steps_running", "Steps running now", registry=r)
        self.runs_active = Gauge("reconciler_runs_active", "Runs in progress", registry=r)
        self.queue_depth = Gauge("reconciler_queue_depth", "Workflows waiting to run", registry=r)
        self.sync_duration = Histogram(
            "reconciler_git_sync_duration_seconds",
            "Git sync duration",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.task_restarts = Counter(
            "reconciler_task_restarts_total",
            "Background tasks restarted after an unexpected exception",
            ["task"],
            registry=r,
        )
        self.sync_failures = Counter(
            "reconciler_git_sync_failures_total", "Failed git syncs", registry=r
        )
        self.last_sync = Gauge(
            "reconciler_last_successful_sync_timestamp_seconds",
            "Unix time of the last successful git sync",
            registry=r,
        )
        self.push_retries = Counter(
            "reconciler_record_push_retries_total",
            "Record pushes retried (rejected or remote unreachable)",
            registry=r,
        )
        self.records_pending = Gauge(
            "reconciler_records_pending", "Record commits not pushed yet", registry=r
        )
        self.invalid_manifests = Gauge(
            "reconciler_invalid_manifests", "Manifest errors at the last revision", registry=r
        )
        self.leader = Gauge("reconciler_leader", "1 if this replica is the leader", registry=r)
        self.measurements = Counter(
            "reconciler_check_measurements_total",
            "Check measurements by source and verdict",
            ["source", "verdict"],
            registry=r,
        )
        self.measurement_duration = Histogram(
            "reconciler_check_measurement_duration_seconds",
            "How long one measurement took (a Prometheus query, a live read)",
            ["source"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.checks = Counter(
            "reconciler_checks_total",
            "Checks evaluated to a verdict (verify and guards)",
            ["role", "verdict"],
            registry=r,
        )
        self.webhooks = Counter(
            "reconciler_webhook_requests_total",
            "Webhook requests by result",
            ["result"],
            registry=r,
        )

    async def hook(self, record: RunRecord, t: Transition) -> None:
        if t.scope == "check":  # a verify check reached its verdict
            self.checks.labels("verify", t.phase).inc()
        elif t.scope == "step" and t.step:
            step = record.steps[t.step]
            if t.phase == StepPhase.RUNNING.value and len(step.attempts) <= 1:
                self.steps_running.inc()
            elif t.phase in (
                StepPhase.SUCCEEDED.value,
                StepPhase.FAILED.value,
                StepPhase.CANCELLED.value,
            ):
                self.steps_running.dec()
                if step.started is not None and step.finished is not None:
                    self.step_duration.labels(step.action, t.phase).observe(
                        step.finished - step.started
                    )
        elif t.scope == "run" and record.phase.finished:
            self.runs.labels(record.phase.value).inc()
            if record.started is not None and record.finished is not None:
                self.run_duration.labels(record.phase.value).observe(
                    record.finished - record.started
                )

    def measured(self, source: str, m: Measurement) -> None:
        """One check measurement (ClusterChecks calls it as it takes each)."""
        self.measurements.labels(source, m.verdict.value).inc()
        if m.took is not None:
            self.measurement_duration.labels(source).observe(m.took)
