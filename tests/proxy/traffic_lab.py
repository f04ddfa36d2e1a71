"""A namespace lab the proxy-mode tests share: a node bridging three name-answering pods, a client pod, an uplink.

The iptables and nftables mode tests drive the same traffic through it; each
test file makes its namespaces with ``namespace_factory`` under its own prefix.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import trio

from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from kmesh.proxy.model import Endpoint, NodeContext, ServicePort, ServicePortName
from tests.conftest import require, require_binary

MakeNs = Callable[[str], str]
NODE = "node1"


@contextmanager
def namespace_factory(prefix: str, needs: Sequence[str] = ()) -> Iterator[MakeNs]:
    """``make(what)`` creates namespace ``<prefix>-<random>-<what>``; all are deleted on the way out.

    First it requires root with network namespaces and the programs ``needs``
    (skipped without them, failed under ``KMESH_REQUIRE_NETNS=1``)."""
    require(netns_usable(), "root with network namespaces (ip netns)")
    for program in needs:
        require_binary(program)
    tag = uuid.uuid4().hex[:6]
    made: list[str] = []

    def make(what: str) -> str:
        name = f"{prefix}-{tag}-{what}"
        made.append(name)
        netns.add(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            netns.delete(name)


POD_NET, CLIENT_NET = "10.244.1", "10.244.2"
TCP_PORT, UDP_PORT, WHOAMI_PORT = 8080, 5353, 8081
PODS = ("pod1", "pod2", "pod3")


class Lab:
    """A node namespace with a bridge to three pods, a routed link to a client pod and an uplink."""

    def __init__(self, make_ns: MakeNs) -> None:
        self.node = make_ns("node")
        self.client = make_ns("client")
        self.pods = {p: make_ns(p) for p in PODS}
        self.ips = {p: f"{POD_NET}.{i + 2}" for i, p in enumerate(PODS)}
        n = self.node
        netns.ip(n, "link", "add", "kbr0", "type", "bridge")
        netns.ip(n, "addr", "add", f"{POD_NET}.1/24", "dev", "kbr0")
        netns.ip(n, "link", "set", "kbr0", "up")
        for i, (p, ns) in enumerate(self.pods.items()):
            netns.add_veth(n, f"veth{i}", ns, "eth0")
            netns.ip(n, "link", "set", f"veth{i}", "master", "kbr0")
            # As the CNI bridge plugin's hairpinMode: a pod reaching itself through its service comes back
            # out of the port it went in (br_netfilter DNATs bridged frames).
            netns.ip(n, "link", "set", f"veth{i}", "type", "bridge_slave", "hairpin", "on")
            netns.ip(ns, "addr", "add", f"{self.ips[p]}/24", "dev", "eth0")
            netns.ip(ns, "route", "add", "default", "via", f"{POD_NET}.1")
        # An uplink with the default route, as a node has: without a route to the service IPs the
        # kernel answers "network unreachable" before the filter rules see the packet.
        netns.add_veth(n, "eth0", n, "uplink")
        netns.ip(n, "addr", "add", "192.168.56.11/24", "dev", "eth0")
        netns.ip(n, "route", "add", "default", "via", "192.168.56.1")
        netns.add_veth(n, "cl0", self.client, "eth0")
        netns.ip(n, "addr", "add", f"{CLIENT_NET}.1/24", "dev", "cl0")
        netns.ip(self.client, "addr", "add", f"{CLIENT_NET}.2/24", "dev", "eth0")
        netns.ip(self.client, "route", "add", "default", "via", f"{CLIENT_NET}.1")

    async def setup(self) -> None:
        await netns.run(self.node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])

    async def serve(self, nursery: trio.Nursery) -> None:
        """TCP and UDP servers in every pod that answer with the pod's name (and on WHOAMI_PORT the peer's address)."""
        for p, ns in self.pods.items():
            tcp = await netns.open_socket(ns)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await tcp.bind(("0.0.0.0", TCP_PORT))
            tcp.listen(128)
            nursery.start_soon(trio.serve_listeners, _answer(p), [trio.SocketListener(tcp)])
            who = await netns.open_socket(ns)
            who.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await who.bind(("0.0.0.0", WHOAMI_PORT))
            who.listen(128)
            nursery.start_soon(trio.serve_listeners, _whoami(p), [trio.SocketListener(who)])
            udp = await netns.open_socket(ns, type=socket.SOCK_DGRAM)
            await udp.bind(("0.0.0.0", UDP_PORT))
            nursery.start_soon(_udp_answer, udp, p)

    def endpoints(self, pods: tuple[str, ...], port: int = TCP_PORT, node: str = NODE) -> tuple[Endpoint, ...]:
        return tuple(Endpoint(self.ips[p], port, node=node) for p in pods)


def _answer(name: str):  # type: ignore[no-untyped-def]
    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(name.encode())
    return handle


def _whoami(name: str):  # type: ignore[no-untyped-def]
    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            peer = stream.socket.getpeername()[0]
            await stream.send_all(f"{name} {peer}".encode())
    return handle


async def _udp_answer(sock: trio.socket.SocketType, name: str) -> None:
    with sock:
        while True:
            _, addr = await sock.recvfrom(512)
            await sock.sendto(name.encode(), addr)


async def ask_tcp(ns: str, ip: str, port: int, src: str | None = None) -> str:
    """Connect from namespace ``ns`` (from its address ``src`` if given) and read the answering pod's name."""
    sock = await netns.open_socket(ns)
    with sock:
        if src is not None:
            await sock.bind((src, 0))
        with trio.fail_after(5):
            await sock.connect((ip, port))
            data = b""
            while chunk := await sock.recv(100):
                data += chunk
    return data.decode()


async def ask_udp(sock: trio.socket.SocketType, ip: str, port: int) -> str:
    with trio.fail_after(5):
        await sock.sendto(b"?", (ip, port))
        data, _ = await sock.recvfrom(100)
    return data.decode()


WEB = ServicePortName("default", "web", "http")
DNS = ServicePortName("default", "dns", "dns", "UDP")
CIP = "10.96.0.50"


def web(lab: Lab, pods: tuple[str, ...] = PODS, **kw: object) -> ServicePort:
    """Service port ``WEB`` at ``CIP``:80 with ``pods`` as endpoints."""
    return ServicePort(WEB, CIP, 80, endpoints=lab.endpoints(pods), **kw)  # type: ignore[arg-type]


@asynccontextmanager
async def mode_lab(make_ns: MakeNs, nursery: trio.Nursery, mode_class: Any) -> AsyncIterator[tuple[Lab, Any]]:
    """A served ``Lab`` and a started ``mode_class`` programming its node; the mode is cleaned up after."""
    lab = Lab(make_ns)
    await lab.setup()
    await lab.serve(nursery)
    mode = mode_class(NodeContext(NODE, (f"{CLIENT_NET}.1",), cluster_cidr="10.244.0.0/16", netns=lab.node))
    await mode.start(nursery)
    try:
        yield lab, mode
    finally:
        await mode.cleanup()
