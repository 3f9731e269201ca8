"""What workflows may do, as strict as an Argo CD AppProject: protected namespaces no step
may touch; per namespace the allowed actions, Apply kinds, Custom images (registry prefixes)
and the ServiceAccounts a Custom pod may run as; cluster-scoped kinds only where listed; and
the tenant ServiceAccount each step impersonates, so that the API server bounds what it does.
Violations are validation errors (file:line of the offending field): nothing of such a
workflow ever executes. The same checks run at `validate`, at run start, on resume and on
`reconciler rollback`. The file format is parsed in manifest/policy_file.py. It also names
who may approve a step (`approvers`; the approvals themselves are commits, gitops/approvals.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler import DEFAULT_NAMESPACE
from reconciler.manifest.errors import FieldPath
from reconciler.manifest.schema import ApplyStep, CustomStep, StepBase, Workflow

# Kubernetes' own and the controllers people run beside us: their ServiceAccounts and config
# are another tool's authority (a Custom step in flux-system as kustomize-controller holds
# its token; argocd-rbac-cm decides who may deploy what).
DEFAULT_PROTECTED = (
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "flux-system",
    "argocd",
    "argo",
    "argo-rollouts",
    "cert-manager",
)
STEP_ACCOUNT = "reconciler-steps"  # impersonated in the target namespace by default
CLUSTER_ACCOUNT = "reconciler-cluster"  # in the daemon's namespace, for node/cluster steps
POD_ACCOUNTS = frozenset({"default"})  # what a Custom pod may run as, unless listed
# What Apply may manage unless the policy lists kinds: what deploy/tenant/ grants. A
# Deployment applied over an existing one could make it privileged, mount the node's
# root or run as another ServiceAccount; list such kinds only where that is intended.
APPLY_KINDS = frozenset({"ConfigMap"})
# Kinds that are cluster-scoped in every cluster: a namespace on them is ignored by the API
# server, so one given with a namespace must not pass as a namespaced object.
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "rbac.authorization.k8s.io/ClusterRole",
        "rbac.authorization.k8s.io/ClusterRoleBinding",
        "apiextensions.k8s.io/CustomResourceDefinition",
        "admissionregistration.k8s.io/MutatingWebhookConfiguration",
        "admissionregistration.k8s.io/ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io/ValidatingAdmissionPolicy",
        "admissionregistration.k8s.io/ValidatingAdmissionPolicyBinding",
        "apiregistration.k8s.io/APIService",
        "storage.k8s.io/StorageClass",
        "storage.k8s.io/CSIDriver",
        "scheduling.k8s.io/PriorityClass",
        "node.k8s.io/RuntimeClass",
        "networking.k8s.io/IngressClass",
        "certificates.k8s.io/CertificateSigningRequest",
        "flowcontrol.apiserver.k8s.io/FlowSchema",
        "flowcontrol.apiserver.k8s.io/PriorityLevelConfiguration",
    }
)
Problem = tuple[FieldPath, str]


@dataclass(frozen=True)
class NamespaceRules:
    """What steps in one namespace may do. None: no restriction."""

    actions: frozenset[str] | None = None
    service_account: str = STEP_ACCOUNT
    apply_kinds: frozenset[str] = APPLY_KINDS  # "Kind" (core) or "group/Kind"
    images: tuple[str, ...] | None = None  # prefixes, e.g. "registry.example.com/ops/"
    pod_accounts: frozenset[str] = POD_ACCOUNTS


@dataclass(frozen=True)
class ClusterRules:
    """Node actions and cluster-scoped Apply kinds (none unless listed)."""

    actions: frozenset[str] | None = None
    kinds: frozenset[str] = frozenset()
    service_account: str = CLUSTER_ACCOUNT


@dataclass(frozen=True)
class Approvers:
    """Who may approve a step: each person's SSH public keys (their approval commits are
    verified against them; the identity is the signer's principal) and groups of people."""

    people: dict[str, tuple[str, ...]] = field(default_factory=dict)  # identity -> keys
    groups: dict[str, frozenset[str]] = field(default_factory=dict)  # name -> identities

    def expand(self, names: Iterable[str]) -> tuple[frozenset[str], list[str]]:
        """(the people these identities and groups name, the names that are neither)."""
        people: set[str] = set()
        unknown: list[str] = []
        for name in names:
            if name in self.groups:
                people |= self.groups[name]
            elif name in self.people:
                people.add(name)
            else:
                unknown.append(name)
        return frozenset(people), unknown


