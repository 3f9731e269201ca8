"""The one owner of escaping (formats/escaping.py): whatever a name or message holds, a
table keeps its columns, nothing becomes HTML or a link, and a Mermaid label never ends
early. The real renderers check the same on rendered pages (tests/e2e/test_report_render.py)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from reconciler.formats.escaping import (
    gantt_task_text,
    markdown_code,
    markdown_text,
    mermaid_text,
)

TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)


@given(TEXT)
def test_a_markdown_cell_keeps_its_columns_and_holds_no_markup(text: str) -> None:
    cell = markdown_text(text)
    assert "\n" not in cell and "\r" not in cell
    assert not re.search(r"(?<!\\)\|", cell)  # every pipe escaped
    assert "<" not in cell and not re.search(r"&(?!amp;|lt;)#?\w+;", cell)  # no HTML, no entity
    assert not re.search(r"(?<!\\)[`*_\[\]]", cell)


@given(TEXT)
def test_a_code_span_is_never_closed_early(text: str) -> None:
    span = markdown_code(text)
    fence = re.match(r"`+", span).group()  # type: ignore[union-attr]
    inner = span[len(fence) : -len(fence)]
    assert fence not in inner and "\n" not in span
    assert not re.search(r"(?<!\\)\|", inner)


@given(TEXT)
def test_a_mermaid_label_holds_none_of_the_characters_that_end_it(text: str) -> None:
    label = mermaid_text(text)
    without_entities = re.sub(r"#\w+;", "", label)
    assert not set(without_entities) & set('"#:;<>&|`%{}\n')


def test_examples() -> None:
    assert markdown_text("a|b <b>x</b> [l](u)") == "a\\|b &lt;b>x&lt;/b> \\[l\\](u)"
    assert markdown_text("x > 0.1 &amp; y") == "x > 0.1 &amp;amp; y"
    assert markdown_code("x|y") == "`x\\|y`" and markdown_code("a`b") == "``a`b``"
    assert mermaid_text('say "hi": 1; #2') == "say #quot;hi#quot;#58; 1#59; #35;2"
    assert gantt_task_text("section x") == "#115;ection x"  # not a gantt statement
    assert gantt_task_text("sectional") == "sectional"
