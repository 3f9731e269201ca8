"""Runs late (zz): every Markdown report this e2e session's daemons committed (run reports,
_errors.md, plans; the examples' reports are the demo's) is drawn by the real renderer at
the oldest and the newest Mermaid GitHub and GitLab serve: no diagram may fail, every
timeline's bars are in proportion to its durations, every graph's text readable at GitHub's
column width (tests/e2e/test_report_render.py checks a generated set in more detail)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from daemonhelp import REMOTES
from figures import report
from renderhelp import (
    INSTALLS,
    MIN_TEXT_PX,
    Diagram,
    diagrams_of,
    disproportionate_bars,
    missing_tools,
    render,
    text_px_in_column,
)


def committed_reports(bare: Path) -> dict[str, str]:
    """Every .md file on main of one remote: path -> text."""
    listed = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "main"],
        cwd=bare,
        capture_output=True,
        text=True,
        check=False,
    )
    paths = [p for p in listed.stdout.splitlines() if p.endswith(".md")]
    if listed.returncode != 0 or not paths:
        return {}
    batch = subprocess.run(
        ["git", "cat-file", "--batch"],
        cwd=bare,
        input="".join(f"main:{p}\n" for p in paths).encode(),
        capture_output=True,
        check=True,
    ).stdout
    reports, at = {}, 0
    for path in paths:
        header_end = batch.index(b"\n", at)
        size = int(batch[at:header_end].split()[2])
        reports[path] = batch[header_end + 1 : header_end + 1 + size].decode(errors="replace")
        at = header_end + 1 + size + 1
    return reports


def test_every_report_this_session_committed_renders_right() -> None:
    gone = missing_tools()
    if gone:
        pytest.fail(f"render tools missing: {', '.join(gone)}; run `make cluster`", pytrace=False)
    diagrams: list[Diagram] = []
    files = 0
    for bare in REMOTES:
        if not bare.exists():
            continue
        for path, text in committed_reports(bare).items():
            files += 1
            diagrams += diagrams_of(f"{bare.parent.name}/{path}", text)
    assert files > 0 and diagrams, "the session committed no report to render"
    texts = {d.id: d for d in diagrams}
    for install in INSTALLS:
        result = render(install, diagrams)
        errors = [f"{d['id']}: {d['error'][:300]}" for d in result["diagrams"] if "error" in d]
        assert errors == [], f"Mermaid {result['mermaid']}:\n" + "\n".join(errors)
        wrong, small = {}, {}
        for drawn in result["diagrams"]:
            source = texts[drawn["id"]]
            if source.kind == "gantt" and (bad := disproportionate_bars(source.text, drawn["svg"])):
                wrong[drawn["id"]] = bad
            if source.kind == "flowchart" and (px := text_px_in_column(drawn["svg"])) < MIN_TEXT_PX:
                small[drawn["id"]] = round(px, 1)
        assert wrong == {}, f"Mermaid {result['mermaid']}: bars out of proportion: {wrong}"
        assert small == {}, f"Mermaid {result['mermaid']}: text under {MIN_TEXT_PX} px: {small}"
        report(
            f"render check: {files} reports of this session, {len(diagrams)} diagrams drawn"
            f" by Mermaid {result['mermaid']} without an error"
        )
