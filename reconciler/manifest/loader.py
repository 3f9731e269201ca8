"""Files -> validated Workflow models, or errors that name file:line:column and the field.

Every problem in every file is collected (not just the first), so one `validate` run shows a
user everything to fix, and the daemon can record them all while still running valid files.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import ValidationError

from reconciler.manifest import yamlsource
from reconciler.manifest.approvalrules import check_approvals
from reconciler.manifest.checks import check_raw_graph, check_workflow
from reconciler.manifest.errors import FieldPath, ManifestIssue
from reconciler.manifest.identity import content_hash, run_id
from reconciler.manifest.outputrules import check_raw_references, misplaced, reworded
from reconciler.manifest.policy import Policy
from reconciler.manifest.schema import ACTIONS, Workflow
from reconciler.manifest.wording import kind_of, not_a_workflow, translate

YAML_SUFFIXES = (".yaml", ".yml")
STDIN = "-"  # a PATH of "-": the workflow comes on standard input


@dataclass(frozen=True)
class LoadedWorkflow:
    workflow: Workflow
    file: str
    line: int
    digest: str
    run_id: str
    name_at: tuple[int, int] = (0, 0)  # line, column of metadata.name

    @property
    def name(self) -> str:
        return self.workflow.metadata.name


@dataclass
class LoadResult:
    workflows: list[LoadedWorkflow] = field(default_factory=list)
    issues: list[ManifestIssue] = field(default_factory=list)
    nodes: int = 0  # what parsing it built, aliases expanded (the revision limit adds these)
    files: int = 0  # files read

    def extend(self, other: LoadResult) -> None:
        self.workflows.extend(other.workflows)
        self.issues.extend(other.issues)
        self.nodes += other.nodes
        self.files += other.files

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
    if not documents:  # a workflow file that says nothing is a mistake, not a no-op
        result.issues.append(
            ManifestIssue(
                file, 1, 1, "no workflow in this file (it is empty or only comments): write one"
                " or delete the file"
            )
        )
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
    result = load_text(raw, name, policy)
    result.files = 1
    return result


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
        if str(root) == STDIN:
            result.extend(load_text(sys.stdin.buffer.read(), "<stdin>", policy))
            result.files += 1
            continue
        if not root.exists():
            result.issues.append(ManifestIssue(str(root), 0, 0, "no such file or directory"))
            continue
        files, issues = find_manifest_files(root)
        result.issues.extend(issues)
        if not files and not issues:  # CI pointed at the wrong folder must not pass
            result.issues.append(
                ManifestIssue(str(root), 0, 0, "no workflow files (*.yaml, *.yml) in this folder")
            )
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
            others = ", ".join(f"{o.file}:{o.name_at[0]}" for o in group if o is not loaded)
            result.issues.append(
                ManifestIssue(
                    loaded.file,
                    *loaded.name_at,
                    f"workflow name {name!r} is also defined in {others}: names must be"
                    " unique (each names its runs and records); rename one",
                    ("metadata", "name"),
                )
            )
    kept.sort(key=lambda w: (w.file, w.line))
    return LoadResult(workflows=kept, issues=result.issues, files=result.files)


STRING_MAPS = ("data", "env", "nodeSelector")  # string values Kubernetes tools also read


def _yaml11_booleans(doc: yamlsource.Document) -> list[tuple[FieldPath, str]]:
    return [
        (path, f'{value} is a boolean to kubectl and Helm (YAML 1.1): quote it, "{value}",'
         " to mean the string")
        for path, value in doc.unquoted_yaml11_booleans()
        if len(path) >= 2 and path[-2] in STRING_MAPS
    ]


def _load_document(
    doc: yamlsource.Document, file: str, policy: Policy | None = None
) -> tuple[LoadedWorkflow | None, list[ManifestIssue]]:
    def issue(path: FieldPath, message: str) -> ManifestIssue:
        line, col = doc.locate(path)
        return ManifestIssue(file, line, col, message, path)

    if not isinstance(doc.data, dict):
        return None, [issue((), f"expected a Workflow mapping, got {kind_of(doc.data)}")]
    other = not_a_workflow(doc.data)
    if other is not None:
        return None, [issue(*other)]
    if wrong_place := misplaced(doc.data):
        return None, [issue(path, message) for path, message in wrong_place]
    try:
        workflow = Workflow.model_validate(doc.data)
    except ValidationError as err:
        issues = [issue(*translate(e)) for e in err.errors(include_url=False)]
        # the graph's problems too: one `validate` run shows everything to fix
        said = {i.path for i in issues}
        later = check_raw_graph(doc.data) + _yaml11_booleans(doc)
        issues += [issue(path, m) for path, m in later if path not in said]
        # a wrong reference is why its stand-in failed the schema: say that instead
        wrong_refs = check_raw_references(doc.data, ACTIONS)
        issues = [i for i in issues if i.path not in {path for path, _ in wrong_refs}]
        issues += [issue(path, m) for path, m in wrong_refs]
        issues = [replace(i, message=reworded(doc.data, i.path, i.message)) for i in issues]
        return None, sorted(issues, key=lambda i: (i.line, i.column))
    problems = check_workflow(workflow) + _yaml11_booleans(doc)
    if not problems and policy is not None:
        problems = policy.check(workflow) + check_approvals(workflow, policy)
    if problems:
        return None, [issue(path, message) for path, message in problems]
    digest = content_hash(workflow)
    name_at = doc.locate(("metadata", "name"))
    return LoadedWorkflow(workflow, file, doc.line, digest, run_id(workflow, digest), name_at), []
