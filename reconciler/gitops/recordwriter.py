"""Record commits, in order, never lost: each commit is spooled to disk before it is tried,
pushed by one worker (fetch, build on the remote head, push; on rejection or an unreachable
remote, back off and try again, never forcing; a permanent error ends the process), and
deleted from the spool only once the remote has it. Records that queue up while a push is in
flight go out together: one commit each, one push. A restarted daemon pushes what its
predecessor left in the spool; re-pushing content the remote already has makes no commit,
so nothing is recorded twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
from pathlib import Path

from reconciler import failpoints
from reconciler.attempt import Backoff, attempt
from reconciler.gitops.git import GitRepo
from reconciler.gitops.gitcommand import is_transient
from reconciler.observability.metrics import Metrics

log = logging.getLogger(__name__)
Files = dict[str, bytes | None]
MAX_BATCH = 50  # records per push: bounds the work redone when a push is rejected
PUSHED_MARKER = "pushed.json"  # names of spooled records already on the remote
PUSH_BACKOFF = Backoff(initial=0.5, factor=2.0, cap=30.0)


class RecordWriter:
    def __init__(self, git: GitRepo, spool: Path, metrics: Metrics) -> None:
        self.git = git
        self.spool = spool
        self.metrics = metrics
        self.queue: asyncio.Queue[Path] = asyncio.Queue()
        self.idle = asyncio.Event()
        self.idle.set()
        self.pushed = 0
        # Why the last push got no answer (a hung remote), until one is answered. A push
        # the remote refuses is not that: it answers, and refusals are counted and retried.
        self.unanswered: str | None = None
        self._seq = 0

    def recover(self) -> int:
        """Queue what a previous process spooled but did not push."""
        self.spool.mkdir(parents=True, exist_ok=True)
        self._apply_marker()
        leftovers = self._spooled()
        for path in leftovers:
            self._seq = max(self._seq, int(path.stem.split("-")[0]) + 1)
            self._enqueue(path)
        return len(leftovers)

    def _apply_marker(self) -> None:
        marker = self.spool / PUSHED_MARKER
        if marker.exists():  # the writer died between a push and cleaning up after it
            for name in json.loads(marker.read_text()):
                (self.spool / name).unlink(missing_ok=True)
            marker.unlink()

    def _spooled(self) -> list[Path]:
        return sorted(p for p in self.spool.glob("*.json") if p.name != PUSHED_MARKER)

    def pending_paths(self) -> set[str]:
        """Every repository path a spooled, not yet pushed record commit writes."""
        paths: set[str] = set()
        for spooled in self._spooled():
            with contextlib.suppress(OSError, ValueError, KeyError):
                paths.update(self._load(spooled)[0])
        return paths

    def _enqueue(self, path: Path) -> None:
        self.idle.clear()
        self.queue.put_nowait(path)
        self.metrics.records_pending.set(self.queue.qsize())

    def submit(self, files: Files, message: str) -> None:
        """Durable once this returns (written and fsynced); pushed in the background."""
        self.spool.mkdir(parents=True, exist_ok=True)
        entry = {
            "message": message,
            "files": {
                p: None if c is None else base64.b64encode(c).decode() for p, c in files.items()
            },
        }
        final = self.spool / f"{self._seq:012d}-{os.getpid()}.json"
        self._seq += 1
        self._write_atomically(final, json.dumps(entry))
        self._enqueue(final)

    async def run(self) -> None:
        """Push spooled records for ever. A transient failure (refused, unreachable, hung)
        is retried with backoff; a permanent one (the branch is gone) is raised: retrying
        cannot help, and the supervisor ends the process, loudly, with the spool intact."""
        self._requeue_spool()  # a restart after a crash must not lose the batch it held
        while True:
            batch = [await self.queue.get()]
            # whatever else is already spooled goes in the same push (one commit each)
            while not self.queue.empty() and len(batch) < MAX_BATCH:
                batch.append(self.queue.get_nowait())
            changes = self._load_batch(batch)
            if changes:
                await self._push(changes)
                self._forget(batch)
            self._after(batch)

    def _requeue_spool(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self._apply_marker()
        for path in self._spooled():
            self._enqueue(path)
        self._after([])

    def _load_batch(self, batch: list[Path]) -> list[tuple[Files, str]]:
        changes = []
        for path in list(batch):
            try:
                changes.append(self._load(path))
            except (OSError, ValueError, KeyError) as err:  # never stop the writer
                log.error("spooled record %s is unreadable, set aside: %s", path.name, err)
                batch.remove(path)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
        return changes

    async def _push(self, changes: list[tuple[Files, str]]) -> None:
        def note(_: int, err: Exception, delay: float) -> None:
            self.metrics.push_retries.inc()
            self.unanswered = str(err) if getattr(err, "no_answer", False) else None
            log.warning(
                "%d record commit(s) not pushed yet (first %r): %s",
                len(changes),
                changes[0][1],
                err,
            )

        # One push a try, retried here (not also inside git): every refused or failed
        # push counts in reconciler_record_push_retries_total, as its help says.
        await attempt(
            lambda _: self.git.push_commits(changes, attempts=1),
            retryable=is_transient,
            backoff=PUSH_BACKOFF,
            on_retry=note,
        )
        self.unanswered = None
        failpoints.reached("pushed")

    def _forget(self, batch: list[Path]) -> None:
        # Say durably which files are on the remote before deleting them: a crash in
        # between must not push the whole batch again (the later record of a run would
        # no longer make its earlier one a no-op, and history would repeat them).
        self._write_atomically(self.spool / PUSHED_MARKER, json.dumps([p.name for p in batch]))
        for path in batch:
            path.unlink(missing_ok=True)
        (self.spool / PUSHED_MARKER).unlink(missing_ok=True)
        self.pushed += len(batch)

    def _after(self, batch: list[Path]) -> None:
        self.metrics.records_pending.set(self.queue.qsize())
        if self.queue.empty():
            self.idle.set()

    @staticmethod
    def _write_atomically(path: Path, text: str) -> None:
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(path)

    @staticmethod
    def _load(path: Path) -> tuple[Files, str]:
        entry = json.loads(path.read_text())
        files = {p: None if c is None else base64.b64decode(c) for p, c in entry["files"].items()}
        return files, entry["message"]

    async def drain(self) -> None:
        await self.idle.wait()
