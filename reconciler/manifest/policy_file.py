"""The policy file: YAML, read once at start-up; every mistake named by its field.

serviceAccount: reconciler-steps      # impersonated in each target namespace (default)
serviceAccountNames: [default]        # what Custom pods may run as (default: default)
images: [registry.example.com/ops/]   # Custom image prefixes (default: any)
applyKinds: [ConfigMap]               # what Apply may manage (default: ConfigMap)
namespaces:                           # omit: every unprotected namespace, the above
  shop: [ScaleDeployment, UpdateConfigMap]      # short form: the allowed actions
  payments:
    actions: [Apply, Custom]
    serviceAccount: payments-ops
    applyKinds: [ConfigMap, apps/Deployment]    # default: the top-level list
    images: [registry.example.com/payments/]
    serviceAccountNames: [default, canary]
  "*": [ScaleDeployment]              # any namespace not listed
cluster:
  actions: [CordonNode, UncordonNode, DrainNode]   # node actions (default: all)
  kinds: [rbac.authorization.k8s.io/ClusterRole]   # cluster-scoped Apply (default: none)
  serviceAccount: reconciler-cluster  # impersonated, in the daemon's namespace
nodes: [CordonNode]                   # short form of cluster.actions
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.manifest import yamlsource
from reconciler.manifest.checks import suggest
from reconciler.manifest.schema import ACTIONS

if TYPE_CHECKING:
    from reconciler.manifest.policy import ClusterRules, NamespaceRules, Policy

TOP = {
    "serviceAccount",
    "serviceAccountNames",
    "images",
    "applyKinds",
    "namespaces",
    "cluster",
    "nodes",
}
PER_NAMESPACE = {"actions", "serviceAccount", "applyKinds", "images", "serviceAccountNames"}
CLUSTER = {"actions", "kinds", "serviceAccount"}
NAME_PATTERN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a ServiceAccount name


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the field."""


def read_policy(
    cls: type[Policy], protected: frozenset[str], file: Path | None, home: str
) -> Policy:
    from reconciler.manifest.policy import ClusterRules, NamespaceRules

    if file is None:
        return cls(protected=protected, home=home)
    try:
        text = yamlsource.read_text(file.read_bytes())
        documents = list(yamlsource.parse_documents(text))
    except OSError as err:
        raise PolicyError(f"{file}: cannot read the policy file: {err.strerror}") from err
    except yamlsource.YamlProblem as err:
        raise PolicyError(f"{file}:{err.line}:{err.column}: {err.message}") from err
    if len(documents) > 1:
        raise PolicyError(f"{file}:{documents[1].line}:1: one policy per file, not several")
    where = _Where(str(file), documents[0] if documents else None)
    doc = where.mapping(documents[0].data if documents else {}, "", TOP)
    default = NamespaceRules(
        service_account=where.name(doc.get("serviceAccount"), "serviceAccount")
        or NamespaceRules.service_account,
        images=where.strings(doc.get("images"), "images"),
        apply_kinds=_or(
            where.strings(doc.get("applyKinds"), "applyKinds", frozenset),
            NamespaceRules.apply_kinds,
        ),
        pod_accounts=_or(
            where.names(doc.get("serviceAccountNames"), "serviceAccountNames"),
            NamespaceRules.pod_accounts,
        ),
    )
    namespaces = None
    if "namespaces" in doc:
        raw = where.mapping(doc["namespaces"], "namespaces", None)
        namespaces = {
            str(ns): _namespace(where, f"namespaces.{ns}", value, default)
            for ns, value in raw.items()
        }
    cluster = _cluster(where, doc, ClusterRules)
    return cls(protected, namespaces, default, cluster, home, str(file))


def _namespace(where: _Where, at: str, value: Any, default: NamespaceRules) -> NamespaceRules:
    if isinstance(value, list) or value is None:
        return replace(default, actions=where.actions(value or [], at))
    value = where.mapping(value, at, PER_NAMESPACE)
    return replace(
        default,
        actions=where.actions(value["actions"], f"{at}.actions") if "actions" in value else None,
        service_account=where.name(value.get("serviceAccount"), f"{at}.serviceAccount")
        or default.service_account,
        apply_kinds=_or(
            where.strings(value.get("applyKinds"), f"{at}.applyKinds", frozenset),
            default.apply_kinds,
        ),
        images=_or(where.strings(value.get("images"), f"{at}.images"), default.images),
        pod_accounts=_or(
            where.names(value.get("serviceAccountNames"), f"{at}.serviceAccountNames"),
            default.pod_accounts,
        ),
    )


def _cluster(where: _Where, doc: dict[str, Any], rules: type[ClusterRules]) -> ClusterRules:
    raw = where.mapping(doc.get("cluster") or {}, "cluster", CLUSTER)
    actions = None
    if "nodes" in doc:
        actions = where.actions(doc["nodes"], "nodes")
    if "actions" in raw:
        actions = where.actions(raw["actions"], "cluster.actions")
    return rules(
        actions=actions,
        kinds=where.strings(raw.get("kinds"), "cluster.kinds", frozenset) or frozenset(),
        service_account=where.name(raw.get("serviceAccount"), "cluster.serviceAccount")
        or rules.service_account,
    )


def _or(value: Any, default: Any) -> Any:
    """An empty list given is a choice (none allowed); only an absent field defaults."""
    return default if value is None else value


class _Where:
    """Type checks that name the file and the field of what they refuse."""

    def __init__(self, file: str, document: yamlsource.Document | None) -> None:
        self.file = file
        self.document = document

    def fail(self, at: str, message: str) -> PolicyError:
        line, column = self.document.locate(tuple(at.split("."))) if self.document else (1, 1)
        return PolicyError(f"{self.file}:{line}:{column}: {at or 'the document'}: {message}")

    def mapping(self, value: Any, at: str, keys: set[str] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(at, f"must be a mapping, not {type(value).__name__}")
        if keys is not None and (unknown := sorted(set(map(str, value)) - keys)):
            hint = suggest(unknown[0], keys)
            raise self.fail(
                at,
                f"unknown field(s) {', '.join(unknown)}{hint} (known: {', '.join(sorted(keys))})",
            )
        return value

    def strings(self, value: Any, at: str, kind: type = tuple) -> Any:
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(at, "must be a list of strings, e.g. [a, b]")
        return kind(value)

    def names(self, value: Any, at: str) -> frozenset[str] | None:
        names = self.strings(value, at, frozenset)
        for name in names or ():
            if not NAME_PATTERN.fullmatch(name):
                raise self.fail(at, f"{name!r} is not a ServiceAccount name (DNS-1123)")
        return names

    def name(self, value: Any, at: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
            raise self.fail(at, f"{value!r} is not a ServiceAccount name (DNS-1123)")
        return value

    def actions(self, value: Any, at: str) -> frozenset[str]:
        actions = self.strings(value, at, frozenset) if value else frozenset()
        if bad := sorted(actions - set(ACTIONS)):
            hint = suggest(bad[0], ACTIONS) or f"; known: {', '.join(ACTIONS)}"
            raise self.fail(at, f"unknown action(s) {', '.join(bad)}{hint}")
        return actions
