"""The in-process fetch over smart HTTP (gitops/httpfetch.py) against a real `git
http-backend` on 127.0.0.1 (tests/gitserver.py) and the real git CLI: what it fetches is
what `git fetch` would have, it is really used (the server's request log says who asked),
and what it cannot do goes to git, said in the log."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gitrepos import bare_and_clone, sh

from reconciler.gitops import objectstore
from reconciler.gitops.credentials import Credentials
from reconciler.gitops.git import GitError, GitRepo
from reconciler.gitops.httpfetch import HttpFetch
from reconciler.gitops.pktline import ProtocolError, packets, pkt
from reconciler.gitops.smarthttp import ADVERTISEMENT, RESULT, SmartHttpRemote, sideband
from reconciler.manifest.yamlsource import MAX_FILE_BYTES

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gitserver import GitServer

OURS = "git/reconciler"
HUGE_LINES = MAX_FILE_BYTES // 4 + 1  # a file over the manifest limit


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, Path]:
    bare, clone = bare_and_clone(tmp_path)
    sh("git", "config", "uploadpack.allowFilter", "true", cwd=bare)  # as GitHub's
    (clone / "workflows").mkdir()
    (clone / "workflows" / "old.yaml").write_text("kept: in history only\n")
    commit(clone, "old.yaml there")
    (clone / "workflows" / "old.yaml").unlink()
    (clone / "workflows" / "a.yaml").write_text("a: 1\n")
    commit(clone, "old.yaml gone")
    # Reachability bitmaps, as large hosts keep them: with them a server leaves out every
    # object reachable from a `have`, the whole history below it included, unless told
    # where our shallow history ends.
    sh("git", "repack", "-a", "-d", "--write-bitmap-index", "--quiet", cwd=bare)
    return bare, clone


def commit(clone: Path, message: str) -> str:
    sh("git", "add", "-A", ".", cwd=clone)
    sh("git", "commit", "--quiet", "-m", message, cwd=clone)
    sh("git", "push", "--quiet", "origin", "HEAD:main", cwd=clone)
    return sh("git", "rev-parse", "HEAD", cwd=clone)


def requests(log: Path) -> list[tuple[str, str, str]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [tuple(line.split(" ", 2)) for line in lines]  # type: ignore[misc]


@pytest.mark.parametrize("partial", [False, True], ids=["whole", "partial"])
def test_later_fetches_are_ours_and_bring_what_git_would(
    remote: tuple[Path, Path], tmp_path: Path, partial: bool
) -> None:
    """As the daemon fetches (`partial`: blobs over the file limit never downloaded) and
    as `reconciler status` does (everything)."""
    bare, clone = remote
    log = tmp_path / "requests.log"
    with GitServer(bare, requests_log=log) as server:
        git = GitRepo(url=server.url, workdir=tmp_path / "work", partial=partial)

        async def main() -> None:
            await git.ensure()
            await git.fetch()  # git's: the shallow first fetch
            first = len(requests(log))
            assert first and all(agent != OURS for _, _, agent in requests(log))
            mirror = git.gitdir
            boundary = objectstore.shallow_commits(mirror)
            assert len(boundary) == 1
            for round_ in range(3):
                # the blob of a file restored from beyond the shallow boundary: the server
                # must be told the boundary, or it assumes we have that history
                (clone / "workflows" / "old.yaml").write_text("kept: in history only\n")
                (clone / "workflows" / "a.yaml").write_text(f"a: {round_ + 2}\n")
                (clone / "workflows" / "huge.yaml").write_text(f"# {round_}\n" * HUGE_LINES)
                head = commit(clone, f"round {round_}")
                assert await git.remote_head() == head
                assert await git.fetch() == head
                assert await git.local_head() == head
                entries = {e.path: e for e in await git.ls_tree(head, "workflows/")}
                blobs = await git.read_blobs([e.sha for e in entries.values() if e.size])
                assert blobs[entries["workflows/a.yaml"].sha] == f"a: {round_ + 2}\n".encode()
                assert blobs[entries["workflows/old.yaml"].sha] == b"kept: in history only\n"
                huge = entries["workflows/huge.yaml"]
                assert (huge.size is None) == partial  # left on the server, or fetched
                if not partial:
                    assert huge.size == len(f"# {round_}\n") * HUGE_LINES
                (clone / "workflows" / "old.yaml").unlink()
                commit(clone, f"round {round_}, old.yaml gone again")
                await git.fetch()
            assert objectstore.shallow_commits(mirror) == boundary
            sh("git", "fsck", "--connectivity-only", "--no-dangling", cwd=mirror)
            later = requests(log)[first:]
            # one capability request for the process, then two POSTs a fetch, one a head
            assert [agent for _, _, agent in later] == [OURS] * len(later)
            assert [(m, p.rsplit("/", 1)[1]) for m, p, _ in later].count(
                ("GET", "refs?service=git-upload-pack")
            ) == 1
            assert len(later) == 1 + 3 * (2 + 1) + 3 * 2
            assert await git.fetch() == await git.local_head()  # nothing new: one POST
            assert len(requests(log)) == first + len(later) + 1

        asyncio.run(main())


def test_a_v0_server_gets_the_git_client_and_says_so_once(
    remote: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bare, clone = remote
    log = tmp_path / "requests.log"
    with GitServer(bare, requests_log=log, protocol_v2=False) as server:
        git = GitRepo(url=server.url, workdir=tmp_path / "work")

        async def main() -> None:
            await git.ensure()
            await git.fetch()
            for round_ in range(2):
                (clone / "workflows" / "a.yaml").write_text(f"a: {round_ + 2}\n")
                head = commit(clone, f"round {round_}")
                assert await git.fetch() == head

        with caplog.at_level(logging.WARNING, logger="reconciler.gitops.httpfetch"):
            asyncio.run(main())
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "does not speak git protocol v2; using the git client from now on" in warnings[0]
    assert sum(agent == OURS for _, _, agent in requests(log)) == 1  # asked once, no more


def test_the_token_is_sent_and_never_logged(
    remote: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bare, clone = remote
    token = tmp_path / "token"
    token.write_text("s3cr3t-t0ken\n")
    log = tmp_path / "requests.log"
    with GitServer(bare, requests_log=log, token_file=token) as server:
        git = GitRepo(
            url=server.url, workdir=tmp_path / "work", credentials=Credentials(token_file=token)
        )

        async def main() -> None:
            await git.ensure()
            await git.fetch()
            (clone / "workflows" / "a.yaml").write_text("a: 2\n")
            head = commit(clone, "two")
            assert await git.fetch() == head
            assert requests(log)[-1][2] == OURS
            token.write_text("a-rotated-wrong-t0ken\n")  # the server refuses it now
            (clone / "workflows" / "a.yaml").write_text("a: 3\n")
            commit(clone, "three")
            with pytest.raises(GitError):
                await git.fetch()

        with caplog.at_level(logging.DEBUG):
            asyncio.run(main())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP 401" in text  # the refusal is said, then git answers as git does
    assert "t0ken" not in text


def test_a_pack_whose_objects_link_to_missing_ones_is_refused(
    remote: tuple[Path, Path], tmp_path: Path
) -> None:
    """The connectivity check `git fetch` runs: a pack of the head commit alone, without the
    tree it names, must not be stored (the ref would point at a commit we cannot read)."""
    _, clone = remote
    mirror = tmp_path / "mirror.git"
    sh("git", "init", "--bare", "--quiet", str(mirror), cwd=tmp_path)
    env = {"PATH": "/usr/bin:/bin"}
    head = sh("git", "rev-parse", "HEAD", cwd=clone)
    lonely = pack(clone, f"{head}\n")
    with pytest.raises(objectstore.StoreRefused, match="unpack-objects refused the pack"):
        objectstore.store_pack(mirror, iter([lonely]), env, timeout=30)
    whole = pack(clone, f"{head}\n", revs=True)  # the commit and all it reaches
    objectstore.store_pack(mirror, iter([whole[:5], whole[5:]]), env, timeout=30)
    objectstore.write_ref(mirror, "refs/remotes/origin/main", head)
    assert objectstore.read_refs(mirror) == {"refs/remotes/origin/main": head}
    sh("git", "fsck", "--connectivity-only", "--no-dangling", cwd=mirror)


def pack(clone: Path, objects: str, revs: bool = False) -> bytes:
    args = ["git", "pack-objects", "--stdout", "-q"] + (["--revs"] if revs else [])
    return subprocess.run(
        args, cwd=clone, input=objects.encode(), capture_output=True, check=True
    ).stdout


def test_a_remote_that_never_answers_fails_in_bounded_time() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    port = listener.getsockname()[1]
    remote = SmartHttpRemote(f"http://127.0.0.1:{port}/repo.git", None, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(GitError, match=r"^git ls-remote: no answer within 0\.5s$") as err:
        remote.head("main")
    assert err.value.no_answer and time.monotonic() - started < 5
    listener.close()
    for conn in accepted:
        conn.close()


def test_a_remote_that_stops_half_way_through_its_answer_fails_in_bounded_time() -> None:
    """The capabilities, then the head's answer begun and never finished: a GitError as
    git's own timeout gives (the sync logs it and tries again), not a raw socket error."""
    advertisement = pkt("version 2\n") + pkt("ls-refs\n") + b"0000"
    answers = [
        (ADVERTISEMENT, advertisement),
        (RESULT, None),  # headers and a few bytes, then silence
    ]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        conn = listener.accept()[0]
        for content_type, body in answers:
            conn.recv(65536)
            sent = body if body is not None else b"0032"
            length = len(sent) if body is not None else 1000
            head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
            conn.sendall(f"{head}Content-Length: {length}\r\n\r\n".encode() + sent)
        time.sleep(3)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    fetch = HttpFetch.for_url(f"http://127.0.0.1:{listener.getsockname()[1]}/r.git", None, 0.5)
    assert fetch is not None
    started = time.monotonic()
    with pytest.raises(GitError, match=r"^git ls-remote: no answer within 0\.5s$"):
        asyncio.run(fetch.head("main"))
    assert time.monotonic() - started < 3
    fetch.close()
    listener.close()


