"""The `params` of each action, as typed models (reference: docs/reference.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from reconciler.manifest.fields import ConfigKey, Model, Name, ObjectName, OutputName, Token


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


class Toleration(Model):
    """A pod toleration, as in a Pod spec (to reach nodes kept for such work by a taint)."""

    key: Token | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class JobSpec(Model):
    image: Token
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    service_account_name: Name | None = None
    backoff_limit: int = Field(0, ge=0, le=20)
    ttl_seconds_after_finished: int | None = Field(None, ge=0)
    node_selector: dict[Token, str] = Field(
        default_factory=dict, description="the pod's nodeSelector: which nodes may run it"
    )
    tolerations: list[Toleration] = Field(default_factory=list)

    @field_validator("env", mode="before")
    @classmethod
    def _pod_spec_env(cls, value: Any) -> Any:
        """Also the Pod spec's list, [{name: A, value: b}], as Kubernetes users write it."""
        if not isinstance(value, list):
            return value
        env: dict[Any, Any] = {}
        for i, item in enumerate(value):
            if not isinstance(item, dict) or "name" not in item:
                raise ValueError(
                    f"env[{i}]: expected {{name: ..., value: ...}}, or write env as a mapping,"
                    " e.g. {LOG_LEVEL: debug}"
                )
            if "valueFrom" in item:
                raise ValueError(
                    f"env[{i}] ({item['name']}): valueFrom is not supported; give a value"
                )
            if unknown := sorted(set(map(str, item)) - {"name", "value"}):
                raise ValueError(f"env[{i}]: unknown field(s) {', '.join(unknown)}")
            if item["name"] in env:
                raise ValueError(f"env[{i}]: {item['name']!r} is set twice")
            env[item["name"]] = item.get("value", "")
        return env


class CustomParams(JobSpec):
    rollback: JobSpec | None = Field(None, description="Job that undoes this step, if any")
    outputs: dict[OutputName, Literal["string", "integer", "number", "boolean"]] = Field(
        default_factory=dict,
        max_length=32,
        description="what the container writes to /dev/termination-log as a JSON object,"
        " by name and type (docs/outputs.md)",
    )
