"""Raw DNS message handling without dnslib: read a query's header, question and OPT, and stamp prepared answers.

A prepared answer (``Entry``) is the encoded response to the lower-case
question with id 0. Serving it means copying the query's id, RD and CD bits
and its question bytes (so the answer echoes the query's letter case: names
in the answer point back at the question through compression) in front of
the prepared records, and adding an OPT record when the query had one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

FORMERR, SERVFAIL, NOTIMP, REFUSED = 1, 2, 4, 5
BADVERS = 16
OPT = 41
AXFR, IXFR = 252, 251
MAX_NAME = 255
HEADER = struct.Struct("!HBBHHHH")


class Malformed(Exception):
    """The message cannot be a query we answer; ``rcode`` is FORMERR/NOTIMP, or None to drop it silently."""

    def __init__(self, rcode: int | None, qend: int = 0) -> None:
        super().__init__(rcode)
        self.rcode = rcode
        self.qend = qend


@dataclass(slots=True)
class Query:
    """A parsed query: where the question ends, its match key and its EDNS details."""

    qend: int
    key: bytes           # lower-cased qname wire + qtype + qclass
    labels: list[bytes]  # lower-cased labels
    qtype: int
    qclass: int
    opt: bool = False
    udp_size: int = 512
    edns_version: int = 0
    do: bool = False

    @property
    def qname(self) -> str:
        """The lower-case name as text (no trailing dot)."""
        return ".".join(lbl.decode("latin-1") for lbl in self.labels)


def parse_query(data: bytes) -> Query:
    """Parse a query's header, question and additional OPT; raises ``Malformed``."""
    if len(data) < 12:
        raise Malformed(None)
    _, b2, _, qd, an, ns, ar = HEADER.unpack_from(data)
    if b2 & 0x80:
        raise Malformed(None)  # a response: never answer those (reflection loops)
    if (b2 >> 3) & 0x0F != 0:
        raise Malformed(NOTIMP)
    if qd != 1:
        raise Malformed(FORMERR)
    labels: list[bytes] = []
    i = 12
    n = len(data)
    total = 1
    while True:
        if i >= n:
            raise Malformed(FORMERR)
        ln = data[i]
        if ln == 0:
            i += 1
            break
        if ln > 63:
            raise Malformed(FORMERR)  # compression (or reserved bits) in a question: refuse, no pointer chasing
        total += ln + 1
        if total > MAX_NAME or i + 1 + ln > n:
            raise Malformed(FORMERR)
        labels.append(data[i + 1:i + 1 + ln].lower())
        i += 1 + ln
    if i + 4 > n:
        raise Malformed(FORMERR)
    qtype, qclass = struct.unpack_from("!HH", data, i)
    qend = i + 4
    q = Query(qend, data[12:i].lower() + data[i:qend], labels, qtype, qclass)
    if an or ns:
        raise Malformed(FORMERR, qend)
    if ar:
        _parse_additional(data, qend, ar, q)
    return q


def _skip_name(data: bytes, i: int) -> int:
    """Offset after a (possibly compressed) name; bounded, never follows pointers."""
    for _ in range(128):
        if i >= len(data):
            raise Malformed(FORMERR)
        ln = data[i]
        if ln == 0:
            return i + 1
        if ln & 0xC0 == 0xC0:
            if i + 2 > len(data):
                raise Malformed(FORMERR)
            return i + 2
        if ln > 63:
            raise Malformed(FORMERR)
        i += 1 + ln
    raise Malformed(FORMERR)


def _parse_additional(data: bytes, i: int, count: int, q: Query) -> None:
    for _ in range(count):
        start = i
        i = _skip_name(data, i)
        if i + 10 > len(data):
            raise Malformed(FORMERR, q.qend)
        rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, i)
        i += 10 + rdlen
        if i > len(data):
            raise Malformed(FORMERR, q.qend)
        if rtype == OPT:
            if q.opt or data[start] != 0:
                raise Malformed(FORMERR, q.qend)
            q.opt = True
            q.udp_size = max(512, rclass)
            q.edns_version = (ttl >> 16) & 0xFF
            q.do = bool(ttl & 0x8000)


@dataclass(frozen=True, slots=True)
class Entry:
    """A prepared answer: flag bytes, section counts and everything after the question."""

    b2: int
    b3: int
    counts: bytes
    counts_opt: bytes
    tail: bytes
    size: int  # length of the whole answer without OPT (for the 512-byte check on the fast path)
    heads: tuple[bytes, bytes, bytes, bytes]
    """Flags + counts for the four RD/CD combinations of a query: index ``(b2 & 1) | (b3 >> 3 & 2)``."""


