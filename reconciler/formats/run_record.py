"""Run records as people and machines read them in git (DESIGN.md §5):
`runs/<workflow>/<run-id>.yaml` (machine-readable) and `runs/<workflow>/<run-id>.md` (a
summary table, a Mermaid DAG coloured by step phase, a Mermaid gantt of the timeline, and the
rollback table; GitHub and GitLab render both Mermaid blocks as they are).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from ruamel.yaml import YAML

from reconciler.engine.record import RunRecord, StepPhase, StepRecord
from reconciler.manifest.durations import format_duration

RECORD_KIND = "RunRecord"
RECORD_API_VERSION = "reconciler.dev/v1alpha1"


def _time(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _duration(start: float | None, end: float | None) -> str | None:
    if start is None or end is None:
        return None
    return format_duration(max(0.0, end - start))


def record_document(record: RunRecord, source: str | None = None) -> dict[str, Any]:
    """The YAML record: camelCase keys like every Kubernetes object, times in RFC 3339."""
    raw = record.to_dict()
    doc: dict[str, Any] = {"apiVersion": RECORD_API_VERSION, "kind": RECORD_KIND}
    for key in ("workflow", "run_id", "content_hash", "revision"):
        doc[_camel(key)] = raw[key]
    if source:
        doc["source"] = source
    doc.update(
        phase=raw["phase"],
        reason=raw["reason"],
        message=raw["message"],
        started=_time(record.started),
        finished=_time(record.finished),
        duration=_duration(record.started, record.finished),
        maxConcurrent=raw["max_concurrent"],
        executionOrder=raw["execution_order"],
    )
    doc["steps"] = [_step_document(raw["steps"][name]) for name in raw["steps"]]
    if raw["rollback"] is not None:
        rb = raw["rollback"]
        doc["rollback"] = {
            "reason": rb["reason"],
            "started": _time(rb["started"]),
            "finished": _time(rb["finished"]),
            "entries": [
                {
                    _camel(k): (_time(v) if k in ("started", "finished") else v)
                    for k, v in e.items()
                    if v is not None
                }
                for e in rb["entries"]
            ],
        }
    return {k: v for k, v in doc.items() if v is not None}


def _step_document(step: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in step.items():
        if key == "attempts":
            value = [
                {
                    _camel(k): (_time(v) if k in ("started", "finished") else v)
                    for k, v in a.items()
                    if v is not None
                }
                for a in value
            ]
        elif key in ("started", "finished"):
            value = _time(value)
        if value in (None, [], {}) and key not in ("phase",):
            continue
        if key == "continue_on_failure" and not value:
            continue
        out[_camel(key)] = value
    return out


def render_yaml(record: RunRecord, source: str | None = None) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[attr-defined]
    buffer = io.StringIO()
    yaml.dump(record_document(record, source), buffer)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- Markdown

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
        f"| started | {_time(record.started) or '—'} |",
        f"| finished | {_time(record.finished) or '—'} |",
        f"| duration | {_duration(record.started, record.finished) or '—'} |",
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
            f"{_duration(step.started, step.finished) or '—'} | {_cell(step.message or '')} |"
        )
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
