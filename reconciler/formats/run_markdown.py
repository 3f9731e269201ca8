"""A run record as people read it in git: `runs/<workflow>/<run-id>.md`, a summary table,
a Mermaid DAG coloured by step phase, a Mermaid gantt of the timeline and the rollback table
(GitHub and GitLab render both Mermaid blocks as they are). The YAML beside it, and the
paths of both, are formats/run_record.py."""

from __future__ import annotations

from reconciler.engine.record import RunRecord, StepPhase, StepRecord
from reconciler.formats.times import duration_text, time_text

PHASE_STYLE = {
    StepPhase.SUCCEEDED: "fill:#d1f4d9,stroke:#1a7f37,color:#0b3d1b",
    StepPhase.FAILED: "fill:#ffd8d3,stroke:#cf222e,color:#5c0a05",
    StepPhase.CANCELLED: "fill:#fff1c2,stroke:#9a6700,color:#4d3300",
    StepPhase.SKIPPED: "fill:#eaeef2,stroke:#8c959f,color:#424a53",
    StepPhase.RUNNING: "fill:#ddf4ff,stroke:#0969da,color:#0a3069",
    StepPhase.RETRYING: "fill:#ddf4ff,stroke:#0969da,color:#0a3069",
    StepPhase.PENDING: "fill:#ffffff,stroke:#8c959f,color:#424a53",
}
GANTT_STATUS = {
    StepPhase.SUCCEEDED: "done",
    StepPhase.FAILED: "crit",
    StepPhase.RUNNING: "active",
    StepPhase.RETRYING: "active",
    StepPhase.CANCELLED: "crit",
}
MAX_DIAGRAM_STEPS = 200  # GitHub stops rendering very large Mermaid graphs


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def render_markdown(record: RunRecord, source: str | None = None) -> str:
    """The page, top to bottom: summary, DAG, timeline, steps, rollback. Kept as one
    function so its order is the page's order; the diagrams are their own functions."""
    done, total = record.progress()
    icon = {
        "Succeeded": "✅",
        "Failed": "❌",
        "RolledBack": "↩️",
        "PartiallyRolledBack": "⚠️",
        "Cancelled": "⏹️",
        "Running": "⏳",
        "RollingBack": "⏳",
    }.get(record.phase.value, "")
    lines = [
        f"# {icon} {record.workflow} — {record.phase.value}",
        "",
        "| | |",
        "|---|---|",
        f"| run id | `{record.run_id}` |",
        f"| phase | **{record.phase.value}**{f' ({record.reason})' if record.reason else ''} |",
        f"| steps | {done}/{total} succeeded |",
        f"| started | {time_text(record.started) or '—'} |",
        f"| finished | {time_text(record.finished) or '—'} |",
        f"| duration | {duration_text(record.started, record.finished) or '—'} |",
        f"| revision | `{record.revision or '—'}` |",
        f"| source | `{source or '—'}` |",
        f"| content hash | `{record.content_hash[:16]}…` |",
    ]
    if record.message:
        lines.append(f"| message | {_cell(record.message)} |")
    lines += [
        "",
        "## Steps",
        "",
        "| step | action | phase | attempts | duration | message |",
        "|---|---|---|---|---|---|",
    ]
    for step in record.steps.values():
        lines.append(
            f"| {step.name} | {step.action} | {step.phase.value} | {len(step.attempts)} | "
            f"{duration_text(step.started, step.finished) or '—'} | {_cell(step.message or '')} |"
        )
    lines += _checks_table(record)
    if total <= MAX_DIAGRAM_STEPS:
        lines += [
            "",
            "## Graph",
            "",
            *_mermaid_graph(record),
            "",
            "## Timeline",
            "",
            *_mermaid_gantt(record),
        ]
    else:
        lines += [
            "",
            f"_Graph and timeline omitted: {total} steps is more than {MAX_DIAGRAM_STEPS}._",
        ]
    lines += ["", "## Rollback", ""]
    if record.rollback is None:
        lines.append("Nothing was rolled back.")
    else:
        rb = record.rollback
        lines += [
            f"Reason: **{rb.reason}**. Undone newest first (reverse dependency order).",
            "",
            "| # | step | action | result | attempts | note / error |",
            "|---|---|---|---|---|---|",
        ]
        for i, e in enumerate(rb.entries, 1):
            detail = " ".join(x for x in (e.note, e.error) if x)
            row = (i, e.step, e.action, e.result.value, e.attempts, _cell(detail))
            lines.append("| " + " | ".join(str(x) for x in row) + " |")
    lines += [
        "",
        f"<sub>Machine-readable record: `{record.run_id}.yaml`. Written by reconciler.</sub>",
        "",
    ]
    return "\n".join(lines)