def make_entry(template: bytes, qend: int) -> Entry:
    """Split an encoded answer (to the lower-case question, id 0, no OPT) into an ``Entry``."""
    ar = struct.unpack_from("!H", template, 10)[0]
    b2, b3, counts = template[2], template[3], template[4:12]
    heads = tuple(bytes((b2 | (i & 1), b3 | (0x10 if i & 2 else 0))) + counts for i in range(4))
    return Entry(b2, b3, counts, template[4:10] + struct.pack("!H", ar + 1), template[qend:], len(template),
                 heads)  # type: ignore[arg-type]


def opt_record(q: Query, payload: int, ext_rcode: int = 0) -> bytes:
    """Our OPT record in reply to ``q`` (DO echoed)."""
    return struct.pack("!BHHBBHH", 0, OPT, payload, ext_rcode, 0, 0x8000 if q.do else 0, 0)


def render(data: bytes, q: Query, e: Entry, limit: int, payload: int) -> bytes:
    """The answer to ``data`` from a prepared entry; cut down (``fit``) beyond ``limit`` bytes."""
    b2 = e.b2 | (data[2] & 0x01)
    b3 = e.b3 | (data[3] & 0x10)
    if q.opt:
        opt = opt_record(q, payload)
        if e.size + len(opt) <= limit:
            return b"".join((data[:2], bytes((b2, b3)), e.counts_opt, data[12:q.qend], e.tail, opt))
    elif e.size <= limit:
        return b"".join((data[:2], bytes((b2, b3)), e.counts, data[12:q.qend], e.tail))
    return fit(b"".join((data[:2], bytes((b2, b3)), e.counts, data[12:q.qend], e.tail)), q, limit, payload)


def fit(msg: bytes, q: Query, limit: int, payload: int) -> bytes:
    """``msg`` (no OPT) cut to ``limit`` bytes with ``q``'s OPT added, as miekg/dns (CoreDNS) truncates: whole
    records in section order; TC=1 only when an answer record had to go (dropped glue alone is no truncation)."""
    opt = opt_record(q, payload) if q.opt else b""
    budget = limit - len(opt)
    counts = struct.unpack_from("!HHH", msg, 6)
    kept = [0, 0, 0]
    i = end = q.qend
    try:
        for sec in range(3):
            for _ in range(counts[sec]):
                j = _skip_name(msg, i)
                j += 10 + struct.unpack_from("!H", msg, j + 8)[0]
                if j > budget:
                    break
                kept[sec] += 1
                i = end = j
            if kept[sec] < counts[sec]:
                break
    except (Malformed, struct.error):
        kept, end = [0, 0, 0], q.qend
    tc = 0x02 if kept[0] < counts[0] else 0
    head = msg[:2] + bytes((msg[2] | tc, msg[3])) + struct.pack("!HHHH", 1, kept[0], kept[1], kept[2] + (1 if opt else 0))
    return head + msg[12:end] + opt


def truncated(data: bytes, q: Query, b2: int, b3: int, payload: int) -> bytes:
    """Header + question (+ OPT) with TC=1: the client retries over TCP."""
    counts = struct.pack("!HHHH", 1, 0, 0, 1 if q.opt else 0)
    out = data[:2] + bytes((b2 | 0x02, b3)) + counts + data[12:q.qend]
    return out + opt_record(q, payload) if q.opt else out


def error_response(data: bytes, rcode: int, q: Query | None = None, qend: int = 0, payload: int = 1232) -> bytes:
    """A bare error answer (FORMERR, NOTIMP, REFUSED, SERVFAIL, BADVERS) echoing the question when there is one."""
    if len(data) < 12:
        return b""
    b2 = 0x80 | (data[2] & 0x79)  # QR, opcode, RD
    ext = 0
    if rcode > 15:
        ext, rcode = rcode >> 4, rcode & 0x0F
    b3 = (data[3] & 0x10) | rcode
    end = q.qend if q is not None else qend
    qd = 1 if end else 0
    with_opt = q is not None and q.opt
    counts = struct.pack("!HHHH", qd, 0, 0, 1 if with_opt else 0)
    out = data[:2] + bytes((b2, b3)) + counts + (data[12:end] if end else b"")
    if with_opt:
        assert q is not None
        out += opt_record(q, payload, ext)
    return out


def with_id(msg: bytes, data: bytes) -> bytes:
    """``msg`` with the id of query ``data``."""
    return data[:2] + msg[2:]
