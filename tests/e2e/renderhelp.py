"""The render check's driver: run reports' Mermaid diagrams and whole pages through the real
renderer, Mermaid in headless Chromium (tests/render/render.mjs), at the two pinned installs
tests/render/build.sh made (the oldest and the newest Mermaid GitHub and GitLab are known to
serve), and read what a reviewer would see from the SVGs and the live pages.

Pages are the report's Markdown made HTML by cmark-gfm (GitHub's own renderer) in GitHub's
784 px column."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cmarkgfm

RENDER = Path(__file__).resolve().parents[1] / "render"
INSTALLS = ("oldest", "newest")
CHROMIUM = Path("/usr/bin/chromium")
COLUMN_PX = 784  # the width GitHub gives a Markdown file's content
MIN_TEXT_PX = 9.0  # the smallest diagram text we call readable, once scaled to the column
SVG = "{http://www.w3.org/2000/svg}"
_BLOCK = re.compile(r"^```mermaid\n(.*?)^```", re.S | re.M)
_TASK = re.compile(r"^\s+.*:(?P<tags>[^:\n]*?),\s*(?P<start>-?\d+),\s*(?P<end>-?\d+)\s*$", re.M)


def cache_root() -> Path:
    return Path(os.environ.get("RECONCILER_CACHE", Path.home() / ".cache" / "reconciler"))


def install_dir(install: str) -> Path:
    """Where build.sh installed it: keyed by its lock file, so a changed pin reinstalls."""
    lock = (RENDER / f"mermaid-{install}" / "package-lock.json").read_bytes()
    return cache_root() / "render" / f"mermaid-{install}-{hashlib.sha256(lock).hexdigest()[:12]}"


def missing_tools() -> list[str]:
    gone = [str(CHROMIUM)] if not CHROMIUM.exists() else []
    gone += [str(d) for i in INSTALLS if not ((d := install_dir(i)) / ".installed").exists()]
    if shutil.which("node") is None:
        gone.append("node")
    return gone


@dataclass
class Diagram:
    id: str  # where it came from: "<report>#<n>"
    text: str

    @property
    def kind(self) -> str:
        return self.text.split(None, 1)[0]


def diagrams_of(name: str, markdown: str) -> list[Diagram]:
    return [Diagram(f"{name}#{n}", m.group(1)) for n, m in enumerate(_BLOCK.finditer(markdown))]


def page_html(markdown: str) -> str:
    """The report as GitHub's Markdown view shows it (close enough to measure: its renderer,
    its column width, tables with borders)."""
    body = cmarkgfm.github_flavored_markdown_to_html(markdown)
    style = (
        "body{margin:0;font-family:-apple-system,'Segoe UI','Liberation Sans',Arial,sans-serif;"
        "font-size:16px;line-height:1.5}"
        f"article{{box-sizing:border-box;width:{COLUMN_PX + 32}px;padding:16px}}"
        "table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:6px 13px}"
        "pre{background:#f6f8fa;padding:16px;overflow:auto}.diagram svg{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head>"
        f"<body><article>{body}</article></body></html>"
    )


def render(
    install: str,
    diagrams: Sequence[Diagram],
    pages: Sequence[tuple[str, str, Path | None]] = (),
    cli: Sequence[Diagram] = (),
    timeout: float = 600,
) -> dict:
    """Render with one install: every diagram (its SVG or error), `cli` again through
    mermaid-cli's renderMermaid(), and `pages` (id, markdown, png path) as whole pages."""
    where = install_dir(install)
    shutil.copy(RENDER / "render.mjs", where / "render.mjs")
    with tempfile.TemporaryDirectory(prefix="reconciler-render-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(
            json.dumps(
                {
                    "chromium": str(CHROMIUM),
                    "out": str(out),
                    "diagrams": [{"id": d.id, "text": d.text} for d in diagrams],
                    "cli": [{"id": d.id, "text": d.text} for d in cli],
                    "pages": [
                        {"id": i, "html": page_html(md), "png": str(png) if png else None}
                        for i, md, png in pages
                    ],
                }
            )
        )
        done = subprocess.run(
            ["node", str(where / "render.mjs"), str(job)],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0 or not out.exists():
            raise AssertionError(f"the renderer ({install}) failed: {done.stderr[-3000:]}")
        return json.loads(out.read_text())


def task_spans(text: str) -> dict[str, tuple[int, int, str]]:
    """A gantt's tasks as written: id -> (start ms, end ms, tags)."""
    spans = {}
    for m in _TASK.finditer(text):
        tags = [t.strip() for t in m.group("tags").split(",")]
        spans[tags[-1]] = (int(m.group("start")), int(m.group("end")), ",".join(tags[:-1]))
    return spans


@dataclass
class Bar:
    """A rendered gantt task: its bar and its label, in the SVG's units."""

    width: float
    y: float
    text: str
    milestone: bool


def gantt_bars(svg: str) -> dict[str, Bar]:
    """A rendered gantt's bars by task id (Mermaid prefixes ids with the diagram's)."""
    root = ET.fromstring(svg)
    texts = {
        (t.get("id") or "").removesuffix("-text").rsplit("-", 1)[-1]: "".join(t.itertext())
        for t in root.iter(f"{SVG}text")
        if (t.get("id") or "").endswith("-text")
    }
    bars = {}
    for rect in root.iter(f"{SVG}rect"):
        classes = (rect.get("class") or "").split()
        if "task" in classes and rect.get("id"):
            task = rect.get("id", "").rsplit("-", 1)[-1]
            bars[task] = Bar(
                float(rect.get("width", "0")),
                float(rect.get("y", "0")),
                texts.get(task, "").strip(),
                "milestone" in classes,
            )
    return bars


def bar_widths(svg: str) -> dict[str, float]:
    return {task: bar.width for task, bar in gantt_bars(svg).items()}


def text_px_in_column(svg: str, font_px: float = 16) -> float:
    """How tall a diagram's text is once scaled to GitHub's column (never scaled up)."""
    root = re.search(r"<svg[^>]*>", svg)
    box = re.search(r'viewBox="[-\d.]+ [-\d.]+ ([\d.]+) [\d.]+"', root.group(0) if root else "")
    width = float(box.group(1)) if box else COLUMN_PX
    return font_px * min(1.0, COLUMN_PX / width)


def disproportionate_bars(text: str, svg: str, tolerance: float = 0.05) -> list[str]:
    """Bars whose widths are not in proportion to their durations (milestones aside):
    what Mermaid 11.12's seconds bug did to every bar."""
    spans = {k: v for k, v in task_spans(text).items() if "milestone" not in v[2]}
    widths = bar_widths(svg)
    if len(spans) < 2:
        return []
    missing = sorted(set(spans) - set(widths))
    if missing:
        return [f"no bar drawn for {', '.join(missing)}"]
    longest = max(spans, key=lambda k: spans[k][1] - spans[k][0])
    scale = widths[longest] / max(1, spans[longest][1] - spans[longest][0])
    wrong = []
    for task, (start, end, _tags) in spans.items():
        expected = (end - start) * scale
        if abs(widths[task] - expected) > max(2.0, tolerance * expected):
            wrong.append(f"{task}: {widths[task]:.1f} wide, {expected:.1f} expected")
    return wrong
