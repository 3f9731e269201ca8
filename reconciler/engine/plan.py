"""What a workflow would do, without doing it: run id, levels, start order, critical path.

The JSON form is a stable interface (documented in README): keys are only ever added.
"""

from __future__ import annotations

from typing import Any

from reconciler.engine.dag import Dag
from reconciler.engine.interface import is_reversible
from reconciler.manifest.durations import format_duration
from reconciler.manifest.loader import LoadedWorkflow
from reconciler.manifest.schema import StepBase


def plan_workflow(loaded: LoadedWorkflow) -> dict[str, Any]:
    spec = loaded.workflow.spec
    dag = Dag.from_workflow(loaded.workflow)
    order, makespan = dag.simulate(spec.max_concurrent)
    _, worst = dag.simulate(spec.max_concurrent, {s.name: worst_case(s) for s in spec.steps})
    path, length = dag.critical_path()
    return {
        "name": loaded.name,
        "file": loaded.file,
        "line": loaded.line,
        "runId": loaded.run_id,
        "contentHash": loaded.digest,
        "maxConcurrent": spec.max_concurrent,
        "steps": len(spec.steps),
        "levels": dag.levels(),
        "startOrder": order,
        "criticalPath": {"steps": path, "estimateSeconds": length},
        # Each step's timeout is the only duration a manifest gives, so this is the time
        # the run takes if every step uses its whole timeout once (retries not counted).
        "estimatedMakespanSeconds": makespan,
        "timeoutSeconds": spec.timeout,
        "stepDetails": [_step(step) for step in spec.steps],
        "worstCaseMakespanSeconds": worst,
        "warnings": _warnings(loaded, worst),
    }


def worst_case(step: StepBase) -> float:
    """Every attempt taking its whole timeout, with the backoff before each retry."""
    retry = step.retry
    delays = sum(
        min(retry.max_backoff, retry.backoff * retry.factor ** (n - 1))
        for n in range(1, retry.limit + 1)
    )
    return step.timeout * (1 + retry.limit) + delays


def _step(step: StepBase) -> dict[str, Any]:
    target = step.target
    where = "/".join(p for p in (target.namespace, target.name) if p) or "-"
    return {
        "name": step.name,
        "action": step.action,  # type: ignore[attr-defined]
        "target": where,
        "timeoutSeconds": step.timeout,
        "retries": step.retry.limit,
        "reversible": is_reversible(step),
        "worstCaseSeconds": worst_case(step),
    }


def _warnings(loaded: LoadedWorkflow, worst: float) -> list[str]:
    spec = loaded.workflow.spec
    limit = format_duration(spec.timeout)
    out = [
        f"step {s.name}: its timeout ({format_duration(s.timeout)}) is longer than the"
        f" workflow's ({limit}), which would cut it short"
        for s in spec.steps
        if s.timeout > spec.timeout
    ]
    if worst > spec.timeout:
        out.append(
            f"with every retry used the run could take {format_duration(worst)}, over the"
            f" workflow's timeout ({limit}): it would be cancelled and rolled back"
        )
    return out


def render_text(plan: dict[str, Any]) -> str:
    lines = [
        f"{plan['name']}  ({plan['file']}:{plan['line']})",
        f"  run id:         {plan['runId']}",
        f"  content hash:   {plan['contentHash']}",
        f"  steps:          {plan['steps']}, at most {plan['maxConcurrent']} at once",
        "  levels:",
    ]
    for i, level in enumerate(plan["levels"]):
        lines.append(f"    {i}: {', '.join(level)}")
    lines.append(f"  start order:    {' -> '.join(plan['startOrder'])}")
    crit = plan["criticalPath"]
    lines.append(
        f"  critical path:  {' -> '.join(crit['steps'])}"
        f" ({format_duration(crit['estimateSeconds'])} if every step takes its timeout)"
    )
    lines.append(
        f"  estimated:      {format_duration(plan['estimatedMakespanSeconds'])}"
        f" (with every retry: {format_duration(plan['worstCaseMakespanSeconds'])};"
        f" workflow timeout {format_duration(plan['timeoutSeconds'])})"
    )
    rows = [("STEP", "ACTION", "TARGET", "TIMEOUT", "RETRIES", "UNDO")] + [
        (
            d["name"],
            d["action"],
            d["target"],
            format_duration(d["timeoutSeconds"]),
            str(d["retries"]),
            "reversible" if d["reversible"] else "irreversible",
        )
        for d in plan["stepDetails"]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  each step:"] + [
        "    " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]
    lines += [f"  warning: {w}" for w in plan["warnings"]]
    return "\n".join(lines)
