"""Fetching the followed branch of an http(s) remote without the git client
(gitops/smarthttp.py speaks to the remote, gitops/objectstore.py stores what it sends), off
the event loop on a thread of its own, and the rule for falling back to the git client.

Only a mirror's later fetches come here: the first (shallow or not, partial or not) is
`git fetch`'s, which sets the mirror up. Any request this path cannot make raises
Unsupported and the caller runs git; a lasting reason (the server's protocol) turns this
path off for the process, said once in the log as a warning. Never silently: each fall-back
is logged."""

from __future__ import annotations

import asyncio
import http.client
import logging
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from reconciler.gitops import objectstore, partial
from reconciler.gitops.gitcommand import no_answer
from reconciler.gitops.pktline import ProtocolError
from reconciler.gitops.smarthttp import GIT_COMMAND, SmartHttpRemote, Unsupported

log = logging.getLogger(__name__)
REMOTE_REFS = "refs/remotes/origin/"
T = TypeVar("T")


@dataclass
class HttpFetch:
    remote: SmartHttpRemote
    off: str | None = None  # why this path is off for good
    # One thread: the remote's requests are one at a time anyway, and the API calls'
    # executor filling up (many runs at once) must not hold a fetch back.
    _thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="git-http"), repr=False
    )

    @staticmethod
    def for_url(url: str, token_file: Path | None, timeout: float) -> HttpFetch | None:
        remote = SmartHttpRemote.for_url(url, token_file, timeout)
        return HttpFetch(remote) if remote is not None else None

    async def head(self, branch: str) -> str | None:
        """The branch's commit on the remote (None: no such branch); Unsupported: ask git."""
        return await self._run("ls-refs", self.remote.head, branch)

    async def fetch(
        self, gitdir: Path, branch: str, env: Mapping[str, str], filtered: bool
    ) -> str | None:
        """The branch's new commits into the mirror and its remote-tracking ref moved; the
        head, or None when the remote has no such branch. `filtered`: the mirror is a
        partial clone (gitops/partial.py). Unsupported: ask git."""
        return await self._run("fetch", self._fetch, gitdir, branch, env, filtered)

    def close(self) -> None:
        self.remote.close()
        self._thread.shutdown(wait=False)

    async def _run(self, what: str, call: Callable[..., T], *args: object) -> T:
        if self.off is not None:
            raise Unsupported(self.off, lasting=True)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, call, *args)
        except TimeoutError:  # the answer stopped coming half-way: as git's timeout says it
            self.remote.close()
            raise no_answer(GIT_COMMAND[what], self.remote.timeout) from None
        except (objectstore.StoreRefused, ProtocolError, http.client.HTTPException, OSError) as err:
            self.remote.close()  # a connection broken half-way, a pack git would not store
            unsupported = Unsupported(str(err) or type(err).__name__)
        except Unsupported as err:
            self.remote.close()
            unsupported = err
        if unsupported.lasting:
            self.off = str(unsupported)
            log.warning(
                "in-process %s from %s: %s; using the git client from now on",
                *(what, self.remote.display, unsupported),
            )
        else:
            log.warning(
                "in-process %s from %s failed (%s); the git client does it this time",
                *(what, self.remote.display, unsupported),
            )
        raise unsupported

    def _fetch(
        self, gitdir: Path, branch: str, env: Mapping[str, str], filtered: bool
    ) -> str | None:
        ref = REMOTE_REFS + branch
        local = objectstore.read_refs(gitdir, REMOTE_REFS)
        if ref not in local:
            raise Unsupported(f"the mirror has no {ref} yet")  # git's first fetch sets it up
        head = self.remote.head(branch)
        if head is None or head == local[ref]:
            return head
        if head not in local.values():

            def store(chunks: Iterator[bytes]) -> None:
                objectstore.store_pack(gitdir, chunks, env, self.remote.timeout, filtered)

            haves = sorted(set(local.values()))
            shallow = objectstore.shallow_commits(gitdir)
            limit = partial.FILTER if filtered else None
            self.remote.fetch_pack(head, haves, shallow, store, limit)
        objectstore.write_ref(gitdir, ref, head)
        return head
