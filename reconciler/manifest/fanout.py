"""`forEach`: one step applied to many targets with a concurrency and an error budget
(docs/fanout.md). The model, what each action's targets are, the budget arithmetic and the
rules the schema cannot say. Knows nothing of the engine."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from reconciler.manifest.errors import FieldPath
from reconciler.manifest.fields import Model, ObjectName

if TYPE_CHECKING:
    from reconciler.manifest.schema import StepBase

MAX_TARGETS = 1_000  # one step's targets; beyond, the step fails before changing anything
PERCENT = re.compile(r"^(100|[1-9]?[0-9])%$")
# The kind a fan-out step's targets are, per action (selector.kind must be this one).
TARGET_KINDS: dict[str, str] = {
    "ScaleDeployment": "Deployment",
    "UpdateImage": "Deployment",
    "RestartDeployment": "Deployment",
    "UpdateConfigMap": "ConfigMap",
    "UpdateSecret": "Secret",
    "CordonNode": "Node",
    "UncordonNode": "Node",
    "DrainNode": "Node",
}
# What a fan-out step gives later steps, instead of its action's outputs.
FAN_OUT_OUTPUTS: dict[str, Literal["integer"]] = {
    "targets": "integer",
    "succeeded": "integer",
    "failed": "integer",
}


class Selector(Model):
    kind: str | None = Field(None, description="the action's target kind (Node, Deployment, ...)")
    label_selector: str = Field(
        min_length=1, max_length=1_024, description="as `kubectl get -l` takes it"
    )


class ForEach(Model):
    selector: Selector | None = Field(None, description="targets matched when the step starts")
    items: list[ObjectName] | None = Field(
        None, max_length=MAX_TARGETS, description="target names, instead of a selector"
    )
    max_concurrent: int = Field(1, ge=1, le=100, description="targets at once")
    max_failures: int | str = Field(
        0, description='failed targets allowed (a count, or "10%" of the targets)'
    )
    allow_empty: bool = Field(False, description="no targets: succeed instead of failing")

    @model_validator(mode="after")
    def _one_source(self) -> ForEach:
        if (self.selector is None) == (self.items is None):
            raise ValueError("forEach needs exactly one of selector and items")
        if isinstance(self.max_failures, int) and self.max_failures < 0:
            raise ValueError('maxFailures: a count (0 or more) or a percentage like "10%"')
        if isinstance(self.max_failures, str) and not PERCENT.match(self.max_failures):
            raise ValueError(
                f'maxFailures: {self.max_failures!r} is neither a count nor a percentage like "10%"'
            )
        return self


def allowed_failures(spec: ForEach, targets: int) -> int:
    """The error budget for `targets`: a percentage rounds down (10% of 9 is 0)."""
    if isinstance(spec.max_failures, int):
        return spec.max_failures
    return math.floor(targets * int(spec.max_failures.rstrip("%")) / 100)


def describe(spec: ForEach, kind: str) -> str:
    if spec.selector is None:
        return f"items ({len(spec.items or [])})"
    return f"{kind} with labelSelector {spec.selector.label_selector!r}"


def sub_name(step: str, target: str) -> str:
    """A target's sub-step, as the record names it: `drain-old-nodes[worker-3]`."""
    return f"{step}[{target}]"


def check_fan_out(i: int, step: StepBase) -> list[tuple[FieldPath, str]]:
    spec = step.for_each
    if spec is None:
        return []
    base: FieldPath = ("spec", "steps", i, "forEach")
    action = step.action  # type: ignore[attr-defined]
    kind = TARGET_KINDS.get(action)
    if kind is None:
        can = ", ".join(sorted(TARGET_KINDS))
        return [(base, f"{action} takes no forEach; these do: {can}")]
    problems: list[tuple[FieldPath, str]] = []
    if spec.selector is not None and spec.selector.kind not in (None, kind):
        problems.append(
            ((*base, "selector", "kind"), f"{action} acts on a {kind}, not a {spec.selector.kind}")
        )
    if step.target.name is not None:
        problems.append(
            (
                ("spec", "steps", i, "target", "name"),
                "forEach names the targets: remove target.name",
            )
        )
    if kind != "Node" and step.target.namespace is None:
        problems.append(
            (("spec", "steps", i, "target"), f"{action} with forEach needs target.namespace")
        )
    return problems
