"""What a new revision means (daemon/sync.py) and what may start (daemon/queue.py),
driven without a cluster or a remote; and the settings table the daemon's flags and
environment variables come from (daemon/config.py)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from reconciler.daemon.config import (
    SETTINGS,
    DaemonConfig,
    add_arguments,
    config_problems,
    from_arguments,
)
from reconciler.daemon.queue import RunHandle, RunQueue
from reconciler.daemon.sync import decide
from reconciler.manifest.loader import LoadedWorkflow, load_text
from reconciler.manifest.policy import Policy

WORKFLOW = """
apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata: {{name: {name}}}
spec:
  steps:
    - name: s
      action: ScaleDeployment
      target: {{namespace: shop, name: web}}
      params: {{replicas: {replicas}}}
"""


def loaded(name: str, replicas: int = 1) -> LoadedWorkflow:
    result = load_text(WORKFLOW.format(name=name, replicas=replicas), f"{name}.yaml")
    assert result.ok, result.issues
    return result.workflows[0]


def test_a_new_workflow_is_queued() -> None:
    a = loaded("a")
    decision = decide([a], recorded=set(), live=set(), running={}, queued=[])
    assert decision.queue == [a] and not decision.dequeue and not decision.cancel


def test_a_run_id_with_a_record_or_an_execution_never_runs_again() -> None:
    a, b = loaded("a"), loaded("b")
    decision = decide([a, b], recorded={a.run_id}, live={b.run_id}, running={}, queued=[])
    assert decision.queue == []


def test_the_running_version_is_not_queued_again_but_a_changed_one_is() -> None:
    a1, a2 = loaded("a", 1), loaded("a", 2)
    assert a1.run_id != a2.run_id
    same = decide([a1], recorded=set(), live=set(), running={"a": a1.run_id}, queued=[])
    assert same.queue == []
    changed = decide([a2], recorded=set(), live={a1.run_id}, running={"a": a1.run_id}, queued=[])
    assert changed.queue == [a2] and changed.cancel == []


def test_a_workflow_deleted_from_git_is_dequeued_or_cancelled_once() -> None:
    a = loaded("a")
    decision = decide([a], recorded=set(), live=set(), running={"gone": "gone-1"}, queued=["old"])
    assert decision.dequeue == ["old"] and decision.cancel == ["gone"]
    again = decide(
        [a], recorded=set(), live=set(), running={"gone": "gone-1"}, queued=[], cancelling={"gone"}
    )
    assert again.cancel == []


def handle(workflow: LoadedWorkflow) -> RunHandle:
    return RunHandle(workflow, task=None, cancel=asyncio.Event())  # type: ignore[arg-type]  # the queue never touches the task


def test_the_queue_starts_up_to_the_limit_and_one_run_per_workflow() -> None:
    queue = RunQueue(limit=2)
    a1, a2, b, c = loaded("a", 1), loaded("a", 2), loaded("b"), loaded("c")
    queue.add(handle(a1))
    queue.apply(
        decide(
            [a2, b, c], recorded=set(), live={a1.run_id}, running=queue.running_ids(), queued=[]
        ),
        "main@sha1:1",
    )
    ready = [w.loaded.name for w in queue.ready()]
    assert ready == ["b"], "a waits for its running version; the limit of 2 leaves room for one"
    queue.finished(a1)
    assert [w.loaded.name for w in queue.ready()] == ["a", "c"]
    assert queue.waiting == {}


def test_a_newer_version_replaces_the_queued_one() -> None:
    queue = RunQueue(limit=1)
    a1, a2 = loaded("a", 1), loaded("a", 2)
    queue.apply(decide([a1], recorded=set(), live=set(), running={}, queued=[]), "r1")
    queue.apply(decide([a2], recorded=set(), live=set(), running={}, queued=["a"]), "r2")
    (waiting,) = queue.ready()
    assert waiting.loaded.run_id == a2.run_id and waiting.revision == "r2"


def parse(argv: list[str], environ: dict[str, str]) -> DaemonConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser, environ)
    parser.add_argument("--protected-namespaces")
    return from_arguments(parser.parse_args(argv), Policy())


def test_every_setting_is_a_flag_and_a_variable_and_the_defaults_match_the_config() -> None:
    config = parse(["--repo", "r"], {})
    defaults = DaemonConfig(repo="r")
    for s in SETTINGS:
        if s.name != "repo":
            assert getattr(config, s.name, s.default) == s.default
        if hasattr(defaults, s.name) and s.name != "repo":
            assert getattr(defaults, s.name) == s.default, s.name
    assert len({s.flag for s in SETTINGS}) == len(SETTINGS)


def test_a_variable_sets_a_default_and_a_flag_wins_over_it() -> None:
    environ = {
        "RECONCILER_REPO": "from-env",
        "RECONCILER_MAX_CONCURRENT_WORKFLOWS": "9",
        "RECONCILER_NAMESPACE": "ops",
        "RECONCILER_LEADER_ELECT": "1",
        "RECONCILER_EXECUTION_HISTORY": "all",
    }
    config = parse(["--max-concurrent-workflows", "3"], environ)
    assert config.repo == "from-env"
    assert config.max_concurrent_workflows == 3
    assert (config.lease_namespace, config.capture_namespace) == ("ops", "ops")
    assert config.leader_elect is True and config.execution_history is None
    assert config.workdir == Path(".reconciler")


@pytest.mark.parametrize(
    ("path", "records"), [("workflows/", "workflows/runs/"), ("runs/wf", "runs"), ("/", "runs/")]
)
def test_overlapping_workflow_and_records_folders_refuse_to_start(path: str, records: str) -> None:
    """The daemon's own record commits are not signature-checked: nested, they would change
    what runs, or records would be loaded as workflows."""
    (problem,) = config_problems(DaemonConfig(repo="r", path=path, records_path=records))
    assert "--records-path" in problem and "--path" in problem


def test_separate_folders_are_fine() -> None:
    assert config_problems(DaemonConfig(repo="r", path="workflows/", records_path="runs/")) == []
    assert config_problems(DaemonConfig(repo="r", path="ops/wf", records_path="ops/runs")) == []


def test_a_bad_value_is_a_usage_error_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(["--repo", "r", "--execution-history", "few"], {})
    assert exit_.value.code == 2
    assert "--execution-history: expected a number or 'all'" in capsys.readouterr().err


def test_a_lease_too_short_to_renew_before_writes_fence_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert parse(["--repo", "r", "--lease-duration", "7"], {}).lease_duration == 7.0
    with pytest.raises(SystemExit) as exit_:
        parse(["--repo", "r", "--lease-duration", "5"], {})
    assert exit_.value.code == 2
    assert "--lease-duration: must be at least 7" in capsys.readouterr().err


def test_time_flags_take_durations_as_flux_writes_them_or_seconds() -> None:
    config = parse(["--repo", "r", "--interval", "1m", "--git-timeout", "90"], {})
    assert (config.interval, config.git_timeout) == (60.0, 90.0)
    assert parse(["--repo", "r"], {"RECONCILER_INTERVAL": "1h30m"}).interval == 5400.0
    assert parse(["--repo", "r"], {"RECONCILER_LEADER_ELECT": "true"}).leader_elect is True
