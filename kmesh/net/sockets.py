"""Sockets for listeners and peers, made in this namespace or inside another one.

Every component that serves or connects (the proxy's relays, DNS, metrics
endpoints, the HTTP apps) takes an ``OpenSocket`` so that the same code works
in the sim runtime (this namespace) and inside a node's or pod's namespace.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import trio

from kmesh.net import netns

OpenSocket = Callable[[int, int], Awaitable[trio.socket.SocketType]]
"""``await open_socket(family, type)``: a new trio socket (possibly made inside a namespace)."""



async def default_open_socket(family: int, type: int) -> trio.socket.SocketType:
    """A trio socket in this process's own namespace."""
    return trio.socket.socket(family, type)


def _make_sockets(family: int, type: int, n: int) -> list[socket.socket]:
    return [socket.socket(family, type) for _ in range(n)]


class NamespaceSockets:
    """An ``OpenSocket`` for namespace ``name`` that makes sockets ``batch`` at a time.

    Entering a namespace takes a worker-thread trip (two ``setns`` calls);
    doing it once per 16 sockets instead of once per connection keeps the
    relay's connect latency close to the sim runtime's. ``close`` closes the
    sockets still in stock.
    """

    def __init__(self, name: str, batch: int = 16) -> None:
        self.name = name
        self.batch = batch
        self._stock: dict[tuple[int, int], list[socket.socket]] = {}
        self._lock = trio.Lock()

    async def __call__(self, family: int, type: int) -> trio.socket.SocketType:
        stock = self._stock.setdefault((family, type), [])
        if not stock:
            async with self._lock:
                if not stock:
                    stock.extend(await netns.run_sync_in(self.name, _make_sockets, family, type, self.batch))
        return trio.socket.from_stdlib_socket(stock.pop())

    def close(self) -> None:
        """Close the sockets made but not handed out."""
        for stock in self._stock.values():
            for sock in stock:
                sock.close()
            stock.clear()


def family_of(ip: str) -> int:
    """AF_INET6 for an IPv6 literal, else AF_INET."""
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


async def tcp_listener(host: str, port: int, open_socket: OpenSocket = default_open_socket, backlog: int = 1024) -> trio.socket.SocketType:
    """A listening TCP socket on ``host:port`` (port 0: any free one; read it with ``getsockname``)."""
    sock = await open_socket(family_of(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


async def udp_socket(host: str, port: int, open_socket: OpenSocket = default_open_socket) -> trio.socket.SocketType:
    """A bound UDP socket on ``host:port``."""
    sock = await open_socket(family_of(host), socket.SOCK_DGRAM)
    try:
        await sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def close_with_reset(sock: trio.socket.SocketType) -> None:
    """Close so that the peer sees a reset (RST), not an orderly end of stream (SO_LINGER 0), as a
    refused connection looks to a client."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    sock.close()
