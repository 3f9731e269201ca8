"""Markdown tables as the records write them: GFM for pull requests, and columns padded so
the same file reads as a table in a terminal (`git show`). The cells come escaped
(formats/escaping.py); a column is padded to its widest cell up to PAD_UP_TO characters,
so one long message does not push every row off the screen."""

from __future__ import annotations

from collections.abc import Sequence

PAD_UP_TO = 40


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(c) for c in row] for row in rows]
    widths = [
        min(PAD_UP_TO, max([len(h), 3, *(len(r[i]) for r in cells)])) for i, h in enumerate(headers)
    ]
    widths[-1] = max(len(headers[-1]), 3)  # the last column is not padded: nothing follows it

    def line(values: Sequence[str]) -> str:
        padded = [v.ljust(w) for v, w in zip(values, widths, strict=True)]
        return ("| " + " | ".join(padded)).rstrip() + " |"

    return [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)]
