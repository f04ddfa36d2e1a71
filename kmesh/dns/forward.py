"""Forward non-cluster questions to upstream resolvers, with a small answer cache (CoreDNS ``forward`` + ``cache``)."""

from __future__ import annotations

import random
import socket
import struct
from collections import OrderedDict

import trio

from kmesh.dns.wire import Query

MAX_CACHE_TTL = 30.0
NEG_CACHE_TTL = 5.0


def _min_ttl(msg: bytes, qend: int) -> float:
    """The smallest TTL in the answer and authority sections (0 when unreadable)."""
    try:
        an, ns = struct.unpack_from("!HH", msg, 6)
        i, best = qend, None
        for _ in range(an + ns):
            while True:
                ln = msg[i]
                if ln == 0:
                    i += 1
                    break
                if ln & 0xC0 == 0xC0:
                    i += 2
                    break
                i += 1 + ln
            _, _, ttl, rdlen = struct.unpack_from("!HHIH", msg, i)
            i += 10 + rdlen
            best = ttl if best is None else min(best, ttl)
        return float(best) if best is not None else NEG_CACHE_TTL
    except (IndexError, struct.error):
        return 0.0


class Forwarder:
    """Sends queries to the first upstream that answers; caches answers for min(TTL, 30 s)."""

    def __init__(self, upstreams: list[tuple[str, int]], *, timeout: float = 2.0, cache_size: int = 10000) -> None:
        self.upstreams = upstreams
        self.timeout = timeout
        self.cache_size = cache_size
        self.cache: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def cached(self, q: Query) -> bytes | None:
        """A cached answer (id 0) to ``q``, if still fresh."""
        hit = self.cache.get(self._key(q))
        if hit is None:
            return None
        expires, msg = hit
        if expires < trio.current_time():
            return None
        self.hits += 1
        return msg

    @staticmethod
    def _key(q: Query) -> bytes:
        return q.key + bytes((q.opt, q.do))

    async def query(self, data: bytes, q: Query, *, tcp: bool = False) -> bytes | None:
        """The upstream answer to ``data`` (its id replaced by ours on the way out and back), or None."""
        hit = self.cached(q)
        if hit is not None:
            return hit
        self.misses += 1
        for host, port in self.upstreams:
            with trio.move_on_after(self.timeout):
                try:
                    resp = await self._udp(data, host, port)
                    if resp is not None and resp[2] & 0x02 and tcp:
                        resp = await self._tcp(data, host, port)
                except OSError:
                    continue
                if resp is None:
                    continue
                rcode = resp[3] & 0x0F
                if rcode == 2:  # SERVFAIL: try the next one
                    continue
                if not resp[2] & 0x02:
                    ttl = min(_min_ttl(resp, q.qend), MAX_CACHE_TTL)
                    if ttl > 0:
                        self.cache[self._key(q)] = (trio.current_time() + ttl, resp)
                        while len(self.cache) > self.cache_size:
                            self.cache.popitem(last=False)
                return resp
        return None

    async def _udp(self, data: bytes, host: str, port: int) -> bytes | None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        qid = random.getrandbits(16)
        with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
            await sock.connect((host, port))
            await sock.send(struct.pack("!H", qid) + data[2:])
            qs = q_section(data).lower()
            while True:
                resp = await sock.recv(65535)
                if (len(resp) >= 12 and struct.unpack_from("!H", resp)[0] == qid and resp[2] & 0x80
                        and resp[12:12 + len(qs)].lower() == qs):
                    return b"\x00\x00" + resp[2:]

    async def _tcp(self, data: bytes, host: str, port: int) -> bytes | None:
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(struct.pack("!H", len(data)) + b"\x00\x00" + data[2:])
            buf = b""
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return None
                buf += chunk
                if len(buf) >= 2 and len(buf) >= 2 + struct.unpack_from("!H", buf)[0]:
                    n = struct.unpack_from("!H", buf)[0]
                    return b"\x00\x00" + buf[4:2 + n]


def q_section(data: bytes) -> bytes:
    """The question section bytes of a well-formed single-question message."""
    i = 12
    while data[i]:
        i += 1 + data[i]
    return data[12:i + 5]
