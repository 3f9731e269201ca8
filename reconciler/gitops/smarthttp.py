"""A git remote over smart HTTP, spoken by us: protocol v2's ls-refs and fetch
(gitprotocol-v2(5), gitprotocol-http(5)) on one kept-alive connection.

Why not `git fetch`: from a push to its first change the fetch is the largest part, and over
HTTP most of it is git's own start-up (git, then its `git-remote-http` helper loading a
TLS stack: 15 ms here), a capability request repeated on every fetch, and a connectivity
walk in one more process (docs/benchmarks.md, Peers). This client asks for the capabilities
once, then needs two POSTs per fetch.

It does what the daemon needs and nothing more. Whatever it does not handle raises
Unsupported and the caller runs the git client instead, which gives the user git's own
answer: another protocol version, another object format, a redirect, a proxy, a server that
would move our shallow boundary.
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from reconciler.gitops.gitcommand import GitError, no_answer
from reconciler.gitops.pktline import Marker, ProtocolError, command_request, packets, text

USER_AGENT = "git/reconciler"  # servers give the smart protocol to agents named git/*
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTPS_PROXY", "ALL_PROXY")
ADVERTISEMENT = "application/x-git-upload-pack-advertisement"
RESULT = "application/x-git-upload-pack-result"
TOKEN_USER = "x-access-token"  # as gitops/credentials.py's askpass answers git
GIT_COMMAND = {"ls-refs": "ls-remote", "fetch": "fetch"}  # the git command each stands for


class Unsupported(Exception):
    """This request needs the git client. `lasting`: so will every later one (the server's
    protocol), not only this one (a refusal, a busy ref)."""

    def __init__(self, reason: str, lasting: bool = False) -> None:
        super().__init__(reason)
        self.lasting = lasting


@dataclass
class SmartHttpRemote:
    """One remote; its requests run one at a time (one connection, kept alive)."""

    url: str
    token_file: Path | None = None
    timeout: float = 120.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _conn: http.client.HTTPConnection | None = field(default=None, repr=False)
    _capabilities: list[str] | None = field(default=None, repr=False)
    _fetch_features: set[str] = field(default_factory=set, repr=False)  # "fetch=shallow filter"

    @staticmethod
    def for_url(url: str, token_file: Path | None, timeout: float) -> SmartHttpRemote | None:
        """A client for an http(s) URL; None for any other remote, or when a proxy is set
        (git reaches the remote through it; we leave that to git)."""
        if urlsplit(url).scheme not in ("http", "https"):
            return None
        if any(os.environ.get(name) for name in PROXY_VARIABLES):
            return None
        return SmartHttpRemote(url.rstrip("/"), token_file, timeout)

    def head(self, branch: str) -> str | None:
        """The branch's commit on the remote (ls-refs), None if it has no such branch."""
        ref = f"refs/heads/{branch}"
        with self._lock:
            response = self._command("ls-refs", [f"ref-prefix {ref}"])
            found = None
            for payload in packets(response_reader(response)):
                if payload is Marker.FLUSH:
                    break
                oid, _, rest = (text(payload) or "").partition(" ")
                if rest.split(" ", 1)[0] == ref:
                    found = oid
            response.read()
            return found

    def fetch_pack(
        self,
        want: str,
        haves: list[str],
        shallow: list[str],
        store: Callable[[Iterator[bytes]], None],
        object_filter: str | None = None,
    ) -> None:
        """Ask for `want` and what it needs beyond `haves` (our shallow commits named, so
        the server does not assume their parents), as a thin pack, without the objects
        `object_filter` leaves out if the server filters; `store` consumes the pack's
        bytes."""
        args = ["thin-pack", "no-progress", "ofs-delta", f"want {want}"]
        args += [f"have {h}" for h in haves] + [f"shallow {s}" for s in shallow]
        with self._lock:
            if object_filter and self._capabilities is None:
                self._capabilities = self._advertised("fetch")
            if object_filter and "filter" in self._fetch_features:
                args.append(f"filter {object_filter}")
            args.append("done")
            response = self._command("fetch", args)
            stream = packets(response_reader(response))
            for payload in stream:
                section = text(payload)
                if section == "shallow-info":
                    if next(stream) is not Marker.DELIM:  # lines: our boundary would move
                        raise Unsupported("the server's fetch moves the shallow boundary")
                elif section == "packfile":
                    store(sideband(stream))
                    response.read()
                    return
                else:
                    raise Unsupported(f"the server's fetch answered {section or payload!r}")
            raise Unsupported("the server's fetch response ended without a pack")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _command(self, command: str, args: list[str]) -> http.client.HTTPResponse:
        capabilities = self._capabilities
        if capabilities is None:
            capabilities = self._capabilities = self._advertised(command)
        body = command_request(command, capabilities, args)
        headers = {"Content-Type": "application/x-git-upload-pack-request", "Accept": RESULT}
        response = self._request("POST", "/git-upload-pack", body, headers, command)
        expect(response, RESULT)
        return response

    def _advertised(self, command: str) -> list[str]:
        """What we tell the server about ourselves, from what it advertised: its protocol
        must be v2 and its object format SHA-1 (our mirror's)."""
        response = self._request("GET", "/info/refs?service=git-upload-pack", None, {}, command)
        expect(response, ADVERTISEMENT)
        lines = []
        for payload in packets(response_reader(response)):
            line = text(payload)
            if line is not None and not line.startswith("# service="):
                lines.append(line)
            elif payload is Marker.FLUSH and lines:
                break
        response.read()
        if not lines or lines[0] != "version 2":
            raise Unsupported("the server does not speak git protocol v2", lasting=True)
        formats = [c.split("=", 1)[1] for c in lines if c.startswith("object-format=")]
        for capability in lines:
            if capability.startswith("fetch="):
                self._fetch_features = set(capability.removeprefix("fetch=").split())
        if formats and formats != ["sha1"]:
            raise Unsupported(f"the server's object format is {formats[0]}", lasting=True)
        return [f"agent={USER_AGENT}"] + (["object-format=sha1"] if formats else [])

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], command: str
    ) -> http.client.HTTPResponse:
        parts = urlsplit(self.url)
        headers = {"Git-Protocol": "version=2", "User-Agent": USER_AGENT, **headers}
        authorization = self._authorization(parts.username, parts.password)
        if authorization:
            headers["Authorization"] = authorization
        for fresh in (False, True):  # a kept-alive connection the server closed: once more
            conn = self._connection(parts.scheme, parts.hostname or "", parts.port, fresh)
            try:
                conn.request(method, parts.path + path, body=body, headers=headers)
                return conn.getresponse()
            except TimeoutError:
                self._drop()
                raise no_answer(GIT_COMMAND[command], self.timeout) from None
            except ssl.SSLError as err:  # git may trust what we do not (http.sslCAInfo)
                self._drop()
                raise Unsupported(f"TLS: {err}", lasting=True) from None
            except (http.client.HTTPException, OSError) as err:
                self._drop()
                if fresh:
                    raise Unsupported(f"{type(err).__name__}: {err}") from None
        raise AssertionError("unreachable")

    @property
    def display(self) -> str:
        """The URL without any credentials in it."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        return parts._replace(netloc=netloc).geturl()

    def _authorization(self, user: str | None, password: str | None) -> str | None:
        if self.token_file is not None:
            user, password = TOKEN_USER, self.token_file.read_text().strip()
        elif user is None:
            return None
        pair = f"{unquote(user)}:{unquote(password or '')}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def _connection(
        self, scheme: str, host: str, port: int | None, fresh: bool
    ) -> http.client.HTTPConnection:
        if fresh:
            self._drop()
        if self._conn is None:
            kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            self._conn = kind(host, port, timeout=self.timeout)
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def expect(response: http.client.HTTPResponse, content_type: str) -> None:
    """A 200 of the smart protocol, or Unsupported (git then says what the status means)."""
    if response.status != 200:
        response.read()
        lasting = 300 <= response.status < 400  # git follows only the first redirect
        raise Unsupported(f"HTTP {response.status} {response.reason}", lasting=lasting)
    if response.getheader("Content-Type", "").split(";")[0].strip() != content_type:
        response.read()
        raise Unsupported("the server does not speak git's smart HTTP protocol", lasting=True)


def response_reader(response: http.client.HTTPResponse) -> Callable[[int], bytes]:
    def read_exact(n: int) -> bytes:
        chunks, wanted = [], n
        while wanted:
            chunk = response.read(wanted)
            if not chunk:
                break
            chunks.append(chunk)
            wanted -= len(chunk)
        return b"".join(chunks)

    return read_exact


def sideband(stream: Iterator[bytes | Marker]) -> Iterator[bytes]:
    """The pack's bytes from the packfile section: band 1 data, 2 progress, 3 an error."""
    for payload in stream:
        if payload is Marker.FLUSH:
            return
        if isinstance(payload, Marker) or not payload:
            raise ProtocolError(f"unexpected {payload!r} in the packfile section")
        band, data = payload[0], payload[1:]
        if band == 1:
            yield data
        elif band == 3:
            message = data.decode("utf-8", "replace").strip()
            raise GitError(f"git fetch: the remote said: {message}")
    raise ProtocolError("the response ended inside the packfile section")
