"""A daemon that has decided to stop is gone within its grace, whatever still runs, and its
log says what did not stop. Each case is a real process (its exit is the claim)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from reconciler.observability.http import Endpoints, HttpServer
from reconciler.observability.metrics import Metrics

REPO_ROOT = Path(__file__).resolve().parents[2]

# The daemon's own run(), its serving replaced by: start a task that ignores being
# cancelled and a thread that never ends, then lose leadership (exit code 2).
HANGING_STOP = """
import asyncio, logging, threading
from pathlib import Path
from reconciler.daemon import daemon as module
from reconciler.daemon.config import DaemonConfig

logging.basicConfig(level=logging.INFO, format="%(message)s")
module.SHUTDOWN_GRACE = 0.5

async def stubborn() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # a task that does not stop when told

def never_ending() -> None:
    threading.Event().wait()

async def serve(self) -> int:
    self.supervisor.start("stubborn", stubborn, restart=False)
    threading.Thread(target=never_ending, name="never-ending").start()
    await asyncio.sleep(0.1)
    return module.LEADERSHIP_LOST

module.Daemon._serve = serve
config = DaemonConfig(repo="{repo}", workdir=Path("{workdir}"), listen="127.0.0.1:0")
asyncio.run(module.Daemon(config, kube=None).run())
"""


def test_a_stop_that_hangs_ends_the_process_with_its_code_and_says_what_hung(
    tmp_path: Path,
) -> None:
    script = HANGING_STOP.format(repo=tmp_path / "remote.git", workdir=tmp_path / "work")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr  # the code it meant to exit with
    assert took < 30, f"exited only after {took:.1f}s"
    assert "the stop did not finish within 0.5s: exiting (2) anyway" in done.stderr
    lines = {line.split(":")[0]: line for line in done.stderr.splitlines()}
    assert "<- stubborn (<string>:" in lines["task stubborn"]  # what it awaits, and in what
    assert "<- never_ending (<string>:" in lines["thread never-ending"]
    assert "supervisor.py" in lines["task Task-1"]  # the stop itself: waiting for the task


def test_the_http_server_stops_though_it_never_served() -> None:
    """socketserver's shutdown() waits for serve_forever to end, for ever when it never
    began (its worker thread still queued when the daemon stops)."""
    server = HttpServer("127.0.0.1:0", Endpoints(Metrics(), lambda: None, lambda: None, None))
    stopping = threading.Thread(target=server.stop, daemon=True)
    stopping.start()
    stopping.join(5)
    assert not stopping.is_alive(), "stop() hung on a server that never served"