@dataclass(frozen=True)
class Policy:
    protected: frozenset[str] = frozenset(DEFAULT_PROTECTED)
    # namespace -> rules; "*" for any other; None: `default` everywhere. A namespace neither
    # listed nor matched by "*" allows nothing.
    namespaces: dict[str, NamespaceRules] | None = None
    default: NamespaceRules = NamespaceRules()
    cluster: ClusterRules = ClusterRules()
    home: str = DEFAULT_NAMESPACE  # the daemon's namespace: where the cluster account lives
    source: str = "policy"
    approvers: Approvers = Approvers()  # none: no step with an `approval` can be approved

    @classmethod
    def load(
        cls, protected: Iterable[str], policy_file: Path | None, home: str = DEFAULT_NAMESPACE
    ) -> Policy:
        from reconciler.manifest.policy_file import read_policy

        return read_policy(cls, frozenset(protected), policy_file, home)

    def rules(self, namespace: str) -> NamespaceRules | None:
        if self.namespaces is None:
            return self.default
        return self.namespaces.get(namespace, self.namespaces.get("*"))

    def account_for(self, step: StepBase) -> tuple[str, str]:
        """(namespace, name) of the ServiceAccount the step's API calls impersonate."""
        namespace, _ = namespace_of(0, step)
        rules = self.rules(namespace) if namespace is not None else None
        if namespace is None or rules is None:
            return self.home, self.cluster.service_account
        return namespace, rules.service_account

    def check(self, workflow: Workflow) -> list[Problem]:
        problems: list[Problem] = []
        for i, step in enumerate(workflow.spec.steps):
            problems += self._check_step(i, step)
        return problems

    def _check_step(self, i: int, step: StepBase) -> list[Problem]:
        namespace, path = namespace_of(i, step)
        action = step.action  # type: ignore[attr-defined]
        at = ("spec", "steps", i)
        if namespace is None:
            return self._check_cluster_step(i, step)
        if namespace in self.protected:
            return [(path, f"namespace {namespace!r} is protected: no step may act on it")]
        rules = self.rules(namespace)
        if rules is None or (rules.actions is not None and action not in rules.actions):
            return [
                (
                    at + ("action",),
                    f"{self.source} does not allow {action} in namespace {namespace!r}",
                )
            ]
        if isinstance(step, ApplyStep):
            return _check_namespaced_kind(i, step, rules, namespace, self.source)
        if isinstance(step, CustomStep):
            return _check_pods(i, step, rules, namespace, self.source)
        return []

    def _check_cluster_step(self, i: int, step: StepBase) -> list[Problem]:
        action = step.action  # type: ignore[attr-defined]
        if isinstance(step, ApplyStep):
            kind = kind_of(step.params.manifest)
            if kind not in self.cluster.kinds:
                return [
                    (
                        ("spec", "steps", i, "params", "manifest", "kind"),
                        f"{self.source} does not allow cluster-scoped {kind}: an Apply with no "
                        "namespace makes a cluster-scoped object; set metadata.namespace, or "
                        "list the kind under cluster.kinds in the policy",
                    )
                ]
            return []
        allowed = self.cluster.actions
        if step.target_kind == "node" and allowed is not None and action not in allowed:
            return [
                (("spec", "steps", i, "action"), f"{self.source} does not allow {action} on nodes")
            ]
        return []


