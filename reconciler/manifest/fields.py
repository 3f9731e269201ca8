"""The field types every manifest model is built from: names Kubernetes accepts, ConfigMap
keys, durations, and the strict base model (unknown fields are errors; camelCase only)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from reconciler.manifest.durations import DURATION_PATTERN, format_duration, parse_duration

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
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _identifier(value: str) -> str:
    # CEL reads `steps.x.outputs.<name>`: a name must be an identifier there too
    if not _IDENTIFIER.match(value):
        raise ValueError(
            f"{value!r} is not a valid output or input name: a letter or '_', then letters,"
            " digits or '_' (at most 63), e.g. previousReplicas"
        )
    return value


OutputName = Annotated[
    str,
    AfterValidator(_identifier),
    WithJsonSchema({"type": "string", "pattern": _IDENTIFIER.pattern}),
]
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
