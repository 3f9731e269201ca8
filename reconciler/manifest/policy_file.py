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
approvers:                            # who may approve a step's `approval` (default: nobody)
  people:                             # identity -> SSH public keys (the .pub file's line)
    alice@example.com: ["ssh-ed25519 AAAAC3Nza... alice@laptop"]
  groups:
    sre-leads: [alice@example.com]    # people, not other groups
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.manifest import yamlsource
from reconciler.manifest.checks import suggest
from reconciler.manifest.schema import ACTIONS

if TYPE_CHECKING:
    from reconciler.manifest.errors import FieldPath
    from reconciler.manifest.policy import Approvers, ClusterRules, NamespaceRules, Policy

TOP = {
    "serviceAccount",
    "serviceAccountNames",
    "images",
    "applyKinds",
    "namespaces",
    "cluster",
    "nodes",
    "approvers",
}
PER_NAMESPACE = {"actions", "serviceAccount", "applyKinds", "images", "serviceAccountNames"}
CLUSTER = {"actions", "kinds", "serviceAccount"}
NAME_PATTERN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a ServiceAccount name
APPROVERS = {"people", "groups"}
# An approver's identity is a principal in an allowed_signers file and a file name
# (approvals/<run>/<step>/<identity>.yaml): no space, quote or comma (they would split that
# line), no * ? ! (principals there are patterns) and no / (a path).
IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@-]{0,127}")
KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
)


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the field."""


def read_policy(
    cls: type[Policy], protected: frozenset[str], file: Path | None, home: str
) -> Policy:
    from reconciler.manifest.policy import Approvers, ClusterRules, NamespaceRules

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
    approvers = _approvers(where, doc.get("approvers"), Approvers)
    return cls(protected, namespaces, default, cluster, home, str(file), approvers)


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


def _approvers(where: _Where, value: Any, cls: type[Approvers]) -> Approvers:
    raw = where.mapping(_or(value, {}), "approvers", APPROVERS)
    people: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}  # key -> identity: a signature must name one person
    for identity, keys in where.mapping(
        _or(raw.get("people"), {}), "approvers.people", None
    ).items():
        at = f"approvers.people.{identity}"
        path = ("approvers", "people", identity)
        where.identity(identity, at, path)
        if not isinstance(keys, list) or not keys:
            raise where.fail(
                at,
                'must be a list of SSH public keys, e.g. ["ssh-ed25519 AAAA... alice"]'
                " (the line of their .pub file)",
                path,
            )
        mine: list[str] = []
        for i, text in enumerate(keys):
            key, problem = public_key(text)
            if (other := owner.get(key or "")) is not None:
                problem = f"the same key as {other}'s: a signature must name one person"
            if problem or key is None:
                raise where.fail(f"{at}[{i}]", problem or "not a key", (*path, i))
            owner[key] = identity
            mine.append(key)
        people[identity] = tuple(mine)
    groups: dict[str, frozenset[str]] = {}
    listed = where.mapping(_or(raw.get("groups"), {}), "approvers.groups", None)
    for name, members in listed.items():
        at, path = f"approvers.groups.{name}", ("approvers", "groups", name)
        where.identity(name, at, path)
        if name in people:
            raise where.fail(at, "is also a person under approvers.people: rename the group", path)
        if not isinstance(members, list) or not members:
            raise where.fail(at, "must be a list of people, e.g. [alice@example.com]", path)
        for i, member in enumerate(members):
            if not isinstance(member, str) or member not in people:
                problem = (
                    f"{member!r} is a group: a group lists people, not other groups"
                    if member in listed
                    else f"{member!r} is not a person under approvers.people"
                    + suggest(str(member), people)
                )
                raise where.fail(f"{at}[{i}]", problem, (*path, i))
        groups[str(name)] = frozenset(members)
    return cls(people, groups)


def public_key(text: Any) -> tuple[str | None, str | None]:
    """("<type> <base64>" of an OpenSSH public key line, None) or (None, what is wrong): the
    blob must decode and begin with its own type, so that a truncated or mangled paste is
    refused here rather than never matching a signature."""
    parts = text.split() if isinstance(text, str) else []
    if len(parts) < 2:
        return None, "not an SSH public key: expected '<type> <base64> [comment]' (a .pub file)"
    kind, blob = parts[0], parts[1]
    if kind not in KEY_TYPES:
        known = ", ".join(KEY_TYPES)
        return None, f"{kind!r} is not an SSH key type git can verify (known: {known})"
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None, "the key is not valid base64: copy the whole line of the .pub file"
    if raw[4 : 4 + int.from_bytes(raw[:4], "big")] != kind.encode():
        return None, f"the key's data is not a {kind} key: copy the whole line of the .pub file"
    return f"{kind} {blob}", None


def _or(value: Any, default: Any) -> Any:
    """An empty list given is a choice (none allowed); only an absent field defaults."""
    return default if value is None else value


class _Where:
    """Type checks that name the file and the field of what they refuse."""

    def __init__(self, file: str, document: yamlsource.Document | None) -> None:
        self.file = file
        self.document = document

    def fail(self, at: str, message: str, path: FieldPath | None = None) -> PolicyError:
        """`path` where `at` cannot be split at its dots (an identity such as a@example.com)."""
        where = tuple(at.split(".")) if path is None else path
        line, column = self.document.locate(where) if self.document else (1, 1)
        return PolicyError(f"{self.file}:{line}:{column}: {at or 'the document'}: {message}")

    def identity(self, value: Any, at: str, path: FieldPath) -> None:
        if not isinstance(value, str) or not IDENTITY.fullmatch(value):
            raise self.fail(
                at,
                f"{value!r} cannot be an approver's name: letters, digits and . _ + @ -"
                " only (it becomes an allowed_signers principal and a file name)",
                path,
            )

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
