"""Each step's `approval` against the policy's approvers: who exists, and enough of them."""

from __future__ import annotations

from reconciler.manifest.errors import FieldPath
from reconciler.manifest.policy import Policy, check_approval_spec
from reconciler.manifest.schema import Workflow


def check_approvals(workflow: Workflow, policy: Policy) -> list[tuple[FieldPath, str]]:
    problems: list[tuple[FieldPath, str]] = []
    for i, step in enumerate(workflow.spec.steps):
        spec = step.approval
        if spec is not None:
            at: FieldPath = ("spec", "steps", i, "approval")
            problems += [
                (at, m) for m in check_approval_spec(spec.required, spec.approvers, policy)
            ]
    return problems
