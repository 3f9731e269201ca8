"""Attacks on reconciler, tried as an attacker would, against the real control plane.

Each test is one threat of docs/security.md: what someone with a given foothold (push access
to the workflow repository, rights in one namespace, network access to the daemon) tries,
and what must stop them.
"""

from __future__ import annotations

from kubehelp import (
    api,  # noqa: F401  (fixture)
    load,
    run_workflow,
    workflow_yaml,
)
from kubernetes import client as k8s

from reconciler.actions.base import run_object_name
from reconciler.engine.record import RunPhase, StepPhase


def test_a_job_planted_under_a_runs_job_name_is_not_adopted(api, namespace) -> None:
    """A tenant of the target namespace creates, before the run, a Job with the name the
    run's Custom step will use (it is predictable from the workflow's content): the step
    must not adopt it, so the tenant decides neither whether the step succeeds nor what
    its log tail in the record says."""
    steps = f"""\
    - name: job
      action: Custom
      target: {{namespace: {namespace}}}
      params: {{image: 'busybox:1.36', command: [sh, -c, 'echo from the workflow']}}
      timeout: 60s
"""
    text = workflow_yaml("planted", steps)
    planted = run_object_name(load(text).run_id, "job")
    batch = k8s.BatchV1Api(api)
    batch.create_namespaced_job(
        namespace,
        {
            "metadata": {"name": planted},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "c", "image": "busybox:1.36", "args": ["planted output"]}
                        ],
                    }
                },
            },
        },
    )
    record = run_workflow(api, text)
    step = record.steps["job"]
    assert record.phase == RunPhase.FAILED
    assert step.phase == StepPhase.FAILED
    assert "is not this run's" in (step.message or "") and planted in (step.message or "")
    assert not step.result, "the planted Job's outcome reached the record"
    job = batch.read_namespaced_job(planted, namespace)
    assert not job.metadata.owner_references, "the planted Job was taken over"
