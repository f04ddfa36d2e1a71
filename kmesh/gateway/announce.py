"""The L2 speaker: one node answers ARP for each LoadBalancer address, as MetalLB's layer-2 mode does.

Every node agent runs a ``Speaker``. All speakers see the same Services,
Nodes and EndpointSlices and run the same election for each address in a
Service's ``status.loadBalancer.ingress``:

- a Service with no ready endpoint is announced by no one;
- the eligible nodes are the Ready ones (without the label
  ``node.kubernetes.io/exclude-from-external-load-balancers``); with
  ``externalTrafficPolicy: Local`` only those among them with a ready
  endpoint of the Service;
- they are ordered by the SHA-256 of ``"<node>#<address>"``, and the first
  one announces: the others stay silent, so exactly one MAC answers.

The winner answers ARP requests for the address on its underlay interface
from an AF_PACKET socket, without assigning the address (kube-proxy's rules
DNAT what arrives for it). When it takes an address over it sends gratuitous
ARP, so neighbours that cached the previous node's MAC move at once, and it
records an Event ``nodeAssigned`` on the Service. A node whose agent stops
stops answering; the others see the Node go NotReady and the next one takes
over. A speaker that loses the API server keeps answering for what it had.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from kmesh.api.obj import Obj
from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer
from kmesh.controllers.events import EventRecorder
from kmesh.net.netns import run_sync_in

log = logging.getLogger("kmesh.gateway.announce")

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
BROADCAST = b"\xff" * 6
EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
COMPONENT = "kmesh-speaker"
GRATUITOUS_COUNT = 2  # gratuitous ARPs sent on taking an address over (MetalLB sends a few too)


# ------------------------------------------------------------------------------------------------ election

def _ready(node: Obj) -> bool:
    conds = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _ready_endpoint(ep: Obj) -> bool:
    ready = (ep.get("conditions") or {}).get("ready")
    return ready is None or bool(ready)  # nil ready counts as ready, as for kube-proxy


def endpoint_nodes(slices: Iterable[Obj]) -> set[str] | None:
    """The nodes with a ready endpoint in ``slices`` (one Service's); None when no endpoint is ready."""
    nodes: set[str] = set()
    any_ready = False
    for s in slices:
        for ep in s.get("endpoints") or []:
            if _ready_endpoint(ep):
                any_ready = True
                if ep.get("nodeName"):
                    nodes.add(ep["nodeName"])
    return nodes if any_ready else None


def eligible_nodes(svc: Obj, nodes: Iterable[Obj], slices: Iterable[Obj]) -> list[str]:
    """The nodes that may announce ``svc``'s addresses (see the module docstring); unordered."""
    with_endpoints = endpoint_nodes(slices)
    if with_endpoints is None:
        return []
    local = (svc.get("spec") or {}).get("externalTrafficPolicy") == "Local"
    out = []
    for n in nodes:
        md = n.get("metadata") or {}
        if not _ready(n) or EXCLUDE_LABEL in (md.get("labels") or {}):
            continue
        if local and md.get("name") not in with_endpoints:
            continue
        out.append(md.get("name", ""))
    return out


def elect(ip: str, candidates: Iterable[str]) -> str | None:
    """The node that announces ``ip``: the first of ``candidates`` by SHA-256 of ``"<node>#<ip>"``."""
    ranked = sorted(candidates, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).digest())
    return ranked[0] if ranked else None


def lb_addresses(svc: Obj) -> list[str]:
    """The IPv4 addresses of a LoadBalancer Service's ``status.loadBalancer.ingress``."""
    if (svc.get("spec") or {}).get("type") != "LoadBalancer":
        return []
    out = []
    for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        try:
            out.append(str(ipaddress.IPv4Address((ing or {}).get("ip", ""))))
        except ValueError:
            continue
    return out


