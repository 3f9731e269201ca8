"""A run record as people read it in git: `runs/<workflow>/<run-id>.md`. Top to bottom: the
summary, the steps, their outputs, the checks, the Graph (formats/mermaid_graph.py), the Timeline
(formats/mermaid_gantt.py) and the rollback. GitHub and GitLab draw the Mermaid blocks; in a
terminal (`git show`) the summary comes first and the tables keep their columns
(formats/tables.py). Every name and message is escaped by formats/escaping.py. The YAML
beside it, and the paths of both, are formats/run_record.py."""

from __future__ import annotations

import json

from reconciler.engine.record import CheckRecord, RunRecord, StepPhase
from reconciler.formats.escaping import markdown_code, markdown_text
from reconciler.formats.mermaid_gantt import timeline
from reconciler.formats.mermaid_graph import graph
from reconciler.formats.tables import table
from reconciler.formats.times import duration_text, time_text

MAX_DIAGRAM_STEPS = 200  # beyond: no timeline (the graph is a table of levels by then)
ICON = {
    "Succeeded": "✅",
    "Failed": "❌",
    "RolledBack": "↩️",
    "PartiallyRolledBack": "⚠️",
    "Cancelled": "⏹️",
    "Running": "⏳",
    "RollingBack": "⏳",
}


def render_markdown(record: RunRecord, source: str | None = None) -> str:
    """The page; kept as one function so its order is the page's order."""
    done, total = record.progress()
    icon = ICON.get(record.phase.value, "")
    lines = [f"# {icon} {markdown_text(record.workflow)} — {record.phase.value}", ""]
    lines += _summary(record, source, done, total)
    lines += ["", "## Steps", ""]
    lines += table(
        ["step", "action", "phase", "attempts", "duration", "message"],
        [
            (
                markdown_text(s.name if s.parent is None else f"↳ {s.name}"),
                s.action,
                "Skipped (when)" if s.skipped_by_when else s.phase.value,
                len(s.attempts),
                duration_text(s.started, s.finished) or "—",
                markdown_text(s.message or ""),
            )
            for s in record.steps.values()
        ],
    )
    lines += _approvals(record)
    lines += _outputs(record)
    lines += _checks(record)
    lines += ["", "## Graph", "", *graph(record), "", "## Timeline (UTC)", ""]
    if total <= MAX_DIAGRAM_STEPS:
        lines += timeline(record)
    else:
        lines.append(f"Not drawn: {total} steps is more than {MAX_DIAGRAM_STEPS}.")
    lines += ["", "## Rollback", ""]
    if record.rollback is None:
        lines.append("Nothing was rolled back.")
    else:
        rb = record.rollback
        lines += [
            f"Reason: **{markdown_text(rb.reason)}**. Undone newest first (reverse dependency"
            " order).",
            "",
        ]
        lines += table(
            ["#", "step", "action", "result", "attempts", "note / error"],
            [
                (
                    i,
                    markdown_text(e.step),
                    e.action,
                    e.result.value,
                    e.attempts,
                    markdown_text(" ".join(x for x in (e.note, e.error) if x)),
                )
                for i, e in enumerate(rb.entries, 1)
            ],
        )
    lines += [
        "",
        f"<sub>Machine-readable record: {markdown_code(record.run_id + '.yaml')}."
        " Written by reconciler.</sub>",
        "",
    ]
    return "\n".join(lines)


def _summary(record: RunRecord, source: str | None, done: int, total: int) -> list[str]:
    reason = f" ({markdown_text(record.reason)})" if record.reason else ""
    rows: list[tuple[str, str]] = [
        ("run id", markdown_code(record.run_id)),
        ("phase", f"**{record.phase.value}**{reason}"),
        ("steps", f"{done}/{total} succeeded"),
        ("started", time_text(record.started) or "—"),
        ("finished", time_text(record.finished) or "—"),
        ("duration", duration_text(record.started, record.finished) or "—"),
        ("revision", markdown_code(record.revision or "—")),
        ("source", markdown_code(source or "—")),
        ("content hash", f"{markdown_code(record.content_hash[:16])}…"),
    ]
    if record.message:
        rows.append(("message", markdown_text(record.message)))
    return table(["field", "value"], rows)


def _approvals(record: RunRecord) -> list[str]:
    """Each step's approval (docs/approvals.md): who decided, with which signed commit, the
    decisions that did not count and why; for a step still waiting, how to decide."""
    lines: list[str] = []
    rows = []
    for step in record.steps.values():
        kept = step.approval or {}
        if not kept:
            continue
        if step.phase == StepPhase.WAITING_FOR_APPROVAL:
            lines += [f"**{markdown_text(step.name)} waits for approval**: ", ""]
            lines += [markdown_text(step.message or ""), ""]
        decided = [
            f"{verb} {markdown_text(d['approver'])} at {time_text(d['time'])} in"
            f" {markdown_code(d['commit'][:12])}"
            for key, verb in (("approvedBy", "✅"), ("rejectedBy", "❌"))
            for d in kept.get(key) or []
        ]
        refused = "; ".join(markdown_text(r) for r in kept.get("refused") or [])
        rows.append(
            (
                markdown_text(step.name),
                f"{kept.get('outcome', 'waiting')} ({kept.get('required', '?')} required)",
                "<br>".join(decided) or "—",
                refused or "—",
            )
        )
    if not rows:
        return []
    table_lines = table(["step", "approval", "decisions (signed commits)", "not counted"], rows)
    return ["", "## Approvals", "", *lines, *table_lines]


def _outputs(record: RunRecord) -> list[str]:
    """What each step gave later steps (docs/outputs.md), typed as the record keeps them."""
    rows = [
        (markdown_text(step.name), markdown_code(name), markdown_code(json.dumps(value)))
        for step in record.steps.values()
        for name, value in (step.outputs or {}).items()
    ]
    if not rows:
        return []
    return ["", "## Outputs", "", *table(["step", "output", "value"], rows)]


def _checks(record: RunRecord) -> list[str]:
    """Each verify check: what it measured, every measurement, the verdict and why, and
    what it saw once its step was undone."""
    rows = [_check_row(step.name, c) for step in record.steps.values() for c in step.checks]
    if not rows:
        return []
    headers = ["step", "check", "measures", "condition", "measurements", "verdict"]
    return ["", "## Checks", "", *table([*headers, "after rollback"], rows)]


def _check_row(step: str, check: CheckRecord) -> tuple[str, ...]:
    taken = ", ".join(
        f"{(time_text(m.time) or '')[11:19]} {_value(m.value)} {m.verdict.value}"
        for m in check.measurements
    )
    verdict = (
        f"**{check.verdict.value}**: {markdown_text(check.reason or '')}"
        if check.verdict
        else "measuring"
    )
    after = check.after_rollback
    again = f"{_value(after.value)} {after.verdict.value}" if after else "—"
    return (
        markdown_text(step),
        markdown_text(f"{check.name} (guard)" if check.role == "guard" else check.name),
        markdown_code(check.source),
        markdown_code(check.condition),
        markdown_text(taken or "—"),
        verdict,
        markdown_text(again),
    )


def _value(value: str | None) -> str:
    return "—" if value is None else value
