"""Real servers on 127.0.0.1, each started by the test and stopped after it: OpenSSH's sshd (Debian's
openssh-server; `.ci/run` installs it) for the DVC remote tests, the standard library's HTTP server serving a
folder, and a scripted one that cuts, fails or answers with a page on cue, for the download tests.

The SSH server runs with its own config, host key and authorized key in a temporary folder, on a free port,
and lets in only the user running the tests, by key. DVC reaches it through dvc-ssh (asyncssh), which checks
the host key against ``$HOME/.ssh/known_hosts``: the tests give DVC a HOME of their own that holds it.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd",) if os.path.exists(p)), None)  # sbin: not on PATH
MISSING_SSHD = "no OpenSSH server here (Debian: apt install openssh-server; .ci/run installs it)"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all bound at once, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def free_port() -> int:
    return free_ports(1)[0]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass(frozen=True)
class SSHServer:
    port: int
    user: str
    keyfile: Path  # the client's private key
    home: Path  # a HOME whose .ssh/known_hosts trusts this server's host key

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    @property
    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home)}


@contextmanager
def sshd(root: Path) -> Iterator[SSHServer]:
    """An OpenSSH server on a free 127.0.0.1 port, key login for this user only, files under ``root``."""
    assert SSHD is not None, MISSING_SSHD
    root.mkdir(parents=True, exist_ok=True)
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)], check=True)
    port, user = free_port(), getpass.getuser()
    (root / "sshd_config").write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {root / "host"}
PidFile {root / "sshd.pid"}
AuthorizedKeysFile {root / "client.pub"}
AllowUsers {user}
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
"""
    )
    home = root / "home"
    (home / ".ssh").mkdir(parents=True)
    host_key = " ".join((root / "host.pub").read_text().split()[:2])
    (home / ".ssh/known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # the privilege-separation folder root's sshd insists on
    command = [SSHD, "-D", "-e", "-f", str(root / "sshd_config")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, proc)
        yield SSHServer(port, user, root / "client", home)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up early is no error
            super().handle_error(request, client_address)


@contextmanager
def http_server(root: Path) -> Iterator[str]:
    """The standard library's HTTP server on a free 127.0.0.1 port, serving ``root`` read-only (GET and HEAD
    only); yields its base URL."""
    server = _Server(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Seen:
    path: str
    range: str | None
    if_range: str | None


@dataclass
class Scripted:
    """What :func:`scripted_http_server` serves; ``script`` is a queue of one-shot behaviours for the next
    requests."""

    body: bytes = b""
    etag: str = '"v1"'
    content_type: str = "application/zip"
    script: list[str] = field(default_factory=list)  # "cut", "404", "500", "html"
    seen: list[Seen] = field(default_factory=list)
    url: str = ""


class _ScriptedHandler(BaseHTTPRequestHandler):
    state: Scripted

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        st = self.state
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        st.seen.append(Seen(self.path, rng, if_range))
        action = st.script.pop(0) if st.script else "ok"
        if action in ("404", "500"):
            self.send_error(int(action))
            return
        if action == "html":
            page = b"<html><body>Google Drive can't scan this file for viruses</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and (if_range is None or if_range == st.etag):
            start = int(m.group(1))
        body = st.body[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(st.body) - 1}/{len(st.body)}")
        self.send_header("Content-Type", st.content_type)
        self.send_header("Content-Length", str(len(body)))  # the full length, even when we cut
        if st.etag:
            self.send_header("ETag", st.etag)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if action == "cut":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@contextmanager
def scripted_http_server() -> Iterator[Scripted]:
    """An HTTP server on a free 127.0.0.1 port that serves its state's ``body`` (with ranges, ``If-Range`` and an
    ETag) at ``url``, or does the next thing its ``script`` says; records each request in ``seen``."""
    state = Scripted()
    handler = type("StateHandler", (_ScriptedHandler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/download?id=abc&export=download"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
