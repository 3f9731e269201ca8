"""What the schema cannot say about checks (manifest/checkspec.py): each has exactly one
source, Prometheus checks a successCondition, every condition is CEL and every query
PromQL that parse, and a live check names an object (or its step targets one)."""

from __future__ import annotations

from reconciler.manifest.checkspec import Check, CheckSource, ObjectRef
from reconciler.manifest.errors import FieldPath
from reconciler.manifest.expressions import (
    LIVE_VARIABLES,
    PROMETHEUS_VARIABLES,
    ExpressionError,
    check_query,
    unknown_variables,
)
from reconciler.manifest.schema import ApplyStep, StepBase, Workflow

Problem = tuple[FieldPath, str]

# The object a step changes, which a live check reads unless it names another (never an
# UpdateSecret's: a check does not read Secrets).
TARGET_KINDS = {
    "ScaleDeployment": ("apps/v1", "Deployment"),
    "UpdateImage": ("apps/v1", "Deployment"),
    "RestartDeployment": ("apps/v1", "Deployment"),
    "UpdateConfigMap": ("v1", "ConfigMap"),
    "CordonNode": ("v1", "Node"),
    "UncordonNode": ("v1", "Node"),
    "DrainNode": ("v1", "Node"),
    "DeletePod": ("v1", "Pod"),
}


def check_checks(workflow: Workflow) -> list[Problem]:
    problems: list[Problem] = []
    for j, guard in enumerate(workflow.spec.guards):
        problems += _check_source(("spec", "guards", j), guard, None)
    for i, step in enumerate(workflow.spec.steps):
        for j, check in enumerate(step.verify):
            problems += _check_source(("spec", "steps", i, "verify", j), check, step)
    return problems


def live_object(check: CheckSource, step: StepBase | None) -> ObjectRef | None:
    """The object a live check reads: the one it names, else its step's target."""
    assert check.kubernetes is not None
    if check.kubernetes.object is not None:
        return check.kubernetes.object
    if step is None:
        return None
    if isinstance(step, ApplyStep):
        manifest = step.params.manifest
        meta = manifest.get("metadata") or {}
        return ObjectRef.model_validate(
            {
                "apiVersion": manifest.get("apiVersion"),
                "kind": manifest.get("kind"),
                "namespace": meta.get("namespace") or step.target.namespace,
                "name": meta.get("name"),
            }
        )
    kind = TARGET_KINDS.get(step.action)  # type: ignore[attr-defined]
    if kind is None or step.target.name is None:
        return None
    return ObjectRef.model_validate(
        {
            "apiVersion": kind[0],
            "kind": kind[1],
            "namespace": step.target.namespace,
            "name": step.target.name,
        }
    )


def _check_source(at: FieldPath, check: CheckSource, step: StepBase | None) -> list[Problem]:
    if (check.prometheus is None) == (check.kubernetes is None):
        return [(at, f"check {check.name!r}: give exactly one of prometheus or kubernetes")]
    problems: list[Problem] = []
    failure = check.failure_condition if isinstance(check, Check) else None
    if check.prometheus is not None:
        if check.success_condition is None:
            return [(at, f"check {check.name!r}: a prometheus check needs successCondition")]
        try:
            check_query(check.prometheus.query)
        except ExpressionError as err:
            problems.append(((*at, "prometheus", "query"), str(err)))
        for field, text in (
            ("successCondition", check.success_condition),
            ("failureCondition", failure),
        ):
            if text is not None:
                problems += _condition((*at, field), text, PROMETHEUS_VARIABLES)
        return problems
    assert check.kubernetes is not None
    if check.success_condition is not None or failure is not None:
        return [
            (
                (*at, "successCondition" if check.success_condition else "failureCondition"),
                "a kubernetes check has its own condition: move it to kubernetes.condition",
            )
        ]
    problems += _condition(
        (*at, "kubernetes", "condition"), check.kubernetes.condition, LIVE_VARIABLES
    )
    target = live_object(check, step)
    if target is None:
        where = "a guard" if step is None else f"step {step.name!r}"
        problems.append(
            ((*at, "kubernetes"), f"{where} names no single object: set kubernetes.object")
        )
    elif target.kind == "Secret":  # its values would be what the condition sees
        problems.append(((*at, "kubernetes"), "a check never reads a Secret: name another object"))
    return problems


def _condition(at: FieldPath, text: str, known: frozenset[str]) -> list[Problem]:
    try:
        unknown = unknown_variables(text, known)
    except ExpressionError as err:
        return [(at, str(err))]
    if unknown:
        names = ", ".join(f"`{v}`" for v in sorted(known))
        return [(at, f"the condition names {', '.join(unknown)}: this check gives it {names}")]
    return []
