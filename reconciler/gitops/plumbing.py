"""What git's plumbing commands print, parsed: `ls-tree -r -l -z`, `cat-file --batch` and
the FETCH_HEAD a fetch writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TreeEntry:
    mode: str  # 100644 file, 100755 executable, 120000 symlink
    kind: str  # blob | tree | commit
    sha: str
    size: int | None  # bytes, known before reading; None: not fetched (gitops/partial.py)
    path: str


def parse_ls_tree(out: bytes) -> list[TreeEntry]:
    entries = []
    for item in out.split(b"\0"):
        if not item:
            continue
        meta, _, raw_name = item.partition(b"\t")
        mode, kind, sha, *sized = meta.decode().split()  # ls-tree -l adds the size
        size = sized[0] if sized else "-"
        name = raw_name.decode("utf-8", errors="surrogateescape")
        entries.append(TreeEntry(mode, kind, sha, int(size) if size.isdigit() else 0, name))
    return entries


def parse_cat_file_batch(out: bytes, shas: Sequence[str]) -> tuple[dict[str, bytes], list[str]]:
    """The blobs, in the order asked, and the objects git said were missing."""
    blobs: dict[str, bytes] = {}
    missing: list[str] = []
    pos = 0
    for sha in shas:
        header_end = out.index(b"\n", pos)
        header = out[pos:header_end].split()
        if len(header) < 3 or header[1] == b"missing":
            missing.append(sha)
            pos = header_end + 1
            continue
        size = int(header[2])
        blobs[sha] = out[header_end + 1 : header_end + 1 + size]
        pos = header_end + 1 + size + 1
    return blobs, missing


def parse_fetch_head(raw: bytes) -> str | None:
    """The commit of the first ref a fetch wrote to FETCH_HEAD (git-fetch(1): "<sha>\t
    [not-for-merge]\t<what> of <url>" per ref), or None if it wrote none."""
    first = raw.split(b"\n", 1)[0].split(b"\t", 1)[0].strip().decode("ascii", "replace")
    return first if len(first) in (40, 64) and all(c in "0123456789abcdef" for c in first) else None
