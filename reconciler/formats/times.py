"""Times and durations as records print them: RFC 3339 in UTC with milliseconds, and
durations the way manifests write them ("1m30s")."""

from __future__ import annotations

from datetime import UTC, datetime

from reconciler.manifest.durations import format_duration


def time_text(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def duration_text(start: float | None, end: float | None) -> str | None:
    if start is None or end is None:
        return None
    return format_duration(max(0.0, end - start))
