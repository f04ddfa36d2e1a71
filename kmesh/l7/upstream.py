"""Upstream side: per-request endpoint choice among a backend's ready endpoints, and pooled connections.

Balancing is per request, not per connection: one client keep-alive connection
spreads its requests over every endpoint. Two policies: ``round_robin`` (the
default, as Envoy's; even and deterministic, which makes splits easy to see in
a lab) and ``least_request`` (Envoy's power of two choices: pick two endpoints
at random and take the one with fewer requests in flight; better when
endpoints differ in speed).
"""

from __future__ import annotations

import random
import socket
import ssl
from collections.abc import Callable, Iterable

import trio

from kmesh.l7.h2c import H2Conn
from kmesh.l7.http1 import ResponseReader
from kmesh.l7.model import Endpoint
from kmesh.l7.rawstream import RawStream
from kmesh.net.sockets import OpenSocket, default_open_socket, family_of

POLICIES = ("round_robin", "least_request")

TLSPolicy = Callable[[str, int], "ssl.SSLContext | None"]
"""(endpoint ip, port) → the client context to speak TLS to it with, or None for plaintext."""


class EndpointSet:
    """The ready endpoints of one backend (Service port) and the balancing state over them."""

    __slots__ = ("endpoints", "keys", "h2c_keys", "names", "active", "_next", "_policy")

    def __init__(self, endpoints: Iterable[Endpoint], policy: str = "round_robin") -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown balancing policy {policy!r}")
        self.endpoints = tuple(endpoints)
        self.keys = [(e.ip, e.port) for e in self.endpoints]
        """Pool keys, per endpoint (computed once, not per request)."""
        self.h2c_keys = [(e.ip, e.port, "kubernetes.io/h2c") for e in self.endpoints]
        self.names = ["%s:%d" % (e.ip, e.port) for e in self.endpoints]
        self.active = [0] * len(self.endpoints)
        self._next = random.randrange(len(self.endpoints)) if self.endpoints else 0
        self._policy = policy

    def pick(self, exclude: int = -1) -> int:
        """The index of the endpoint for the next request (avoiding ``exclude`` if another exists); -1 if none."""
        n = len(self.endpoints)
        if n == 0 or (n == 1 and exclude == 0):
            return -1
        if self._policy == "least_request" and n > 1:
            a = random.randrange(n)
            b = random.randrange(n - 1)
            if b >= a:
                b += 1
            if a == exclude:
                return b
            if b == exclude:
                return a
            return a if self.active[a] <= self.active[b] else b
        i = self._next % n
        self._next = i + 1
        if i == exclude:
            i = self._next % n
            self._next = i + 1
        return i


class UpstreamConn:
    """One HTTP/1.1 connection to an endpoint, with its response reader; TLS when ``ssl_context`` is given
    (the mesh's sidecar-to-sidecar connections), else the raw socket stream."""

    __slots__ = ("key", "raw", "stream", "reader", "dead")

    def __init__(self, key: tuple[str, int], sock: trio.socket.SocketType,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.key = key
        self.dead = False
        self.raw = RawStream(sock)
        self.stream: trio.abc.Stream = self.raw if ssl_context is None else trio.SSLStream(self.raw, ssl_context)
        self.reader = ResponseReader(self.stream)

    def close(self) -> None:
        """Close the socket now."""
        self.raw.close()


class Pool:
    """Idle keep-alive connections per endpoint (most recently used first), opened through ``open_socket``."""

    def __init__(self, open_socket: OpenSocket = default_open_socket, max_idle: int = 256,
                 connect_timeout: float = 5.0, tls_for: TLSPolicy | None = None) -> None:
        self.open_socket = open_socket
        self.tls_for = tls_for
        """Which endpoints get TLS, and with which client context (None: none do)."""
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple, list[UpstreamConn | H2Conn]] = {}
        self.closed = False
        self._live: set[tuple[str, int]] | None = None

    def take(self, key: tuple) -> UpstreamConn | H2Conn | None:
        """An idle connection to ``key`` (``(ip, port)``, or ``(ip, port, "h2c")``), if there is one. Under a
        TLS policy, idle connections whose TLS no longer matches it (the mesh's mTLS mode of the endpoint's
        namespace changed) are closed instead of reused."""
        idle = self._idle.get(key)
        if not idle:
            return None
        if self.tls_for is None or len(key) > 2:
            return idle.pop()
        tls = self.tls_for(key[0], key[1]) is not None
        while idle:
            conn = idle.pop()
            if (conn.stream is not conn.raw) == tls:  # type: ignore[union-attr]
                return conn
            conn.close()
        return None

    async def connect(self, key: tuple) -> UpstreamConn | H2Conn:
        """A new connection to ``key`` (h2c when its third item says so); OSError or trio.TooSlowError on failure."""
        sock = await self.open_socket(family_of(key[0]), socket.SOCK_STREAM)
        try:
            with trio.fail_after(self.connect_timeout):
                await sock.connect(key[:2])
        except BaseException:
            sock.close()
            raise
        if len(key) > 2:
            return H2Conn(key, sock)
        ctx = self.tls_for(key[0], key[1]) if self.tls_for is not None else None
        return UpstreamConn(key, sock, ctx)

    def put(self, conn: UpstreamConn | H2Conn) -> None:
        """Give a connection whose last exchange completed cleanly back for reuse."""
        idle = self._idle.setdefault(conn.key, [])
        if self.closed or conn.dead or len(idle) >= self.max_idle or \
                self._live is not None and conn.key[:2] not in self._live:
            conn.close()
        else:
            idle.append(conn)

    def forget(self, keep: set[tuple[str, int]]) -> None:
        """Close idle connections to endpoints not in ``keep``; connections to others are not kept from now on."""
        self._live = keep
        for key in [k for k in self._idle if k[:2] not in keep]:
            for conn in self._idle.pop(key):
                conn.close()

    def close(self) -> None:
        """Close every idle connection; later ``put``s close theirs."""
        self.closed = True
        self.forget(set())