def assignments(services: Iterable[Obj], nodes: list[Obj], slices: Iterable[Obj]) -> dict[str, tuple[str, str]]:
    """Every announced address → (announcing node, ``namespace/name``), as all speakers compute it."""
    lbs: dict[tuple[str, str], tuple[Obj, list[str]]] = {}
    for svc in services:  # few Services are LoadBalancers: the slices of the others are not looked at
        ips = lb_addresses(svc)
        if ips:
            md = svc.get("metadata") or {}
            lbs[(md.get("namespace") or "default", md.get("name", ""))] = (svc, ips)
    if not lbs:
        return {}
    by_svc: dict[tuple[str, str], list[Obj]] = {}
    for s in slices:
        md = s.get("metadata") or {}
        key = (md.get("namespace") or "default", (md.get("labels") or {}).get(SERVICE_NAME_LABEL) or "")
        if key in lbs:
            by_svc.setdefault(key, []).append(s)
    out: dict[str, tuple[str, str]] = {}
    for key, (svc, ips) in sorted(lbs.items()):
        candidates = eligible_nodes(svc, nodes, by_svc.get(key, []))
        for ip in ips:
            winner = elect(ip, candidates)
            if winner is not None and ip not in out:
                out[ip] = (winner, f"{key[0]}/{key[1]}")
    return out


# ------------------------------------------------------------------------------------------------ ARP frames

@dataclass(frozen=True)
class ArpRequest:
    """The fields of an ARP request a speaker needs to answer it."""

    sender_mac: bytes
    sender_ip: str
    target_ip: str


def parse_arp_request(frame: bytes) -> ArpRequest | None:
    """An Ethernet frame holding an IPv4-over-Ethernet ARP request, parsed; None for anything else."""
    if len(frame) < 42:
        return None
    (etype,) = struct.unpack_from("!H", frame, 12)
    if etype != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, 14)
    if (htype, ptype, hlen, plen, op) != (1, ETH_P_IP, 6, 4, 1):
        return None
    sha, spa, tpa = frame[22:28], frame[28:32], frame[38:42]
    return ArpRequest(sha, socket.inet_ntoa(spa), socket.inet_ntoa(tpa))


def arp_frame(op: int, src_mac: bytes, src_ip: str, dst_mac: bytes, dst_ip: str, eth_dst: bytes) -> bytes:
    """One Ethernet frame with an ARP packet (``op`` 1 request, 2 reply)."""
    return (eth_dst + src_mac + struct.pack("!H", ETH_P_ARP)
            + struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, op)
            + src_mac + socket.inet_aton(src_ip) + dst_mac + socket.inet_aton(dst_ip))


def arp_reply(req: ArpRequest, mac: bytes) -> bytes:
    """The reply to ``req``: ``req.target_ip`` is at ``mac``."""
    return arp_frame(2, mac, req.target_ip, req.sender_mac, req.sender_ip, req.sender_mac)


def gratuitous(ip: str, mac: bytes) -> list[bytes]:
    """Gratuitous ARP for ``ip`` at ``mac``: a broadcast request and a broadcast reply (neighbours take either)."""
    return [arp_frame(1, mac, ip, b"\x00" * 6, ip, BROADCAST), arp_frame(2, mac, ip, BROADCAST, ip, BROADCAST)]


