"""Run records in git, the one owner of their layout and YAML (docs/architecture.md, State):
`<records>/<workflow>/<run-id>.yaml` (machine-readable) beside `<run-id>.md` (for people,
formats/run_markdown.py), one commit per record, and the reading back: which runs have a
record, whether it says the run finished, the latest run of each workflow.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any, Protocol

from ruamel.yaml import YAML

from reconciler.engine.record import RunPhase, RunRecord
from reconciler.formats.run_markdown import render_markdown
from reconciler.formats.times import duration_text, time_text
from reconciler.manifest.durations import format_duration

RECORD_KIND = "RunRecord"
RECORD_API_VERSION = "reconciler.dev/v1alpha1"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


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
        started=time_text(record.started),
        finished=time_text(record.finished),
        duration=duration_text(record.started, record.finished),
        maxConcurrent=raw["max_concurrent"],
        executionOrder=raw["execution_order"],
    )
    doc["steps"] = [_step_document(raw["steps"][name]) for name in raw["steps"]]
    if raw["rollback"] is not None:
        rb = raw["rollback"]
        doc["rollback"] = {
            "reason": rb["reason"],
            "started": time_text(rb["started"]),
            "finished": time_text(rb["finished"]),
            "entries": [
                {
                    _camel(k): (time_text(v) if k in ("started", "finished") else v)
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
                    _camel(k): (time_text(v) if k in ("started", "finished") else v)
                    for k, v in a.items()
                    if v is not None
                }
                for a in value
            ]
        elif key in ("started", "finished"):
            value = time_text(value)
        elif key == "checks":
            value = [_check_document(c) for c in value]
        if value in (None, [], {}) and key not in ("phase",):
            continue
        if key in ("continue_on_failure", "applied", "skipped_by_when") and not value:
            continue
        if key == "applied":
            continue  # the checkpoint's business (resume), not the reviewer's
        out[_camel(key)] = value
    return out


def _check_document(check: dict[str, Any]) -> dict[str, Any]:
    """A verify check: its source, condition, verdict and every measurement, times in
    RFC 3339."""

    def measurement(m: dict[str, Any]) -> dict[str, Any]:
        return {
            _camel(k): time_text(v) if k == "time" else v
            for k, v in m.items()
            if v is not None and not (k == "decisive" and not v)
        }

    out = {_camel(k): v for k, v in check.items() if v is not None and k != "measurements"}
    out["measurements"] = [measurement(m) for m in check["measurements"]]
    if check.get("after_rollback"):
        out["afterRollback"] = measurement(check["after_rollback"])
    return out


def render_yaml(record: RunRecord, source: str | None = None) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[attr-defined]
    buffer = io.StringIO()
    yaml.dump(record_document(record, source), buffer)
    return buffer.getvalue()


FINISHED_PHASES = {p.value for p in RunPhase if p.finished}


def record_paths(records_path: str, workflow: str, run_id: str) -> tuple[str, str]:
    """The YAML and Markdown files of one run."""
    base = f"{records_path.rstrip('/')}/{workflow}/{run_id}"
    return f"{base}.yaml", f"{base}.md"


def commit_message(record: RunRecord, note: str | None = None) -> str:
    done, total = record.progress()
    duration = ""
    if record.started is not None and record.finished is not None:
        duration = f", {format_duration(record.finished - record.started)}"
    detail = f"{done}/{total} steps{duration}" if note is None else note
    return f"reconciler: {record.workflow} {record.run_id} {record.phase.value} ({detail})"


def record_files(
    records_path: str, record: RunRecord, source: str | None
) -> dict[str, bytes | None]:
    """The files of one record commit: the YAML and the Markdown, rendered now."""
    yaml_path, md_path = record_paths(records_path, record.workflow, record.run_id)
    return {
        yaml_path: render_yaml(record, source).encode(),
        md_path: render_markdown(record, source).encode(),
    }


class Entry(Protocol):
    """A file of a git tree listing (gitops.git.TreeEntry is one)."""

    path: str
    sha: str
    size: int | None  # None: never fetched (over the file limit)


def recorded_runs(entries: Iterable[Entry]) -> dict[str, str]:
    """Run id -> blob of its YAML record, from one listing of the records path."""
    files = {}
    for entry in entries:
        path = PurePosixPath(entry.path)
        if entry.size is None:
            continue  # over the file limit, never fetched: not a record the daemon wrote
        if path.suffix == ".yaml" and len(path.parts) >= 3:
            files[path.stem] = entry.sha
    return files


def parse_record(content: bytes) -> dict[str, Any] | None:
    """A YAML record as a document; None if it is not one (someone broke it by hand)."""
    try:
        doc = YAML(typ="safe", pure=True).load(content)
    except Exception:  # any YAML error: the file is not a record we can read
        return None
    return doc if isinstance(doc, dict) and doc.get("kind") == RECORD_KIND else None


def says_finished(content: bytes) -> bool:
    doc = parse_record(content)
    return doc is not None and doc.get("phase") in FINISHED_PHASES


def latest_per_workflow(documents: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The newest record (by start time) of each workflow, by workflow name."""
    latest: dict[str, Mapping[str, Any]] = {}
    for doc in documents:
        current = latest.get(doc["workflow"])
        if current is None or str(doc.get("started", "")) > str(current.get("started", "")):
            latest[doc["workflow"]] = doc
    return [latest[name] for name in sorted(latest)]
