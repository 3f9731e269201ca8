"""Desired-vs-applied benchmark: time to work out the desired set of a 10,000-manifest
repository after a one-file change (the daemon's incremental cache) against re-reading
everything (the baseline), measured in the same run on the same commits.

Run: `make bench` or `python bench/diff_bench.py [--files 10000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reconciler.gitops.desired import ManifestCache
from reconciler.gitops.git import GitRepo

WORKFLOW = """apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata:
  name: wf-{i}
spec:
  maxConcurrent: 2
  steps:
    - name: scale
      action: ScaleDeployment
      target: {{namespace: ns-{ns}, name: app-{i}}}
      params: {{replicas: {replicas}}}
      timeout: 2m
    - name: image
      action: UpdateImage
      dependsOn: [scale]
      target: {{namespace: ns-{ns}, name: app-{i}}}
      params: {{container: app, image: "registry.example/app:{i}.0"}}
"""


def fast_import(bare: Path, files: int, changed: int | None) -> None:
    """Two commits via git fast-import: all files, then one file changed."""
    lines: list[bytes] = []

    def blob(mark: int, text: str) -> None:
        data = text.encode()
        lines.extend([b"blob", f"mark :{mark}".encode(), f"data {len(data)}".encode(), data])

    for i in range(files):
        blob(i + 1, WORKFLOW.format(i=i, ns=i % 50, replicas=2))
    lines += [
        b"commit refs/heads/main",
        b"committer bench <b@x> 1700000000 +0000",
        b"data 3",
        b"all",
    ]
    lines += [f"M 100644 :{i + 1} workflows/wf-{i}.yaml".encode() for i in range(files)]
    if changed is not None:
        blob(files + 1, WORKFLOW.format(i=changed, ns=changed % 50, replicas=3))
        lines += [
            b"commit refs/heads/main",
            b"committer bench <b@x> 1700000001 +0000",
            b"data 3",
            b"one",
            f"M 100644 :{files + 1} workflows/wf-{changed}.yaml".encode(),
        ]
    subprocess.run(
        ["git", "fast-import", "--quiet"], cwd=bare, input=b"\n".join(lines) + b"\n", check=True
    )


async def measure(files: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "remote.git"
        subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(bare)], check=True)
        fast_import(bare, files, changed=files // 2)
        git = GitRepo(url=str(bare), workdir=Path(tmp) / "work")
        await git.ensure()
        head = await git.fetch()
        assert head is not None
        parent = (await git.git("rev-parse", f"{head}^")).decode().strip()

        cache = ManifestCache()
        t0 = time.perf_counter()
        first = await cache.desired(git, parent, "workflows/")
        cold = time.perf_counter() - t0
        parsed_cold = cache.parsed

        t0 = time.perf_counter()
        second = await cache.desired(git, head, "workflows/")
        incremental = time.perf_counter() - t0
        parsed_incremental = cache.parsed - parsed_cold

        baseline_cache = ManifestCache()
        t0 = time.perf_counter()
        baseline = await baseline_cache.desired(git, head, "workflows/")
        full = time.perf_counter() - t0

        assert len(first.workflows) == len(second.workflows) == len(baseline.workflows) == files
        changed = {w.run_id for w in second.workflows} - {w.run_id for w in first.workflows}
        rows = [
            ("first sync (cold cache)", cold, parsed_cold),
            ("one-file change, incremental (ours)", incremental, parsed_incremental),
            ("one-file change, re-read everything (base)", full, baseline_cache.parsed),
        ]
        version = sys.version.split()[0]
        print(f"desired-set benchmark: {files:,} manifests, one changed (python {version})")
        print(f"{'case':<44} | {'seconds':>8} | {'files parsed':>12}")
        print("-" * 72)
        for name, seconds, parsed in rows:
            print(f"{name:<44} | {seconds:>8.3f} | {parsed:>12,}")
        print(f"new run ids after the change: {len(changed)} (expected 1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    asyncio.run(measure(parser.parse_args().files))


if __name__ == "__main__":
    main()
