"""A mirror that never downloads a blob over the manifest file limit (a partial clone,
`--filter=blob:limit`): a push of a 100 MB file costs the daemon neither the transfer nor
the disk. Git is told never to fetch a missing blob on demand (GIT_NO_LAZY_FETCH): a
listing that asked for its size would otherwise download it after all. Servers without
filter support (uploadpack.allowFilter off) send everything; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from reconciler.gitops.plumbing import TreeEntry, parse_ls_tree
from reconciler.manifest.yamlsource import MAX_FILE_BYTES

FILTER = f"blob:limit={MAX_FILE_BYTES + 1}"  # omits blobs of this size and up
FETCH_FILTER = f"--filter={FILTER}"
ENVIRONMENT = {"GIT_NO_LAZY_FETCH": "1"}

Git = Callable[..., Awaitable[bytes]]


async def ls_tree(git: Git, commit: str, folder: str) -> list[TreeEntry]:
    """`ls-tree -r -l` that works with blobs missing: their size is None (over the limit,
    never fetched)."""
    listed = parse_ls_tree(await git("ls-tree", "-r", "-z", "--full-tree", commit, "--", folder))
    objects = await git("rev-list", "--objects", "--missing=print", "--no-walk", commit)
    missing = {line[1:].split()[0] for line in objects.decode().splitlines() if line[:1] == "?"}
    present = sorted({e.sha for e in listed if e.kind == "blob" and e.sha not in missing})
    sizes: dict[str, int] = {}
    if present:
        out = await git(
            "cat-file",
            "--batch-check=%(objectname) %(objectsize)",
            stdin="".join(f"{sha}\n" for sha in present).encode(),
        )
        for line in out.decode().splitlines():
            sha, _, size = line.partition(" ")
            if size.isdigit():
                sizes[sha] = int(size)
    return [replace(e, size=sizes.get(e.sha)) if e.kind == "blob" else e for e in listed]
