"""`plan --server-dry-run`: each step's capture and apply against the live cluster with
dryRun=All on every write, shown as a diff of what the API server says would change.

Steps are tried one by one against the *current* state: nothing is persisted, so a step
never sees what the steps before it would have changed. No live value is ever shown: plan
branches run for unsigned commits, so whoever pushes one must not read the cluster through
it (a ConfigMap replaced shows the keys it removes, not their values). Lines the step would
write ("+") are shown, since the workflow wrote them; every other line keeps its key and
loses its value. Secret values are never shown at all.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from reconciler.actions.registry import KubeActions
from reconciler.engine.bindings import Unresolvable, resolve
from reconciler.engine.dag import Dag
from reconciler.engine.errors import ActionError
from reconciler.engine.interface import OUTPUTS_KEY, Checks, StepContext
from reconciler.engine.record import Measurement, RunRecord, StepRecord
from reconciler.kube.client import DryRunWrite, Kube
from reconciler.manifest.fanout import MAX_TARGETS, allowed_failures
from reconciler.manifest.loader import LoadedWorkflow
from reconciler.manifest.policy import Policy
from reconciler.manifest.schema import StepBase

NOISE = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp")
LIVE = "<live value>"
SHOWN_TARGETS = 20  # a fan-out's plan names this many of its targets
_KEYED = re.compile(r'^(?P<head>\s*"(?:[^"\\]|\\.)*": )(?P<value>.*?)(?P<comma>,?)$')
_BARE = re.compile(r"^(?P<head>\s*)(?P<value>.*?)(?P<comma>,?)$")


def hide_live(line: str) -> str:
    """A diff line without the live value it shows; the lines the step writes stay."""
    if line.startswith(("+", "@@", "---")) or not line:
        return line
    mark, rest = line[0], line[1:]
    match = _KEYED.match(rest) or _BARE.match(rest)
    if match is None or not match["value"] or match["value"][0] in "{[]}":
        return line  # structure, not a value
    return f"{mark}{match['head']}{json.dumps(LIVE)}{match['comma']}"


def _comparable(obj: dict[str, Any] | None) -> dict[str, Any]:
    if obj is None:
        return {}
    out = {k: v for k, v in obj.items() if k not in ("status", "metadata")}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in NOISE}
    out["metadata"] = meta
    if obj.get("kind") == "Secret":
        # Keys and whether a value changes are useful; values never leave the cluster.
        out["data"] = {k: "<redacted>" for k in (obj.get("data") or {})}
    return out


def diff_write(write: DryRunWrite) -> str:
    before, after = _comparable(write.before), _comparable(write.after)
    if write.before is not None and write.before.get("kind") == "Secret":
        changed = [
            k
            for k in (write.after.get("data") or {})
            if (write.before.get("data") or {}).get(k) != (write.after.get("data") or {}).get(k)
        ]
        removed = [
            k for k in (write.before.get("data") or {}) if k not in (write.after.get("data") or {})
        ]
        return f"  {write.what}: secret keys changed {changed or '[]'}, removed {removed or '[]'}"
    a = json.dumps(before, indent=2, sort_keys=True).splitlines()
    b = json.dumps(after, indent=2, sort_keys=True).splitlines()
    lines = list(difflib.unified_diff(a, b, "live", "after", n=1, lineterm=""))
    if not lines:
        return f"  {write.what}: no change"
    return f"  {write.what}:\n" + "\n".join("    " + hide_live(line) for line in lines)


ChecksFor = Callable[[LoadedWorkflow], Awaitable[Checks]]


async def dry_run_workflow(
    kube: Kube, loaded: LoadedWorkflow, policy: Policy, checks_for: ChecksFor | None = None
) -> list[str]:
    """Each step's writes as dryRun=All, as the tenant account the step would act as: the
    API server answers what that account may do."""
    actions = KubeActions(kube, account_for=policy.account_for)
    order, _ = Dag.from_workflow(loaded.workflow).simulate(loaded.workflow.spec.max_concurrent)
    steps = {s.name: s for s in loaded.workflow.spec.steps}
    out = [
        f"{loaded.name} ({loaded.run_id}): server-side dry run, each step against the live state"
    ]
    # `checks_for`: guards and checks measured once, now (an operator's plan; never a
    # plan branch: its pusher must not read metrics through it)
    checks = await checks_for(loaded) if checks_for is not None else None
    ctx = StepContext(loaded.run_id, loaded.name, 1)
    if checks is not None and order:
        for guard in loaded.workflow.spec.guards:
            seen = await checks.measure(guard, steps[order[0]], ctx)  # type: ignore[arg-type]
            out.append(f"- guard {guard.name}, now: {_seen(seen)}")
    seen_outputs = RunRecord(loaded.name, loaded.run_id, loaded.digest, 1)
    for name in order:
        ctx = StepContext(loaded.run_id, loaded.name, 1)
        try:  # references resolve from what the earlier steps' dry runs gave
            step = resolve(steps[name], seen_outputs, dict(loaded.workflow.spec.inputs))
        except Unresolvable as err:
            out.append(f"- {name}: not dry-run: {err}")
            continue
        if step.for_each is not None:
            out.extend(await _fan_out_plan(actions, step, ctx))
            continue
        kube.dry_run_writes.clear()
        try:
            captured = await actions.capture(step, ctx)
            result = await actions.apply(step, captured, ctx) or {}
        except ActionError as err:
            out.append(f"- {name} ({step.action}): would fail: {err}")  # type: ignore[attr-defined]
            continue
        seen_outputs.steps[name] = StepRecord(
            name,
            step.action,
            [],
            outputs=result.get(OUTPUTS_KEY),  # type: ignore[attr-defined]
        )
        out.append(f"- {name} ({step.action}):")  # type: ignore[attr-defined]
        out.extend(
            diff_write(w) for w in kube.dry_run_writes if not w.what.startswith("capture secret")
        )
        for check in step.verify if checks is not None else ():
            seen = await checks.measure(check, step, ctx)  # type: ignore[union-attr]
            out.append(f"  check {check.name}, now (before the change): {_seen(seen)}")
    return out


async def _fan_out_plan(actions: KubeActions, step: StepBase, ctx: StepContext) -> list[str]:
    """What a forEach step would do now: the targets it matches (docs/fanout.md)."""
    spec = step.for_each
    assert spec is not None
    head = f"- {step.name} ({step.action}, forEach):"  # type: ignore[attr-defined]
    try:
        listed = spec.items if spec.items is not None else await actions.targets(step, ctx)
        names = sorted(dict.fromkeys(listed))  # as the run freezes them
    except ActionError as err:
        return [f"{head} would fail listing its targets: {err}"]
    if len(names) > MAX_TARGETS:
        return [f"{head} would fail: more than {MAX_TARGETS} targets match"]
    if not names:
        fine = "succeeds with none (allowEmpty)" if spec.allow_empty else "would fail"
        return [f"{head} matches no target now: {fine}"]
    shown = ", ".join(names[:SHOWN_TARGETS]) + (", ..." if len(names) > SHOWN_TARGETS else "")
    budget = allowed_failures(spec, len(names))
    return [
        f"{head} {len(names)} target(s) now, {spec.max_concurrent} at once, up to {budget}"
        f" may fail: {shown}"
    ]


def _seen(m: Measurement) -> str:
    value = "" if m.value is None else f"{m.value}, "
    return f"{value}{m.verdict.value} ({m.note})" if m.note else f"{value}{m.verdict.value}"


def server_dry_run(
    workflows: list[LoadedWorkflow], kube: Kube, policy: Policy, checks_for: ChecksFor | None = None
) -> str:
    async def main() -> list[str]:
        lines: list[str] = []
        for loaded in workflows:
            lines.extend(await dry_run_workflow(kube, loaded, policy, checks_for))
            lines.append("")
        return lines

    return "\n".join(asyncio.run(main()))
