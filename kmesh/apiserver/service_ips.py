"""ClusterIP and NodePort allocation, done as API-server admission like kube-apiserver's Service storage.

Allocation happens inside the write (``on_create`` / ``on_update``), so a
Service is never stored without its addresses and two Services never get the
same one. Each allocation is owned by the Service's UID, which makes a retried
write (the registry retries patches on conflicts) idempotent. Addresses and
ports are released when the Service is deleted, when a create or update
fails, and when an update stops using them. ``repair`` rebuilds the tables
from the store when the API server starts.

Like upstream, each range has a small "static" lower band that random
allocation only uses once the upper band is full, so users who pick fixed
addresses (``kube-dns`` at 10.96.0.10) rarely collide with allocated ones.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Iterable

from kmesh.api import errors as E
from kmesh.api.kinds import Kind, get as kind_named
from kmesh.api.validation import invalid
from kmesh.api.wellknown import SERVICE_CIDR
from kmesh.store.base import Obj, Store

log = logging.getLogger("kmesh.apiserver.service_ips")

DEFAULT_NODE_PORTS = (30000, 32767)


class RangeFull(Exception):
    """No free value is left in the range."""


def _static_band(size: int, step: int, lo: int, hi: int) -> int:
    """Size of the lower band reserved for requested values (upstream's calculateRangeOffset)."""
    if size < lo:
        return 0
    return max(lo, min(hi, size // step))


@dataclass
class Bitmap:
    """Offsets 0..size-1 with an owner each; random allocation prefers offsets >= ``band``."""

    size: int
    band: int
    owners: dict[int, str] = field(default_factory=dict)

    def owner(self, offset: int) -> str | None:
        """Who holds ``offset`` (None when free)."""
        return self.owners.get(offset)

    def take(self, offset: int, owner: str) -> bool:
        """Hold ``offset`` for ``owner``; False when someone else holds it."""
        cur = self.owners.get(offset)
        if cur is not None and cur != owner:
            return False
        self.owners[offset] = owner
        return True

    def take_random(self, owner: str) -> int:
        """A free offset (upper band first, random start then scan), held for ``owner``."""
        band = min(self.band, self.size)
        for lo, hi in ((band, self.size), (0, band)):
            if hi <= lo:
                continue
            start = random.randrange(lo, hi)
            n = hi - lo
            for i in range(n):
                off = lo + (start - lo + i) % n
                if off not in self.owners:
                    self.owners[off] = owner
                    return off
        raise RangeFull()

    def release(self, offset: int, owner: str | None = None) -> None:
        """Free ``offset`` (only if ``owner`` holds it, when given)."""
        if owner is None or self.owners.get(offset) == owner:
            self.owners.pop(offset, None)

    def free_count(self) -> int:
        """How many offsets are free."""
        return self.size - len(self.owners)


class IPRange:
    """The allocatable addresses of a service CIDR: every host address (not network/broadcast)."""

    def __init__(self, cidr: str) -> None:
        self.net = ipaddress.ip_network(cidr, strict=False)
        if self.net.version != 4:
            raise ValueError("kmesh serves IPv4 Service CIDRs only")
        total = self.net.num_addresses
        self.base = int(self.net.network_address) + (1 if total > 2 else 0)
        size = total - 2 if total > 2 else total
        self.bits = Bitmap(size, _static_band(total, 16, 16, 256))

    def first(self) -> str:
        """The first address (the ``kubernetes`` Service's)."""
        return str(ipaddress.IPv4Address(self.base))

    def offset(self, ip: str) -> int | None:
        """The offset of ``ip``, or None when it is outside the range."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if addr.version != 4:
            return None
        off = int(addr) - self.base
        return off if 0 <= off < self.bits.size else None

    def ip(self, offset: int) -> str:
        """The address at ``offset``."""
        return str(ipaddress.IPv4Address(self.base + offset))


class PortRange:
    """The NodePort range (30000-32767 by default)."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        size = hi - lo + 1
        self.bits = Bitmap(size, _static_band(size, 32, 16, 128))

    def __str__(self) -> str:
        return f"{self.lo}-{self.hi}"

    def offset(self, port: int) -> int | None:
        """The offset of ``port``, or None when it is outside the range."""
        return port - self.lo if self.lo <= port <= self.hi else None


# ------------------------------------------------------------------ what a Service holds


def _spec(svc: Obj) -> dict[str, Any]:
    spec = svc.get("spec")
    return spec if isinstance(spec, dict) else {}


def _uid(svc: Obj) -> str:
    return str((svc.get("metadata") or {}).get("uid") or "")


def _needs_ip(spec: dict[str, Any]) -> bool:
    return spec.get("type", "ClusterIP") != "ExternalName"


def _needs_node_ports(spec: dict[str, Any]) -> bool:
    t = spec.get("type", "ClusterIP")
    return t == "NodePort" or (t == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True) is not False)


def _needs_hc_port(spec: dict[str, Any]) -> bool:
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _ports(spec: dict[str, Any]) -> list[dict[str, Any]]:
    ports = spec.get("ports")
    return [p for p in ports if isinstance(p, dict)] if isinstance(ports, list) else []


def held_ips(svc: Obj) -> list[str]:
    """Cluster IPs a stored Service holds."""
    spec = _spec(svc)
    if not _needs_ip(spec):
        return []
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [ip for ip in ips if isinstance(ip, str) and ip and ip != "None"]


def held_ports(svc: Obj) -> list[int]:
    """NodePorts (and the health-check node port) a stored Service holds."""
    spec = _spec(svc)
    out = [p["nodePort"] for p in _ports(spec) if isinstance(p.get("nodePort"), int) and p["nodePort"]]
    hc = spec.get("healthCheckNodePort")
    if isinstance(hc, int) and hc:
        out.append(hc)
    return out


@dataclass
class _Txn:
    """What one write newly took, so a failed write can give it back."""

    ips: list[int] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)


class ServiceIPAllocator:
    """Admission hook for Services: allocates cluster IPs and NodePorts, releases them, repairs at start."""

    def __init__(self, service_cidr: str = SERVICE_CIDR, node_ports: tuple[int, int] = DEFAULT_NODE_PORTS) -> None:
        self.cidr = str(ipaddress.ip_network(service_cidr, strict=False))
        self.ips = IPRange(self.cidr)
        self.ports = PortRange(*node_ports)
        self._pending: dict[int, _Txn] = {}
        # Several API servers on one store (the host runtime's servers): the tables are re-read from the store
        # before each allocation, since another server may have allocated since (upstream keeps the bitmap
        # itself in etcd; docs/differences.md).
        self.shared = False
        self._store: Store | None = None

    async def _refresh(self) -> None:
        if self.shared and self._store is not None:
            await self.repair(self._store, quiet=True)

    # ------------------------------------------------------------- queries

    def first_ip(self) -> str:
        """The address reserved for the ``kubernetes`` Service."""
        return self.ips.first()

    def ip_owner(self, ip: str) -> str | None:
        """The UID of the Service holding ``ip``."""
        off = self.ips.offset(ip)
        return None if off is None else self.ips.bits.owner(off)

    def port_owner(self, port: int) -> str | None:
        """The UID of the Service holding NodePort ``port``."""
        off = self.ports.offset(port)
        return None if off is None else self.ports.bits.owner(off)

    # ------------------------------------------------------------ admission

    async def on_create(self, kind: Kind, obj: Obj) -> None:
        """Allocate everything a new Service needs (raises 422 on a refused request)."""
        await self._refresh()
        txn = _Txn()
        try:
            self._allocate(obj, None, txn)
        except BaseException:
            self._undo(txn, _uid(obj))
            raise

    async def on_create_failed(self, kind: Kind, obj: Obj) -> None:
        """Give back what a create that was not stored took."""
        uid = _uid(obj)
        self._release(held_ips(obj), held_ports(obj), uid)

    async def on_update(self, kind: Kind, new: Obj, old: Obj) -> None:
        """Allocate what an update newly needs; releases wait until it is stored (``on_updated``)."""
        await self._refresh()
        txn = _Txn()
        try:
            self._allocate(new, old, txn)
        except BaseException:
            self._undo(txn, _uid(old))
            raise
        self._pending[id(new)] = txn

    async def on_updated(self, kind: Kind, new: Obj, old: Obj) -> None:
        """Release what the stored update no longer uses."""
        self._pending.pop(id(new), None)
        uid = _uid(old)
        keep_ips, keep_ports = set(held_ips(new)), set(held_ports(new))
        self._release([ip for ip in held_ips(old) if ip not in keep_ips],
                      [p for p in held_ports(old) if p not in keep_ports], uid)

    async def on_update_failed(self, kind: Kind, new: Obj, old: Obj) -> None:
        """Give back what an update that was not stored took."""
        txn = self._pending.pop(id(new), None)
        if txn is not None:
            self._undo(txn, _uid(old))

    async def on_delete(self, kind: Kind, obj: Obj) -> None:
        """Release everything a deleted Service held."""
        self._release(held_ips(obj), held_ports(obj), _uid(obj))

    # --------------------------------------------------------------- repair

    async def repair(self, store: Store, *, quiet: bool = False) -> None:
        """Rebuild the tables from every stored Service (at server start; before each allocation when shared)."""
        self._store = store
        kind = kind_named("Service")
        res = await store.list(kind.prefix())
        self.ips.bits.owners.clear()
        self.ports.bits.owners.clear()
        for svc in res.items:
            uid = _uid(svc)
            name = f"{svc['metadata'].get('namespace')}/{svc['metadata'].get('name')}"
            for ip in held_ips(svc):
                off = self.ips.offset(ip)
                if off is None:
                    log.warning("Service %s: cluster IP %s is not within the service CIDR %s", name, ip, self.cidr)
                elif not self.ips.bits.take(off, uid):
                    log.error("Service %s: cluster IP %s was assigned to more than one service", name, ip)
            for port in held_ports(svc):
                off = self.ports.offset(port)
                if off is None:
                    log.warning("Service %s: node port %d is not within the port range %s", name, port, self.ports)
                elif not self.ports.bits.take(off, uid):
                    log.error("Service %s: node port %d was assigned to more than one service", name, port)
        (log.debug if quiet else log.info)("service allocator repaired: %d cluster IPs, %d node ports in use",
                 len(self.ips.bits.owners), len(self.ports.bits.owners))

    # ------------------------------------------------------------- internals

    def _allocate(self, new: Obj, old: Obj | None, txn: _Txn) -> None:
        spec = _spec(new)
        if not spec:
            return
        uid = _uid(old if old is not None else new)
        name = str((new.get("metadata") or {}).get("name") or "")
        self._allocate_ip(spec, uid, name, txn)
        self._allocate_ports(spec, old, uid, name, txn)

    def _allocate_ip(self, spec: dict[str, Any], uid: str, name: str, txn: _Txn) -> None:
        if not _needs_ip(spec):
            return
        families = spec.get("ipFamilies") or []
        for i, fam in enumerate(families):
            if fam != "IPv4":
                raise _invalid(name, invalid(f"spec.ipFamilies[{i}]", fam, "not configured on this cluster"))
        if spec.get("ipFamilyPolicy") == "RequireDualStack":
            raise _invalid(name, invalid("spec.ipFamilyPolicy", "RequireDualStack",
                                         "this cluster is not configured for dual-stack services"))
        spec["ipFamilies"] = ["IPv4"]
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        if spec.get("ipFamilyPolicy") is None:
            spec["ipFamilyPolicy"] = "SingleStack"
        requested = spec.get("clusterIP") or ""
        if requested == "None":
            spec["clusterIPs"] = ["None"]
            return
        if requested:
            ips = spec.get("clusterIPs") or [requested]
            off = self.ips.offset(requested)
            if off is None:
                if ":" in requested:
                    raise _invalid(name, invalid("spec.ipFamilies[0]", "IPv6", "not configured on this cluster"))
                raise _invalid(name, invalid(
                    "spec.clusterIPs", ips,
                    f"failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. "
                    f"The range of valid IPs is {self.cidr}"))
            owner = self.ips.bits.owner(off)
            if owner is not None and owner != uid:
                raise _invalid(name, invalid("spec.clusterIPs", ips,
                                             f"failed to allocate IP {requested}: provided IP is already allocated"))
            if owner is None:
                self.ips.bits.take(off, uid)
                txn.ips.append(off)
            spec["clusterIPs"] = [requested]
            return
        try:
            off = self.ips.bits.take_random(uid)
        except RangeFull:
            raise E.APIError(500, "InternalError", "failed to allocate a serviceIP: range is full") from None
        txn.ips.append(off)
        spec["clusterIP"] = self.ips.ip(off)
        spec["clusterIPs"] = [spec["clusterIP"]]

    def _allocate_ports(self, spec: dict[str, Any], old: Obj | None, uid: str, name: str, txn: _Txn) -> None:
        if _needs_node_ports(spec):
            by_proto: dict[int, set[str]] = {}
            for i, p in enumerate(_ports(spec)):
                np_ = p.get("nodePort")
                proto = p.get("protocol", "TCP")
                if isinstance(np_, int) and np_:
                    if np_ in by_proto and proto not in by_proto[np_]:
                        by_proto[np_].add(proto)  # one port number for TCP and UDP of one Service
                        continue
                    self._take_port(np_, uid, name, f"spec.ports[{i}].nodePort", txn)
                    by_proto.setdefault(np_, set()).add(proto)
            for p in _ports(spec):
                if not p.get("nodePort"):
                    p["nodePort"] = self._random_port(uid, txn)
        if _needs_hc_port(spec):
            hc = spec.get("healthCheckNodePort")
            if isinstance(hc, int) and hc:
                self._take_port(hc, uid, name, "spec.healthCheckNodePort", txn)
            else:
                spec["healthCheckNodePort"] = self._random_port(uid, txn)

    def _take_port(self, port: int, uid: str, name: str, path: str, txn: _Txn) -> None:
        off = self.ports.offset(port)
        if off is None:
            raise _invalid(name, invalid(
                path, port, f"provided port is not in the valid range. The range of valid ports is {self.ports}"))
        owner = self.ports.bits.owner(off)
        if owner is not None and owner != uid:
            raise _invalid(name, invalid(path, port, "provided port is already allocated"))
        if owner is None:
            self.ports.bits.take(off, uid)
            txn.ports.append(off)

    def _random_port(self, uid: str, txn: _Txn) -> int:
        try:
            off = self.ports.bits.take_random(uid)
        except RangeFull:
            raise E.APIError(500, "InternalError", "failed to allocate a nodePort: range is full") from None
        txn.ports.append(off)
        return self.ports.lo + off

    def _undo(self, txn: _Txn, uid: str) -> None:
        for off in txn.ips:
            self.ips.bits.release(off, uid)
        for off in txn.ports:
            self.ports.bits.release(off, uid)

    def _release(self, ips: Iterable[str], ports: Iterable[int], uid: str) -> None:
        for ip in ips:
            off = self.ips.offset(ip)
            if off is not None:
                self.ips.bits.release(off, uid)
        for port in ports:
            off = self.ports.offset(port)
            if off is not None:
                self.ports.bits.release(off, uid)


def _invalid(name: str, cause: E.Cause) -> E.APIError:
    return E.invalid_object("Service", name, "", [cause])
