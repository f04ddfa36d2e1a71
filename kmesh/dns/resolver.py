"""The query handler: prepared wire answers on the fast path, lookup + dnslib on a miss, forwarding for the rest.

``Resolver.handle`` is synchronous and never raises on any input; it returns
the reply bytes, None (drop), or a ``Pending`` the transport finishes
asynchronously (upstream forwarding, ExternalName targets outside the zone).
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import time
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from dnslib import DNSRecord

from kmesh.dns.answer import encode
from kmesh.dns.config import DNSConfig
from kmesh.dns.forward import Forwarder
from kmesh.dns.lookup import AAAA, REFUSED, SERVFAIL, SRV, A, Lookup, Result
from kmesh.dns.metrics import Stats
from kmesh.dns.model import Service, Snapshot
from kmesh.dns.names import Kind, parse
from kmesh.dns.wire import (
    AXFR,
    BADVERS,
    IXFR,
    Entry,
    Malformed,
    Query,
    error_response,
    make_entry,
    parse_query,
    render,
    truncated,
)

log = logging.getLogger("kmesh.dns")
SIMPLE_QUERY = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # QD=1, AN=NS=AR=0


@dataclass(slots=True)
class Pending:
    """A query that needs the network before it can be answered."""

    data: bytes
    query: Query
    tcp: bool
    limit: int
    payload: int
    chase: Result | None = None  # an ExternalName answer waiting for its outside target's records


def qname_wire(name: str) -> bytes:
    """A lower-case name in wire format."""
    out = b"".join(bytes((len(lbl),)) + lbl.encode() for lbl in name.lower().split(".") if lbl)
    return out + b"\x00"


class Resolver:
    """Holds the current snapshot and its prepared answers; answers queries."""

    def __init__(self, cfg: DNSConfig, stats: Stats | None = None, forwarder: Forwarder | None = None,
                 ns_ips: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.cfg = cfg
        self.stats = stats or Stats("dns://:53", cfg.zone)
        self.forwarder = forwarder
        self.ns_ips = ns_ips
        self.snapshot: Snapshot | None = None
        self.lookup: Lookup | None = None
        self.serial = int(time.time())
        self.answers: dict[bytes, Entry] = {}
        self._owners: dict[bytes, Service] = {}  # prepared positive answers that depend on one Service record only
        self.generation = 0
        self._allowed_nets = [ipaddress.ip_network(n, strict=False) for n in cfg.allowed_networks]
        self._allowed: dict[str, bool] = {}
        self.internal_errors = 0
        self.inflight = 0
        self.max_inflight = 1024  # forwarded queries waiting at once; beyond that: SERVFAIL at once

    # -- state -----------------------------------------------------------------------------

    def install(self, snap: Snapshot, serial: int | None = None) -> bool:
        """Serve ``snap`` from now on (returns False when it equals the current one: nothing DNS-visible changed)."""
        if self.snapshot is not None and snap == self.snapshot:
            return False
        self.snapshot = snap
        self.lookup = Lookup(snap, self.cfg.zone, self.cfg.ttl, self.cfg.pods, self.ns_ips)
        self.serial = max(serial or int(time.time()), self.serial if self.generation else 0)
        # Positive answers of Services whose record is the very same object stay valid (they carry no SOA).
        self._owners = {k: svc for k, svc in self._owners.items()
                        if snap.services.get((svc.namespace, svc.name)) is svc}
        self.answers = {k: self.answers[k] for k in self._owners}
        self.generation += 1
        return True

    def prepare(self, names: list[tuple[str, int]]) -> None:
        """Encode answers for (name, qtype) pairs ahead of the queries."""
        for name, qtype in names:
            wire = qname_wire(name)
            data = b"\x00\x00\x01\x00" + SIMPLE_QUERY + wire + struct.pack("!HH", qtype, 1)
            try:
                self.handle(data, "127.0.0.1", False, count=False)
            except Exception:
                log.exception("preparing %s/%d", name, qtype)

    def hot_names(self) -> list[tuple[str, int]]:
        """The questions worth preparing: A/AAAA/SRV of every service and A/AAAA of every endpoint name."""
        if self.snapshot is None:
            return []
        z = self.cfg.zone
        out: list[tuple[str, int]] = []
        for s in self.snapshot.services.values():
            base = f"{s.name}.{s.namespace}.svc.{z}"
            out += [(base, A), (base, AAAA), (base, SRV)]
            for p in s.ports:
                if p.name:
                    out.append((f"_{p.name}._{p.protocol}.{base}", SRV))
            for ep in s.endpoints:
                out += [(f"{ep.name}.{base}", A), (f"{ep.name}.{base}", AAAA)]
        return out

    def allowed(self, ip: str) -> bool:
        """May this client have names forwarded?"""
        ok = self._allowed.get(ip)
        if ok is None:
            try:
                addr = ipaddress.ip_address(ip.split("%", 1)[0])
                if addr.version == 6 and addr.ipv4_mapped:
                    addr = addr.ipv4_mapped
                ok = any(addr in n for n in self._allowed_nets)
            except ValueError:
                ok = False
            if len(self._allowed) < 65536:
                self._allowed[ip] = ok
        return ok

    # -- queries ---------------------------------------------------------------------------

    def fast(self, data: bytes) -> bytes | None:
        """The UDP answer when the query is a plain one whose question was prepared; else None (call ``handle``).

        Counted in bulk (``Stats.fast``), untimed: it takes microseconds, well inside the lowest bucket.
        """
        if data[4:12] != SIMPLE_QUERY or data[2] & 0xF8:
            return None
        e = self.answers.get(data[12:-4].lower() + data[-4:])
        if e is None or e.size > 512:
            return None
        self.stats.fast[data[-3] << 4 | (e.b3 & 0x0F)] += 1
        return b"".join((data[:2], e.heads[(data[2] & 1) | (data[3] >> 3 & 2)], data[12:], e.tail))

    def handle(self, data: bytes, client: str, tcp: bool, *, count: bool = True) -> bytes | Pending | None:
        """Answer one message from ``client``: bytes to send, None to drop, or a ``Pending`` to finish."""
        t0 = perf_counter()
        # Fast path: a plain query whose question we prepared (matched on the raw, lower-cased question).
        if data[4:12] == SIMPLE_QUERY and not data[2] & 0xF8 and len(data) > 16:
            e = self.answers.get(data[12:-4].lower() + data[-4:])
            if e is not None and (tcp or e.size <= 512):
                out = b"".join((data[:2], bytes((e.b2 | (data[2] & 0x01), e.b3 | (data[3] & 0x10))),
                                e.counts, data[12:], e.tail))
                if count:
                    self.stats.observe("tcp" if tcp else "udp", data[-3], e.b3 & 0x0F, perf_counter() - t0)
                return out
        try:
            out, rcode, qtype = self._slow(data, client, tcp)
        except Exception:
            self.internal_errors += 1
            log.exception("answering a query")
            out, rcode, qtype = error_response(data, SERVFAIL) or None, SERVFAIL, 0
        if count and not isinstance(out, Pending):
            self.stats.observe("tcp" if tcp else "udp", qtype, rcode if out else -1, perf_counter() - t0)
        return out

    def _slow(self, data: bytes, client: str, tcp: bool) -> tuple[bytes | Pending | None, int, int]:
        try:
            q = parse_query(data)
        except Malformed as exc:
            if exc.rcode is None:
                return None, -1, 0
            return error_response(data, exc.rcode, qend=exc.qend), exc.rcode, 0
        payload = self.cfg.max_udp_payload
        if q.opt and q.edns_version != 0:
            return error_response(data, BADVERS, q, payload=payload), BADVERS, q.qtype
        limit = 65535 if tcp else (min(q.udp_size, payload) if q.opt else 512)
        if q.qclass != 1 or q.qtype in (AXFR, IXFR):
            return error_response(data, REFUSED, q, payload=payload), REFUSED, q.qtype
        e = self.answers.get(q.key)
        if e is not None:
            return render(data, q, e, limit, payload), e.b3 & 0x0F, q.qtype
        name = q.qname
        req = parse(name, self.cfg.zone)
        kind = req.kind
        if kind is Kind.OUTSIDE:
            return self._outside(data, q, client, tcp, limit, payload)
        if self.lookup is None:
            return error_response(data, SERVFAIL, q, payload=payload), SERVFAIL, q.qtype
        res = self.lookup.resolve(name, q.qtype)
        if res.rcode == REFUSED:  # a reverse name that is not ours: fall through to upstream
            return self._outside(data, q, client, tcp, limit, payload)
        keep = True
        if res.chase:
            can_forward = self.forwarder is not None and bool(self.forwarder.upstreams)
            if can_forward and self.allowed(client) and self.inflight < self.max_inflight:
                return Pending(data, q, tcp, limit, payload, chase=res), 0, q.qtype
            res.chase = ""
            keep = not can_forward  # CNAME alone is the answer only when nobody may forward
        tmpl = encode(q.labels, q.qtype, q.qclass, res, zone=self.cfg.zone, ttl=self.cfg.ttl, serial=self.serial)
        e = make_entry(tmpl, q.qend)
        if keep and len(self.answers) < self.cfg.cache_size:
            self.answers[q.key] = e
            if kind is Kind.SERVICE and not res.negative and not res.chase and self.snapshot is not None:
                svc = self.snapshot.service(req.namespace, req.service)
                if svc is not None and svc.type != "ExternalName":
                    self._owners[q.key] = svc
        return render(data, q, e, limit, payload), res.rcode, q.qtype

    def _outside(self, data: bytes, q: Query, client: str, tcp: bool, limit: int, payload: int) -> tuple[Any, int, int]:
        if self.forwarder is None or not self.forwarder.upstreams or not self.allowed(client):
            return error_response(data, REFUSED, q, payload=payload), REFUSED, q.qtype
        hit = self.forwarder.cached(q)
        if hit is not None:
            return self._fit(data, q, hit, limit, payload), hit[3] & 0x0F, q.qtype
        if self.inflight >= self.max_inflight:
            return error_response(data, SERVFAIL, q, payload=payload), SERVFAIL, q.qtype
        return Pending(data, q, tcp, limit, payload), 0, q.qtype

    def _fit(self, data: bytes, q: Query, msg: bytes, limit: int, payload: int) -> bytes:
        out = data[:2] + msg[2:12] + data[12:q.qend] + msg[q.qend:]
        if len(out) > limit:
            return truncated(data, q, out[2] & ~0x02, out[3], payload)  # upstream's OPT is inside: cut it all
        return out

    async def finish(self, p: Pending) -> bytes | None:
        """Complete a ``Pending`` (forward upstream); SERVFAIL when no upstream answers."""
        t0 = perf_counter()
        assert self.forwarder is not None
        q = p.query
        self.inflight += 1
        try:
            if p.chase is not None:
                out = await self._chase(p)
            else:
                msg = await self.forwarder.query(p.data, q, tcp=p.tcp)
                out = (self._fit(p.data, q, msg, p.limit, p.payload) if msg
                       else error_response(p.data, SERVFAIL, q, payload=p.payload))
        finally:
            self.inflight -= 1
        self.stats.observe("tcp" if p.tcp else "udp", q.qtype, out[3] & 0x0F, perf_counter() - t0)
        return out

    async def _chase(self, p: Pending) -> bytes:
        assert self.forwarder is not None and p.chase is not None
        q = p.query
        target = p.chase.chase
        sub = b"\x00\x00\x01\x00" + SIMPLE_QUERY + qname_wire(target) + struct.pack("!HH", q.qtype, 1)
        tq = parse_query(sub)
        msg = await self.forwarder.query(sub, tq, tcp=p.tcp)
        extra = []
        tc = False
        if msg:
            try:
                rec = DNSRecord.parse(msg)
                extra = list(rec.rr)
                tc = bool(rec.header.tc)
            except Exception:  # noqa: BLE001 - an unreadable upstream answer just adds nothing
                extra = []
        tmpl = encode(q.labels, q.qtype, q.qclass, p.chase, zone=self.cfg.zone, ttl=self.cfg.ttl,
                      serial=self.serial, extra_answer=extra)
        e = make_entry(tmpl, q.qend)
        out = render(p.data, q, e, p.limit, p.payload)
        if tc and not out[2] & 0x02:
            out = out[:2] + bytes((out[2] | 0x02,)) + out[3:]
        return out
