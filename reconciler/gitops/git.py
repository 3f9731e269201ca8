"""Git, and only git: fetch a branch, read a tree, write record commits, push with retry.

We drive the git CLI with one-shot `asyncio` subprocesses, not GitPython (docs/
architecture.md, Dependencies): every command we need is plumbing, each with a timeout,
environment and process group, and nothing stays running between commands, so GitPython's
long-lived `git cat-file` processes cannot leak in a long-running daemon. An http(s)
remote's later fetches are ours, in process (gitops/httpfetch.py), git's if they cannot be.

The daemon never has a working tree: workflows are read from the fetched commit, and record
commits are built on top of the remote head with a temporary index (read-tree, update-index,
write-tree, commit-tree). A rejected push is answered by fetching and building the same
record commit on the new head — it only touches the records path, so it always applies —
then pushing again. Never a force-push.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.attempt import Backoff, attempt
from reconciler.gitops import partial
from reconciler.gitops.credentials import Credentials, git_environment
from reconciler.gitops.gitcommand import GitError, absolute_if_local, is_transient, run_git
from reconciler.gitops.httpfetch import HttpFetch, Unsupported
from reconciler.gitops.plumbing import (
    TreeEntry,
    parse_cat_file_batch,
    parse_fetch_head,
    parse_ls_tree,
)

log = logging.getLogger(__name__)
GIT_TIMEOUT = 120.0
# Who record commits are by unless --author-name/--author-email say otherwise (the tests
# and hooks tell the daemon's commits by this name).
AUTHOR_NAME, AUTHOR_EMAIL = "reconciler", "reconciler@localhost"
PUSH_BACKOFF = Backoff(initial=0.5, factor=2.0, cap=15.0)


@dataclass
class GitRepo:
    url: str
    workdir: Path
    branch: str = "main"
    credentials: Credentials = field(default_factory=Credentials)
    author_name: str = AUTHOR_NAME
    author_email: str = AUTHOR_EMAIL
    signing_key: Path | None = None  # SSH key to sign record commits with
    full_history: bool = False  # fetch all of it (signature verification walks it)
    partial: bool = False  # never fetch blobs over the file limit (gitops/partial.py)
    timeout: float = GIT_TIMEOUT  # no git command runs longer (a hung remote)
    # One writer of the mirror's remote-tracking refs at a time: a sync's fetch and a record
    # push's fetch at once fail with "cannot lock ref 'refs/remotes/origin/main'".
    _refs: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)
    _fetched: set[str] = field(default_factory=set, repr=False, compare=False)  # branches
    in_process_http: bool = True  # later fetches of an http(s) remote are ours, not git's
    _http: HttpFetch | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.url = absolute_if_local(self.url)
        http = HttpFetch.for_url(self.url, self.credentials.token_file, self.timeout)
        self._http = http if self.in_process_http else None

    @property
    def remote_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    def _env(self) -> dict[str, str]:
        env = git_environment(self.credentials, self.workdir)
        return {**env, **partial.ENVIRONMENT} if self.partial else env

    async def git(
        self,
        *args: str,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        cwd: Path | None = None,
    ) -> bytes:
        """Run one git command; a failure or a command that outlives its timeout (a hung
        remote) raises GitError."""
        limit = self.timeout if timeout is None else min(timeout, self.timeout)
        full_env = self._env()
        full_env.update(env or {})
        return await run_git(args, cwd=cwd or self.gitdir, env=full_env, stdin=stdin, limit=limit)

    @property
    def gitdir(self) -> Path:
        return self.workdir / "repo.git"

    async def ensure(self) -> None:
        """A bare local mirror of the one branch we follow."""
        if (self.gitdir / "HEAD").exists():
            return
        self.gitdir.mkdir(parents=True, exist_ok=True)
        await self.git("init", "--bare", "--quiet", str(self.gitdir), cwd=self.workdir)
        await self.git("remote", "add", "origin", self.url)
        await self.git("config", "fetch.prune", "true")

    async def remote_head(self) -> str | None:
        """The branch's commit on the remote (`ls-remote`: cheap, no objects transferred)."""
        if self._http is not None:
            with contextlib.suppress(Unsupported):  # said in the log; git answers instead
                return await self._http.head(self.branch)
        out = await self.git("ls-remote", "origin", f"refs/heads/{self.branch}", timeout=30)
        line = out.decode().split()
        return line[0] if line else None

    async def local_head(self, branch: str | None = None) -> str | None:
        ref = f"refs/remotes/origin/{branch}" if branch else self.remote_ref
        try:
            out = await self.git("rev-parse", "--verify", "--quiet", ref)
            return out.decode().strip() or None
        except GitError:
            return None

    async def fetch(self, branch: str | None = None) -> str | None:
        """The branch's head, fetched. The first fetch of a branch is shallow (its head
        alone): the daemon reads trees, not old history, and years of it must not cost a
        full clone at start-up; later fetches bring every new commit. Not `full_history`:
        judging signatures walks down the record commits above a head.

        It sits between a push and its first change, so it spawns no more than it must:
        the head comes from FETCH_HEAD (documented for scripts), not a `rev-parse`, and
        git's housekeeping waits for `housekeep`."""
        name = branch or self.branch
        known = name in self._fetched or await self.local_head(name) is not None
        shallow = not self.full_history and not known
        limits = (["--depth=1"] if shallow else []) + ([partial.FETCH_FILTER] * self.partial)
        refspec = f"+refs/heads/{name}:refs/remotes/origin/{name}"
        async with self._refs:
            if known and self._http is not None:
                with contextlib.suppress(Unsupported):  # said in the log; git fetches instead
                    return await self._http.fetch(self.gitdir, name, self._env(), self.partial)
            await self.git(
                *("-c", "maintenance.auto=false", "fetch", "--quiet", "--no-tags"),
                *(*limits, "origin", refspec),
            )
            self._fetched.add(name)
            fetched = parse_fetch_head((self.gitdir / "FETCH_HEAD").read_bytes())
            return fetched or await self.local_head(name)

    async def housekeep(self) -> None:
        """git's own housekeeping (`gc --auto`: packs loose objects once there are many),
        which fetches leave to this: it runs at a periodic sync, never on the way from a
        push to its first change."""
        await self.git("maintenance", "run", "--auto", "--quiet")

    async def remote_heads(self) -> dict[str, str]:
        """Every branch on the remote and its commit (one `ls-remote`)."""
        out = await self.git("ls-remote", "--heads", "origin", timeout=30)
        heads = {}
        for line in out.decode().splitlines():
            sha, _, ref = line.partition("\t")
            heads[ref.removeprefix("refs/heads/")] = sha
        return heads

    async def ls_tree(self, commit: str, path: str) -> list[TreeEntry]:
        folder = path.rstrip("/") + "/"
        if self.partial:
            return await partial.ls_tree(self.git, commit, folder)
        out = await self.git("ls-tree", "-r", "-l", "-z", "--full-tree", commit, "--", folder)
        return parse_ls_tree(out)

    async def read_blobs(self, shas: Sequence[str]) -> dict[str, bytes]:
        """Many blobs in one `cat-file --batch` process that exits when its input ends."""
        if not shas:
            return {}
        out = await self.git("cat-file", "--batch", stdin="".join(f"{s}\n" for s in shas).encode())
        blobs, missing = parse_cat_file_batch(out, shas)
        if missing:
            raise GitError(f"git object {missing[0]} missing", transient=False)
        return blobs

    async def commit_files(
        self, parent: str, files: Mapping[str, bytes | None], message: str
    ) -> str:
        """A commit on `parent` that writes (or, for None, deletes) exactly these paths."""
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            await self.git("read-tree", parent, env=env)
            lines = []
            for path, content in files.items():
                if content is None:
                    lines.append(f"0 {'0' * 40}\t{path}\n")  # mode 0: remove the entry
                    continue
                sha = await self.git("hash-object", "-w", "--stdin", stdin=content)
                lines.append(f"100644 {sha.decode().strip()}\t{path}\n")
            # --index-info works without a work tree (this mirror is bare)
            await self.git("update-index", "--index-info", stdin="".join(lines).encode(), env=env)
            # --missing-ok: a partial mirror lacks the blobs over the file limit
            tree = (await self.git("write-tree", "--missing-ok", env=env)).decode().strip()
        parent_tree = (await self.git("rev-parse", f"{parent}^{{tree}}")).decode().strip()
        if tree == parent_tree:
            return parent  # nothing changed: no empty commits
        ident = {
            "GIT_AUTHOR_NAME": self.author_name,
            "GIT_AUTHOR_EMAIL": self.author_email,
            "GIT_COMMITTER_NAME": self.author_name,
            "GIT_COMMITTER_EMAIL": self.author_email,
        }
        args = ["commit-tree", "-p", parent, "-F", "-", tree]
        if self.signing_key is not None:
            signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.signing_key}"]
            args = [*signing, "commit-tree", "-S", "-p", parent, "-F", "-", tree]
        return (await self.git(*args, stdin=message.encode(), env=ident)).decode().strip()

    async def push_files(
        self,
        files: Mapping[str, bytes | None],
        message: str,
        attempts: int = 8,
        branch: str | None = None,
    ) -> str:
        """Commit on the remote head and push; on rejection fetch, rebuild on the new head
        and push again, with backoff. Returns the pushed commit. Never forces."""
        return await self.push_commits([(files, message)], attempts, branch)

    async def push_commits(
        self,
        changes: Sequence[tuple[Mapping[str, bytes | None], str]],
        attempts: int = 8,
        branch: str | None = None,
    ) -> str:
        """Like push_files for several commits at once: one chain of commits on the remote
        head (one per change, in order, none empty), one push. A queue of records behind a
        slow remote costs one round trip, not one each."""
        first_message = changes[0][1].splitlines()[0] if changes else ""
        target = branch or self.branch

        async def once(_: int) -> str:
            head = await self.fetch(branch)
            if head is None:
                raise GitError(f"branch {target} does not exist on the remote", transient=False)
            commit = head
            for files, message in changes:
                commit = await self.commit_files(commit, files, message)
            if commit == head:
                return head
            await self.git("push", "--quiet", "origin", f"{commit}:refs/heads/{target}")
            async with self._refs:
                await self.git("update-ref", f"refs/remotes/origin/{target}", commit)
            return commit

        def note(_: int, err: Exception, delay: float) -> None:  # rejected, or remote down
            more = f" and {len(changes) - 1} more" if len(changes) > 1 else ""
            log.info("push of %r%s failed (%s); fetching and retrying", first_message, more, err)

        return await attempt(
            once,
            retryable=is_transient,
            backoff=PUSH_BACKOFF,
            retries=attempts - 1,
            on_retry=note,
        )

    async def commit_message(self, commit: str) -> tuple[str, str]:
        """(author email, subject) of a commit."""
        out = (await self.git("log", "-1", "--format=%ae%n%s", commit)).decode().split("\n", 1)
        return out[0], out[1].strip() if len(out) > 1 else ""

    async def parents(self, commit: str) -> list[str]:
        """Its parents, first parent first (none for a root commit)."""
        out = await self.git("rev-list", "--parents", "-n", "1", commit)
        return out.decode().split()[1:]

    async def commits_between(self, old: str, new: str) -> list[str]:
        """Every commit reachable from `new` and not from `old`, merged branches included."""
        out = await self.git("rev-list", f"{old}..{new}")
        return out.decode().split()

    async def changes(self, old: str, new: str) -> list[tuple[str, str]]:
        """(status letter, path) of each change; a rename shows as a delete and an add (with
        renames folded, moving a file into a folder would hide where it came from)."""
        out = await self.git("diff", "--name-status", "--no-renames", "-z", old, new)
        fields = out.decode(errors="surrogateescape").split("\0")
        return [(fields[i], fields[i + 1]) for i in range(0, len(fields) - 1, 2) if fields[i]]

    async def verify_commit(self, commit: str, allowed_signers: Path) -> bool:
        signers = ["-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={allowed_signers}"]
        try:
            await self.git(*signers, "verify-commit", commit)
            return True
        except GitError:
            return False

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
