"""The Graph of a run report: the steps' DAG as a Mermaid flowchart coloured by what
happened to each step (its phase, or its undo), or, for a DAG too large to read at the width
GitHub gives a Markdown file (784 px), a table of its levels.

The layout follows the DAG's shape: left to right while its levels fit across the column,
top to bottom when its widest level does (a chain), else the table. Text must stay at least
9 px tall once GitHub scales the diagram to its column: the render check measures it
(tests/e2e/test_report_render.py).
"""

from __future__ import annotations

from dataclasses import replace

from reconciler.engine.record import RunRecord, StepRecord, UndoEntry, UndoResult
from reconciler.formats.escaping import markdown_text, mermaid_text
from reconciler.formats.tables import table

STYLE = {
    "succeeded": "fill:#d1f4d9,stroke:#1a7f37,color:#0b3d1b",
    "failed": "fill:#ffd8d3,stroke:#cf222e,color:#5c0a05",
    "cancelled": "fill:#fff1c2,stroke:#9a6700,color:#4d3300",
    "skipped": "fill:#eaeef2,stroke:#8c959f,color:#424a53",
    "running": "fill:#ddf4ff,stroke:#0969da,color:#0a3069",
    "retrying": "fill:#ddf4ff,stroke:#0969da,color:#0a3069",
    "pending": "fill:#ffffff,stroke:#8c959f,color:#424a53",
    "verifying": "fill:#ddf4ff,stroke:#0969da,color:#0a3069,stroke-dasharray:5 3",
    "waiting": "fill:#fff8c5,stroke:#9a6700,color:#4d3300,stroke-dasharray:5 3",
    "undone": "fill:#fbefff,stroke:#8250df,color:#3e1f79",
    "undofailed": "fill:#ffd8d3,stroke:#82071e,color:#5c0a05,stroke-width:3px,stroke-dasharray:5 3",
    "irreversible": "fill:#fff1c2,stroke:#9a6700,color:#4d3300,stroke-dasharray:5 3",
}
UNDO_STATE = {
    UndoResult.UNDONE: ("undone", "undone"),
    UndoResult.FAILED: ("undofailed", "undo FAILED"),
    UndoResult.IRREVERSIBLE: ("irreversible", "irreversible"),
    UndoResult.NOT_REACHED: ("undofailed", "undo not reached"),
}
# A diagram wider than this is scaled below 9 px text in GitHub's 784 px column (16 px text).
READABLE_WIDTH_PX = 784 * 16 / 9
TALL_STEPS = 30  # left to right: at most this many steps in a level (a column)
DEEP_LEVELS = 50  # top to bottom: at most this many levels (rows)
# Mermaid's default layout, measured: a node is its longer line wide plus padding, and
# ranks are 50 px apart; the estimates err wide, the render check measures the real thing
NAME_PX, SMALL_PX, NODE_PADDING_PX, RANK_GAP_PX = 8.8, 6.2, 40, 50


def graph(record: RunRecord) -> list[str]:
    """The Graph section's body: the workflow's steps (a fan-out's targets are rows of the
    Steps table and bars of the Timeline, not nodes here)."""
    if any(s.parent is not None for s in record.steps.values()):
        record = replace(record, steps={s.name: s for s in record.workflow_steps()})
    levels = _levels(record)
    depth, width = len(levels), max((len(level) for level in levels), default=0)
    states = states_of(record)
    node = max((_node_px(s, states[n][1]) for n, s in record.steps.items()), default=0)
    if width <= TALL_STEPS and _across(depth, node) <= READABLE_WIDTH_PX:
        return _flowchart(record, states, "LR")
    if depth <= DEEP_LEVELS and _across(width, node) <= READABLE_WIDTH_PX:
        return _flowchart(record, states, "TD")
    return _level_table(record, states, levels, depth, width)


def _node_px(step: StepRecord, said: str) -> float:
    small = f"{step.action} · {said}"
    return max(NAME_PX * len(step.name), SMALL_PX * len(small)) + NODE_PADDING_PX


def _across(nodes: int, node_px: float) -> float:
    return nodes * node_px + max(0, nodes - 1) * RANK_GAP_PX


def states_of(record: RunRecord) -> dict[str, tuple[str, str]]:
    """Each step's (style class, words) of what happened to it: its undo when it has one."""
    undos: dict[str, UndoEntry] = {}
    for entry in record.rollback.entries if record.rollback else []:
        undos.setdefault(entry.step, entry)  # the first, as the rollback table lists it
    states = {}
    for name, step in record.steps.items():
        if undo := undos.get(name):
            css, said = UNDO_STATE[undo.result]
            states[name] = (css, f"{step.phase.value}, {said}")
        elif step.skipped_by_when:
            states[name] = ("skipped", "Skipped by its when")
        else:
            states[name] = (step.phase.value.lower(), step.phase.value)
    return states


def _flowchart(record: RunRecord, states: dict[str, tuple[str, str]], direction: str) -> list[str]:
    ids = {name: f"s{i}" for i, name in enumerate(record.steps)}
    out = ["```mermaid", f"flowchart {direction}"]
    for name, step in record.steps.items():
        small = mermaid_text(f"{step.action} · {states[name][1]}")
        out.append(f'  {ids[name]}["{mermaid_text(name)}<br/><small>{small}</small>"]')
    for name, step in record.steps.items():
        for dep in step.depends_on:
            out.append(f"  {ids[dep]} --> {ids[name]}")
    for css in sorted({css for css, _ in states.values()}):
        out.append(f"  classDef {css} {STYLE.get(css, STYLE['pending'])}")
    for name in record.steps:
        out.append(f"  class {ids[name]} {states[name][0]}")
    out.append("```")
    return out


def _level_table(
    record: RunRecord,
    states: dict[str, tuple[str, str]],
    levels: list[list[str]],
    depth: int,
    width: int,
) -> list[str]:
    out = [
        f"{len(record.steps)} steps in {depth} levels, up to {width} side by side: too large"
        " a graph to read at a page's width, so each level is a row (a step runs after steps"
        " of earlier levels only).",
        "",
    ]
    rows = [
        (
            n,
            ", ".join(f"{markdown_text(s)} ({states[s][1]})" for s in level),
        )
        for n, level in enumerate(levels, 1)
    ]
    return out + table(["level", "steps"], rows)


def _levels(record: RunRecord) -> list[list[str]]:
    """Steps by the length of their longest dependency chain (a step may be listed before
    the steps it depends on; the DAG has no cycle, the loader made sure)."""
    level: dict[str, int] = {}
    for name in record.steps:
        pending = [name]
        while pending:  # depth first without recursion: a 10,000-step chain is fine
            top = pending[-1]
            if top in level:
                pending.pop()
                continue
            deps = [d for d in record.steps[top].depends_on if d in record.steps]
            todo = [d for d in deps if d not in level]
            if todo:
                pending += todo
                continue
            level[top] = 1 + max((level[d] for d in deps), default=0)
            pending.pop()
    rows: list[list[str]] = [[] for _ in range(max(level.values(), default=0))]
    for name, n in level.items():
        rows[n - 1].append(name)
    return rows
