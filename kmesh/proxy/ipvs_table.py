"""The IPVS virtual-server table kube-proxy keeps, as a model kmesh can schedule with and print.

One ``VirtualServer`` per protocol + address + port (a ClusterIP, external,
load-balancer IP, or node IP with a NodePort), each with its real servers
(the endpoints, "Masq", weight 1), a scheduler (``kmesh.proxy.schedulers``)
and, for ClientIP affinity, persistence: a client keeps its real server
while it has connections and for ``persistent`` seconds after its last one.

The same table drives both data paths: it is what ``ipvs_kernel`` programs
into the kernel's ip_vs, and what kmesh's own listeners schedule with where
the kernel has none. ``reconcile`` applies upstream's graceful termination:
a real server that is no longer wanted gets weight 0 (no new connections,
established ones go on) and is deleted once it has no connections left.

Real servers are kept in address order (the order rr/wrr/sh/dh/mh walk);
the kernel keeps them in reverse order of addition, which kube-proxy does in
no fixed order, so no kmesh order can be "the" kernel's.

``render_table`` prints the table exactly as ``ipvsadm -Ln`` does.
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kmesh.proxy.schedulers import Scheduler, make_scheduler

IPVS_VERSION = "1.2.1"
IPVS_TABLE_SIZE = 4096  # the connection hash table size ipvsadm reports (CONFIG_IP_VS_TAB_BITS=12)
PROTO_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}
INACTIVE_LINGER = 5.0  # seconds a closed connection still counts as inactive (the kernel's TIME_WAIT, shortened)

VSKey = tuple[str, str, int]  # (protocol, ip, port)


def vs_key(protocol: str, ip: str, port: int) -> VSKey:
    """The key of a virtual server (protocol upper-cased, address normalised)."""
    return (protocol.upper(), str(ipaddress.ip_address(ip)), int(port))


def hostport(ip: str, port: int) -> str:
    """``ip:port`` as ipvsadm -n prints it (``[ip]:port`` for IPv6)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass
class RealServer:
    """One destination of a virtual server, with the counters ipvsadm shows."""

    ip: str
    port: int
    weight: int = 1
    forward: str = "Masq"  # Masq | Local | Tunnel | Route
    active: int = 0
    inactive: int = 0
    lingering: int = 0  # of ``inactive``: closed connections still counted (TIME_WAIT)
    wanted: bool = True  # False: draining (weight 0), deleted when it has no connections

    @property
    def key(self) -> tuple[str, int]:
        """(ip, port)."""
        return (self.ip, self.port)

    @property
    def connections(self) -> int:
        """Active + inactive connections."""
        return self.active + self.inactive


@dataclass
class Template:
    """A persistence template: a client pinned to a real server."""

    dest: tuple[str, int]
    conns: int = 0  # connections it controls now
    expires: float = 0.0  # when conns == 0: time the pin is forgotten


@dataclass
class VirtualServer:
    """One virtual server: address, protocol, scheduler, persistence and its real servers (list order matters to rr/wrr/sh/dh/mh)."""

    protocol: str
    ip: str
    port: int
    scheduler: str = "rr"
    persistent: int = 0  # ClientIP affinity timeout in seconds; 0: not persistent
    comment: str = ""  # the service port it is for (``ns/svc:port``), for humans
    dests: list[RealServer] = field(default_factory=list)
    sched: Scheduler = field(init=False, repr=False, compare=False)
    templates: dict[str, Template] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.sched = make_scheduler(self.scheduler)

    @property
    def key(self) -> VSKey:
        """(protocol, ip, port)."""
        return (self.protocol, self.ip, self.port)

    def dest(self, ip: str, port: int) -> RealServer | None:
        """The real server ``ip:port``, if present."""
        for d in self.dests:
            if d.key == (ip, port):
                return d
        return None

    def changed(self) -> None:
        """Tell the scheduler the destination list or a weight changed."""
        self.sched.update(self.dests)

    def set_scheduler(self, name: str) -> None:
        """Switch scheduler (fresh scheduling state, as ``ipvsadm -E -s`` does)."""
        if name != self.scheduler or not hasattr(self, "sched"):
            self.scheduler = name
            self.sched = make_scheduler(name)
            self.sched.update(self.dests)


@dataclass(frozen=True)
class DesiredVS:
    """What a sync wants for one virtual server: its scheduler, persistence and real servers (ip, port)."""

    protocol: str
    ip: str
    port: int
    dests: tuple[tuple[str, int], ...]
    scheduler: str = "rr"
    persistent: int = 0
    comment: str = ""

    @property
    def key(self) -> VSKey:
        """(protocol, ip, port)."""
        return vs_key(self.protocol, self.ip, self.port)