def _checks_table(record: RunRecord) -> list[str]:
    """Each verify check: what it measured, every measurement, the verdict and why, and
    what it saw once its step was undone."""
    rows = [(step.name, check) for step in record.steps.values() for check in step.checks]
    if not rows:
        return []
    lines = [
        "",
        "## Checks",
        "",
        "| step | check | measures | condition | measurements | verdict | after rollback |",
        "|---|---|---|---|---|---|---|",
    ]
    for step, check in rows:
        taken = ", ".join(
            f"{(time_text(m.time) or '')[11:19]} {_value(m.value)} {m.verdict.value}"
            for m in check.measurements
        )
        verdict = f"**{check.verdict.value}**: {check.reason}" if check.verdict else "measuring"
        after = check.after_rollback
        again = (
            f"{after.value if after.value is not None else '—'} {after.verdict.value}"
            if after
            else "—"
        )
        cells = (
            step,
            f"{check.name} (guard)" if check.role == "guard" else check.name,
            f"`{check.source}`",
            f"`{check.condition}`",
            taken or "—",
            verdict,
            again,
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _value(value: str | None) -> str:
    return "—" if value is None else value


def _ids(record: RunRecord) -> dict[str, str]:
    return {name: f"s{i}" for i, name in enumerate(record.steps)}


def _mermaid_graph(record: RunRecord) -> list[str]:
    ids = _ids(record)
    out = ["```mermaid", "flowchart LR"]
    for name, step in record.steps.items():
        out.append(f'  {ids[name]}["{_label(name)}<br/><small>{step.action}</small>"]')
    for name, step in record.steps.items():
        for dep in step.depends_on:
            out.append(f"  {ids[dep]} --> {ids[name]}")
    used = {s.phase for s in record.steps.values()}
    for phase in used:
        out.append(f"  classDef {phase.value.lower()} {PHASE_STYLE[phase]}")
    for name, step in record.steps.items():
        out.append(f"  class {ids[name]} {step.phase.value.lower()}")
    out.append("```")
    return out


def _gantt_task(step: StepRecord, ids: dict[str, str], fallback_end: float) -> str | None:
    if step.started is None:
        return None
    start, end = int(step.started), int(max(step.finished or fallback_end, step.started + 1))
    status = GANTT_STATUS.get(step.phase)
    tags = ", ".join(x for x in (status, ids[step.name]) if x)
    return f"  {_label(step.name)} :{tags}, {start}, {end}"


def _mermaid_gantt(record: RunRecord) -> list[str]:
    ids = _ids(record)
    fallback = record.finished or max((s.finished or s.started or 0) for s in record.steps.values())
    out = ["```mermaid", "gantt", "  dateFormat X", "  axisFormat %H:%M:%S", "  section steps"]
    out += [t for s in record.steps.values() if (t := _gantt_task(s, ids, fallback))]
    if record.rollback and record.rollback.entries:
        out.append("  section rollback")
        for i, e in enumerate(record.rollback.entries):
            if e.started is None:
                continue
            start, end = int(e.started), int(max(e.finished or e.started, e.started + 1))
            status = "done" if e.result.value in ("Undone", "Irreversible") else "crit"
            out.append(f"  undo {_label(e.step)} :{status}, u{i}, {start}, {end}")
    out.append("```")
    return out
