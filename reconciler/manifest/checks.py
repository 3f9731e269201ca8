"""Rules the types cannot express: step names, dependencies, cycles, what a target must name.

Works on validated models and returns (field path, message) pairs; the loader turns paths
into file:line:column. Knows nothing about YAML, git or Kubernetes.
"""

from __future__ import annotations

import difflib
import graphlib
from collections.abc import Sequence

from reconciler.manifest.checkrules import check_checks
from reconciler.manifest.errors import FieldPath
from reconciler.manifest.fanout import check_fan_out
from reconciler.manifest.outputrules import check_references
from reconciler.manifest.schema import StepBase, Workflow

Problem = tuple[FieldPath, str]
OWN_GROUP = "reconciler.dev"


def check_workflow(workflow: Workflow) -> list[Problem]:
    steps = workflow.spec.steps
    graph = [(s.name, list(s.depends_on)) for s in steps]
    problems = check_graph(graph)
    for i, step in enumerate(steps):
        fanned = check_fan_out(i, step)
        problems.extend(fanned if step.for_each is not None else _check_target(i, step))
    problems.extend(check_checks(workflow))
    if not problems:
        problems.extend(_check_cycles(graph))
    if not problems:  # "an earlier step" means something only in an acyclic graph
        problems.extend(check_references(workflow))
    return problems


def check_graph(steps: Sequence[tuple[str | None, Sequence[str] | None]]) -> list[Problem]:
    """Step names and dependencies: duplicates, self, unknown and repeated dependencies.
    Also run on a file that failed its schema (a None: a name or dependsOn the schema
    refused), so one `validate` shows these too."""
    problems: list[Problem] = []
    first_index: dict[str, int] = {}
    for i, (name, _) in enumerate(steps):
        if name is None:
            continue
        if name in first_index:
            problems.append(
                (
                    ("spec", "steps", i, "name"),
                    f"duplicate step name {name!r} (see spec.steps[{first_index[name]}])",
                )
            )
        else:
            first_index[name] = i
    all_named = all(name is not None for name, _ in steps)
    for i, (name, depends_on) in enumerate(steps):
        seen: set[str] = set()
        for j, dep in enumerate(depends_on or []):
            path: FieldPath = ("spec", "steps", i, "dependsOn", j)
            if dep == name:
                problems.append((path, f"step {name!r} depends on itself"))
            elif dep not in first_index:
                if all_named:  # else it may name a step whose name the schema refused
                    problems.append((path, f"unknown step {dep!r}{suggest(dep, first_index)}"))
            elif dep in seen:
                problems.append((path, f"{dep!r} is listed twice in dependsOn"))
            seen.add(dep)
    return problems


def check_raw_graph(data: object) -> list[Problem]:
    """check_graph and the cycle check on a document the schema refused, as far as its
    steps can be read (a list of mappings with string names and lists of dependencies)."""
    spec = data.get("spec") if isinstance(data, dict) else None
    raw = spec.get("steps") if isinstance(spec, dict) else None
    if not isinstance(raw, list):
        return []
    steps: list[tuple[str | None, list[str] | None]] = []
    for item in raw:
        item = item if isinstance(item, dict) else {}
        name, deps = item.get("name"), item.get("dependsOn")
        steps.append(
            (
                name if isinstance(name, str) else None,
                deps if isinstance(deps, list) and all(isinstance(d, str) for d in deps) else None,
            )
        )
    problems = check_graph(steps)
    if not problems and all(name is not None for name, _ in steps):
        problems = _check_cycles([(n, d or []) for n, d in steps if n is not None])
    return problems


def _check_target(i: int, step: StepBase) -> list[Problem]:
    target = step.target
    base: FieldPath = ("spec", "steps", i, "target")
    kind = step.target_kind
    action = step.action  # type: ignore[attr-defined]
    if kind == "namespaced-object":
        missing = [f for f in ("namespace", "name") if getattr(target, f) is None]
        if missing:
            return [(base, f"{action} needs target.{' and target.'.join(missing)}")]
    elif kind == "node":
        if target.name is None:
            return [(base, f"{action} needs target.name (the node)")]
        if target.namespace is not None:
            return [(base + ("namespace",), "nodes are cluster-scoped: remove target.namespace")]
    elif kind == "namespace" and target.namespace is None:
        return [(base, f"{action} needs target.namespace")]
    if action == "DeletePod":
        has_selector = step.params.selector is not None  # type: ignore[attr-defined]
        if (target.name is None) == (not has_selector):
            return [(base, "DeletePod needs exactly one of target.name or params.selector")]
    if action == "UpdateSecret":
        params = step.params  # type: ignore[attr-defined]
        if (params.data is None) == (params.from_secret is None):
            return [(("spec", "steps", i, "params"), "give exactly one of data or fromSecret")]
        if step.record_previous:
            return [
                (
                    ("spec", "steps", i, "recordPrevious"),
                    "a Secret's values are never recorded: remove recordPrevious",
                )
            ]
    if action == "Apply":
        return _check_apply_manifest(i, step)
    return []


def _check_apply_manifest(i: int, step: StepBase) -> list[Problem]:
    manifest = step.params.manifest  # type: ignore[attr-defined]
    path: FieldPath = ("spec", "steps", i, "params", "manifest")
    problems: list[Problem] = []
    for field in ("apiVersion", "kind"):
        if not isinstance(manifest.get(field), str) or not manifest.get(field):
            problems.append((path + (field,), f"manifest.{field} is required"))
    api_version = manifest.get("apiVersion")
    if isinstance(api_version, str) and api_version.split("/")[0] == OWN_GROUP:
        # A WorkflowExecution written by a step would be resumed by the next leader with
        # the daemon's authority: reconciler's own kinds are the daemon's alone.
        problems.append(
            (path + ("apiVersion",), f"Apply may not manage reconciler's own kinds ({OWN_GROUP})")
        )
    if manifest.get("kind") == "Secret":
        # An inline Secret would put its values in git; UpdateSecret can take them from
        # another Secret and records only digests.
        problems.append((path + ("kind",), "use UpdateSecret for Secrets, not Apply"))
    meta = manifest.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        problems.append((path + ("metadata",), "manifest.metadata.name is required"))
    return problems


def _check_cycles(steps: list[tuple[str, list[str]]]) -> list[Problem]:
    graph = {name: deps for name, deps in steps}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        # graphlib lists each node before the one that depends on it: [a, b, c, a] reads
        # "b runs after a", the direction people draw a DAG in.
        cycle = list(err.args[1])
        index = next(i for i, (name, _) in enumerate(steps) if name == cycle[1])
        return [
            (
                ("spec", "steps", index, "dependsOn"),
                "dependency cycle: " + " -> ".join(cycle),
            )
        ]
    return []


def suggest(word: str, candidates: object) -> str:
    """`; did you mean 'x'?` for a near miss, else empty."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)  # type: ignore[call-overload]
    return f"; did you mean {close[0]!r}?" if close else ""
