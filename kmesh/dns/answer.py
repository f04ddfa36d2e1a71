"""Build the answer message for a ``Result`` with dnslib (the slow path; its bytes are then cached)."""

from __future__ import annotations

from dnslib import AAAA as RD_AAAA
from dnslib import CNAME as RD_CNAME
from dnslib import NS as RD_NS
from dnslib import PTR as RD_PTR
from dnslib import RR as DRR
from dnslib import SOA as RD_SOA
from dnslib import SRV as RD_SRV
from dnslib import TXT as RD_TXT
from dnslib import A as RD_A
from dnslib import DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from kmesh.dns.lookup import (
    AAAA,
    CNAME,
    NS,
    PTR,
    SOA,
    SRV,
    TXT,
    A,
    Result,
)


def _rdata(rtype: int, rdata: object, soa_fields: tuple[str, str, tuple[int, ...]]) -> object:
    if rtype == A:
        return RD_A(rdata)
    if rtype == AAAA:
        return RD_AAAA(rdata)
    if rtype == CNAME:
        return RD_CNAME(rdata + ".")  # type: ignore[operator]
    if rtype == PTR:
        return RD_PTR(rdata + ".")  # type: ignore[operator]
    if rtype == NS:
        return RD_NS(rdata + ".")  # type: ignore[operator]
    if rtype == TXT:
        return RD_TXT(rdata)
    if rtype == SRV:
        prio, weight, port, target = rdata  # type: ignore[misc]
        return RD_SRV(prio, weight, port, target + ".")
    if rtype == SOA:
        return RD_SOA(soa_fields[0] + ".", soa_fields[1] + ".", soa_fields[2])
    raise ValueError(f"no encoder for type {rtype}")


def encode(
    labels: list[bytes], qtype: int, qclass: int, res: Result, *, zone: str, ttl: int, serial: int,
    extra_answer: list[DRR] | None = None,
) -> bytes:
    """Wire bytes (id 0, no OPT) answering the lower-case question ``labels``/``qtype``/``qclass`` with ``res``."""
    soa = (f"ns.dns.{zone}", f"hostmaster.{zone}", (serial, 7200, 1800, 86400, ttl))
    hdr = DNSHeader(id=0, qr=1, aa=1 if res.authoritative else 0, rd=0, ra=0, rcode=res.rcode)
    msg = DNSRecord(hdr, q=DNSQuestion(DNSLabel(labels), qtype, qclass))
    qname = ".".join(lbl.decode("latin-1") for lbl in labels)

    def owner(name: str) -> DNSLabel:
        return DNSLabel(labels) if name == qname else DNSLabel(name + ".")

    for name, rtype, rttl, rdata in res.answer:
        msg.add_answer(DRR(owner(name), rtype, 1, rttl, _rdata(rtype, rdata, soa)))
    for rr in extra_answer or []:
        msg.add_answer(rr)
    if res.negative and res.authoritative and not extra_answer:
        msg.add_auth(DRR(zone + ".", SOA, 1, min(ttl, 300), _rdata(SOA, "", soa)))
    for name, rtype, rttl, rdata in res.additional:
        msg.add_ar(DRR(owner(name), rtype, 1, rttl, _rdata(rtype, rdata, soa)))
    return bytes(msg.pack())


__all__ = ["encode"]
