"""`approval` on a step (docs/approvals.md): how many distinct people must approve, which
people or groups of the policy's approvers may, and how long the run waits for them."""

from __future__ import annotations

from pydantic import Field

from reconciler.manifest.fields import Duration, Model


class Approval(Model):
    required: int = Field(1, ge=1, le=20, description="distinct approvers")
    approvers: list[str] = Field(
        min_length=1, max_length=50, description="people or groups from the policy's approvers"
    )
    timeout: Duration = Field(3600.0, description="no decision by then: the step fails")
