"""Where workflows may act: protected namespaces no step may touch, and an optional policy
file of allowed actions per namespace. Violations are validation errors (file:line of the
offending field), so nothing of such a workflow ever executes.

Policy file (YAML):

    namespaces:            # namespace -> allowed actions; "*" applies to any other namespace
      shop: [ScaleDeployment, UpdateImage, RestartDeployment, UpdateConfigMap]
      "*": [ScaleDeployment]
    nodes: [CordonNode, UncordonNode, DrainNode]   # cluster-scoped actions; omit = none
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from reconciler.manifest.errors import FieldPath
from reconciler.manifest.schema import ACTIONS, ApplyStep, StepBase, Workflow

DEFAULT_PROTECTED = ("kube-system", "kube-public", "kube-node-lease")
Problem = tuple[FieldPath, str]


@dataclass(frozen=True)
class Policy:
    protected: frozenset[str] = frozenset(DEFAULT_PROTECTED)
    namespaces: dict[str, frozenset[str]] | None = None  # None: any action anywhere
    node_actions: frozenset[str] | None = None
    source: str = "policy"

    @classmethod
    def load(cls, protected: Iterable[str], policy_file: Path | None) -> Policy:
        if policy_file is None:
            return cls(protected=frozenset(protected))
        doc = YAML(typ="safe", pure=True).load(policy_file.read_text()) or {}
        unknown = {a for acts in (doc.get("namespaces") or {}).values() for a in acts} | set(
            doc.get("nodes") or []
        )
        bad = sorted(unknown - set(ACTIONS))
        if bad:
            raise ValueError(f"{policy_file}: unknown action(s) {', '.join(bad)}")
        namespaces = {
            str(ns): frozenset(acts) for ns, acts in (doc.get("namespaces") or {}).items()
        }
        return cls(
            frozenset(protected), namespaces, frozenset(doc.get("nodes") or []), str(policy_file)
        )

    def check(self, workflow: Workflow) -> list[Problem]:
        problems: list[Problem] = []
        for i, step in enumerate(workflow.spec.steps):
            namespace, path = _namespace_of(i, step)
            action = step.action  # type: ignore[attr-defined]
            if namespace is None:
                if (
                    step.target_kind == "node"
                    and self.node_actions is not None
                    and action not in self.node_actions
                ):
                    problems.append(
                        (
                            ("spec", "steps", i, "action"),
                            f"{self.source} does not allow {action} on nodes",
                        )
                    )
                continue
            if namespace in self.protected:
                problems.append(
                    (path, f"namespace {namespace!r} is protected: no step may act on it")
                )
            elif self.namespaces is not None:
                allowed = self.namespaces.get(namespace, self.namespaces.get("*", frozenset()))
                if action not in allowed:
                    problems.append(
                        (
                            (*path[:4], "action") if len(path) > 3 else path,
                            f"{self.source} does not allow {action} in namespace {namespace!r}",
                        )
                    )
        return problems


def _namespace_of(i: int, step: StepBase) -> tuple[str | None, FieldPath]:
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


PERMISSIVE = Policy(protected=frozenset())
