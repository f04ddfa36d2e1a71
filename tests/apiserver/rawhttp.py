"""What the connection tests need: an API server process under a chosen fd limit, raw HTTPS, and /proc + ss readings."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from kmesh.client.kubeconfig import Credentials, load_kubeconfig
from kmesh.lab.procs import stop_process
from tests.conftest import require_binary

MARKER = b"API server on "


@dataclass
class ServerProc:
    """An API server process a test started, and how to reach it."""

    proc: trio.Process
    creds: Credentials
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def _limit_files(limit: int | tuple[int, int] | None) -> Any:
    if limit is None:
        return None
    soft, hard = limit if isinstance(limit, tuple) else (limit, limit)

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return preexec


@asynccontextmanager
async def server_process(data_dir: Path, *args: str,
                         nofile: int | tuple[int, int] | None = None) -> AsyncIterator[ServerProc]:
    """Run ``tests.apiserver.server_proc`` (RLIMIT_NOFILE ``nofile``: both limits, or (soft, hard)); stop it on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "server.log"
    with open(log, "wb") as err:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tests.apiserver.server_proc", str(data_dir), *args],
            stdout=subprocess.PIPE, stderr=err, preexec_fn=_limit_files(nofile),
            cwd=Path(__file__).resolve().parents[2],
        )
    try:
        assert proc.stdout is not None
        seen = b""
        with trio.fail_after(60):
            while MARKER not in seen or not seen.endswith(b"\n"):
                chunk = await proc.stdout.receive_some()
                if not chunk:
                    raise AssertionError(f"server exited before it listened:\n{log.read_text()[-3000:]}")
                seen += chunk
        creds = load_kubeconfig(data_dir / "kubeconfig.yaml")
        yield ServerProc(proc, creds, int(creds.server.rsplit(":", 1)[1]), log)
    finally:
        with trio.CancelScope(shield=True):
            await stop_process(proc)
            if proc.stdout is not None:
                await proc.stdout.aclose()


@dataclass
class Response:
    """One HTTP/1.1 response read off a raw connection."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def connect(creds: Credentials, port: int) -> trio.SSLStream[trio.SocketStream]:
    """A TLS connection to the server (HTTP/1.1: no ALPN)."""
    return await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=creds.ssl_context(),
                                              https_compatible=True)


def request_head(method: str, path: str, token: str | None, headers: dict[str, str] | None = None) -> bytes:
    """The request line and headers of a raw request (the body is the caller's)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(stream: trio.abc.ReceiveStream) -> Response:
    """Read one response with a Content-Length body (what the API answers outside of streams)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError(f"connection closed after {buf[:200]!r}")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    first, *rest = head.decode("latin-1").split("\r\n")
    status = int(first.split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in rest)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError("connection closed inside the body")
        body += chunk
    return Response(status, headers, body[:length])


async def get(creds: Credentials, port: int, path: str) -> Response:
    """One GET on a new connection, closed by the client after the answer."""
    stream = await connect(creds, port)
    try:
        await stream.send_all(request_head("GET", path, creds.token))
        return await read_response(stream)
    finally:
        await trio.aclose_forcefully(stream)


def close_wait(port: int) -> int:
    """Sockets of the server's port (local side) in CLOSE-WAIT."""
    out = subprocess.run([require_binary("ss"), "-Htan", "state", "close-wait", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


def established(port: int) -> int:
    """Established sockets of the server's port (server side)."""
    out = subprocess.run([require_binary("ss"), "-Htan", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


def open_fds(pid: int) -> int:
    """How many descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def open_files_limit(pid: int) -> tuple[int, int]:
    """The (soft, hard) open-files limit of process ``pid``."""
    m = re.search(r"^Max open files\s+(\d+)\s+(\d+)", Path(f"/proc/{pid}/limits").read_text(), re.MULTILINE)
    assert m is not None
    return int(m.group(1)), int(m.group(2))


def vm_rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes."""
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    assert m is not None
    return int(m.group(1)) * 1024


async def wait_until(predicate: Any, what: str, guard: float = 60.0, every: float = 0.2) -> None:
    """Poll ``predicate()`` until it holds; fail after ``guard`` seconds (a hang guard, not a speed check)."""
    with trio.move_on_after(guard):
        while not predicate():
            await trio.sleep(every)
        return
    raise AssertionError(f"still not true after {guard:.0f} s: {what}")
