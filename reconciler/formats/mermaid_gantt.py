"""The Timeline of a run report: a Mermaid gantt of its steps and its rollback.

What every current Mermaid (10.9 to 12) draws right, as the render check measures
(tests/e2e/test_zz_report_render.py):
- times in milliseconds (`dateFormat x`): with `X` (seconds) Mermaid 11.12 and later read the
  start as milliseconds and the end as seconds, and every bar ran from 1970 to now;
- the axis counts from the run's start (the run starts at 0), in milliseconds for a run of
  under 5 seconds and in seconds otherwise: the same numbers in every time zone, since the
  viewer's browser, not the record, would choose the zone of a clock time;
- no today marker (a Running record drew a line at "now", decades off), a minimum bar width
  (1% of the run) so instant steps show, each bar labelled with its true duration and
  attempts; rollback rows numbered in the order they ran, an irreversible undo a milestone
  (nothing was done), a failed undo marked critical and said in words.
"""

from __future__ import annotations

from reconciler.engine.record import RunRecord, StepPhase, UndoEntry, UndoResult
from reconciler.formats.escaping import gantt_task_text
from reconciler.formats.times import time_text
from reconciler.manifest.durations import format_duration

STATUS = {
    StepPhase.SUCCEEDED: "done",
    StepPhase.FAILED: "crit",
    StepPhase.RUNNING: "active",
    StepPhase.RETRYING: "active",
    StepPhase.CANCELLED: "crit",
}
MIN_BAR_SHARE = 0.01  # of the run's span: a bar any shorter is drawn this wide
MILLISECOND_AXIS_BELOW = 5.0  # seconds of run: the axis in milliseconds below, else seconds


def timeline(record: RunRecord) -> list[str]:
    """The Timeline section's body: a sentence on the axis, then the gantt block."""
    origin = _origin(record)
    if origin is None:
        return ["No step has started yet."]
    end = _latest(record)
    span = max(end - origin, 0.001)
    unit = "milliseconds" if span < MILLISECOND_AXIS_BELOW else "seconds"
    axis = "%Q" if unit == "milliseconds" else "%s"
    bar = _Bars(origin, span * MIN_BAR_SHARE, end)
    lines = [
        f"The axis counts {unit} from the run's start, {time_text(origin)} (UTC); "
        "each bar is labelled with its duration.",
        "",
        "```mermaid",
        "gantt",
        "  dateFormat x",
        f"  axisFormat {axis}",
        "  todayMarker off",
        "  section steps",
    ]
    for i, step in enumerate(record.steps.values()):
        if step.started is None:
            continue
        what = [format_duration(max(0.0, (step.finished or end) - step.started))]
        if len(step.attempts) > 1:
            what.append(f"{len(step.attempts)} attempts")
        if step.finished is None or step.phase is not StepPhase.SUCCEEDED:
            what.append(step.phase.value.lower())
        tags = ", ".join(t for t in (STATUS.get(step.phase), f"s{i}") if t)
        text = gantt_task_text(f"{step.name} · {' · '.join(what)}")
        lines.append(f"  {text} :{tags}, {bar.span(step.started, step.finished)}")
    entries = (
        [e for e in record.rollback.entries if e.started is not None] if record.rollback else []
    )
    if entries:
        lines.append("  section rollback")
        for n, entry in enumerate(entries, 1):
            lines.append(_undo_row(n, entry, bar))
    lines.append("```")
    return lines


def _undo_row(n: int, entry: UndoEntry, bar: _Bars) -> str:
    assert entry.started is not None
    took = format_duration(max(0.0, (entry.finished or entry.started) - entry.started))
    if entry.result is UndoResult.IRREVERSIBLE:
        text = gantt_task_text(f"{n}. {entry.step} · irreversible, nothing undone")
        at = bar.ms(entry.started)
        return f"  {text} :milestone, u{n}, {at}, {at}"
    words = {UndoResult.UNDONE: "undone", UndoResult.FAILED: "undo FAILED"}
    status = "done" if entry.result is UndoResult.UNDONE else "crit"
    text = gantt_task_text(
        f"{n}. {entry.step} · {words.get(entry.result, entry.result.value)} · {took}"
    )
    return f"  {text} :{status}, u{n}, {bar.span(entry.started, entry.finished)}"


class _Bars:
    """Milliseconds from the run's start, bars at least `least` seconds long."""

    def __init__(self, origin: float, least: float, end: float) -> None:
        self.origin, self.least, self.end = origin, least, end

    def ms(self, at: float) -> int:
        return round((at - self.origin) * 1000)

    def span(self, started: float, finished: float | None) -> str:
        stop = max(finished if finished is not None else self.end, started + self.least)
        return f"{self.ms(started)}, {max(self.ms(stop), self.ms(started) + 1)}"


def _origin(record: RunRecord) -> float | None:
    """The run's start; None while no step has started (nothing to draw)."""
    starts = [s.started for s in record.steps.values() if s.started is not None]
    if not starts:
        return None
    return min([*starts, record.started]) if record.started is not None else min(starts)


def _latest(record: RunRecord) -> float:
    """The newest time the record knows: the end of the run, or of what has run so far."""
    times = [record.finished or 0.0]
    for step in record.steps.values():
        times += [t for t in (step.started, step.finished) if t is not None]
    if record.rollback:
        times += [record.rollback.finished or record.rollback.started]
        for e in record.rollback.entries:
            times += [t for t in (e.started, e.finished) if t is not None]
    return max(times)
