"""The cluster as DNS sees it: an immutable snapshot built from the informer caches.

Rebuilt after each burst of API changes (records of unchanged Services are
reused); comparing two snapshots
tells whether a change mattered to DNS at all (only then does the SOA serial
move and the prepared answers get replaced).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kmesh.api.obj import Obj
from kmesh.dns.names import dashed

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class Port:
    """A service or endpoint port (name and protocol lower-case for matching)."""

    name: str
    port: int
    protocol: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ready endpoint address of a service."""

    name: str   # hostname, else the dashed IP
    ip: str
    ports: tuple[Port, ...]


@dataclass(frozen=True, slots=True)
class Service:
    """What DNS needs of a Service and its ready endpoints."""

    namespace: str
    name: str
    type: str                     # ClusterIP | Headless | ExternalName
    cluster_ips: tuple[str, ...]
    external_name: str
    ports: tuple[Port, ...]
    endpoints: tuple[Endpoint, ...]

    @property
    def headless(self) -> bool:
        """A headless Service answers with its endpoints' addresses."""
        return self.type == "Headless"


@dataclass(frozen=True)
class Snapshot:
    """Services (with endpoints), namespaces and (verified mode) pod IPs at one moment."""

    services: dict[tuple[str, str], Service] = field(default_factory=dict)
    namespaces: frozenset[str] = frozenset()
    pod_ips: frozenset[tuple[str, str]] = frozenset()  # (namespace, ip)
    dns_service_ips: tuple[str, ...] = ()               # kube-system/kube-dns cluster IPs

    def service(self, namespace: str, name: str) -> Service | None:
        """A service by namespace and name (lower-case)."""
        return self.services.get((namespace, name))


def _ports(raw: Iterable[Obj] | None) -> tuple[Port, ...]:
    out = []
    for p in raw or []:
        if p.get("port") is None:
            continue
        out.append(Port((p.get("name") or "").lower(), int(p["port"]), (p.get("protocol") or "TCP").lower()))
    return tuple(out)


def _service_type(spec: Obj) -> str:
    if spec.get("type") == "ExternalName":
        return "ExternalName"
    if spec.get("clusterIP") == "None":
        return "Headless"
    return "ClusterIP"


def _endpoints(slices: list[Obj]) -> tuple[Endpoint, ...]:
    out: list[Endpoint] = []  # duplicates across slices kept: SRV weights count them (as CoreDNS)
    for sl in sorted(slices, key=lambda s: (s.get("metadata") or {}).get("name") or ""):
        ports = _ports(sl.get("ports"))
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for ip in ep.get("addresses") or []:
                name = (ep.get("hostname") or dashed(ip)).lower()
                out.append(Endpoint(name, ip, ports))
    return tuple(out)


def _service_record(svc: Obj, slices: list[Obj]) -> Service | None:
    """What DNS needs of one Service and its slices (None while a ClusterIP is not allocated yet)."""
    md = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    typ = _service_type(spec)
    ips: tuple[str, ...] = ()
    if typ == "ClusterIP":
        ips = tuple(ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None")
        if not ips:
            return None  # nothing to answer yet
    return Service(
        (md.get("namespace") or "").lower(), (md.get("name") or "").lower(), typ, ips,
        (spec.get("externalName") or "").rstrip(".").lower(), _ports(spec.get("ports")), _endpoints(slices),
    )


def _version_key(svc: Obj, slices: list[Obj]) -> tuple[Any, ...] | None:
    """Identifies a Service and its slices as they are now (None when an object has no resourceVersion)."""
    parts: list[Any] = []
    for obj in (svc, *slices):
        md = obj.get("metadata") or {}
        rv = md.get("resourceVersion")
        if not rv:
            return None
        parts += (md.get("uid"), md.get("name"), rv)
    return tuple(parts)


class SnapshotBuilder:
    """Builds snapshots from informer caches, reusing the record of every Service whose objects did not change.

    A rebuild after one change then costs a dictionary look-up per Service, and
    comparing it with the previous snapshot meets the same record objects.
    """

    def __init__(self) -> None:
        self._records: dict[tuple[Any, ...], Service | None] = {}

    def build(
        self, services: Iterable[Obj], slices: Iterable[Obj], namespaces: Iterable[Obj], pods: Iterable[Obj] = ()
    ) -> Snapshot:
        """Turn informer caches into a snapshot (EndpointSlices join their Service by the service-name label)."""
        by_svc: dict[tuple[str, str], list[Obj]] = {}
        for sl in slices:
            md = sl.get("metadata") or {}
            owner = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
            if owner:
                by_svc.setdefault((md.get("namespace") or "", owner), []).append(sl)
        records: dict[tuple[Any, ...], Service | None] = {}
        out: dict[tuple[str, str], Service] = {}
        dns_ips: tuple[str, ...] = ()
        for svc in services:
            md = svc.get("metadata") or {}
            ns, name = md.get("namespace") or "", md.get("name") or ""
            own = by_svc.get((ns, name), [])
            key = _version_key(svc, own)
            if key is not None and key in self._records:
                rec = records[key] = self._records[key]
            else:
                rec = _service_record(svc, own)
                if key is not None:
                    records[key] = rec
            if rec is None:
                continue
            out[(rec.namespace, rec.name)] = rec
            if (ns, name) == ("kube-system", "kube-dns"):
                dns_ips = rec.cluster_ips
        self._records = records  # what is gone from the caches is forgotten
        nss = frozenset((n.get("metadata") or {}).get("name", "").lower() for n in namespaces)
        nss |= frozenset(ns for ns, _ in out)
        pod_ips: set[tuple[str, str]] = set()
        for pod in pods:
            md = pod.get("metadata") or {}
            st = pod.get("status") or {}
            for entry in st.get("podIPs") or ([{"ip": st["podIP"]}] if st.get("podIP") else []):
                if entry.get("ip"):
                    pod_ips.add(((md.get("namespace") or "").lower(), entry["ip"]))
        return Snapshot(out, nss, frozenset(pod_ips), dns_ips)


def build_snapshot(
    services: Iterable[Obj], slices: Iterable[Obj], namespaces: Iterable[Obj], pods: Iterable[Obj] = ()
) -> Snapshot:
    """A snapshot built from scratch (``SnapshotBuilder`` reuses unchanged records across builds)."""
    return SnapshotBuilder().build(services, slices, namespaces, pods)