class IPVSTable:
    """The virtual servers of one node, their scheduling state and connection counters."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, linger: float = INACTIVE_LINGER) -> None:
        self.services: dict[VSKey, VirtualServer] = {}
        self.clock = clock
        self.linger = linger
        self._lingering: list[tuple[float, VSKey, tuple[str, int]]] = []

    # -- changes ---------------------------------------------------------------------------------------

    def reconcile(self, desired: Iterable[DesiredVS]) -> tuple[set[VSKey], set[VSKey]]:
        """Make the table equal ``desired``; returns (virtual servers added, virtual servers deleted).

        New real servers get weight 1; ones no longer desired get weight 0
        and stay until their connections are gone (``sweep``); a desired one
        that was draining gets weight 1 again.
        """
        want = {d.key: d for d in desired}
        added: set[VSKey] = set()
        removed = {k for k in self.services if k not in want}
        for k in removed:
            del self.services[k]
        for k, d in want.items():
            vs = self.services.get(k)
            if vs is None:
                vs = self.services[k] = VirtualServer(k[0], k[1], k[2], d.scheduler, d.persistent, d.comment)
                added.add(k)
            vs.comment = d.comment
            if vs.persistent != d.persistent:
                vs.persistent = d.persistent
                vs.templates.clear()
            vs.set_scheduler(d.scheduler)
            self._set_dests(vs, d.dests)
        self.sweep()
        return added, removed

    def _set_dests(self, vs: VirtualServer, dests: tuple[tuple[str, int], ...]) -> None:
        wanted = {(str(ipaddress.ip_address(ip)), int(port)) for ip, port in dests}
        changed = False
        for rs in vs.dests:
            on = rs.key in wanted
            if on != rs.wanted or rs.weight != (1 if on else 0):
                rs.wanted, rs.weight = on, (1 if on else 0)
                changed = True
        have = {rs.key for rs in vs.dests}
        for ip, port in sorted(wanted - have, key=_addr_order):
            vs.dests.append(RealServer(ip, port))
            changed = True
        if changed:
            vs.dests.sort(key=lambda r: _addr_order(r.key))
            self._drop_templates_to_quiesced(vs)
            vs.changed()

    def _drop_templates_to_quiesced(self, vs: VirtualServer) -> None:
        """Forget pins to weight-0 servers (upstream sets ``expire_quiescent_template``)."""
        live = {rs.key for rs in vs.dests if rs.weight > 0}
        for client in [c for c, t in vs.templates.items() if t.dest not in live]:
            del vs.templates[client]

    def sweep(self) -> list[tuple[VSKey, tuple[str, int]]]:
        """Delete draining real servers that have no connections left (UDP/SCTP ones at once); returns what went."""
        self.expire()
        gone = []
        for vs in self.services.values():
            graceful = vs.protocol == "TCP"  # upstream drops UDP/SCTP real servers at once
            keep = [rs for rs in vs.dests if rs.wanted or (graceful and rs.connections > 0)]
            if len(keep) != len(vs.dests):
                gone += [(vs.key, rs.key) for rs in vs.dests if rs not in keep]
                vs.dests = keep
                vs.changed()
        return gone

    def draining(self) -> list[tuple[VSKey, RealServer]]:
        """Real servers waiting for their connections to end."""
        return [(vs.key, rs) for vs in self.services.values() for rs in vs.dests if not rs.wanted]

    # -- the data path ----------------------------------------------------------------------------------

    def schedule(self, key: VSKey, client_ip: str, client_port: int = 0, *, ignore_persistence: bool = False) -> RealServer | None:
        """The real server for a new connection from ``client_ip`` (persistence first, then the scheduler).

        The caller reports the connection with ``opened`` and ``closed``."""
        vs = self.services.get(key)
        if vs is None:
            return None
        self.expire(key)
        now = self.clock()
        if vs.persistent and not ignore_persistence:
            t = vs.templates.get(client_ip)
            if t is not None and (t.conns > 0 or now < t.expires):
                rs = vs.dest(*t.dest)
                if rs is not None and rs.weight > 0:
                    return rs
                del vs.templates[client_ip]
        rs = vs.sched.schedule(vs.dests, client_ip, client_port, vs.ip)  # type: ignore[assignment]
        if rs is not None and vs.persistent:
            old = vs.templates.get(client_ip)
            vs.templates[client_ip] = Template(rs.key, old.conns if old and old.dest == rs.key else 0, now + vs.persistent)
        return rs

    def opened(self, key: VSKey, rs: RealServer, client_ip: str, *, active: bool = True) -> None:
        """A connection to ``rs`` started (TCP: active; UDP flows count as inactive, as in the kernel)."""
        if active:
            rs.active += 1
        else:
            rs.inactive += 1
        vs = self.services.get(key)
        if vs is not None and vs.persistent:
            t = vs.templates.get(client_ip)
            if t is not None and t.dest == rs.key:
                t.conns += 1

    def closed(self, key: VSKey, rs: RealServer, client_ip: str, *, active: bool = True) -> None:
        """A connection to ``rs`` ended: a TCP one lingers as inactive for ``linger`` seconds (TIME_WAIT)."""
        now = self.clock()
        if active:
            rs.active = max(0, rs.active - 1)
            if self.linger > 0:
                rs.inactive += 1
                rs.lingering += 1
                heapq.heappush(self._lingering, (now + self.linger, key, rs.key))
        else:
            rs.inactive = max(0, rs.inactive - 1)
        vs = self.services.get(key)
        if vs is not None and vs.persistent:
            t = vs.templates.get(client_ip)
            if t is not None and t.dest == rs.key:
                t.conns = max(0, t.conns - 1)
                t.expires = now + vs.persistent

    def expire(self, key: VSKey | None = None) -> None:
        """Stop counting closed connections whose linger time is over; forget expired persistence
        templates (of virtual server ``key`` only, when given: scheduling stays cheap with many services)."""
        now = self.clock()
        while self._lingering and self._lingering[0][0] <= now:
            _, vkey, dest = heapq.heappop(self._lingering)
            vs = self.services.get(vkey)
            rs = vs.dest(*dest) if vs is not None else None
            if rs is not None:
                rs.inactive = max(0, rs.inactive - 1)
                rs.lingering = max(0, rs.lingering - 1)
        services = self.services.values() if key is None else [self.services[key]] if key in self.services else []
        for vs in services:
            if vs.templates:
                for client in [c for c, t in vs.templates.items() if t.conns == 0 and t.expires <= now]:
                    del vs.templates[client]

    # -- reading ----------------------------------------------------------------------------------------

    def sorted_services(self) -> list[VirtualServer]:
        """Virtual servers in ipvsadm's order (``ipvs_cmp_services``: family, protocol, address, port)."""
        return sorted(self.services.values(), key=functools.cmp_to_key(_cmp_services))


