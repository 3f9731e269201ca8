"""What a workflow would do, without doing it: run id, levels, start order, critical path.

The JSON form is a stable interface (documented in README): keys are only ever added.
"""

from __future__ import annotations

from typing import Any

from reconciler.engine.dag import Dag
from reconciler.manifest.durations import format_duration
from reconciler.manifest.loader import LoadedWorkflow


def plan_workflow(loaded: LoadedWorkflow) -> dict[str, Any]:
    spec = loaded.workflow.spec
    dag = Dag.from_workflow(loaded.workflow)
    order, makespan = dag.simulate(spec.max_concurrent)
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
    }


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
    lines.append(f"  estimated:      {format_duration(plan['estimatedMakespanSeconds'])}")
    return "\n".join(lines)
