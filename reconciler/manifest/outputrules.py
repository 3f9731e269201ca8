"""What the schema cannot say about references and `when` (docs/outputs.md): a reference
names a step this one depends on (directly or not), an output that step's action has, or
an input the workflow defines; `when` is CEL over `steps` and `inputs`; and no `${{ }}`
outside a step's params, verify and when. Returns (field path, message) pairs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from reconciler.manifest import references
from reconciler.manifest.errors import FieldPath
from reconciler.manifest.expressions import ExpressionError, compile_condition
from reconciler.manifest.outputs import declared, declared_raw, field_path
from reconciler.manifest.references import BadReference, Reference
from reconciler.manifest.schema import Workflow

Problem = tuple[FieldPath, str]
WHEN_VARIABLES = frozenset({"steps", "inputs"})
# `steps.probe.outputs.lag`, `steps["drain-node"].outputs.evictedPods`, `inputs.pool`,
# as written in CEL itself (a `-` in a name needs the brackets: CEL reads it as minus)
_NATIVE_STEP = re.compile(
    r"\bsteps\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*[\"']([^\"']+)[\"']\s*\])\s*\.\s*outputs\s*\.\s*([A-Za-z_]\w*)"
)
_NATIVE_INPUT = re.compile(r"\binputs\s*\.\s*([A-Za-z_]\w*)")


@dataclass(frozen=True)
class _Graph:
    """What reference checks need of the steps, from models or from a raw document."""

    depends_on: dict[str, list[str]]
    outputs: dict[str, dict[str, str]]
    actions: dict[str, str]
    inputs: dict[str, Any]

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.depends_on.get(name, []))
        while todo:
            dep = todo.pop()
            if dep not in seen and dep in self.depends_on:
                seen.add(dep)
                todo.extend(self.depends_on[dep])
        return seen

    def wrong(self, ref: Reference, step: str) -> str | None:
        from reconciler.manifest.checks import suggest

        if ref.step is None:
            if ref.name in self.inputs:
                return None
            known = ", ".join(sorted(self.inputs)) or "none"
            return (
                f"{ref.spelled}: the workflow has no input {ref.name!r}"
                f"{suggest(ref.name, self.inputs)} (spec.inputs: {known})"
            )
        if ref.step == step:
            return f"{ref.spelled}: a step cannot use its own outputs"
        if ref.step not in self.depends_on:
            return f"{ref.spelled}: unknown step {ref.step!r}{suggest(ref.step, self.depends_on)}"
        if ref.step not in self.ancestors(step):
            return (
                f"{ref.spelled}: {ref.step!r} is not an earlier step of {step!r}: its outputs"
                f" exist only once it has run; add {ref.step!r} to dependsOn"
            )
        has = self.outputs[ref.step]
        if ref.name not in has:
            action = self.actions[ref.step]
            names = ", ".join(sorted(has)) or "none"
            hint = " (declare it in params.outputs)" if action == "Custom" else ""
            return (
                f"{ref.spelled}: {action} has no output {ref.name!r}{suggest(ref.name, has)}"
                f" (its outputs: {names}){hint}"
            )
        return None

    def check_template(self, at: FieldPath, text: str, step: str) -> list[Problem]:
        try:
            refs = list(references.parse(text))
        except BadReference as err:
            return [(at, str(err))]
        return [(at, message) for ref in refs if (message := self.wrong(ref, step))]


def check_references(workflow: Workflow) -> list[Problem]:
    steps = workflow.spec.steps
    graph = _Graph(
        {s.name: list(s.depends_on) for s in steps},
        {s.name: dict(declared(s)) for s in steps},
        {s.name: s.action for s in steps},  # type: ignore[attr-defined]
        dict(workflow.spec.inputs),
    )
    problems: list[Problem] = []
    for i, step in enumerate(steps):
        base: FieldPath = ("spec", "steps", i)
        for pointer, text in step.templates.items():
            problems += graph.check_template((*base, *field_path(pointer)), text, step.name)
        if step.when is not None and not any(at[:4] == (*base, "when") for at, _ in problems):
            problems += _check_when((*base, "when"), step.when, step.name, graph)
    return problems


def check_raw_references(data: Any, actions: dict[str, Any]) -> list[Problem]:
    """The reference problems of a document the schema refused, as far as its steps can be
    read: a wrong reference is why a stand-in failed the schema, so it is what to say."""
    spec = data.get("spec") if isinstance(data, dict) else None
    raw = spec.get("steps") if isinstance(spec, dict) else None
    if not isinstance(raw, list):
        return []
    named = [s for s in raw if isinstance(s, dict) and isinstance(s.get("name"), str)]
    deps = {
        s["name"]: [d for d in s.get("dependsOn") or [] if isinstance(d, str)]
        if isinstance(s.get("dependsOn"), list)
        else []
        for s in named
    }
    inputs = spec.get("inputs") if isinstance(spec.get("inputs"), dict) else {}  # type: ignore[union-attr]
    graph = _Graph(
        deps,
        {s["name"]: declared_raw(s, actions) for s in named},
        {s["name"]: str(s.get("action")) for s in named},
        inputs,  # type: ignore[arg-type]
    )
    problems: list[Problem] = []
    for i, step in enumerate(raw):
        if step in named:
            fields = {k: step[k] for k in references.REFERABLE if k in step}
            for at, text in references.strings(fields):
                problems += graph.check_template(("spec", "steps", i, *at), text, step["name"])
            when = step.get("when")
            if isinstance(when, str) and "${{" not in when:
                problems += _check_when(("spec", "steps", i, "when"), when, step["name"], graph)
    return problems


def _check_when(at: FieldPath, text: str, step: str, graph: _Graph) -> list[Problem]:
    try:
        program = compile_condition(text)
    except ExpressionError as err:
        return [(at, err.message)]
    unknown = sorted(set(program.variables()) - WHEN_VARIABLES)
    if unknown:
        return [(at, f"`when` names {', '.join(unknown)}: it may use steps and inputs only")]
    refs = [
        Reference(found[0], found.start(), found[1] or found[2], found[3])
        for found in _NATIVE_STEP.finditer(text)
    ] + [
        Reference(found[0], found.start(), None, found[1]) for found in _NATIVE_INPUT.finditer(text)
    ]
    return [(at, message) for ref in refs if (message := graph.wrong(ref, step))]


def reworded(data: Any, at: FieldPath, message: str) -> str:
    """A schema error at a field that holds a reference names the reference, not the
    stand-in the schema saw in its place ("got 'x'")."""
    value: Any = data
    for key in at:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return message
    if not (isinstance(value, str) and "${{" in value) or ", got " not in message:
        return message
    head = message.rsplit(", got ", 1)[0]
    return f"{head}, got {value.strip()}, whose value does not fit here (docs/outputs.md)"


def misplaced(data: Any) -> list[Problem]:
    """`${{ }}` anywhere but a step's params, verify and when: said at the field, before the
    schema's own (confusing) verdict on the text."""
    problems: list[Problem] = []
    message = "references (${{ }}) work in a step's params, verify and when only"
    if not isinstance(data, dict):
        return problems
    spec = data.get("spec") if isinstance(data.get("spec"), dict) else {}
    outside = {k: v for k, v in data.items() if k != "spec"}
    outside["spec"] = {k: v for k, v in spec.items() if k != "steps"}  # type: ignore[union-attr]
    problems += [(at, message) for at, _ in references.strings(outside)]
    steps = spec.get("steps") if isinstance(spec, dict) else None
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(step, dict):
            rest = {k: v for k, v in step.items() if k not in references.REFERABLE}
            base: FieldPath = ("spec", "steps", i)
            problems += [((*base, *at), message) for at, _ in references.strings(rest)]
    return problems
