"""The desired set re-reads only what changed, on real git revisions: the soak test once
checked this from inside the daemon; now it runs the daemon from outside, so it is here."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from reconciler.gitops.desired import ManifestCache
from reconciler.gitops.git import GitRepo


def sh(*args: str, cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def workflow(name: str, replicas: int) -> str:
    return (
        f"apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: {name}}}\n"
        "spec:\n  steps:\n    - {name: s, action: ScaleDeployment,"
        f" target: {{namespace: ns, name: web}}, params: {{replicas: {replicas}}}}}\n"
    )


def test_a_revision_changing_one_file_parses_one_and_forgets_the_old_blob(tmp_path: Path) -> None:
    bare, clone = tmp_path / "remote.git", tmp_path / "clone"
    sh("git", "init", "--bare", "--quiet", "-b", "main", str(bare), cwd=tmp_path)
    sh("git", "clone", "--quiet", str(bare), str(clone), cwd=tmp_path)
    (clone / "workflows").mkdir()
    for i in range(20):
        (clone / "workflows" / f"w{i}.yaml").write_text(workflow(f"w{i}", 1))

    def push(message: str) -> None:
        sh("git", "add", "-A", cwd=clone)
        sh("git", "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", message, cwd=clone)
        sh("git", "push", "--quiet", "origin", "HEAD:main", cwd=clone)

    push("twenty")
    git = GitRepo(url=str(bare), workdir=tmp_path / "work", branch="main")
    cache = ManifestCache()

    async def desired() -> list[str]:
        head = await git.fetch()
        assert head is not None
        result = await cache.desired(git, head, "workflows/")
        assert result.ok, result.issues
        return sorted(w.run_id for w in result.workflows)

    async def main() -> None:
        await git.ensure()
        first = await desired()
        assert cache.parsed == 20 and len(first) == 20
        for revision in range(1, 11):  # ten revisions, each changing one file
            (clone / "workflows" / "w3.yaml").write_text(workflow("w3", revision + 1))
            push(f"w3 at {revision + 1}")
            ids = await desired()
            assert len(set(ids) - set(first)) == 1
        (clone / "README.md").write_text("unrelated\n")
        push("not a workflow")
        await desired()

    asyncio.run(main())
    assert cache.parsed == 20 + 10  # one parse per changed file, none for the README commit
    assert len(cache.entries) == 20  # the replaced blobs are forgotten: memory is bounded