def open_arp_socket(iface: str) -> tuple[socket.socket, bytes]:
    """An AF_PACKET socket receiving and sending ARP on ``iface`` (non-blocking), and the interface's MAC."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    try:
        s.bind((iface, ETH_P_ARP))
        s.setblocking(False)
        mac = s.getsockname()[4]
    except BaseException:
        s.close()
        raise
    return s, bytes(mac)


# ------------------------------------------------------------------------------------------------ the speaker

@dataclass
class Speaker:
    """One node's speaker: elects, answers ARP, announces takeovers (see the module docstring).

    ``announced`` maps each address this node answers for to its Service's
    ``namespace/name``; ``answered`` counts the ARP replies sent."""

    client: Client
    node_name: str
    iface: str = "eth0"
    netns: str | None = None  # open the ARP socket inside this namespace (None: where the process is)
    announced: dict[str, str] = field(default_factory=dict)
    answered: int = 0
    mac: bytes = b""

    def __post_init__(self) -> None:
        self.services = Informer(self.client, "Service")
        self.nodes = Informer(self.client, "Node")
        self.slices = Informer(self.client, "EndpointSlice")
        self.events = EventRecorder(self.client, COMPONENT)
        self._dirty = trio.Event()
        self._changed = trio.Event()
        self._sock: trio.socket.SocketType | None = None
        for inf in (self.services, self.nodes, self.slices):
            inf.add_handler(self._on_change)

    def _on_change(self, ch: Change) -> None:
        self._dirty.set()

    def desired(self) -> dict[str, str]:
        """The addresses this node should answer for now → their Service."""
        every = assignments(self.services.list(), self.nodes.list(), self.slices.list())
        return {ip: svc for ip, (node, svc) in every.items() if node == self.node_name}

    async def wait_announced(self, predicate: Callable[[dict[str, str]], bool]) -> None:
        """Return once ``predicate(announced)`` holds (checked after every change of ``announced``)."""
        while not predicate(self.announced):
            await self._changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[Speaker] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled: informers, the election loop and the ARP responder."""
        try:
            raw, self.mac = await run_sync_in(self.netns, open_arp_socket, self.iface)
        except OSError as exc:  # no CAP_NET_RAW, no such interface: the node works, its LB addresses do not
            log.error("%s: no L2 speaker on %s: %s", self.node_name, self.iface, exc)
            task_status.started(self)
            return
        self._sock = trio.socket.from_stdlib_socket(raw)
        with self._sock:
            async with trio.open_nursery() as n:
                n.start_soon(self.events.run)
                for inf in (self.services, self.nodes, self.slices):
                    await n.start(inf.run)
                n.start_soon(self._answer)
                n.start_soon(self._elect)
                log.info("%s: L2 speaker on %s (%s)", self.node_name, self.iface, self.mac.hex(":"))
                task_status.started(self)

    async def _elect(self) -> None:
        while True:
            self._dirty = trio.Event()
            await self._apply(self.desired())
            await self._dirty.wait()

    async def _apply(self, want: dict[str, str]) -> None:
        gained = [ip for ip in want if ip not in self.announced]
        lost = [ip for ip in self.announced if ip not in want]
        if not gained and not lost and want == self.announced:
            return
        self.announced = dict(want)
        for ip in lost:
            log.info("%s: no longer announcing %s", self.node_name, ip)
        for ip in gained:
            log.info("%s: announcing %s (%s)", self.node_name, ip, want[ip])
            await self._send_gratuitous(ip)
            ns, _, name = want[ip].partition("/")
            svc = self.services.get(name, ns)
            if svc is not None:
                self.events.event(svc, "Normal", "nodeAssigned",
                                  f'announcing from node "{self.node_name}" with protocol "layer2"')
        self._changed.set()
        self._changed = trio.Event()

    async def _send_gratuitous(self, ip: str) -> None:
        assert self._sock is not None
        for frame in gratuitous(ip, self.mac) * GRATUITOUS_COUNT:
            try:
                await self._sock.send(frame)
            except OSError as exc:
                log.warning("%s: gratuitous ARP for %s not sent: %s", self.node_name, ip, exc)
                return

    async def _answer(self) -> None:
        assert self._sock is not None
        while True:
            frame, addr = await self._sock.recvfrom(2048)
            if len(addr) > 2 and addr[2] == PACKET_OUTGOING:
                continue
            req = parse_arp_request(frame)
            if req is None or req.target_ip not in self.announced or req.sender_mac == self.mac:
                continue
            if req.sender_ip == req.target_ip:
                continue  # someone else's gratuitous ARP or address probe
            try:
                await self._sock.send(arp_reply(req, self.mac))
                self.answered += 1
            except OSError as exc:
                log.debug("%s: ARP reply for %s not sent: %s", self.node_name, req.target_ip, exc)


async def run_speaker(client: Client, node_name: str, iface: str = "eth0",
                      *, task_status: trio.TaskStatus[Speaker] = trio.TASK_STATUS_IGNORED) -> None:
    """Run one node's L2 speaker on ``iface`` until cancelled; ``task_status`` gets the ``Speaker``."""
    await Speaker(client, node_name, iface).run(task_status=task_status)
