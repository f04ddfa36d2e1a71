"""Tiny clients the node tests use to talk to pods on their loopback IPs."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import trio


async def tcp_read_all(host: str, port: int, send: bytes = b"") -> bytes:
    """Connect, optionally send, half-close, and read until the server closes."""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            if send:
                await stream.send_all(send)
                await stream.send_eof()
            out = bytearray()
            while chunk := await stream.receive_some(65536):
                out += chunk
            return bytes(out)


async def udp_ask(host: str, port: int, payload: bytes) -> bytes:
    """Send one datagram and return the reply."""
    with trio.fail_after(5):
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with sock:
            await sock.connect((host, port))
            await sock.send(payload)
            return await sock.recv(65535)


async def http_get(url: str, **kw: object) -> httpx.Response:
    """One GET without proxies from the environment."""
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        return await c.get(url, **kw)  # type: ignore[arg-type]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_file(path: Path, timeout: float = 10) -> str:
    """Wait until a process wrote ``path`` (polling a file is the only way to see it)."""
    with trio.fail_after(timeout):
        while not path.exists() or not path.read_text().strip():
            await trio.sleep(0.02)
    return path.read_text().strip()
