"""A smart-HTTP git server on 127.0.0.1: `git http-backend` (CGI) serving one bare
repository. bench/peers shares it between Flux's source-controller (which does not read
file:// remotes) and our daemon; the tests of the daemon's in-process fetch use its options:
a log of the requests (who asked for what), a token every request must carry, a server that
speaks only git protocol v0.

As a library: `with GitServer(bare) as server: server.url` runs the server in a child process
(its own interpreter, so its work never competes with the bench's watch thread for the GIL)
that dies with its parent (PR_SET_PDEATHSIG), even on kill -9 of the bench. Pushes over HTTP
are allowed (http.receivepack), so both sides can push and fetch through it.

Alone: `python tests/gitserver.py REPO.git [--port N]` prints the URL and serves until
interrupted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import http.server
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

READY_PREFIX = "serving "
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn for a child process: SIGTERM it when the process that started it dies
    (Linux), so that a killed bench leaves no server or controller behind."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Every request is one `git http-backend` run: the CGI variables from the request, the
    request body on its stdin, its headers and body back to the client."""

    protocol_version = "HTTP/1.1"  # keep-alive: info/refs and upload-pack on one connection
    # Headers and body in one write, and no Nagle: otherwise the body waits for the
    # client's delayed ACK of the headers, 40 ms on every POST (a stall nginx or GitHub
    # does not have, and one that fell on both sides of the bench alike).
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server_version = "bench-peers-git/1"
    project_root: Path = Path()
    repo_name: str = ""
    requests_log: Path | None = None  # one line per request served: method, path, User-Agent
    token: str | None = None  # every request must authenticate as x-access-token:<token>
    protocol_v2: bool = True  # False: the Git-Protocol header is dropped (a v0 server)

    def do_GET(self) -> None:
        self._backend()

    def do_POST(self) -> None:
        self._backend()

    def log_message(self, format: str, *args: object) -> None:
        if os.environ.get("BENCH_GIT_LOG"):
            super().log_message(format, *args)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _backend(self) -> None:
        url = urlsplit(self.path)
        if self.token is not None:
            pair = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {pair}":
                self._body()
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        if self.requests_log is not None:  # what it served (not what it refused)
            with self.requests_log.open("a") as log:
                log.write(f"{self.command} {self.path} {self.headers.get('User-Agent')}\n")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_SOFTWARE": self.server_version,
            "REQUEST_METHOD": self.command,
            "PATH_INFO": unquote(url.path),
            "QUERY_STRING": url.query,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_USER": "bench",  # receive-pack needs an authenticated user (or the config)
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
        }
        passed = ("Content-Encoding", "Accept") + ("Git-Protocol",) * self.protocol_v2
        for header in passed:
            if header in self.headers:
                env["HTTP_" + header.upper().replace("-", "_")] = self.headers[header]
        body = self._body()
        env["CONTENT_LENGTH"] = str(len(body))
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, sep, payload = done.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, sep, payload = done.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name.strip(), value.strip()))
        if done.returncode != 0 and not sep:
            status, headers, payload = 500, [("Content-Type", "text/plain")], done.stderr
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


def serve(repo: Path, port: int = 0, on_ready=None, **options: object) -> None:
    """Serve the bare repository `repo` at http://127.0.0.1:<port>/<repo name> until stopped
    (SIGTERM or SIGINT). `options`: the handler's requests_log, token, protocol_v2."""
    repo = repo.resolve()
    attributes = {"project_root": repo.parent, "repo_name": repo.name, **options}
    handler = type("Handler", (_Handler,), attributes)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    url = f"http://127.0.0.1:{server.server_address[1]}/{repo.name}"

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if on_ready is not None:
        on_ready(url)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


class GitServer:
    """`git http-backend` for one bare repository, in a child process on 127.0.0.1."""

    def __init__(
        self,
        repo: Path,
        port: int = 0,
        log: Path | None = None,
        requests_log: Path | None = None,
        token_file: Path | None = None,
        protocol_v2: bool = True,
    ) -> None:
        self.repo = Path(repo).resolve()
        self.port = port
        self.log = log
        self.options = [f"--requests={requests_log}"] if requests_log else []
        self.options += [f"--token-file={token_file}"] if token_file else []
        self.options += [] if protocol_v2 else ["--v0"]
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 10) -> GitServer:
        # Pushes over HTTP without authentication, and no packs split for dumb clients.
        subprocess.run(
            ["git", "-C", str(self.repo), "config", "http.receivepack", "true"], check=True
        )
        stderr = self.log.open("ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, str(self.repo), "--port", str(self.port)] + self.options,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                preexec_fn=die_with_parent,
                start_new_session=True,  # a Ctrl-C is the bench's to handle, not the server's
            )
        finally:
            if self.log:
                stderr.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(READY_PREFIX):
                    self.url = line[len(READY_PREFIX) :].strip()
                    self.port = int(urlsplit(self.url).port or 0)
                    return self
            if self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"the git server for {self.repo} did not start within {timeout:g}s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> GitServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, help="a bare repository")
    parser.add_argument("--port", type=int, default=0, help="default: one the kernel picks")
    parser.add_argument("--requests", type=Path, help="log each request's line to this file")
    parser.add_argument("--token-file", type=Path, help="require this token (Basic auth)")
    parser.add_argument("--v0", action="store_true", help="speak git protocol v0 only")
    args = parser.parse_args()
    options = {"requests_log": args.requests, "protocol_v2": not args.v0}
    if args.token_file:
        options["token"] = args.token_file.read_text().strip()
    if not (args.repo / "HEAD").is_file():
        parser.error(f"{args.repo} is not a bare git repository")

    def ready(url: str) -> None:
        print(f"{READY_PREFIX}{url}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        serve(args.repo, args.port, on_ready=ready, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
