"""Custom steps as real containers on the real node (issue 14): the container's exit code
decides the step, its log is in the record, a rollback Job really runs on undo; and the seed's
three integration tests (dependency order and maxConcurrent in one DAG, the rollback cascade
with owner references) with real Jobs, judged by the container runtime's own times."""

from __future__ import annotations

from datetime import datetime

from auditlog import peak_overlap
from kubehelp import (
    api,  # noqa: F401  (fixture)
    execution,
    run_workflow,
    wait_for,
    workflow_yaml,
)
from kubernetes import client as k8s
from realnode import LABEL, TAINT, jobs_image

from reconciler.actions.base import run_object_name
from reconciler.engine.record import RunPhase, StepPhase, UndoResult


def job_step(
    name: str, namespace: str, script: str, deps: str = "", rollback: str | None = None
) -> str:
    """A Custom step whose Job runs `script` with sh on the real node."""
    image = jobs_image()
    placement = (
        f"nodeSelector: {{{LABEL[0]}: '{LABEL[1]}'}}, "
        f"tolerations: [{{key: {TAINT['key']}, operator: Exists}}]"
    )
    undo = (
        f", rollback: {{image: '{image}', command: [sh, -c, {rollback!r}], {placement}}}"
        if rollback
        else ""
    )
    return (
        f"    - name: {name}\n      action: Custom\n{deps}"
        f"      target: {{namespace: {namespace}}}\n"
        f"      params: {{image: '{image}', command: [sh, -c, {script!r}], {placement}{undo}}}\n"
        "      timeout: 120s\n"
    )


def container_span(api, namespace: str, job: str) -> tuple[datetime, datetime]:
    """When the Job's container started and ended, as the container runtime reported it."""
    pods = k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"job-name={job}")
    assert len(pods.items) == 1, f"job {job}: {len(pods.items)} pods"
    pod = pods.items[0]
    assert pod.spec.node_name == "reconciler-real-node", pod.spec.node_name
    ended = pod.status.container_statuses[0].state.terminated
    assert ended is not None, f"job {job}: container not terminated"
    return ended.started_at, ended.finished_at


def test_a_custom_steps_container_decides_the_step_and_its_log_is_recorded(
    api, namespace, real_node
) -> None:
    steps = job_step("greet", namespace, "echo hello from $(hostname); echo done") + job_step(
        "fail",
        namespace,
        "echo checking the canary; echo canary unhealthy >&2; exit 3",
        "      dependsOn: [greet]\n",
    )
    record = run_workflow(api, workflow_yaml("real-exit-code", steps))
    greet, fail = record.steps["greet"], record.steps["fail"]
    assert greet.phase == StepPhase.SUCCEEDED, greet.message
    job = run_object_name(record.run_id, "greet")
    assert f"hello from {job}" in greet.result["logTail"]  # the pod's host name: its own
    assert fail.phase == StepPhase.FAILED
    assert "container step exited with code 3 (Error)" in fail.message, fail.message
    assert "checking the canary" in fail.message and "canary unhealthy" in fail.message
    assert record.phase == RunPhase.ROLLED_BACK
    pod = (
        k8s.CoreV1Api(api)
        .list_namespaced_pod(
            namespace, label_selector=f"job-name={run_object_name(record.run_id, 'fail')}"
        )
        .items[0]
    )
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3


def test_real_jobs_run_in_dependency_order_and_within_max_concurrent(
    api, namespace, real_node
) -> None:
    """a -> {b, c, d} -> e with maxConcurrent 2, each container sleeping 2 s, judged by the
    container runtime's own start and end times (whole seconds): b, c and d start after a
    ended; two of them at a time at the busiest moment (not one: they really run in parallel;
    never three); e starts after all three ended."""
    nap = "sleep 2"
    after_a = "      dependsOn: [a]\n"
    steps = (
        job_step("a", namespace, nap)
        + "".join(job_step(s, namespace, nap, after_a) for s in "bcd")
        + job_step("e", namespace, nap, "      dependsOn: [b, c, d]\n")
    )
    record = run_workflow(api, workflow_yaml("real-diamond", steps, "  maxConcurrent: 2\n"))
    assert record.phase == RunPhase.SUCCEEDED, record.message
    span = {s: container_span(api, namespace, run_object_name(record.run_id, s)) for s in "abcde"}
    middle = [span[s] for s in "bcd"]
    assert all(span["a"][1] <= started for started, _ in middle), ("began before a ended", span)
    assert peak_overlap(middle) == 2, ("not two at a time", span)
    assert all(ended <= span["e"][0] for _, ended in middle), ("e began too early", span)


def test_real_rollback_jobs_run_in_reverse_order_and_go_with_the_run(
    api, namespace, real_node
) -> None:
    """first -> second -> broken (exit 1): the rollback Jobs of second, then first, really run
    (their containers' times in that order, their output in the record); every Job is owned by
    the WorkflowExecution and goes, with its pods, when the execution is deleted."""
    steps = (
        job_step("first", namespace, "echo first", rollback="sleep 1; echo undo first")
        + job_step(
            "second",
            namespace,
            "echo second",
            "      dependsOn: [first]\n",
            rollback="sleep 1; echo undo second",
        )
        + job_step("broken", namespace, "exit 1", "      dependsOn: [second]\n")
    )
    record = run_workflow(api, workflow_yaml("real-cascade", steps))
    assert record.phase == RunPhase.ROLLED_BACK, record.message
    assert "exited with code 1" in record.steps["broken"].message
    assert [(e.step, e.result) for e in record.rollback.entries] == [
        ("broken", UndoResult.IRREVERSIBLE),  # the failed step itself has no rollback Job
        ("second", UndoResult.UNDONE),
        ("first", UndoResult.UNDONE),
    ]
    undo_second = container_span(
        api, namespace, run_object_name(record.run_id, "second", "-rollback")
    )
    undo_first = container_span(
        api, namespace, run_object_name(record.run_id, "first", "-rollback")
    )
    broken = container_span(api, namespace, run_object_name(record.run_id, "broken"))
    assert broken[1] <= undo_second[0], "an undo ran before the failing step ended"
    assert undo_second[1] <= undo_first[0], "first was undone before second"
    batch = k8s.BatchV1Api(api)
    jobs = batch.list_namespaced_job(namespace).items
    assert len(jobs) == 5  # three steps, two rollbacks
    we = execution(api, record.run_id)
    for job in jobs:
        (owner,) = job.metadata.owner_references
        assert (owner.kind, owner.uid) == ("WorkflowExecution", we["metadata"]["uid"])
    k8s.CustomObjectsApi(api).delete_cluster_custom_object(
        "reconciler.dev", "v1alpha1", "workflowexecutions", we["metadata"]["name"]
    )
    core = k8s.CoreV1Api(api)
    wait_for(
        lambda: (
            not batch.list_namespaced_job(namespace).items
            and not core.list_namespaced_pod(namespace).items
        ),
        90,
        "the garbage collector to delete the run's Jobs and their pods",
    )
