"""The Grafana dashboard (deploy/monitoring) queries only metrics the daemon exports, and
shows every one of them: a renamed metric breaks this test, not somebody's dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path

from reconciler.observability.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "grafana-dashboard.json"


def exported() -> set[str]:
    """Series names as Prometheus scrapes them (counters end in _total, histograms have
    _bucket/_sum/_count), also for labelled metrics that have no sample yet."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return names


def test_dashboard_queries_only_exported_metrics_and_shows_all_of_them() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"reconciler_[a-z_]+", e)}
    available = exported()
    assert used <= available, f"unknown metrics: {sorted(used - available)}"
    shown = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
    families = {re.sub(r"_(bucket|sum|count)$", "", m) for m in available}
    assert families <= shown, f"metrics missing from the dashboard: {sorted(families - shown)}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
