"""Typed models of the Workflow kind (DESIGN.md §3). Unknown fields are errors, never ignored.

Field names are camelCase in YAML (as in every Kubernetes manifest) and snake_case in Python;
only the camelCase spelling is accepted from files, so a snake_case typo is reported, not
silently dropped.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from reconciler.manifest.durations import DURATION_PATTERN, format_duration, parse_duration

API_VERSION = "reconciler.dev/v1alpha1"
KIND = "Workflow"
RUN_ANNOTATION = "reconciler.dev/run"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _dns_label(value: str) -> str:
    # Names become object names, label values and file names under runs/: the DNS-1123
    # label rule is what makes `../` or `/` impossible there.
    if len(value) > 63 or not _DNS1123_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use at most 63 lowercase letters, digits and '-',"
            " starting and ending with a letter or digit (DNS-1123 label)"
        )
    return value


def _dns_subdomain(value: str) -> str:
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.match(value):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes object name: lowercase letters, digits, '-'"
            " and '.', starting and ending with a letter or digit (DNS-1123 subdomain)"
        )
    return value


def _config_key(value: str) -> str:
    if len(value) > 253 or not _CONFIG_KEY.match(value):
        raise ValueError(f"{value!r} is not a valid ConfigMap/Secret key (letters, digits, -._)")
    return value


def _non_blank(value: str) -> str:
    if not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} must be non-empty and contain no whitespace")
    return value


Name = Annotated[
    str,
    AfterValidator(_dns_label),
    WithJsonSchema({"type": "string", "pattern": _DNS1123_LABEL.pattern, "maxLength": 63}),
]
ObjectName = Annotated[
    str,
    AfterValidator(_dns_subdomain),
    WithJsonSchema({"type": "string", "pattern": _DNS1123_SUBDOMAIN.pattern, "maxLength": 253}),
]
ConfigKey = Annotated[
    str,
    AfterValidator(_config_key),
    WithJsonSchema({"type": "string", "pattern": _CONFIG_KEY.pattern}),
]
Token = Annotated[str, AfterValidator(_non_blank)]
# Held as seconds (so `5m` and `300s` are the same content); serialised as the canonical
# Go-style string, so a dumped workflow validates again (checkpoints are re-read on resume).
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["90s", "5m"]}),
]


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
    )


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


# ----------------------------------------------------------------------------- params


class NoParams(Model):
    pass


class ScaleParams(Model):
    replicas: int = Field(ge=0, le=100_000)


class UpdateImageParams(Model):
    container: Name
    image: Token


class DeletePodParams(Model):
    selector: str | None = Field(None, description="label selector; instead of target.name")
    grace_period: int | None = Field(None, ge=0, description="seconds; default: the pod's own")


class DrainParams(Model):
    """Like `kubectl drain`: the same refusals unless the matching flag is set."""

    ignore_daemon_sets: bool = True
    delete_empty_dir_data: bool = False
    force: bool = Field(False, description="also evict pods no controller will recreate")
    grace_period: int | None = Field(None, ge=0, description="seconds; default: the pod's own")


class ConfigMapParams(Model):
    data: dict[ConfigKey, str] = Field(min_length=1)
    mode: Literal["merge", "replace"] = "merge"


class SecretRef(Model):
    name: ObjectName
    keys: list[ConfigKey] | None = Field(None, description="default: every key")


class SecretParams(Model):
    """Values come inline (`data`) or, so they never live in git, from another Secret."""

    data: dict[ConfigKey, str] | None = Field(None, min_length=1)
    from_secret: SecretRef | None = None
    mode: Literal["merge", "replace"] = "merge"


class ApplyParams(Model):
    manifest: dict[str, Any] = Field(description="one Kubernetes object, applied server-side")


class JobSpec(Model):
    image: Token
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    service_account_name: Name | None = None
    backoff_limit: int = Field(0, ge=0, le=20)
    ttl_seconds_after_finished: int | None = Field(None, ge=0)


class CustomParams(JobSpec):
    rollback: JobSpec | None = Field(None, description="Job that undoes this step, if any")


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

    target_kind: ClassVar[TargetKind] = "namespaced-object"
    reversible: ClassVar[bool] = True


class ScaleDeploymentStep(StepBase):
    action: Literal["ScaleDeployment"]
    params: ScaleParams


class UpdateImageStep(StepBase):
    action: Literal["UpdateImage"]
    params: UpdateImageParams


class RestartDeploymentStep(StepBase):
    action: Literal["RestartDeployment"]
    params: NoParams = Field(default_factory=NoParams)
    reversible: ClassVar[bool] = False


class DeletePodStep(StepBase):
    action: Literal["DeletePod"]
    params: DeletePodParams = Field(default_factory=DeletePodParams)
    reversible: ClassVar[bool] = False
    target_kind: ClassVar[TargetKind] = "namespace"


class CordonNodeStep(StepBase):
    action: Literal["CordonNode"]
    params: NoParams = Field(default_factory=NoParams)
    target_kind: ClassVar[TargetKind] = "node"


class UncordonNodeStep(StepBase):
    action: Literal["UncordonNode"]
    params: NoParams = Field(default_factory=NoParams)
    target_kind: ClassVar[TargetKind] = "node"


class DrainNodeStep(StepBase):
    action: Literal["DrainNode"]
    params: DrainParams = Field(default_factory=DrainParams)
    target_kind: ClassVar[TargetKind] = "node"


class UpdateConfigMapStep(StepBase):
    action: Literal["UpdateConfigMap"]
    params: ConfigMapParams


class UpdateSecretStep(StepBase):
    action: Literal["UpdateSecret"]
    params: SecretParams


class ApplyStep(StepBase):
    action: Literal["Apply"]
    params: ApplyParams
    target_kind: ClassVar[TargetKind] = "any"


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
    max_concurrent: int = Field(1, ge=1, le=1000, description="steps running at once")
    timeout: Duration = Field(3600.0, description="whole workflow; exceeded -> cancel + rollback")
    rollback: RollbackPolicy = Field(default_factory=RollbackPolicy, description="see below")
    steps: list[Step] = Field(min_length=1, description="the DAG; order only matters for ties")


class Workflow(Model):
    api_version: Literal["reconciler.dev/v1alpha1"]
    kind: Literal["Workflow"]
    metadata: Metadata
    spec: WorkflowSpec

    @property
    def name(self) -> str:
        return self.metadata.name
