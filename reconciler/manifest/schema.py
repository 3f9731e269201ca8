"""Typed models of the Workflow kind (docs/architecture.md; the fields are manifest/fields.py,
each action's params manifest/params.py). Unknown fields are errors, never ignored.

Field names are camelCase in YAML (as in every Kubernetes manifest) and snake_case in Python;
only the camelCase spelling is accepted from files, so a snake_case typo is reported, not
silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from reconciler.manifest.approvalspec import Approval
from reconciler.manifest.checkspec import Check, Guard, PrometheusSource
from reconciler.manifest.fanout import ForEach
from reconciler.manifest.fields import Duration, Model, Name, ObjectName, OutputName
from reconciler.manifest.outputs import OutputType, hold_references
from reconciler.manifest.params import (
    ApplyParams,
    ConfigMapParams,
    CustomParams,
    DeletePodParams,
    DrainParams,
    NoParams,
    ScaleParams,
    SecretParams,
    UpdateImageParams,
)

API_VERSION = "reconciler.dev/v1alpha1"
KIND = "Workflow"
RUN_ANNOTATION = "reconciler.dev/run"

# ----------------------------------------------------------------------------- policies


class RetryPolicy(Model):
    """Retries apply to transient errors only (API 429/5xx, conflicts, attempt timeouts)."""

    limit: int = Field(0, ge=0, le=100, description="extra attempts after the first")
    backoff: Duration = Field(5.0, description="delay before the first retry")
    factor: float = Field(2.0, ge=1.0, le=10.0, description="multiplier per retry")
    max_backoff: Duration = Field(300.0, description="cap on one delay")


class RollbackPolicy(Model):
    on_failure: bool = Field(True, description="undo completed steps when the workflow fails")
    timeout: Duration = Field(600.0, description="whole rollback; exceeded -> PartiallyRolledBack")


class Target(Model):
    namespace: Name | None = None
    name: ObjectName | None = None


# ----------------------------------------------------------------------------- steps

# What a step's `target` must name, checked in checks.py so errors point at the field.
TargetKind = Literal["namespaced-object", "node", "namespace", "any"]


class StepBase(Model):
    name: Name = Field(description="DNS-1123 label, unique in the workflow")
    depends_on: list[Name] = Field(default_factory=list, description="steps that must finish first")
    target: Target = Field(
        default_factory=Target, description="`namespace` and/or `name`, per action"
    )
    timeout: Duration = Field(300.0, description="one attempt, including waiting for rollout")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="for transient errors only")
    continue_on_failure: bool = Field(
        False, description="failure neither fails nor rolls back the run"
    )
    verify: list[Check] = Field(
        default_factory=list, description="checks after the step's own wait (docs/checks.md)"
    )
    record_previous: bool = Field(
        False,
        description="the run record also shows the values this step replaces (default: only"
        " what it writes; what it captures for undo stays in the cluster)",
    )
    when: str | None = Field(
        None,
        max_length=4_096,
        description="CEL over `steps` (earlier outputs) and `inputs`; false: the step is"
        " Skipped (docs/outputs.md)",
    )
    approval: Approval | None = Field(
        None, description="wait for signed approvals in git first (docs/approvals.md)"
    )
    for_each: ForEach | None = Field(
        None,
        description="the step once per target, with a concurrency and an error budget"
        " (docs/fanout.md)",
    )
    # The `${{ }}` strings of params/verify/when, by JSON pointer, held while the schema
    # validates stand-ins in their place; the engine resolves them when the step starts.
    templates: SkipJsonSchema[dict[str, str]] = Field(default_factory=dict, alias="$templates")

    target_kind: ClassVar[TargetKind] = "namespaced-object"
    reversible: ClassVar[bool] = True
    OUTPUTS: ClassVar[dict[str, OutputType]] = {}  # what later steps may reference


class ScaleDeploymentStep(StepBase):
    action: Literal["ScaleDeployment"]
    params: ScaleParams
    OUTPUTS: ClassVar[dict[str, OutputType]] = {
        "previousReplicas": "integer",
        "replicas": "integer",
    }


class UpdateImageStep(StepBase):
    action: Literal["UpdateImage"]
    params: UpdateImageParams
    OUTPUTS: ClassVar[dict[str, OutputType]] = {"previousImage": "string", "image": "string"}


class RestartDeploymentStep(StepBase):
    action: Literal["RestartDeployment"]
    params: NoParams = Field(default_factory=NoParams)
    reversible: ClassVar[bool] = False
    OUTPUTS: ClassVar[dict[str, OutputType]] = {"restartedAt": "string"}


class DeletePodStep(StepBase):
    action: Literal["DeletePod"]
    params: DeletePodParams = Field(default_factory=DeletePodParams)
    reversible: ClassVar[bool] = False
    target_kind: ClassVar[TargetKind] = "namespace"
    OUTPUTS: ClassVar[dict[str, OutputType]] = {"deletedPods": "integer"}


class CordonNodeStep(StepBase):
    action: Literal["CordonNode"]
    params: NoParams = Field(default_factory=NoParams)
    target_kind: ClassVar[TargetKind] = "node"
    OUTPUTS: ClassVar[dict[str, OutputType]] = {"wasUnschedulable": "boolean"}


class UncordonNodeStep(StepBase):
    action: Literal["UncordonNode"]
    params: NoParams = Field(default_factory=NoParams)
    target_kind: ClassVar[TargetKind] = "node"
    OUTPUTS: ClassVar[dict[str, OutputType]] = {"wasUnschedulable": "boolean"}


class DrainNodeStep(StepBase):
    action: Literal["DrainNode"]
    params: DrainParams = Field(default_factory=DrainParams)
    target_kind: ClassVar[TargetKind] = "node"
    OUTPUTS: ClassVar[dict[str, OutputType]] = {"evictedPods": "integer"}


class UpdateConfigMapStep(StepBase):
    action: Literal["UpdateConfigMap"]
    params: ConfigMapParams
    OUTPUTS: ClassVar[dict[str, OutputType]] = {
        "resourceVersion": "string",
        "changedKeys": "integer",
    }


class UpdateSecretStep(StepBase):
    action: Literal["UpdateSecret"]
    params: SecretParams
    OUTPUTS: ClassVar[dict[str, OutputType]] = {
        "resourceVersion": "string",
        "changedKeys": "integer",
    }


class ApplyStep(StepBase):
    action: Literal["Apply"]
    params: ApplyParams
    target_kind: ClassVar[TargetKind] = "any"
    OUTPUTS: ClassVar[dict[str, OutputType]] = {
        "uid": "string",
        "resourceVersion": "string",
        "created": "boolean",
    }


class CustomStep(StepBase):
    action: Literal["Custom"]
    params: CustomParams
    target_kind: ClassVar[TargetKind] = "namespace"


STEP_CLASSES: tuple[type[StepBase], ...] = (
    ScaleDeploymentStep,
    UpdateImageStep,
    RestartDeploymentStep,
    DeletePodStep,
    CordonNodeStep,
    UncordonNodeStep,
    DrainNodeStep,
    UpdateConfigMapStep,
    UpdateSecretStep,
    ApplyStep,
    CustomStep,
)
ACTIONS: dict[str, type[StepBase]] = {
    cls.model_fields["action"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in STEP_CLASSES
}

Step = Annotated[
    ScaleDeploymentStep
    | UpdateImageStep
    | RestartDeploymentStep
    | DeletePodStep
    | CordonNodeStep
    | UncordonNodeStep
    | DrainNodeStep
    | UpdateConfigMapStep
    | UpdateSecretStep
    | ApplyStep
    | CustomStep,
    Field(discriminator="action"),
]


# ----------------------------------------------------------------------------- workflow


class Metadata(Model):
    name: Name
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class WorkflowSpec(Model):
    inputs: dict[OutputName, str | int | float | bool] = Field(
        default_factory=dict, description="named values for `when` and `${{ inputs.x }}`"
    )
    max_concurrent: int = Field(1, ge=1, le=1000, description="steps running at once")
    timeout: Duration = Field(3600.0, description="whole workflow; exceeded -> cancel + rollback")
    rollback: RollbackPolicy = Field(default_factory=RollbackPolicy, description="see below")
    prometheus: PrometheusSource | None = Field(
        None, description="default: the daemon's --prometheus-url"
    )
    guards: list[Guard] = Field(
        default_factory=list, description="must hold before each step starts (docs/checks.md)"
    )
    steps: list[Step] = Field(min_length=1, description="the DAG; order only matters for ties")

    @model_validator(mode="before")
    @classmethod
    def _hold_references(cls, data: Any) -> Any:
        return hold_references(data, ACTIONS)


class Workflow(Model):
    api_version: Literal["reconciler.dev/v1alpha1"]
    kind: Literal["Workflow"]
    metadata: Metadata
    spec: WorkflowSpec

    @property
    def name(self) -> str:
        return self.metadata.name