def _addr_order(key: tuple[str, int]) -> tuple[int, int, int]:
    """Real servers' list order: by address (IPv4 before IPv6), then port."""
    a = ipaddress.ip_address(key[0])
    return (a.version, int(a), key[1])


def _c_int(x: int) -> int:
    """``x`` as C's ``int r = (uint32_t)a - (uint32_t)b`` holds it (wrapping past 2**31)."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def _cmp_addr(a: str, b: str) -> int:
    """libipvs's address comparison: 32-bit word differences, so 192.168.x.x sorts before 10.x.x.x as in ipvsadm."""
    x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    if x.version != y.version:
        return x.version - y.version
    words = 4 if x.version == 6 else 1
    xi, yi = int(x), int(y)
    for i in reversed(range(words)):
        r = _c_int(((xi >> (32 * i)) & 0xFFFFFFFF) - ((yi >> (32 * i)) & 0xFFFFFFFF))
        if r:
            return r
    return 0


def _cmp_services(s1: VirtualServer, s2: VirtualServer) -> int:
    v1, v2 = ipaddress.ip_address(s1.ip).version, ipaddress.ip_address(s2.ip).version
    return ((v1 - v2) or (PROTO_NUMBERS.get(s1.protocol, 255) - PROTO_NUMBERS.get(s2.protocol, 255))
            or _cmp_addr(s1.ip, s2.ip) or (s1.port - s2.port))


def _cmp_dests(d1: RealServer, d2: RealServer) -> int:
    return _cmp_addr(d1.ip, d2.ip) or (d1.port - d2.port)


def service_line(vs: VirtualServer) -> str:
    """``TCP  10.96.0.1:443 rr`` (+ `` persistent <timeout>``), as ipvsadm -Ln prints a virtual server."""
    name = f"{vs.protocol}  {hostport(vs.ip, vs.port)}"
    if ":" not in vs.ip:
        name = name[:33]
    line = f"{name} {vs.scheduler}"
    if vs.persistent:
        line += f" persistent {vs.persistent}"
    return line


def dest_line(rs: RealServer, ipv6: bool = False) -> str:
    """``  -> 10.244.1.5:8080              Masq    1      0          0         `` (ipvsadm pads every column)."""
    name = hostport(rs.ip, rs.port)
    if not ipv6:
        name = name[:28]
    return f"  -> {name:<28} {rs.forward:<7} {rs.weight:<6d} {rs.active:<10d} {rs.inactive:<10d}"


def render_table(table: IPVSTable) -> str:
    """The table as ``ipvsadm -Ln`` prints it (trailing spaces included), ending with a newline."""
    table.expire()
    lines = [
        f"IP Virtual Server version {IPVS_VERSION} (size={IPVS_TABLE_SIZE})",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    ]
    for vs in table.sorted_services():
        lines.append(service_line(vs))
        v6 = ":" in vs.ip
        for rs in sorted(vs.dests, key=functools.cmp_to_key(_cmp_dests)):
            lines.append(dest_line(rs, v6))
    return "\n".join(lines) + "\n"
