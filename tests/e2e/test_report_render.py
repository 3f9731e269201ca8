"""Run reports render right in the real renderer (issue 16): a generated set of records
(tests/e2e/report_corpus.py: 1 to 200 steps, sub-second and multi-hour runs, every phase,
rollbacks with failed and irreversible undos, hostile names and messages) made Markdown by
the daemon's own renderer, then drawn by Mermaid in headless Chromium at the oldest and the
newest Mermaid GitHub and GitLab serve, as diagrams and as whole GitHub-like pages.

RECONCILER_DOCS_IMAGES=1 also writes the rollback report's screenshot to docs/images/ (the
one docs/records.md shows)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from figures import report
from renderhelp import (
    INSTALLS,
    MIN_TEXT_PX,
    diagrams_of,
    disproportionate_bars,
    gantt_bars,
    missing_tools,
    render,
    task_spans,
    text_px_in_column,
)
from report_corpus import HOSTILE, cases

from reconciler.formats.run_markdown import render_markdown

DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "report-rollback.png"
PAGES = ("rollback-failed", "sub-second", "hostile", "chain-40")  # whole pages, screenshotted


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict:
    gone = missing_tools()
    if gone:
        pytest.fail(f"render tools missing: {', '.join(gone)}; run `make cluster`", pytrace=False)
    markdown = {c.name: render_markdown(c.record, f"workflows/{c.name}.yaml") for c in cases()}
    diagrams = [d for name, md in markdown.items() for d in diagrams_of(name, md)]
    cli = [d for d in diagrams if d.id.split("#")[0] in ("hostile", "rollback-failed")]
    shots = tmp_path_factory.mktemp("screenshots")
    out: dict = {"markdown": markdown, "shots": shots, "diagrams": diagrams}
    for install in INSTALLS:
        pages = [(n, markdown[n], shots / f"{install}-{n}.png") for n in PAGES]
        out[install] = render(install, diagrams, pages, cli)
    return out


def out_of_proportion(measured: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """(row, seconds, px wide) -> the rows not drawn in proportion to the median px per
    second (within 5% or 1.5 px): (row, px drawn, px in proportion)."""
    px_per_second = sorted(w / s for _, s, w in measured)[len(measured) // 2]
    return [
        (prefix, round(width, 1), round(seconds * px_per_second, 1))
        for prefix, seconds, width in measured
        if abs(width - seconds * px_per_second) > max(1.5, 0.05 * seconds * px_per_second)
    ]


def drawn(rendered: dict, install: str, kind: str) -> dict[str, tuple[str, str]]:
    """Diagram id -> (its text, its SVG) of one kind."""
    texts = {d.id: d.text for d in rendered["diagrams"] if d.kind == kind}
    return {
        d["id"]: (texts[d["id"]], d["svg"])
        for d in rendered[install]["diagrams"]
        if d["id"] in texts and "svg" in d
    }


@pytest.mark.parametrize("install", INSTALLS)
def test_every_generated_diagram_renders_and_mermaid_cli_agrees(rendered, install: str) -> None:
    result = rendered[install]
    errors = [f"{d['id']}: {d['error']}" for d in result["diagrams"] if "error" in d]
    assert errors == [], f"Mermaid {result['mermaid']}:\n" + "\n".join(errors)
    assert len(result["diagrams"]) == len(rendered["diagrams"]) > 20
    cli_errors = [f"{d['id']}: {d['error']}" for d in result["cli"] if "error" in d]
    assert cli_errors == [] and len(result["cli"]) >= 4, cli_errors
    page_errors = [(p["id"], p["errors"]) for p in result["pages"] if p["errors"]]
    assert page_errors == [], page_errors
    assert len(result["pages"]) == len(PAGES)
    assert not any(d["errorImage"] for p in result["pages"] for d in p["diagrams"])
    report(
        f"render check, generated set: {len(result['diagrams'])} diagrams and"
        f" {len(PAGES)} pages drawn by Mermaid {result['mermaid']}"
    )


@pytest.mark.parametrize("install", INSTALLS)
def test_gantt_bars_are_in_proportion_to_durations(rendered, install: str) -> None:
    gantts = drawn(rendered, install, "gantt")
    wrong = {
        i: bad for i, (text, svg) in gantts.items() if (bad := disproportionate_bars(text, svg))
    }
    assert wrong == {}, f"Mermaid {rendered[install]['mermaid']}: {wrong}"
    # against the real durations, not only the text: sub-second and multi-hour runs
    for case in cases():
        if not case.bars:
            continue
        bars = gantt_bars(next(svg for i, (_, svg) in gantts.items() if i.startswith(case.name)))
        measured = []
        for prefix, seconds in case.bars:
            bar = next(b for b in bars.values() if b.text.startswith(prefix))
            measured.append((prefix, seconds, bar.width))
        off = out_of_proportion(measured)
        assert off == [], (case.name, "(row, px drawn, px in proportion)", off)


@pytest.mark.parametrize("install", INSTALLS)
def test_rollback_rows_are_numbered_in_the_order_they_ran(rendered, install: str) -> None:
    gantts = drawn(rendered, install, "gantt")
    for case in cases():
        if not case.undo_order:
            continue
        bars = gantt_bars(next(svg for i, (_, svg) in gantts.items() if i.startswith(case.name)))
        ys = [next(b.y for b in bars.values() if b.text.startswith(p)) for p in case.undo_order]
        assert ys == sorted(ys), (case.name, list(zip(case.undo_order, ys, strict=True)))
        milestones = [b.text for b in bars.values() if b.milestone]
        if case.name == "rollback-irreversible":
            assert milestones == ["2. drain · irreversible, nothing undone"], milestones
        else:
            assert milestones == [] and any("undo FAILED" in b.text for b in bars.values())


@pytest.mark.parametrize("install", INSTALLS)
def test_hostile_names_and_messages_show_as_typed(rendered, install: str) -> None:
    page = next(p for p in rendered[install]["pages"] if p["id"] == "hostile")
    for hostile in HOSTILE:
        assert hostile in page["text"], f"{hostile!r} not shown as typed"  # in the tables
    assert 'hostile: "name" | <b>x</b>' in page["text"]  # the workflow's name, in the heading
    labels = [lb["text"] for d in page["diagrams"] for lb in d["labels"]]
    assert any(label.startswith("section x") for label in labels), labels  # a task, not a section


@pytest.mark.parametrize("install", INSTALLS)
def test_graphs_are_readable_at_githubs_column_width(rendered, install: str) -> None:
    sizes = {
        i.split("#")[0]: round(text_px_in_column(svg), 1)
        for i, (_, svg) in drawn(rendered, install, "flowchart").items()
    }
    small = {name: px for name, px in sizes.items() if px < MIN_TEXT_PX}
    assert small == {}, f"text under {MIN_TEXT_PX} px at GitHub's 784 px: {small}"
    tables = [n for n, md in rendered["markdown"].items() if "| level | steps |" in md]
    assert {"wide-200-by-10", "chain-200", "fan-out-40"} <= set(tables), tables
    assert {"wide-120-by-30", "wide-120-by-4", "chain-40"} <= set(sizes)  # still drawn
    report(f"graph text px at GitHub's column, Mermaid {rendered[install]['mermaid']}: {sizes}")
    report(f"  as a table of levels instead: {tables}")


@pytest.mark.parametrize("install", INSTALLS)
def test_on_the_whole_page_bars_are_in_proportion_and_undos_in_order(rendered, install) -> None:
    """What a reviewer sees: the gantt as drawn in the page, scaled to the column."""
    by_name = {c.name: c for c in cases()}
    for page in rendered[install]["pages"]:
        case = by_name[page["id"]]
        gantt = next(d for d in page["diagrams"] if d["kind"] == "gantt")
        label_of = {lb["id"].removesuffix("-text"): lb for lb in gantt["labels"]}
        drawn = [
            (label_of[t["id"]]["text"], t["width"]) for t in gantt["tasks"] if t["id"] in label_of
        ]
        measured = [
            (prefix, seconds, next(w for text, w in drawn if text.startswith(prefix)))
            for prefix, seconds in case.bars
        ]
        if measured:
            off = out_of_proportion(measured)
            assert off == [], (page["id"], "(row, px drawn, px in proportion)", off)
        ys = [
            next(lb["y"] for lb in gantt["labels"] if lb["text"].startswith(prefix))
            for prefix in case.undo_order
        ]
        assert ys == sorted(ys), (page["id"], ys)
    assert any(by_name[p["id"]].undo_order for p in rendered[install]["pages"])


def test_screenshots_of_whole_reports(rendered) -> None:
    shots: Path = rendered["shots"]
    for install in INSTALLS:
        for name in PAGES:
            png = shots / f"{install}-{name}.png"
            assert png.stat().st_size > 10_000, png  # a page, not a blank
    if os.environ.get("RECONCILER_DOCS_IMAGES") == "1":
        DOCS_IMAGE.parent.mkdir(exist_ok=True)
        shutil.copy(shots / "newest-rollback-failed.png", DOCS_IMAGE)
    report(f"render check screenshots: {shots}")


def test_the_timeline_says_what_its_axis_counts() -> None:
    for case in cases():
        md = render_markdown(case.record, None)
        if "```mermaid\ngantt" in md:
            assert "from the run's start" in md and "(UTC)" in md
            spans = task_spans(next(d.text for d in diagrams_of("x", md) if d.kind == "gantt"))
            assert min(start for start, _, _ in spans.values()) >= 0
