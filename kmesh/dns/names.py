"""Parse a question name into what is asked (CoreDNS ``plugin/kubernetes/parse.go``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    """What part of the cluster namespace a name points at."""

    APEX = "apex"            # the zone itself
    NS_HOST = "ns-host"      # ns.dns.<zone>
    VERSION = "version"      # dns-version.<zone>
    SVC_ROOT = "svc-root"    # svc.<zone> / pod.<zone>
    NAMESPACE = "namespace"  # <ns>.svc.<zone> / <ns>.pod.<zone>
    SERVICE = "service"      # [<ep>.]<svc>.<ns>.svc.<zone> or _<port>._<proto>.<svc>.<ns>.svc.<zone>
    POD = "pod"              # <dashed-ip>.<ns>.pod.<zone>
    INVALID = "invalid"      # inside the zone but not a name the spec defines: NXDOMAIN
    REVERSE = "reverse"      # in-addr.arpa / ip6.arpa with a whole address
    OUTSIDE = "outside"      # not ours: forward


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed question name (all labels lower-case)."""

    kind: Kind
    namespace: str = ""
    service: str = ""
    endpoint: str = ""
    port: str = ""
    protocol: str = ""
    pod: str = ""
    ip: str = ""


def parse(name: str, zone: str) -> Request:
    """Classify ``name`` (lower-case, no trailing dot) against ``zone``."""
    if name == zone:
        return Request(Kind.APEX)
    if name.endswith("." + zone):
        segs = name[: -len(zone) - 1].split(".")
        return _in_zone(segs)
    if name.endswith((".in-addr.arpa", ".ip6.arpa")):
        ip = reverse_ip(name)
        return Request(Kind.REVERSE, ip=ip) if ip else Request(Kind.OUTSIDE)
    return Request(Kind.OUTSIDE)


def _in_zone(segs: list[str]) -> Request:
    if segs == ["dns-version"]:
        return Request(Kind.VERSION)
    if segs == ["ns", "dns"]:
        return Request(Kind.NS_HOST)
    last = segs[-1]
    if last not in ("svc", "pod"):
        return Request(Kind.INVALID)
    rest = segs[:-1]
    if not rest:
        return Request(Kind.SVC_ROOT)
    if last == "pod":
        if len(rest) == 1:
            return Request(Kind.NAMESPACE, namespace=rest[0])
        if len(rest) == 2:
            return Request(Kind.POD, pod=rest[0], namespace=rest[1])
        return Request(Kind.INVALID)
    if len(rest) == 1:
        return Request(Kind.NAMESPACE, namespace=rest[0])
    if len(rest) == 2:
        return Request(Kind.SERVICE, service=rest[0], namespace=rest[1])
    if len(rest) == 3:
        return Request(Kind.SERVICE, endpoint=rest[0], service=rest[1], namespace=rest[2])
    if len(rest) == 4:
        return Request(
            Kind.SERVICE, port=_strip_underscore(rest[0]), protocol=_strip_underscore(rest[1]),
            service=rest[2], namespace=rest[3],
        )
    return Request(Kind.INVALID)


def _strip_underscore(label: str) -> str:
    return label.removeprefix("_")


def reverse_ip(name: str) -> str:
    """The address a full reverse name stands for, or "" (partial names are not addresses)."""
    if name.endswith(".in-addr.arpa"):
        parts = name[: -len(".in-addr.arpa")].split(".")
        if len(parts) != 4 or not all(p.isascii() and p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts):
            return ""
        return ".".join(reversed(parts))
    parts = name[: -len(".ip6.arpa")].split(".")
    if len(parts) != 32 or not all(len(p) == 1 and p in "0123456789abcdef" for p in parts):
        return ""
    nibbles = "".join(reversed(parts))
    return str(ipaddress.IPv6Address(int(nibbles, 16)))


def reverse_name(ip: str) -> str:
    """The PTR owner name of an address (no trailing dot)."""
    return ipaddress.ip_address(ip).reverse_pointer


def dashed(ip: str) -> str:
    """An endpoint name made of its address: ``10-1-2-3``; IPv6 ``:`` → ``-``, a trailing ``-`` gets a ``0``."""
    if ":" in ip:
        out = ip.replace(":", "-")
        if out.endswith("-"):
            out += "0"
        return out
    return ip.replace(".", "-")


def undashed(label: str) -> str:
    """The address a pod label names (``10-1-2-3`` or ``fd00--1``), or "" when it is none."""
    for cand in (label.replace("-", "."), label.replace("-", ":")):
        try:
            return str(ipaddress.ip_address(cand))
        except ValueError:
            continue
    return ""
