"""Look up the records for a parsed question (CoreDNS ``plugin/kubernetes`` + ``plugin/backend_lookup``).

Returns a ``Result``: rcode, answer and additional records as plain tuples;
``answer.py`` turns them into wire bytes. NODATA is NOERROR with no answer,
told apart from NXDOMAIN exactly as CoreDNS does: a name that exists for some
type gives NODATA for the others.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from kmesh.dns.model import Service, Snapshot
from kmesh.dns.names import Kind, Request, parse, undashed

A, NS, CNAME, SOA, PTR, TXT, AAAA, SRV = 1, 2, 5, 6, 12, 16, 28, 33
NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5
VERSION = "1.1.0"
VERSION_TTL = 28800

RData = str | tuple[int, int, int, str]
RR = tuple[str, int, int, RData]  # (owner, type, ttl, rdata); owner and names without trailing dot


@dataclass
class Result:
    """An answer before it is encoded; ``chase`` names an outside CNAME target to resolve upstream."""

    rcode: int = NOERROR
    answer: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    authoritative: bool = True
    chase: str = ""

    @property
    def negative(self) -> bool:
        """NXDOMAIN or NODATA: these carry the zone's SOA in authority."""
        return self.rcode == NXDOMAIN or (self.rcode == NOERROR and not self.answer)


def _family(ip: str) -> int:
    return AAAA if ":" in ip else A


