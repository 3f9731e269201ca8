"""The one error type users see for bad manifests: file, line, column, field path, message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

FieldPath = tuple[str | int, ...]


def format_path(path: FieldPath) -> str:
    """`('spec', 'steps', 2, 'params')` -> `spec.steps[2].params`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True)
class ManifestIssue:
    file: str
    line: int  # 1-based; 0 when the file could not be read at all
    column: int  # 1-based
    message: str
    path: FieldPath = ()

    def __str__(self) -> str:
        # line 0: about the whole file or folder (unreadable, too large, no workflows)
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        field_part = f" {format_path(self.path)}:" if self.path else ""
        return f"{where}:{field_part} {self.message}"


@dataclass
class ManifestError(Exception):
    """Raised by the loader; carries every issue found, not just the first."""

    issues: Sequence[ManifestIssue] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)
