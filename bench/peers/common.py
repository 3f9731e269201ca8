"""What both sides of the peers bench measure with: git, a free port, a process's CPU and
peak memory from /proc, and the one format of a series of seconds."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
from pathlib import Path
from typing import NamedTuple


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary(values: list[float]) -> str:
    """min / median / p95 / max, three decimals."""
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"min {ordered[0]:.3f}  median {statistics.median(ordered):.3f}  p95 {p95:.3f}"
        f"  max {ordered[-1]:.3f}"
    )


class Usage(NamedTuple):
    """CPU seconds (user + system) and peak resident set (VmHWM, MiB) of one process."""

    cpu_seconds: float
    peak_rss_mib: float


def process_usage(pid: int) -> Usage:
    """From /proc: CPU since the process started, peak RSS since it started or since the last
    reset_peak_rss()."""
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return Usage(cpu, peak)


def reset_peak_rss(pid: int) -> None:
    """Reset a process's VmHWM to its current RSS (Linux >= 4.0: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