class Lookup:
    """Answers questions about one snapshot (one per snapshot; cheap to make)."""

    def __init__(self, snap: Snapshot, zone: str, ttl: int, pods: str, ns_ips: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.snap = snap
        self.zone = zone
        self.ttl = ttl
        self.pods = pods
        self.ns_ips = ns_ips

    # -- entry ---------------------------------------------------------------------------

    def resolve(self, qname: str, qtype: int, depth: int = 0) -> Result:
        """Records for ``qname`` (lower-case, no trailing dot) and ``qtype``; OUTSIDE names give REFUSED here."""
        req = parse(qname, self.zone)
        k = req.kind
        if k is Kind.OUTSIDE:
            return Result(REFUSED, authoritative=False)
        if k is Kind.REVERSE:
            return self._reverse(qname, req, qtype)
        if k is Kind.APEX:
            return self._apex(qtype)
        if k is Kind.VERSION:
            return Result(answer=[(qname, TXT, VERSION_TTL, VERSION)] if qtype == TXT else [])
        if k is Kind.NS_HOST:
            return Result(answer=self._addresses(qname, self._ns_addrs(), qtype))
        if k is Kind.SVC_ROOT:
            return Result()
        if k is Kind.NAMESPACE:
            return Result() if req.namespace in self.snap.namespaces else Result(NXDOMAIN)
        if k is Kind.POD:
            return self._pod(qname, req, qtype)
        if k is Kind.SERVICE:
            return self._service(qname, req, qtype, depth)
        return Result(NXDOMAIN)

    # -- pieces -----------------------------------------------------------------------------

    def _ns_addrs(self) -> list[str]:
        return list(self.snap.dns_service_ips or self.ns_ips)

    def _ns_name(self) -> str:
        if self.snap.dns_service_ips:
            return f"kube-dns.kube-system.svc.{self.zone}"
        return f"ns.dns.{self.zone}"

    def _apex(self, qtype: int) -> Result:
        if qtype == SOA:
            return Result(answer=[(self.zone, SOA, self.ttl, "")])  # rdata filled by the encoder
        if qtype == NS:
            host = self._ns_name()
            return Result(answer=[(self.zone, NS, self.ttl, host)],
                          additional=[(host, _family(ip), self.ttl, ip) for ip in self._ns_addrs()])
        return Result()

    def _addresses(self, owner: str, ips: list[str], qtype: int) -> list[RR]:
        if qtype not in (A, AAAA):
            return []
        return [(owner, qtype, self.ttl, ip) for ip in ips if _family(ip) == qtype]

    def _pod(self, qname: str, req: Request, qtype: int) -> Result:
        if self.pods == "disabled":
            return Result(NXDOMAIN)
        ip = undashed(req.pod)
        if not ip or req.namespace not in self.snap.namespaces:
            return Result(NXDOMAIN)
        if self.pods == "verified" and (req.namespace, ip) not in self.snap.pod_ips:
            return Result(NXDOMAIN)
        return Result(answer=self._addresses(qname, [ip], qtype))

    def _reverse(self, qname: str, req: Request, qtype: int) -> Result:
        names = self.ptr_names(req.ip)
        if not names:
            return Result(REFUSED, authoritative=False)  # not ours: the server forwards it
        if qtype != PTR:
            return Result()
        return Result(answer=[(qname, PTR, self.ttl, n) for n in names])

    def ptr_names(self, ip: str) -> list[str]:
        """Names for an address: the services owning it as a cluster IP, else the endpoints having it."""
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            return []
        svcs = [s for s in self.snap.services.values() if ip in s.cluster_ips]
        if svcs:
            return [self._svc_fqdn(s) for s in svcs]
        out: list[str] = []
        for s in self.snap.services.values():
            for ep in s.endpoints:
                if ep.ip == ip:
                    name = f"{ep.name}.{self._svc_fqdn(s)}"
                    if name not in out:
                        out.append(name)
        return out

    def _svc_fqdn(self, s: Service) -> str:
        return f"{s.name}.{s.namespace}.svc.{self.zone}"

    def _service(self, qname: str, req: Request, qtype: int, depth: int) -> Result:
        svc = self.snap.service(req.namespace, req.service)
        if svc is None:
            return Result(NXDOMAIN)
        if svc.type == "ExternalName":
            return self._external(qname, req, svc, qtype, depth)
        # (address, port, target owner) items, as CoreDNS's msg.Service list
        items: list[tuple[str, int | None, str]] = []
        if svc.headless or req.endpoint:
            for ep in svc.endpoints:
                if req.endpoint and ep.name != req.endpoint:
                    continue
                target = f"{ep.name}.{self._svc_fqdn(svc)}"
                ports = [p for p in ep.ports if _port_match(req, p.name, p.protocol)]
                if not ep.ports and not req.port and not req.protocol:
                    items.append((ep.ip, None, target))
                items.extend((ep.ip, p.port, target) for p in ports)
        else:
            target = self._svc_fqdn(svc)
            for p in svc.ports:
                if _port_match(req, p.name, p.protocol):
                    items.extend((ip, p.port, target) for ip in svc.cluster_ips)
            if not svc.ports and not req.port and not req.protocol:
                items.extend((ip, None, target) for ip in svc.cluster_ips)
        if not items:
            return Result(NXDOMAIN)
        if qtype in (A, AAAA):
            seen: list[str] = []
            for ip, _, _ in items:
                if _family(ip) == qtype and ip not in seen:
                    seen.append(ip)
            return Result(answer=[(qname, qtype, self.ttl, ip) for ip in seen])
        if qtype == SRV:
            return self._srv(qname, items)
        return Result()

    def _srv(self, qname: str, items: list[tuple[str, int | None, str]]) -> Result:
        weight = 100 // len(items)  # counted before duplicates go, as CoreDNS does
        res = Result()
        dup_srv: set[tuple[str, int]] = set()
        dup_glue: set[tuple[str, str]] = set()
        for ip, port, target in items:
            if port is None:
                continue
            if (target, port) not in dup_srv:
                dup_srv.add((target, port))
                res.answer.append((qname, SRV, self.ttl, (0, weight, port, target)))
            if (target, ip) not in dup_glue:
                dup_glue.add((target, ip))
                res.additional.append((target, _family(ip), self.ttl, ip))
        return res

    def _external(self, qname: str, req: Request, svc: Service, qtype: int, depth: int) -> Result:
        if req.endpoint or req.port or req.protocol:
            return Result(NXDOMAIN)
        target = svc.external_name
        if qtype == SRV:
            return Result(answer=[(qname, SRV, self.ttl, (0, 100, 0, target))])
        if qtype not in (A, AAAA, CNAME):
            return Result()
        res = Result(answer=[(qname, CNAME, self.ttl, target)])
        if qtype == CNAME:
            return res
        if target == self.zone or target.endswith("." + self.zone):
            if depth < 8:
                inner = self.resolve(target, qtype, depth + 1)
                if inner.rcode == NOERROR:
                    res.answer.extend(inner.answer)
                    res.chase = inner.chase
        else:
            res.chase = target
        return res


def _port_match(req: Request, name: str, protocol: str) -> bool:
    return (not req.port or req.port == name) and (not req.protocol or req.protocol == protocol)


__all__ = ["RR", "Lookup", "Result"]
