"""Malformed and hostile input: FORMERR/NOTIMP or a silent drop, never a crash or a hang.

The fuzz tests call the handler directly (no network): 100,000 seeded random
and mutated packets, then hypothesis-driven structural mutations.
"""

from __future__ import annotations

import random
import socket
import struct

import dns.message
import dns.rcode
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmesh.dns.config import DNSConfig
from kmesh.dns.model import build_snapshot
from kmesh.dns.resolver import Pending, Resolver
from kmesh.dns.wire import Malformed, parse_query
from tests.dns.conftest import DNSLab, endpoint_slice, ep, service

Z = "cluster.local"


def resolver() -> Resolver:
    """A resolver serving a small fixed cluster (no API server needed)."""
    svc = service("web", ports=[{"name": "http", "port": 80, "protocol": "TCP"}])
    svc["spec"]["clusterIP"] = "10.96.0.20"
    hl = service("db", cluster_ip="None")
    ext = service("ext", external="web.default.svc.cluster.local")
    sl = endpoint_slice("db", endpoints=[ep("10.244.0.5"), ep("10.244.0.6", hostname="h")])
    snap = build_snapshot([svc, hl, ext], [sl], [{"metadata": {"name": "default"}}])
    r = Resolver(DNSConfig(upstreams=[], metrics_port=None))
    r.install(snap)
    r.prepare(r.hot_names())
    return r


SEEDS = [
    dns.message.make_query(f"web.default.svc.{Z}", "A").to_wire(),
    dns.message.make_query(f"_http._tcp.web.default.svc.{Z}", "SRV", use_edns=0).to_wire(),
    dns.message.make_query(f"h.db.default.svc.{Z}", "AAAA").to_wire(),
    dns.message.make_query(f"ext.default.svc.{Z}", "A").to_wire(),
    dns.message.make_query("20.0.96.10.in-addr.arpa", "PTR").to_wire(),
    dns.message.make_query("example.org", "MX", use_edns=0, payload=512).to_wire(),
]


def check(r: Resolver, data: bytes) -> None:
    """Handle ``data`` over UDP and TCP; whatever comes back is a well-formed reply to it."""
    for tcp in (False, True):
        out = r.handle(data, "127.0.0.1", tcp)
        assert not isinstance(out, Pending)  # forwarding is off
        if out is None:
            continue
        assert out[:2] == data[:2] and out[2] & 0x80
        if not tcp:
            try:
                limit = 4096 if parse_query(data).opt else 512
            except Malformed:
                limit = 512
            assert len(out) <= limit
            dns.message.from_wire(out)  # well-formed for a real parser
    assert r.internal_errors == 0


def mutate(rng: random.Random, pkt: bytes) -> bytes:
    b = bytearray(pkt)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            b[rng.randrange(len(b) + 1):0] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and len(b) > 13:
            i = rng.randrange(12, len(b) - 1)
            b[i:i + 2] = bytes((0xC0 | rng.randrange(64), rng.randrange(256)))  # compression pointers, loops
        elif op == 4 and len(b) >= 12:
            b[4:12] = struct.pack("!HHHH", *(rng.choice((0, 1, 2, 0xFFFF)) for _ in range(4)))
    return bytes(b)


def test_fuzz_100k_random_and_mutated_packets() -> None:
    r = resolver()
    rng = random.Random(20261123)
    for i in range(100_000):
        if i % 4 == 0:
            data = rng.randbytes(rng.randrange(0, 80))
        else:
            data = mutate(rng, rng.choice(SEEDS))
        check(r, data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.binary(min_size=12, max_size=12), labels=st.lists(st.binary(min_size=0, max_size=70), max_size=8),
       tail=st.binary(max_size=40))
def test_hypothesis_structured_packets(header: bytes, labels: list[bytes], tail: bytes) -> None:
    r = RESOLVER
    name = b"".join(bytes((min(len(lbl), 255),)) + lbl for lbl in labels) + b"\x00"
    check(r, header + name + tail)
    check(r, header[:2] + b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + tail)


RESOLVER = resolver()


def raw_query(name: bytes, *, flags: int = 0x0100, qd: int = 1, ar: int = 0, qid: int = 0x1234) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, 0, 0, ar) + name + b"\x00\x01\x00\x01"


WEB = b"\x03web\x07default\x03svc\x07cluster\x05local\x00"


@pytest.mark.parametrize("data,rcode", [
    (b"\x12\x34\x01", None),                                            # truncated header: dropped
    (raw_query(WEB)[:20], dns.rcode.FORMERR),                           # truncated question
    (raw_query(b"\xc0\x0c"), dns.rcode.FORMERR),                        # a pointer loop onto itself
    (raw_query(b"\x03abc\xc0\x0c"), dns.rcode.FORMERR),                 # label then loop
    (raw_query(b"\xc0\xff"), dns.rcode.FORMERR),                        # pointer past the end
    (raw_query(b"\x40" + b"a" * 64 + b"\x00"), dns.rcode.FORMERR),      # label over 63
    (raw_query(b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\x00"), dns.rcode.FORMERR),  # name over 255
    (raw_query(WEB, qd=0), dns.rcode.FORMERR),
    (raw_query(WEB, qd=2), dns.rcode.FORMERR),
    (raw_query(WEB, flags=0x0100 | (2 << 11)), dns.rcode.NOTIMP),       # STATUS opcode
    (raw_query(WEB, flags=0x0100 | (5 << 11)), dns.rcode.NOTIMP),       # UPDATE
    (raw_query(WEB, flags=0x8100), None),                               # a response: never answered
    (raw_query(WEB, ar=1), dns.rcode.FORMERR),                          # additional record missing
    (raw_query(WEB, ar=2) + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00" * 2, dns.rcode.FORMERR),  # two OPTs
])
def test_malformed_queries(data: bytes, rcode: int | None) -> None:
    r = resolver()
    out = r.handle(data, "127.0.0.1", False)
    if rcode is None:
        assert out is None
        return
    assert isinstance(out, bytes) and out[:2] == data[:2] and out[3] & 0x0F == rcode
    assert r.internal_errors == 0


def test_trailing_garbage_and_oversize_are_handled() -> None:
    r = resolver()
    out = r.handle(raw_query(WEB) + b"\xff" * 5000, "127.0.0.1", False)
    assert isinstance(out, bytes) and out[3] & 0x0F == 0 and struct.unpack_from("!H", out, 6)[0] == 1


async def test_server_survives_garbage_over_udp_and_tcp(lab: DNSLab) -> None:
    await lab.client.create(service("web"))
    await lab.settle(lambda s: s.service("default", "web") is not None)
    rng = random.Random(7)
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        await u.connect((lab.host, lab.port))
        for _ in range(300):
            await u.send(mutate(rng, SEEDS[0]))
        await u.send(b"\x00" * 9000)
    # TCP: a length prefix promising more than is sent, then close; and a bare half-prefix.
    for junk in (b"\x01\x00abc", b"\x00"):
        stream = await trio.open_tcp_stream(lab.host, lab.port)
        await stream.send_all(junk)
        await stream.aclose()
    # A zero-length TCP message: closed or FORMERR, not a hang.
    stream = await trio.open_tcp_stream(lab.host, lab.port)
    with trio.fail_after(10):
        await stream.send_all(b"\x00\x00")
        await stream.receive_some(100)
    await stream.aclose()
    for tcp in (False, True):
        msg = await lab.query(f"web.default.svc.{Z}", "A", tcp=tcp)
        assert len(msg.answer) == 1
    assert lab.dns.resolver.internal_errors == 0
