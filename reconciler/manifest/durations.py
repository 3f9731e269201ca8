"""Go-style durations (`90s`, `5m`, `1h30m`, `250ms`), the format kubectl and Argo users know."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
# Anchored whole-string form, also exported into the JSON Schema so editors check it.
DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|h|m|s))+$"
_WHOLE = re.compile(DURATION_PATTERN)


def parse_duration(text: str) -> float:
    """Return seconds for a Go-style duration string; ValueError names what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"a duration must be a string such as '90s' or '5m', not {text!r}")
    if not _WHOLE.match(text):
        raise ValueError(
            f"invalid duration {text!r}: use numbers with units ms, s, m, h (e.g. '90s', '1h30m')"
        )
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be greater than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """Exact Go-style string for a number of seconds: `1h30m`, `1s500ms`, `250ms`.

    Exact (to the millisecond) because it is also how durations are serialised, and
    `parse_duration(format_duration(x)) == x` must hold for anything a manifest can say.
    """
    total_ms = round(seconds * 1000)
    if total_ms == 0:
        return "0s"
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s"), (ms, "ms")]
    return "".join(f"{value}{unit}" for value, unit in parts if value)
