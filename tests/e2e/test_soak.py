"""The daemon does not leak: many sync cycles against a changing remote, with processes,
file descriptors and memory measured before and after (issue 5). `make test` runs a bounded
number of cycles; `make soak` runs 2,000 (RECONCILER_SOAK_CYCLES)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from figures import report
from kubehelp import api, api_client  # noqa: F401  (fixture)

from reconciler.actions.kube import Kube
from reconciler.daemon import Daemon, DaemonConfig

CYCLES = int(os.environ.get("RECONCILER_SOAK_CYCLES", "300"))
WORKFLOW = (
    "apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: soak}}\nspec:\n  steps:\n"
    "    - {{name: s, action: CordonNode, target: {{name: n{i}}}}}\n"
)


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def children() -> int:
    me = str(os.getpid())
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if Path(f"/proc/{pid}/stat").read_text().split()[3] == me:
                    count += 1
            except (OSError, IndexError):
                pass
    return count


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def git(*args: str, cwd: Path, stdin: str | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.timeout(max(300, CYCLES))  # about 0.1-0.3 s a cycle; 2,000 in make soak
def test_sync_cycles_do_not_leak(api, kubeconfig, tmp_path: Path) -> None:
    bare = tmp_path / "remote.git"
    git("init", "--quiet", "--bare", "-b", "main", str(bare), cwd=tmp_path)

    def push_revision(i: int) -> None:
        # a commit per cycle; every 10th changes a workflow so the diff really re-parses
        blob = git("hash-object", "-w", "--stdin", cwd=bare, stdin=WORKFLOW.format(i=i // 10))
        tree = git("mktree", cwd=bare, stdin=f"100644 blob {blob}\tsoak.yaml\n")
        top = git("mktree", cwd=bare, stdin=f"040000 tree {tree}\tworkflows\n")
        parent = ["-p", "main"] if i else []
        commit = git(
            "-c",
            "user.name=s",
            "-c",
            "user.email=s@x",
            "commit-tree",
            top,
            *parent,
            "-m",
            f"c{i}",
            cwd=bare,
        )
        git("update-ref", "refs/heads/main", commit, cwd=bare)

    push_revision(0)
    daemon = Daemon(
        DaemonConfig(repo=str(bare), workdir=tmp_path / "work", path="workflows/"),
        Kube(api_client(kubeconfig)),
    )
    # the workflow would cordon a node that does not exist; keep runs out of the picture
    daemon.config.max_concurrent_workflows = 0

    async def main() -> list[tuple[int, int, int, int]]:
        await daemon.git.ensure()
        samples = []
        for i in range(1, CYCLES + 1):
            push_revision(i)
            await daemon.sync()
            assert daemon.git_ok and daemon.synced_head is not None
            if i in (1, 10, CYCLES // 2, CYCLES):
                samples.append((i, fds(), children(), rss_kib()))
        return samples

    samples = asyncio.run(main())
    report(f"\nsoak: {CYCLES} sync cycles (fetch + diff each; a re-parse every 10th)")
    report(f"{'cycle':>6} | {'fds':>4} | {'children':>8} | {'RSS MiB':>8}")
    for cycle, fd, kids, rss in samples:
        report(f"{cycle:>6} | {fd:>4} | {kids:>8} | {rss / 1024:>8.1f}")
    (_, fd_10, _, rss_10), (_, fd_end, kids_end, rss_end) = samples[1], samples[-1]
    assert kids_end == 0, "git processes left running"
    assert fd_end - fd_10 <= 4, f"file descriptors grew from {fd_10} to {fd_end}"
    assert rss_end - rss_10 < 30 * 1024, f"RSS grew by {(rss_end - rss_10) / 1024:.1f} MiB"
    assert daemon.cache.parsed <= CYCLES // 10 + 2  # only changed manifests were parsed