def _check_namespaced_kind(
    i: int, step: ApplyStep, rules: NamespaceRules, namespace: str, source: str
) -> list[Problem]:
    kind = kind_of(step.params.manifest)
    at = ("spec", "steps", i, "params", "manifest", "kind")
    if kind in CLUSTER_SCOPED:
        return [
            (
                at,
                f"{kind} is cluster-scoped: a namespace does not confine it; remove "
                "metadata.namespace and list the kind under cluster.kinds in the policy",
            )
        ]
    if kind not in rules.apply_kinds:
        allowed = ", ".join(sorted(rules.apply_kinds)) or "none"
        return [
            (
                at,
                f"{source} does not allow Apply of {kind} in namespace {namespace!r}"
                f" (allowed: {allowed})",
            )
        ]
    return []


def _check_pods(
    i: int, step: CustomStep, rules: NamespaceRules, namespace: str, source: str
) -> list[Problem]:
    problems: list[Problem] = []
    jobs = [(("spec", "steps", i, "params"), step.params)]
    if step.params.rollback is not None:
        jobs.append((("spec", "steps", i, "params", "rollback"), step.params.rollback))
    for at, job in jobs:
        if rules.images is not None and not any(job.image.startswith(p) for p in rules.images):
            prefixes = ", ".join(rules.images) or "none"
            problems.append(
                (
                    at + ("image",),
                    f"{source} does not allow image {job.image!r} in namespace {namespace!r}"
                    f" (allowed prefixes: {prefixes})",
                )
            )
        account = job.service_account_name or "default"
        if account not in rules.pod_accounts:
            allowed = ", ".join(sorted(rules.pod_accounts))
            problems.append(
                (
                    at + ("serviceAccountName",),
                    f"{source} does not allow a Custom pod to run as ServiceAccount {account!r} "
                    f"in namespace {namespace!r} (allowed: {allowed}); list it under "
                    "serviceAccountNames in the policy",
                )
            )
    return problems


def check_approval_spec(required: int, approvers: Sequence[str], policy: Policy) -> list[str]:
    """What is wrong with a step's `approval` against the policy's approvers: names that are
    neither a person nor a group, or more approvals required than there are people to give
    them (the step would wait for its timeout every time)."""
    from reconciler.manifest.checks import suggest  # here: checks may come to import us

    if required < 1:
        return [f"approval.required is {required}: it must be at least 1"]
    if not approvers:
        return ["approval.approvers is empty: name people or groups of the policy's approvers"]
    people, unknown = policy.approvers.expand(approvers)
    known = [*policy.approvers.people, *policy.approvers.groups]
    problems = [
        f"approval.approvers: {name!r} is neither a person nor a group under approvers in"
        f" {policy.source}{suggest(name, known)}"
        for name in unknown
    ]
    if not unknown and required > len(people):
        problems.append(
            f"approval.required is {required}, but approval.approvers name only {len(people)}"
            f" {'person' if len(people) == 1 else 'people'} ({', '.join(sorted(people))}):"
            " lower it or name more approvers"
        )
    return problems


def kind_of(manifest: dict[str, Any]) -> str:
    """ "Kind" for the core group, "group/Kind" otherwise (as the policy lists them)."""
    api_version = str(manifest.get("apiVersion") or "")
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    kind = str(manifest.get("kind") or "")
    return f"{group}/{kind}" if group else kind


def namespace_of(i: int, step: StepBase) -> tuple[str | None, FieldPath]:
    if isinstance(step, ApplyStep):
        meta = step.params.manifest.get("metadata") or {}
        if isinstance(meta, dict) and isinstance(meta.get("namespace"), str):
            return meta["namespace"], (
                "spec",
                "steps",
                i,
                "params",
                "manifest",
                "metadata",
                "namespace",
            )
    return step.target.namespace, ("spec", "steps", i, "target", "namespace")
