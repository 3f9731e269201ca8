"""Files -> validated Workflow models, or errors that name file:line:column and the field.

Every problem in every file is collected (not just the first), so one `validate` run shows a
user everything to fix, and the daemon can record them all while still running valid files.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from reconciler.manifest import yamlsource
from reconciler.manifest.checks import check_workflow, suggest
from reconciler.manifest.errors import FieldPath, ManifestIssue
from reconciler.manifest.identity import content_hash, run_id
from reconciler.manifest.policy import Policy
from reconciler.manifest.schema import ACTIONS, Workflow

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedWorkflow:
    workflow: Workflow
    file: str
    line: int
    digest: str
    run_id: str

    @property
    def name(self) -> str:
        return self.workflow.metadata.name


@dataclass
class LoadResult:
    workflows: list[LoadedWorkflow] = field(default_factory=list)
    issues: list[ManifestIssue] = field(default_factory=list)
    nodes: int = 0  # what parsing it built, aliases expanded (the revision limit adds these)

    def extend(self, other: LoadResult) -> None:
        self.workflows.extend(other.workflows)
        self.issues.extend(other.issues)
        self.nodes += other.nodes

    @property
    def ok(self) -> bool:
        return not self.issues


def load_text(raw: bytes | str, file: str, policy: Policy | None = None) -> LoadResult:
    """Load every Workflow document of one file's content; `policy` adds where-may-it-act
    rules (protected namespaces, allowed actions) to validation."""
    result = LoadResult()
    try:
        text = raw if isinstance(raw, str) else yamlsource.read_text(raw)
        documents = list(yamlsource.parse_documents(text))
    except yamlsource.YamlProblem as problem:
        result.issues.append(ManifestIssue(file, problem.line, problem.column, problem.message))
        return result
    result.nodes = sum(doc.nodes for doc in documents)
    for doc in documents:
        loaded, issues = _load_document(doc, file, policy)
        result.issues.extend(issues)
        if loaded is not None:
            result.workflows.append(loaded)
    return result


def load_file(path: Path, display: str | None = None, policy: Policy | None = None) -> LoadResult:
    name = display or str(path)
    try:
        size = path.stat().st_size
        if size > yamlsource.MAX_FILE_BYTES:
            # Checked before reading so a 100 MB push never reaches memory.
            limit = yamlsource.MAX_FILE_BYTES // (1024 * 1024)
            return LoadResult(
                issues=[
                    ManifestIssue(name, 0, 0, f"file is {size:,} bytes, over the {limit} MiB limit")
                ]
            )
        raw = path.read_bytes()
    except OSError as err:
        return LoadResult(issues=[ManifestIssue(name, 0, 0, f"cannot read: {err.strerror}")])
    return load_text(raw, name, policy)


def find_manifest_files(root: Path) -> tuple[list[Path], list[ManifestIssue]]:
    """YAML files under a directory, sorted; symlinks that leave the directory are refused."""
    if root.is_file():
        return [root], []
    files: list[Path] = []
    issues: list[ManifestIssue] = []
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            if not fname.endswith(YAML_SUFFIXES) or fname.startswith("."):
                continue
            path = Path(dirpath) / fname
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                issues.append(
                    ManifestIssue(str(path), 0, 0, "symlink points outside the workflow folder")
                )
                continue
            files.append(path)
    return files, issues


def load_paths(paths: Iterable[Path], policy: Policy | None = None) -> LoadResult:
    """Load files and directories; workflow names must be unique across all of them."""
    result = LoadResult()
    for root in paths:
        if not root.exists():
            result.issues.append(ManifestIssue(str(root), 0, 0, "no such file or directory"))
            continue
        files, issues = find_manifest_files(root)
        result.issues.extend(issues)
        for path in files:
            result.extend(load_file(path, policy=policy))
    return reject_duplicate_names(result)


def reject_duplicate_names(result: LoadResult) -> LoadResult:
    """Two files defining one workflow name is ambiguous: neither runs, both are reported."""
    by_name: dict[str, list[LoadedWorkflow]] = {}
    for loaded in result.workflows:
        by_name.setdefault(loaded.name, []).append(loaded)
    kept: list[LoadedWorkflow] = []
    for name, group in by_name.items():
        if len(group) == 1:
            kept.append(group[0])
            continue
        for loaded in group:
            others = ", ".join(f"{o.file}:{o.line}" for o in group if o is not loaded)
            result.issues.append(
                ManifestIssue(
                    loaded.file,
                    loaded.line,
                    1,
                    f"workflow name {name!r} is also defined in {others}",
                    ("metadata", "name"),
                )
            )
    kept.sort(key=lambda w: (w.file, w.line))
    return LoadResult(workflows=kept, issues=result.issues)


def _load_document(
    doc: yamlsource.Document, file: str, policy: Policy | None = None
) -> tuple[LoadedWorkflow | None, list[ManifestIssue]]:
    def issue(path: FieldPath, message: str) -> ManifestIssue:
        line, col = doc.locate(path)
        return ManifestIssue(file, line, col, message, path)

    if not isinstance(doc.data, dict):
        return None, [issue((), f"expected a Workflow mapping, got {_kind_of(doc.data)}")]
    try:
        workflow = Workflow.model_validate(doc.data)
    except ValidationError as err:
        issues = [issue(*_translate(e)) for e in err.errors(include_url=False)]
        return None, sorted(issues, key=lambda i: (i.line, i.column))
    problems = check_workflow(workflow)
    if not problems and policy is not None:
        problems = policy.check(workflow)
    if problems:
        return None, [issue(path, message) for path, message in problems]
    digest = content_hash(workflow)
    return LoadedWorkflow(workflow, file, doc.line, digest, run_id(workflow, digest)), []


# ----------------------------------------------------------------------------- error text


def _translate(error: Any) -> tuple[FieldPath, str]:
    """A pydantic error -> (YAML field path, message a person can act on)."""
    raw_loc: tuple[Any, ...] = tuple(error["loc"])
    path = _yaml_path(raw_loc)
    kind, msg, value = error["type"], error["msg"], error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag"))
        return path + ("action",), f"unknown action {tag!r}{suggest(tag, ACTIONS)}"
    if kind == "union_tag_not_found":
        return path, "missing required field 'action' (one of: " + ", ".join(ACTIONS) + ")"
    if kind == "missing":
        return path, f"missing required field {path[-1]!r}"
    if kind == "extra_forbidden":
        name = str(path[-1])
        return path, f"unknown field {name!r}{suggest(name, _fields_at(raw_loc[:-1]))}"
    if kind.startswith("literal_error"):
        return path, f"{msg} (got {_short(value)})"
    if kind == "value_error":
        return path, msg.removeprefix("Value error, ")
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return path, f"expected a mapping, got {_kind_of(value)}"
    if kind in ("string_type", "str_type") and isinstance(value, (int, float, bool)):
        return path, f'expected a string, got {_short(value)}: quote it, e.g. "{value}"'
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return path, f"{msg}, got {_kind_of(value)} {_short(value)}"
    return path, f"{msg} (got {_short(value)})"


def _yaml_path(loc: tuple[Any, ...]) -> FieldPath:
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if part == "[key]":
            continue
        # The discriminated union inserts the action name after the step index.
        if i >= 1 and isinstance(loc[i - 1], int) and part in ACTIONS and "steps" in loc[:i]:
            continue
        out.append(part)
    return tuple(out)


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names (YAML spelling) of the model at a pydantic location, for suggestions."""
    current: Any = Workflow
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            match = next(
                (f for n, f in current.model_fields.items() if (f.alias or n) == part), None
            )
            current = match.annotation if match else None
        elif isinstance(current, list):  # union of step classes
            current = ACTIONS.get(part)
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, list):
        return sorted({f.alias or n for c in current for n, f in c.model_fields.items()})
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    """Strip Annotated/Optional; a union of models becomes a list of them."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
            else:
                return args
        else:
            return tp


def _kind_of(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
