"""Generated run records for the render check: the shapes and sizes a report must draw right
(1, 10, 40 and 200 steps as chains, fan-outs and wide DAGs), sub-second and multi-hour runs,
every run and step phase, rollbacks with failed and irreversible undos, and hostile names
and messages. Each comes with what its Timeline must show, for the check to compare."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from reconciler.engine.record import (
    Attempt,
    RollbackRecord,
    RunPhase,
    RunRecord,
    StepPhase,
    StepRecord,
    UndoEntry,
    UndoResult,
)

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
HOSTILE = [
    'a|b <b>bold</b> `tick` "quoted" #hash; semi: colon',
    "<none> <nil> &amp; %% comment {braces} [link](https://example.com) *star* _under_",
    "section x",  # a gantt keyword at the start of a task's text
]


@dataclass
class Case:
    name: str
    record: RunRecord
    # (row text prefix, seconds) the gantt must draw in proportion; rollback rows in order
    bars: list[tuple[str, float]] = field(default_factory=list)
    undo_order: list[str] = field(default_factory=list)


def _record(name: str, phase: RunPhase, steps: list[StepRecord], **kw: object) -> RunRecord:
    started = min((s.started for s in steps if s.started is not None), default=None)
    ends = [s.finished for s in steps if s.finished is not None]
    record = RunRecord(
        workflow=name,
        run_id=f"{name}-0123456789",
        content_hash="f" * 64,
        max_concurrent=4,
        phase=phase,
        revision="main@sha1:" + "a" * 40,
        started=started,
        finished=max(ends) if ends and phase not in (RunPhase.RUNNING,) else None,
        steps={s.name: s for s in steps},
        **kw,  # type: ignore[arg-type]
    )
    return record


def _step(
    name: str,
    start: float | None,
    took: float | None,
    deps: list[str],
    phase: StepPhase = StepPhase.SUCCEEDED,
    attempts: int = 1,
    message: str | None = None,
    action: str = "UpdateConfigMap",
) -> StepRecord:
    step = StepRecord(name, action, deps, phase=phase, message=message)
    if start is not None:
        step.started = T0 + start
        step.finished = None if took is None else T0 + start + took
        step.attempts = [Attempt(n, step.started) for n in range(1, attempts + 1)]
        step.changed = True
    return step


def chain(n: int, each: float) -> Case:
    steps = [_step(f"step-{i}", i * each, each, [f"step-{i - 1}"] if i else []) for i in range(n)]
    case = Case(f"chain-{n}", _record(f"chain-{n}", RunPhase.SUCCEEDED, steps))
    case.bars = [(f"step-{i} ", each) for i in range(min(n, 5))]
    return case


def fan_out(n: int) -> Case:
    steps = [_step("start", 0, 1, [])]
    steps += [_step(f"leaf-{i}", 1 + (i % 4), 1 + i % 3, ["start"]) for i in range(n - 2)]
    steps.append(_step("join", 8, 1, [s.name for s in steps[1:]]))
    return Case(f"fan-out-{n}", _record(f"fan-out-{n}", RunPhase.SUCCEEDED, steps))


def wide(n: int, width: int, name_length: int = 0) -> Case:
    """`n` steps in levels `width` wide; names padded to `name_length` (a DNS label's 63 is
    the longest a manifest allows)."""

    def name(j: int) -> str:
        return f"s{j}-".ljust(name_length, "x") if name_length else f"s{j}"

    steps = [
        _step(name(j), (j // width) * 2.0, 1.5, [name(j - width)] if j >= width else [])
        for j in range(n)
    ]
    label = f"wide-{n}-by-{width}" + (f"-names-{name_length}" if name_length else "")
    return Case(label, _record(label, RunPhase.SUCCEEDED, steps))


def timed_chain(name: str, prefix: str, times: list[float]) -> Case:
    """A chain whose steps took `times` seconds, one after the other."""
    steps, at = [], 0.0
    for i, took in enumerate(times):
        steps.append(_step(f"{prefix}-{i}", at, took, [f"{prefix}-{i - 1}"] if i else []))
        at += took
    case = Case(name, _record(name, RunPhase.SUCCEEDED, steps))
    case.bars = [(f"{prefix}-{i} ", t) for i, t in enumerate(times)]
    return case


def sub_second() -> Case:
    return timed_chain("sub-second", "quick", [0.05, 0.4, 0.12, 0.3])


def multi_hour() -> Case:
    return timed_chain("multi-hour", "long", [1800.0, 7200.0, 600.0])


def rolled_back(result_of_second: UndoResult, phase: RunPhase) -> Case:
    steps = [
        _step("scale-up", 0, 2, [], action="ScaleDeployment"),
        _step("drain", 2, 3, ["scale-up"], action="DrainNode"),
        _step("patch", 2, 1, ["scale-up"]),
        _step(
            "verify",
            5,
            1,
            ["drain", "patch"],
            StepPhase.FAILED,
            3,
            "503 | upstream <nil>",
            "Custom",
        ),
    ]
    entries = [
        UndoEntry("patch", "UpdateConfigMap", UndoResult.UNDONE, T0 + 6.0, T0 + 6.4, 1),
        UndoEntry("drain", "DrainNode", result_of_second, T0 + 6.4, T0 + 7.9, 2, "409 | <b>x</b>"),
        UndoEntry("scale-up", "ScaleDeployment", UndoResult.UNDONE, T0 + 7.9, T0 + 8.0, 1),
    ]
    if result_of_second is UndoResult.IRREVERSIBLE:
        entries[1] = UndoEntry(
            "drain", "DrainNode", UndoResult.IRREVERSIBLE, T0 + 6.4, T0 + 6.4, 0, note="skipped"
        )
    name = f"rollback-{result_of_second.value.lower()}"
    rollback = RollbackRecord("StepFailed", T0 + 6.0, T0 + 8.0, entries)
    case = Case(name, _record(name, phase, steps, rollback=rollback, reason="StepFailed"))
    case.bars = [("scale-up ", 2), ("drain ", 3), ("patch ", 1)]
    case.undo_order = ["1. patch", "2. drain", "3. scale-up"]
    return case


def every_phase() -> Case:
    phases = list(StepPhase)
    steps = [
        _step(
            f"p-{p.value.lower()}",
            None if p in (StepPhase.PENDING, StepPhase.SKIPPED) else i,
            None if p in (StepPhase.RUNNING, StepPhase.RETRYING) else 1,
            [],
            p,
            2 if p is StepPhase.RETRYING else 1,
        )
        for i, p in enumerate(phases)
    ]
    return Case("every-phase", _record("every-phase", RunPhase.RUNNING, steps))


def not_started() -> Case:
    steps = [_step("first", None, None, [], StepPhase.PENDING)]
    return Case("not-started", _record("not-started", RunPhase.RUNNING, steps))


def hostile() -> Case:
    steps = [
        _step(f"h{i}", i, 1, [f"h{i - 1}"] if i else [], message=text)
        for i, text in enumerate(HOSTILE)
    ]
    record = _record('hostile: "name" | <b>x</b>', RunPhase.FAILED, steps, message=HOSTILE[0])
    # names a manifest cannot have today, but fan-out sub-steps and workflow names will
    record.steps = {f"{text[:40]}": s for s, text in zip(steps, HOSTILE, strict=True)}
    for step, text in zip(steps, HOSTILE, strict=True):
        step.name = text[:40]
    for prev, step in itertools.pairwise(steps):
        step.depends_on = [prev.name]
    return Case("hostile", record)


def cases() -> list[Case]:
    return [
        chain(1, 3.0),
        chain(10, 2.0),
        chain(40, 0.5),
        fan_out(10),
        fan_out(40),
        wide(40, 8),
        wide(200, 10),
        wide(120, 30),  # the largest drawn left to right
        wide(120, 4),  # the largest drawn top to bottom
        wide(16, 4, 63),  # the longest names at the left-to-right limit
        wide(120, 4, 63),  # and at the top-to-bottom one
        chain(200, 0.2),
        sub_second(),
        multi_hour(),
        rolled_back(UndoResult.FAILED, RunPhase.PARTIALLY_ROLLED_BACK),
        rolled_back(UndoResult.IRREVERSIBLE, RunPhase.ROLLED_BACK),
        every_phase(),
        not_started(),
        hostile(),
    ]
