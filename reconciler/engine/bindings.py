"""A step's `${{ }}` references and `when`, resolved against the run's record right before
the step starts (docs/outputs.md): earlier steps' outputs come from their records (so a
resumed run resolves them the same way), inputs from the workflow."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from reconciler.engine.record import RunRecord, StepPhase
from reconciler.manifest import references
from reconciler.manifest.expressions import ExpressionError, compile_condition, evaluate
from reconciler.manifest.outputs import as_text_where_wanted, field_path
from reconciler.manifest.references import Reference
from reconciler.manifest.schema import StepBase


class Unresolvable(Exception):
    """A reference without a value (its step was skipped or failed) or a value its field
    refuses; the step fails with this message, before changing anything."""


def variables(record: RunRecord, inputs: dict[str, Any]) -> dict[str, Any]:
    """What `when` sees: `steps.<name>.phase` of every step and `.outputs` of those that
    have outputs (`has(steps.fix.outputs)` is false for a skipped one), and `inputs`."""
    steps: dict[str, Any] = {}
    for name, rec in record.steps.items():
        steps[name] = {"phase": str(rec.phase)}
        if rec.outputs is not None:
            steps[name]["outputs"] = dict(rec.outputs)
    return {"steps": steps, "inputs": dict(inputs)}


def _value(ref: Reference, record: RunRecord, inputs: dict[str, Any]) -> Any:
    if ref.step is None:
        return inputs[ref.name]
    rec = record.steps.get(ref.step)
    if rec is None or rec.outputs is None:
        phase = rec.phase if rec is not None else StepPhase.PENDING
        why = "was skipped" if phase == StepPhase.SKIPPED else f"is {phase}"
        raise Unresolvable(
            f"{ref.spelled}: step {ref.step!r} {why}, so it has no outputs (a `when` with"
            f" has(steps.{ref.step}.outputs) can skip this step instead)"
        )
    if ref.name not in rec.outputs:
        raise Unresolvable(f"{ref.spelled}: step {ref.step!r} gave no output {ref.name!r}")
    return rec.outputs[ref.name]


def resolve(step: StepBase, record: RunRecord, inputs: dict[str, Any]) -> StepBase:
    """`step` with every reference replaced by its value, validated again as if written so
    (a value its field refuses is Unresolvable); itself when it has none."""
    if not step.templates:
        return step
    # only what was written: a default dumped (an initialDelay of "0s") may not validate
    data = step.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"templates"})
    for pointer, text in step.templates.items():
        at = field_path(pointer)
        references.set_at(
            data, at, references.substitute(text, at, lambda r: _value(r, record, inputs))
        )
    data = as_text_where_wanted(type(step), data)
    try:
        return type(step).model_validate(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        at = ".".join(str(k) for k in first["loc"])
        raise Unresolvable(f"{at}: {first['msg']} (after resolving its references)") from None


def when_of(step: StepBase, record: RunRecord, inputs: dict[str, Any]) -> str | None:
    """The step's `when`, its references resolved, as written when it has none."""
    text = step.templates.get("when")
    if text is None:
        return step.when
    value = references.substitute(text, ("when",), lambda r: _value(r, record, inputs))
    return str(value)


def when_holds(step: StepBase, record: RunRecord, inputs: dict[str, Any]) -> bool:
    """The verdict of the step's `when` (True when it has none), decided before its params
    are resolved: a `when` may skip a step whose params reference a skipped step."""
    when = when_of(step, record, inputs)
    if when is None:
        return True
    try:
        return evaluate(compile_condition(when), variables(record, inputs))
    except ExpressionError as err:
        raise Unresolvable(f"when: {err}") from None


def concrete(step: StepBase, record: RunRecord, inputs: dict[str, Any]) -> StepBase:
    """The step as it ran, for its undo: its references resolved from the record (the same
    values after a resume: outputs are checkpointed); as written if they cannot be."""
    try:
        return resolve(step, record, inputs)
    except Unresolvable:
        return step  # it never started, so nothing of it is undone
