"""The record files people review in pull requests."""

from __future__ import annotations

import random
import re

from fakes import FakeActions, Script, run_virtual, workflow
from ruamel.yaml import YAML

from reconciler.engine.clock import Clock
from reconciler.engine.errors import PermanentError
from reconciler.engine.record import RunRecord
from reconciler.engine.runner import Engine
from reconciler.formats.run_markdown import render_markdown
from reconciler.formats.run_record import render_yaml

STEPS = [
    {"name": "scale"},
    {
        "name": "kill",
        "action": "DeletePod",
        "target": {"namespace": "shop", "name": "p"},
        "dependsOn": ["scale"],
    },
    {"name": "image", "dependsOn": ["scale"]},
    {"name": "verify", "dependsOn": ["kill", "image"]},
]


def failed_run() -> RunRecord:
    async def main() -> RunRecord:
        actions = FakeActions(
            {"verify": Script(errors=[PermanentError("health check failed | 503")])}
        )
        return await Engine(
            actions, clock=Clock(wall_start=1_800_000_000), rng=random.Random(1)
        ).run(workflow(STEPS, maxConcurrent=2, name="checkout"), revision="main@sha1:abc")

    return run_virtual(main)


def test_yaml_record_is_camel_case_with_rfc3339_times() -> None:
    doc = YAML(typ="safe").load(render_yaml(failed_run(), "workflows/checkout.yaml"))
    assert doc["apiVersion"] == "reconciler.dev/v1alpha1" and doc["kind"] == "RunRecord"
    assert doc["phase"] == "RolledBack" and doc["reason"] == "StepFailed"
    assert doc["revision"] == "main@sha1:abc" and doc["source"] == "workflows/checkout.yaml"
    assert doc["started"] == "2027-01-15T08:00:00.000Z"
    assert doc["executionOrder"][0] == "scale"
    verify = next(s for s in doc["steps"] if s["name"] == "verify")
    assert verify["attempts"][0]["errorKind"] == "permanent"
    assert verify["dependsOn"] == ["kill", "image"]
    results = [(e["step"], e["result"]) for e in doc["rollback"]["entries"]]
    assert ("kill", "Irreversible") in results and results[-1] == ("scale", "Undone")


def test_markdown_report_has_summary_graph_timeline_and_rollback() -> None:
    md = render_markdown(failed_run(), "workflows/checkout.yaml")
    assert md.startswith("# ↩️ checkout — RolledBack")
    assert re.search(r"\| steps +\| 3/4 succeeded \|", md)
    assert md.count("```mermaid") == 2
    assert "flowchart LR" in md and "  s0 --> s1" in md and "class s3 failed" in md
    assert "class s0 undone" in md and "class s1 irreversible" in md  # coloured by the undo
    assert "gantt" in md and "dateFormat x" in md and "todayMarker off" in md
    assert "section rollback" in md and "1. image · undone · 500ms :done, u1, 2000, 2500" in md
    assert "2. kill · irreversible, nothing undone :milestone, u2, 2500, 2500" in md
    assert "verify · 0s · failed :crit, s3, 2000, 2030" in md  # at least 1% of the run wide
    assert not re.search(r"\| 1 +\| verify ", md)  # the failed step changed nothing: not undone
    assert "health check failed \\| 503" in md  # table cells escape pipes
    assert "DeletePod cannot be undone; skipped" in md
