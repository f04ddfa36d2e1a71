"""kube-proxy's userspace mode: a listener per service port that relays to an endpoint picked in round robin.

Two runtimes:

- ``sim`` (no namespaces, no root): every ClusterIP is a loopback address
  (127.96.x.y), so the proxy simply binds ``ClusterIP:port`` — and each node
  IP (127.1.0.N) ``:nodePort`` for NodePorts. No iptables.
- ``netns`` (as upstream did): the proxy listens on ``0.0.0.0:<random proxy
  port>`` inside the node namespace and installs iptables "portals" there
  that send Service traffic to it: nat ``KUBE-PORTALS-CONTAINER`` (from
  PREROUTING: ``-d <clusterIP>/32 --dport <port> -j REDIRECT --to-ports
  <proxyPort>``) and ``KUBE-PORTALS-HOST`` (from OUTPUT: ``-j DNAT
  --to-destination <nodeIP>:<proxyPort>``, since REDIRECT of locally made
  packets answers from the wrong address), plus ``KUBE-NODEPORT-CONTAINER``
  / ``KUBE-NODEPORT-HOST`` (behind ``-m addrtype --dst-type LOCAL``) for
  NodePorts. The four chains are rewritten in one ``iptables-restore
  --noflush`` per sync.

``--nodeport-addresses`` (``ctx.nodeport_addresses``, read again at each
full sync) narrows NodePorts to the node addresses it selects: in sim only
those are bound, in netns the NodePort portal rules gain ``-d <ip>/32``, one
per address (without it: the node IPs in sim, every local address in netns).

A TCP service port without endpoints refuses connections: the proxy keeps
its address (sim) or proxy port (netns, so the portals stay) bound but not
listening, and the kernel answers a SYN with a reset — ECONNREFUSED, curl
exit 7, as the iptables mode's REJECT gives. (Upstream's userspace proxy
kept listening and closed each accepted connection at once, which clients
saw as an empty reply; kmesh still does that when every endpoint fails to
connect.) A UDP port without endpoints drops datagrams, as upstream did.

Endpoint changes only update the port's ``RoundRobin``: established
connections, to survivors and to removed endpoints alike, go on (upstream
never cut them either). A removed service port stops listening; its
established connections drain. A changed ClusterIP, port or NodePort
replaces the listener.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import trio

from kmesh.net import netns
from kmesh.proxy import nodeports
from kmesh.proxy.balancer import RoundRobin
from kmesh.net.sockets import (
    NamespaceSockets,
    OpenSocket,
    default_open_socket,
    family_of,
    tcp_listener,
    udp_socket,
)
from kmesh.proxy.relay import CONNECT_TIMEOUTS, UDP_IDLE_TIMEOUT, TcpRelay, UdpRelay
from kmesh.proxy.model import NodeContext, ProxyState, ServicePort, ServicePortName

Runtime = Literal["sim", "netns"]
Relay = TcpRelay | UdpRelay

PORTALS_CONTAINER = "KUBE-PORTALS-CONTAINER"
PORTALS_HOST = "KUBE-PORTALS-HOST"
NODEPORT_CONTAINER = "KUBE-NODEPORT-CONTAINER"
NODEPORT_HOST = "KUBE-NODEPORT-HOST"
CHAINS = (PORTALS_CONTAINER, PORTALS_HOST, NODEPORT_CONTAINER, NODEPORT_HOST)
PORTALS_COMMENT = "handle ClusterIPs; NOTE: this must be before the NodePort rules"
NODEPORTS_COMMENT = "handle service NodePorts; NOTE: this must be the last rule in the chain"
JUMPS = (  # (base chain, how it is inserted, match, target)
    ("PREROUTING", "-I PREROUTING 1", f'-m comment --comment "{PORTALS_COMMENT}"', PORTALS_CONTAINER),
    ("OUTPUT", "-I OUTPUT 1", f'-m comment --comment "{PORTALS_COMMENT}"', PORTALS_HOST),
    ("PREROUTING", "-A PREROUTING", f'-m addrtype --dst-type LOCAL -m comment --comment "{NODEPORTS_COMMENT}"', NODEPORT_CONTAINER),
    ("OUTPUT", "-A OUTPUT", f'-m addrtype --dst-type LOCAL -m comment --comment "{NODEPORTS_COMMENT}"', NODEPORT_HOST),
)


log = logging.getLogger(__name__)


class UserspaceSyncError(Exception):
    """Some service ports could not be set up; the message lists them (the sync loop retries with a full sync)."""


@dataclass
class Slot:
    """One bound address of a frontend: a relay while there are endpoints, else a bound, non-listening socket."""

    ip: str
    port: int  # 0 until first bound (netns: the kernel picks the proxy port)
    relay: Relay | None = None
    parked: trio.socket.SocketType | None = None  # holds the port and refuses connections


@dataclass
class Frontend:
    """Where clients reach one service port (its ClusterIP side or its NodePort side) and who serves them."""

    kind: str  # "cluster" | "nodeport"
    picker: RoundRobin
    slots: list[Slot]
    addresses: list[tuple[str, int]]  # what clients connect to
    protocol: str = "TCP"

    @property
    def relays(self) -> list[Relay]:
        """The relays serving now (none while a TCP port has no endpoints)."""
        return [s.relay for s in self.slots if s.relay is not None]

    @property
    def proxy_port(self) -> int:
        """The port the (first) slot is bound to."""
        return self.slots[0].port if self.slots else 0

    @property
    def refusing(self) -> bool:
        """True while the slots are parked (no endpoints)."""
        return any(s.parked is not None for s in self.slots)


@dataclass
class ServiceProxy:
    """The frontends of one service port and what they were made from."""

    sp: ServicePort
    frontends: list[Frontend] = field(default_factory=list)

    @property
    def relays(self) -> list[Relay]:
        """Every relay of every frontend."""
        return [r for f in self.frontends for r in f.relays]

    @property
    def slots(self) -> list[Slot]:
        """Every slot of every frontend."""
        return [s for f in self.frontends for s in f.slots]


def _listen_key(sp: ServicePort) -> tuple[object, ...]:
    """What the listeners depend on (a change means new listeners)."""
    return (sp.cluster_ip, sp.port, sp.protocol, sp.node_port, sp.external_ips, sp.load_balancer_ips,
            sp.internal_local, sp.external_local)


def _affinity(sp: ServicePort) -> float | None:
    return float(sp.affinity_timeout) if sp.session_affinity else None


def _quote(s: str) -> str:
    return '"' + s.replace('"', '\\"') + '"' if re.search(r'[\s"]', s) else s


class UserspaceProxy:
    """The userspace ``ProxyMode``; ``runtime`` says whether to bind ClusterIPs (sim) or use iptables portals (netns)."""

    name = "userspace"

    def __init__(
        self,
        ctx: NodeContext,
        *,
        runtime: Runtime = "sim",
        open_socket: OpenSocket | None = None,
        udp_timeout: float = UDP_IDLE_TIMEOUT,
        connect_timeouts: Sequence[float] = CONNECT_TIMEOUTS,
        splice: bool = True,
    ) -> None:
        if runtime not in ("sim", "netns"):
            raise ValueError(f"runtime must be 'sim' or 'netns', not {runtime!r}")
        self.ctx = ctx
        self.runtime: Runtime = runtime
        if open_socket is None:
            open_socket = proxy_socket_opener(ctx.netns)
        self.open_socket: OpenSocket = open_socket
        self.udp_timeout = udp_timeout
        self.connect_timeouts = tuple(connect_timeouts)
        self.splice = splice
        self.services: dict[ServicePortName, ServiceProxy] = {}
        self.unbound: dict[ServicePortName, str] = {}  # service ports that cannot be bound here, and why
        self._draining: list[Relay] = []
        self._nursery: trio.Nursery | None = None
        self.nodeport_ips: list[str] | None = None  # --nodeport-addresses' choice at the last full sync; None: all
        self._picked = False

    # ------------------------------------------------------------------------------------------ ProxyMode

    async def start(self, nursery: trio.Nursery) -> None:
        """Keep ``nursery`` for the relays; in netns, create the portal chains and the jumps to them."""
        self._nursery = nursery
        if self.runtime == "netns":
            await self._ensure_jumps()
            await self._apply_portals()

    async def sync(self, state: ProxyState, changed: frozenset[ServicePortName], full: bool) -> None:
        """Open, update or close listeners for the changed service ports (all of them when ``full``)."""
        if self._nursery is None:
            raise RuntimeError("UserspaceProxy.sync before start")
        names = set(state.services) | set(self.services) | set(self.unbound) if full else set(changed)
        if full or not self._picked:
            await self._pick_nodeport_ips()
        errors: list[str] = []
        for spn in sorted(names):
            self.unbound.pop(spn, None)
            try:
                await self._sync_one(spn, state.services.get(spn))
            except PermissionError as e:
                # A port below 1024 as a plain user: retrying will not help, the others must still be served.
                self.unbound[spn] = f"cannot bind: {e.strerror} (ports below 1024 need root)"
                log.warning("%s: not served: %s", spn, self.unbound[spn])
            except OSError as e:
                errors.append(f"{spn}: {e}")
        self._draining = [r for r in self._draining if not r.closed.is_set()]
        if self.runtime == "netns":
            if full:
                await self._ensure_jumps()
            await self._apply_portals()
        if errors:
            raise UserspaceSyncError("; ".join(errors))

    async def _pick_nodeport_ips(self) -> None:
        """Apply ``--nodeport-addresses`` to the node's current addresses; NodePort listeners made for
        another choice are closed (the sync reopens them)."""
        chosen = await nodeports.select_for(self.ctx, self.name)
        if self._picked and chosen != self.nodeport_ips:
            for spn in [n for n, svc in self.services.items() if svc.sp.node_port]:
                self._close(self.services.pop(spn))
        self.nodeport_ips, self._picked = chosen, True

    def _node_addresses(self) -> list[str]:
        """Where NodePorts are reached: the selected addresses, or the node IPs when all are."""
        return list(self.ctx.node_ips) if self.nodeport_ips is None else list(self.nodeport_ips)

    async def rules(self) -> str:
        """The listener table, and in netns the nat table as ``iptables-save`` prints it."""
        text = self.table()
        if self.runtime == "netns":
            proc = await netns.run(self.ctx.netns, ["iptables-save", "-t", "nat"])
            text += "\n" + proc.stdout.decode()
        return text

    async def cleanup(self) -> None:
        """Close every listener and connection; in netns remove the portal chains and jumps."""
        self._picked = False
        relays = [r for s in self.services.values() for r in s.relays] + self._draining
        for svc in self.services.values():
            for slot in svc.slots:
                if slot.parked is not None:
                    slot.parked.close()
        self.services.clear()
        self._draining = []
        for r in relays:
            r.abort()
        for r in relays:
            if self._nursery is not None:
                await r.closed.wait()
        if isinstance(self.open_socket, NamespaceSockets):
            self.open_socket.close()
        if self.runtime == "netns":
            await self._remove_chains()

    # ------------------------------------------------------------------------------------------ listeners

    async def _sync_one(self, spn: ServicePortName, sp: ServicePort | None) -> None:
        cur = self.services.get(spn)
        if sp is not None and sp.protocol not in ("TCP", "UDP"):
            sp = None  # userspace proxies TCP and UDP only (as upstream)
        if cur is not None and (sp is None or _listen_key(sp) != _listen_key(cur.sp)):
            self._close(cur)
            del self.services[spn]
            cur = None
        if sp is None:
            return
        if cur is None:
            self.services[spn] = await self._open(sp)
            return
        cur.sp = sp
        for f in cur.frontends:
            eps = sp.internal_endpoints(self.ctx.node) if f.kind == "cluster" else sp.external_endpoints(self.ctx.node)
            f.picker.update(eps, affinity_timeout=_affinity(sp))
        for f in cur.frontends:
            for slot in f.slots:
                await self._arrange(slot, f)

    def _close(self, svc: ServiceProxy) -> None:
        for slot in svc.slots:
            self._release(slot, drain=True)

    def _release(self, slot: Slot, *, drain: bool) -> None:
        """Close the slot's relay (letting its connections drain, or dropping them) and its parked socket."""
        if slot.relay is not None:
            if drain:
                slot.relay.close()
                self._draining.append(slot.relay)
            else:
                slot.relay.abort()
            slot.relay = None
        if slot.parked is not None:
            slot.parked.close()
            slot.parked = None

    async def _arrange(self, slot: Slot, front: Frontend) -> None:
        """Listen while the frontend has endpoints (UDP: always); else keep the port bound and refuse."""
        listen = front.protocol == "UDP" or bool(front.picker.endpoints)
        if listen and slot.relay is None:
            if slot.parked is not None:
                slot.parked.close()
                slot.parked = None
            slot.relay = await self._relay(front.protocol, slot.ip, slot.port, front.picker)
            slot.port = slot.relay.port
        elif not listen and slot.parked is None:
            self._release(slot, drain=True)
            slot.parked = await _bound_tcp_socket(slot.ip, slot.port, self.open_socket)
            slot.port = int(slot.parked.getsockname()[1])

    async def _open(self, sp: ServicePort) -> ServiceProxy:
        node = self.ctx.node
        cluster = RoundRobin(sp.internal_endpoints(node), affinity_timeout=_affinity(sp))
        svc = ServiceProxy(sp)
        try:
            cluster_addrs = [(ip, sp.port) for ip in (sp.cluster_ip, *sp.external_ips, *sp.load_balancer_ips)]
            svc.frontends.append(await self._frontend("cluster", sp, cluster, cluster_addrs))
            if sp.node_port:
                if sp.internal_local or sp.external_local:
                    external = RoundRobin(sp.external_endpoints(node), affinity_timeout=_affinity(sp))
                else:
                    external = cluster  # one balancer, as upstream: affinity holds across ClusterIP and NodePort
                node_addrs = [(ip, sp.node_port) for ip in self._node_addresses()]
                svc.frontends.append(await self._frontend("nodeport", sp, external, node_addrs))
        except BaseException:
            for slot in svc.slots:
                self._release(slot, drain=False)
            raise
        return svc

    async def _frontend(self, kind: str, sp: ServicePort, picker: RoundRobin, addrs: list[tuple[str, int]]) -> Frontend:
        """Listeners for ``addrs``: each address itself in sim (loopback ones only), one proxy port in netns."""
        front = Frontend(kind, picker, [], addrs, sp.protocol)
        if self.runtime == "sim":
            binds = [(ip, port) for ip, port in addrs if ipaddress.ip_address(ip).is_loopback]
            for ip, port in addrs:
                if (ip, port) not in binds:
                    log.warning("%s: %s:%s is not a loopback address; the sim runtime cannot serve it", sp.name, ip, port)
        else:
            binds = [("0.0.0.0", 0)]
        try:
            for ip, port in binds:
                slot = Slot(ip, port)
                front.slots.append(slot)
                await self._arrange(slot, front)
        except BaseException:
            for slot in front.slots:
                self._release(slot, drain=False)
            raise
        return front

    async def _relay(self, protocol: str, ip: str, port: int, picker: RoundRobin) -> Relay:
        assert self._nursery is not None
        relay: Relay
        if protocol == "UDP":
            sock = await udp_socket(ip, port, self.open_socket)
            relay = UdpRelay(sock, picker, open_socket=self.open_socket, idle_timeout=self.udp_timeout,
                             timeouts=self.connect_timeouts)
        else:
            sock = await tcp_listener(ip, port, self.open_socket)
            relay = TcpRelay(sock, picker, open_socket=self.open_socket, timeouts=self.connect_timeouts,
                             splice=self.splice)
        await self._nursery.start(relay.serve)
        return relay

    def table(self) -> str:
        """The listener table: service port, where clients connect, proxy port, affinity, endpoints with counters."""
        rows = [("SERVICE", "PROTO", "FRONTEND", "PROXY PORT", "AFFINITY", "ENDPOINTS (active/inactive conns)")]
        for spn, svc in sorted(self.services.items()):
            for f in svc.frontends:
                stats: dict[str, tuple[int, int]] = {}
                for r in f.relays:
                    for addr, st in r.stats.items():
                        a, i = stats.get(addr, (0, 0))
                        stats[addr] = (a + st.active, i + st.inactive)
                eps = ", ".join(f"{e.addr} ({stats.get(e.addr, (0, 0))[0]}/{stats.get(e.addr, (0, 0))[1]})"
                                for e in f.picker.endpoints) or ("<none: refusing>" if f.refusing else "<none: dropping>")
                front = ",".join(f"{ip}:{port}" for ip, port in f.addresses)
                aff = "None" if f.picker.affinity is None else f"ClientIP {int(f.picker.affinity.timeout)}s"
                rows.append((str(spn), spn.protocol, front, str(f.proxy_port), aff, eps))
        for spn, why in sorted(self.unbound.items()):
            rows.append((str(spn), spn.protocol, "-", "-", "-", f"<not served: {why}>"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] + "\n" for r in rows)

    # ------------------------------------------------------------------------------------------ portals

    def portal_rules(self) -> str:
        """The ``iptables-restore --noflush`` input that makes the four portal chains what the listeners need."""
        node_ip = self.ctx.node_ips[0] if self.ctx.node_ips else "127.0.0.1"
        lines = ["*nat"] + [f":{c} - [0:0]" for c in CHAINS]
        for spn, svc in sorted(self.services.items()):
            proto = spn.proto
            comment = f"-m comment --comment {_quote(str(spn))}"
            for f in svc.frontends:
                pp = f.proxy_port
                if f.kind == "cluster":
                    for ip, port in f.addresses:
                        match = f"-d {ip}/32 -p {proto} {comment} -m {proto} --dport {port}"
                        lines.append(f"-A {PORTALS_CONTAINER} {match} -j REDIRECT --to-ports {pp}")
                        lines.append(f"-A {PORTALS_HOST} {match} -j DNAT --to-destination {node_ip}:{pp}")
                else:
                    dests = [""] if self.nodeport_ips is None else [f"-d {ip}/32 " for ip in self.nodeport_ips if ":" not in ip]
                    for dest in dests:
                        match = f"{dest}-p {proto} {comment} -m {proto} --dport {svc.sp.node_port}"
                        lines.append(f"-A {NODEPORT_CONTAINER} {match} -j REDIRECT --to-ports {pp}")
                        lines.append(f"-A {NODEPORT_HOST} {match} -j DNAT --to-destination {node_ip}:{pp}")
        lines.append("COMMIT")
        return "\n".join(lines) + "\n"

    async def _restore(self, text: str) -> None:
        await netns.run(self.ctx.netns, ["iptables-restore", "--noflush"], input=text.encode())

    async def _apply_portals(self) -> None:
        await self._restore(self.portal_rules())

    async def _nat_save(self) -> str:
        return (await netns.run(self.ctx.netns, ["iptables-save", "-t", "nat"])).stdout.decode()

    @staticmethod
    def _jump_lines(saved: str, base: str, target: str) -> list[str]:
        return [ln for ln in saved.splitlines() if ln.startswith(f"-A {base} ") and ln.endswith(f"-j {target}")]

    async def _ensure_jumps(self) -> None:
        """Create the chains and the jumps from PREROUTING/OUTPUT to them, once."""
        saved = await self._nat_save()
        lines = ["*nat"] + [f":{c} - [0:0]" for c in CHAINS if f":{c} " not in saved]
        for base, insert, match, target in JUMPS:
            if not self._jump_lines(saved, base, target):
                lines.append(f"{insert} {match} -j {target}")
        if len(lines) > 1:
            await self._restore("\n".join(lines + ["COMMIT"]) + "\n")

    async def _remove_chains(self) -> None:
        saved = await self._nat_save()
        lines = ["*nat"]
        for base, _, _, target in JUMPS:
            lines += ["-D" + ln[2:] for ln in self._jump_lines(saved, base, target)]
        present = [c for c in CHAINS if f":{c} " in saved]
        lines += [f":{c} - [0:0]" for c in present] + [f"-X {c}" for c in present]
        if len(lines) > 1:
            await self._restore("\n".join(lines + ["COMMIT"]) + "\n")


async def _bound_tcp_socket(ip: str, port: int, open_socket: OpenSocket) -> trio.socket.SocketType:
    """A TCP socket bound to ``ip:port`` and not listening: it holds the port while SYNs to it get a reset."""
    sock = await open_socket(family_of(ip), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


def proxy_socket_opener(namespace: str | None) -> OpenSocket:
    """An ``open_socket`` that makes sockets inside ``namespace`` (None: here), a batch per namespace trip."""
    if namespace is None:
        return default_open_socket
    return NamespaceSockets(namespace)
