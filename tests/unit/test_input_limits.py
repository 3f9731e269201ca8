"""Manifests bounded per file and per revision, and parsed off the event loop: a pusher
must not take the daemon's memory or stall it past its lease. Reproduced before: 32
documents in an 18 KB file took 505 MB and 30 s (the alias limit was per document); 40
compressible 8 MiB files in one push took 714 MB and 162 s, on the event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from reconciler.gitops import desired
from reconciler.gitops.desired import ManifestCache
from reconciler.gitops.plumbing import TreeEntry
from reconciler.manifest.loader import LoadResult, load_text

# one document expanding to 1 + 3 * 100 * 100 * 40 ... about 400,000 nodes, 300 bytes
DOCUMENT = (
    "a: &a [" + ", ".join(["1"] * 100) + "]\n"
    "b: &b [" + ", ".join(["*a"] * 100) + "]\n"
    "c: [" + ", ".join(["*b"] * 40) + "]\n"
)


def test_the_alias_limit_holds_for_a_whole_file_not_only_for_each_document() -> None:
    one = load_text(DOCUMENT, "one.yaml")
    assert not any("nodes" in i.message for i in one.issues)  # one document is allowed
    three = load_text("---\n".join([DOCUMENT] * 3), "three.yaml")
    (issue,) = three.issues
    assert "the file expands to over 1,000,000 nodes" in issue.message


class FakeGit:
    """A tree listing and its blobs; reading blobs of a refused revision is a failure."""

    def __init__(self, files: dict[str, bytes], sizes: dict[str, int] | None = None) -> None:
        self.files = files
        self.sizes = sizes or {}
        self.reads = 0

    async def ls_tree(self, commit: str, folder: str) -> list[TreeEntry]:
        return [
            TreeEntry("100644", "blob", f"sha-{p}", self.sizes.get(p, len(c)), p)
            for p, c in self.files.items()
        ]

    async def read_blobs(self, shas: list[str]) -> dict[str, bytes]:
        self.reads += 1
        return {f"sha-{p}": c for p, c in self.files.items() if f"sha-{p}" in shas}


def desired_of(git: FakeGit) -> LoadResult:
    return asyncio.run(ManifestCache().desired(git, "head", "workflows/"))  # type: ignore[arg-type]


def test_a_revision_over_the_byte_limit_runs_nothing_and_reads_nothing() -> None:
    files = {f"workflows/w{i}.yaml": b"x" for i in range(40)}
    git = FakeGit(files, {p: 8 * 1024 * 1024 - 1 for p in files})  # each under the file limit
    result = desired_of(git)
    (issue,) = result.issues
    assert result.workflows == [] and git.reads == 0
    assert issue.file == "workflows/" and "over the 67,108,864 limit" in issue.message


def test_a_revision_over_the_node_limit_runs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(desired, "MAX_REVISION_NODES", 500_000)
    files = {f"workflows/w{i}.yaml": DOCUMENT.encode() for i in range(2)}  # 2 x ~400,000
    (issue,) = desired_of(FakeGit(files)).issues
    assert "YAML nodes, over the 500,000 limit" in issue.message


def test_parsing_runs_off_the_event_loop_within_a_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def slow_load(raw: Any, path: str, policy: Any) -> LoadResult:
        time.sleep(1.0)
        return LoadResult()

    monkeypatch.setattr(desired, "load_text", slow_load)
    monkeypatch.setattr(desired, "PARSE_DEADLINE", 0.3)

    async def main() -> tuple[LoadResult, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        beat = asyncio.create_task(ticker())
        result = await ManifestCache().desired(
            FakeGit({"workflows/slow.yaml": b"x: 1\n"}),
            "head",
            "workflows/",  # type: ignore[arg-type]
        )
        beat.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    (issue,) = result.issues
    assert "took over 0.3 s to parse" in issue.message
    assert ticks >= 5, "the event loop stood still while a file was parsed"


def test_a_file_over_its_own_limit_does_not_count_against_the_revision() -> None:
    """It is refused alone (and never read); the rest of the revision runs."""
    valid = (
        b"apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\nmetadata: {name: ok}\nspec:\n"
        b"  steps:\n    - {name: s, action: ScaleDeployment, target: {namespace: ns, name: web},"
        b" params: {replicas: 1}}\n"
    )
    git = FakeGit(
        {"workflows/huge.yaml": b"", "workflows/ok.yaml": valid},
        {"workflows/huge.yaml": 100 * 1024 * 1024},
    )
    result = desired_of(git)
    assert [w.name for w in result.workflows] == ["ok"]
    (issue,) = result.issues
    assert issue.file == "workflows/huge.yaml" and "over the 8 MiB limit" in issue.message
