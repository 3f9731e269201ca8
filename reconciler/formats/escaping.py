"""Text from workflows and the cluster (names, messages, logs) placed into the Markdown and
Mermaid the records are read as: the one owner of how it is escaped, so a `|`, `<b>`, `:` or
backtick in a name or message shows as itself and never shifts a table, turns into HTML or a
link, or breaks a diagram. Checked by the real renderers (tests/e2e/test_zz_report_render.py).
"""

from __future__ import annotations

import re

# GFM: a backslash makes any ASCII punctuation literal; `|` needs it even in a table's code
# span. `<` becomes an entity, so `<b>` and `<none>` show as typed (never HTML, never an
# autolink), and so does the `&` of what would be read as an entity; `>` stays (harmless
# inside a line, and "result > 0.1" reads as it is in a terminal).
_MARKDOWN_ESCAPED = re.compile(r"([\\`*_\[\]|~])")
_ENTITY_LIKE = re.compile(r"&(?=#?\w+;)")

# Mermaid: entity codes (`#quot;`, `#58;`) are decoded in every diagram type after parsing,
# so the parser never sees the characters that end a label, a task or a statement, or start
# a comment, and labels (HTML in flowcharts) never carry markup.
_MERMAID_ENTITIES = {
    "#": "#35;",
    '"': "#quot;",
    ":": "#58;",
    ";": "#59;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "|": "#124;",
    "`": "#96;",
    "%": "#37;",
    "{": "#123;",
    "}": "#125;",
}
_MERMAID_SPECIAL = re.compile("[" + re.escape("".join(_MERMAID_ENTITIES)) + "]")
# words that start a gantt statement when a task's text begins with them
_GANTT_KEYWORDS = re.compile(
    r"(?i)(section|title|dateformat|axisformat|tickinterval|excludes|includes|todaymarker|"
    r"weekday|weekend|inclusiveenddates|topaxis|click|acctitle|accdescr|displaymode)\b"
)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def markdown_text(text: object) -> str:
    """Literal text in a Markdown paragraph or table cell, on one line."""
    escaped = _MARKDOWN_ESCAPED.sub(r"\\\1", _one_line(text))
    return _ENTITY_LIKE.sub("&amp;", escaped).replace("<", "&lt;")


def markdown_code(text: object) -> str:
    """Text as a code span (ids, hashes, queries), also inside a table cell."""
    body = _one_line(text).replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def mermaid_text(text: object) -> str:
    """Literal text in a Mermaid label (a flowchart node's quoted label, a gantt task)."""
    return _MERMAID_SPECIAL.sub(lambda m: _MERMAID_ENTITIES[m.group()], _one_line(text))


def gantt_task_text(text: object) -> str:
    """A gantt task's text: escaped, and never read as a statement (`section ...`)."""
    escaped = mermaid_text(text)
    if _GANTT_KEYWORDS.match(escaped):
        escaped = f"#{ord(escaped[0])};{escaped[1:]}"
    return escaped