def test_a_certificate_we_do_not_trust_goes_to_git_for_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """git may trust a CA that Python does not (its http.sslCAInfo): after one TLS
    failure the git client answers every later request, said once."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn = listener.accept()[0]
                with contextlib.suppress(OSError):
                    context.wrap_socket(conn, server_side=True)  # the client refuses it
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}/r.git"
    git = GitRepo(url=url, workdir=tmp_path / "work", timeout=10)

    async def main() -> None:
        await git.ensure()
        for _ in range(2):
            with pytest.raises(GitError, match="certificate verification failed"):  # git's answer
                await git.remote_head()

    with caplog.at_level(logging.WARNING, logger="reconciler.gitops.httpfetch"):
        asyncio.run(main())
    listener.close()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "TLS:" in warnings[0], warnings
    assert "using the git client from now on" in warnings[0]


def test_the_remote_s_error_in_the_pack_stream_is_its_message() -> None:
    frames = [pkt(b"\x01PACK"), pkt(b"\x02counting objects\n"), pkt(b"\x03out of disk\n")]
    with pytest.raises(GitError, match=r"the remote said: out of disk$"):
        list(sideband(packets(io.BytesIO(b"".join(frames)).read)))
    with pytest.raises(ProtocolError, match="not a pkt-line length"):
        list(packets(io.BytesIO(b"zzzz").read))
    with pytest.raises(ProtocolError, match="ended inside a pkt-line"):
        list(packets(io.BytesIO(b"0010short").read))
