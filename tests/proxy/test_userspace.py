"""The userspace proxy mode: sim runtime on loopback, netns runtime with iptables portals in a node namespace."""

from __future__ import annotations

import random
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
import trio
import trio.testing

from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from kmesh.net.sockets import NamespaceSockets, OpenSocket, default_open_socket, tcp_listener, udp_socket
from kmesh.proxy.model import (
    Endpoint,
    NodeContext,
    ProxyState,
    ServicePort,
    ServicePortName,
)
from kmesh.proxy.userspace import (
    CHAINS,
    UserspaceProxy,
    UserspaceSyncError,
    proxy_socket_opener,
)
from tests.conftest import require
from tests.proxy.support import bridged_node, read_line


async def name_server(nursery: trio.Nursery, ip: str, port: int, name: str, open_socket: OpenSocket = default_open_socket) -> None:
    """A pod-like TCP server: says its name on connect, then echoes."""
    lsock = await tcp_listener(ip, port, open_socket)

    async def handle(sock: trio.socket.SocketType) -> None:
        with sock:
            try:
                await sock.send(name.encode() + b"\n")
                while data := await sock.recv(4096):
                    await sock.send(data)
            except OSError:
                pass

    async def loop() -> None:
        with lsock:
            async with trio.open_nursery() as inner:
                while True:
                    sock, _ = await lsock.accept()
                    inner.start_soon(handle, sock)

    nursery.start_soon(loop)


async def udp_name_server(nursery: trio.Nursery, ip: str, port: int, name: str, open_socket: OpenSocket = default_open_socket) -> None:
    """A pod-like UDP server answering ``<name>:<datagram>``."""
    sock = await udp_socket(ip, port, open_socket)

    async def loop() -> None:
        with sock:
            while True:
                data, addr = await sock.recvfrom(65535)
                await sock.sendto(name.encode() + b":" + data, addr)

    nursery.start_soon(loop)


async def ask_name(ip: str, port: int, *, source: str | None = None, open_socket: OpenSocket = default_open_socket) -> str:
    """Connect, read the server's name line, close."""
    sock = await open_socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock, trio.fail_after(10):
        if source:
            await sock.bind((source, 0))
        await sock.connect((ip, port))
        return await read_line(sock)


# ---------------------------------------------------------------------------------------------- sim runtime


class SimLab:
    """Random loopback addresses for one test: a ClusterIP, a node IP and endpoint IPs."""

    def __init__(self) -> None:
        r = random.Random()
        a, b = r.randrange(1, 255), r.randrange(1, 255)
        self.cluster_ip = f"127.96.{a}.{b}"
        self.node_ip = f"127.1.{r.randrange(1, 255)}.{r.randrange(1, 255)}"
        self.pod_net = f"127.244.{a}"
        self.port = r.randrange(20000, 30000)
        self.pod_port = r.randrange(30000, 40000)
        self.node_port = r.randrange(40000, 50000)
        self.ctx = NodeContext(node="node1", node_ips=(self.node_ip,))

    def pod_ip(self, i: int) -> str:
        return f"{self.pod_net}.{i}"

    def endpoints(self, *idx: int) -> tuple[Endpoint, ...]:
        return tuple(sorted((Endpoint(self.pod_ip(i), self.pod_port, node="node1") for i in idx), key=lambda e: e.addr))

    def service(self, *idx: int, protocol: str = "TCP", **kw: object) -> ServicePort:
        return ServicePort(name=ServicePortName("default", "web", "http", protocol), cluster_ip=self.cluster_ip,
                           port=self.port, endpoints=self.endpoints(*idx), **kw)  # type: ignore[arg-type]


def state_of(*sps: ServicePort) -> ProxyState:
    return ProxyState({sp.name: sp for sp in sps})


@asynccontextmanager
async def established(lab: SimLab, proxy: UserspaceProxy, sp: ServicePort) -> AsyncIterator[tuple[trio.socket.SocketType, str]]:
    """Sync ``sp`` alone and connect to its ClusterIP: the open connection and the pod that greeted it,
    for a test that changes the service under it (all within 10 s)."""
    await proxy.sync(state_of(sp), frozenset({sp.name}), False)
    sock = trio.socket.socket()
    with sock, trio.fail_after(10):
        await sock.connect((lab.cluster_ip, lab.port))
        yield sock, await read_line(sock)


@pytest.fixture
async def sim(nursery: trio.Nursery) -> AsyncIterator[tuple[SimLab, UserspaceProxy]]:
    """A sim lab with pods 1..4 serving their names and a started userspace proxy."""
    lab = SimLab()
    for i in range(1, 5):
        await name_server(nursery, lab.pod_ip(i), lab.pod_port, f"pod{i}")
        await udp_name_server(nursery, lab.pod_ip(i), lab.pod_port, f"pod{i}")
    proxy = UserspaceProxy(lab.ctx, runtime="sim")
    await proxy.start(nursery)
    try:
        yield lab, proxy
    finally:
        await proxy.cleanup()


async def test_sim_exact_round_robin(sim: tuple[SimLab, UserspaceProxy]) -> None:
    lab, proxy = sim
    sp = lab.service(1, 2, 3)
    await proxy.sync(state_of(sp), frozenset({sp.name}), False)
    names = [await ask_name(lab.cluster_ip, lab.port) for _ in range(300)]
    assert Counter(names) == {"pod1": 100, "pod2": 100, "pod3": 100}
    assert names[:3] == names[3:6]  # strictly in turn
    table = await proxy.rules()
    assert "default/web:http" in table and f"{lab.cluster_ip}:{lab.port}" in table
    assert all(f"{lab.pod_ip(i)}:{lab.pod_port}" in table for i in (1, 2, 3))


async def test_sim_affinity_pins_each_client(sim: tuple[SimLab, UserspaceProxy]) -> None:
    lab, proxy = sim
    sp = lab.service(1, 2, 3, session_affinity=True, affinity_timeout=60)
    await proxy.sync(state_of(sp), frozenset(), True)
    clients = [f"127.55.{random.randrange(256)}.{i}" for i in range(1, 7)]
    first = {c: await ask_name(lab.cluster_ip, lab.port, source=c) for c in clients}
    for _ in range(5):
        for c in clients:
            assert await ask_name(lab.cluster_ip, lab.port, source=c) == first[c]
    assert len(set(first.values())) == 3  # the first connection of each client still went round robin
    assert "ClientIP 60s" in proxy.table()


async def test_sim_no_endpoints_refuses(sim: tuple[SimLab, UserspaceProxy]) -> None:
    lab, proxy = sim
    sp = lab.service()
    await proxy.sync(state_of(sp), frozenset({sp.name}), False)
    with pytest.raises(ConnectionRefusedError):
        await ask_name(lab.cluster_ip, lab.port)
    assert "<none: refusing>" in proxy.table()
    sp2 = lab.service(2)
    await proxy.sync(state_of(sp2), frozenset({sp.name}), False)
    assert await ask_name(lab.cluster_ip, lab.port) == "pod2"


async def test_sim_last_endpoint_gone_refuses_new_and_keeps_established(sim: tuple[SimLab, UserspaceProxy]) -> None:
    lab, proxy = sim
    sp = lab.service(1)
    async with established(lab, proxy, sp) as (sock, first):
        assert first == "pod1"
        await proxy.sync(state_of(lab.service()), frozenset({sp.name}), False)
        with pytest.raises(ConnectionRefusedError):
            await ask_name(lab.cluster_ip, lab.port)
        await sock.send(b"still\n")
        assert await read_line(sock) == "still"
        await proxy.sync(state_of(lab.service(3)), frozenset({sp.name}), False)
        assert await ask_name(lab.cluster_ip, lab.port) == "pod3"


async def test_sim_endpoint_change_keeps_established_connection(sim: tuple[SimLab, UserspaceProxy]) -> None:
    lab, proxy = sim
    sp = lab.service(1, 2, 3)
    async with established(lab, proxy, sp) as (sock, survivor):
        idx = int(survivor[-1])
        sp2 = lab.service(idx, 4)  # the two others go, pod4 comes
        await proxy.sync(state_of(sp2), frozenset({sp.name}), False)
        await sock.send(b"still there?\n")
        assert await read_line(sock) == "still there?"
        names = Counter([await ask_name(lab.cluster_ip, lab.port) for _ in range(10)])
        assert names == {survivor: 5, "pod4": 5}
        await sock.send(b"yes\n")
        assert await read_line(sock) == "yes"


async def test_sim_udp(sim: tuple[SimLab, UserspaceProxy]) -> None:
    lab, proxy = sim
    sp = lab.service(1, 2, protocol="UDP")
    await proxy.sync(state_of(sp), frozenset({sp.name}), False)
    seen = set()
    for _ in range(2):
        c = trio.socket.socket(type=socket.SOCK_DGRAM)
        with c, trio.fail_after(10):
            await c.sendto(b"hello", (lab.cluster_ip, lab.port))
            data, src = await c.recvfrom(100)
            assert src == (lab.cluster_ip, lab.port)
            seen.add(data)
    assert seen == {b"pod1:hello", b"pod2:hello"}


async def test_sim_nodeport(sim: tuple[SimLab, UserspaceProxy]) -> None:
    lab, proxy = sim
    sp = lab.service(1, type="NodePort", node_port=lab.node_port)
    await proxy.sync(state_of(sp), frozenset({sp.name}), False)
    assert await ask_name(lab.node_ip, lab.node_port) == "pod1"
    assert await ask_name(lab.cluster_ip, lab.port) == "pod1"
    assert f"{lab.node_ip}:{lab.node_port}" in proxy.table()


async def test_sim_service_removed_and_port_changed(sim: tuple[SimLab, UserspaceProxy]) -> None:
    lab, proxy = sim
    sp = lab.service(1)
    async with established(lab, proxy, sp) as (sock, first):
        assert first == "pod1"
        moved = replace(sp, port=lab.port + 1)
        await proxy.sync(state_of(moved), frozenset({sp.name}), False)
        assert await ask_name(lab.cluster_ip, lab.port + 1) == "pod1"
        with pytest.raises(ConnectionRefusedError):
            await ask_name(lab.cluster_ip, lab.port)
        await sock.send(b"draining\n")  # the old listener's connection goes on
        assert await read_line(sock) == "draining"
        await proxy.sync(ProxyState(), frozenset(), True)
        with pytest.raises(ConnectionRefusedError):
            await ask_name(lab.cluster_ip, lab.port + 1)
    assert proxy.services == {}


# ---------------------------------------------------------------------------------------------- netns runtime


class NetnsLab:
    """A node namespace with a bridge, three endpoint pods, a client pod and an outside host.

        <p>ext    eth0 192.168.56.100/24  ──veth──  <p>node eth0 192.168.56.11/24
        <p>node   cni0 10.244.1.1/24 (bridge) ── veth ── <p>ep1..3 eth0 10.244.1.11..13, <p>cli eth0 10.244.1.20
    """

    def __init__(self) -> None:
        self.prefix = f"kmu-{uuid.uuid4().hex[:6]}-"
        self.node = self.prefix + "node"
        self.ext = self.prefix + "ext"
        self.client = self.prefix + "cli"
        self.pods = [f"{self.prefix}ep{i}" for i in (1, 2, 3)]
        self.node_ip = "192.168.56.11"

    def pod_ip(self, i: int) -> str:
        return f"10.244.1.{10 + i}"

    def build(self) -> None:
        bridged_node(self.node, [*((p, self.pod_ip(i)) for i, p in enumerate(self.pods, 1)), (self.client, "10.244.1.20")])
        netns.add(self.ext)
        netns.add_veth(self.node, "eth0", self.ext, "eth0")
        netns.ip(self.node, "addr", "add", f"{self.node_ip}/24", "dev", "eth0")
        netns.ip(self.ext, "addr", "add", "192.168.56.100/24", "dev", "eth0")
        netns.ip(self.node, "route", "add", "default", "via", "192.168.56.100")  # a node has a way out

    def destroy(self) -> None:
        for ns in netns.names(self.prefix):
            netns.delete(ns)


@pytest.fixture
def netns_lab() -> Iterator[NetnsLab]:
    require(netns_usable(), "root and network namespaces")
    lab = NetnsLab()
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()
    assert not netns.names(lab.prefix)


@pytest.mark.netns
async def test_netns_portals(nursery: trio.Nursery, netns_lab: NetnsLab) -> None:
    lab = netns_lab
    for i, pod in enumerate(lab.pods, 1):
        await name_server(nursery, "0.0.0.0", 8080, f"pod{i}", proxy_socket_opener(pod))
        await udp_name_server(nursery, "0.0.0.0", 8080, f"pod{i}", proxy_socket_opener(pod))
    ctx = NodeContext(node="node1", node_ips=(lab.node_ip,), netns=lab.node)
    eps = tuple(Endpoint(lab.pod_ip(i), 8080, node="node1") for i in (1, 2, 3))
    tcp = ServicePort(ServicePortName("default", "web", "http", "TCP"), "10.96.0.20", 80, type="NodePort",
                      node_port=30080, endpoints=eps)
    udp = ServicePort(ServicePortName("default", "web", "dns", "UDP"), "10.96.0.20", 53, endpoints=eps)
    empty = ServicePort(ServicePortName("default", "empty", "", "TCP"), "10.96.0.21", 80)
    proxy = UserspaceProxy(ctx, runtime="netns")
    await proxy.start(nursery)
    try:
        await proxy.sync(state_of(tcp, udp, empty), frozenset(), True)
        saved = await proxy.rules()
        assert '-A PREROUTING -m comment --comment "handle ClusterIPs; NOTE: this must be before the NodePort rules" -j KUBE-PORTALS-CONTAINER' in saved
        cluster_pp = proxy.services[tcp.name].frontends[0].proxy_port
        assert (f'-A KUBE-PORTALS-CONTAINER -d 10.96.0.20/32 -p tcp -m comment --comment \"default/web:http\" '
                f'-m tcp --dport 80 -j REDIRECT --to-ports {cluster_pp}') in saved
        assert f"--to-destination {lab.node_ip}:{cluster_pp}" in saved
        assert "-A KUBE-NODEPORT-CONTAINER -p tcp -m comment --comment \"default/web:http\" -m tcp --dport 30080" in saved

        from_pod = proxy_socket_opener(lab.client)
        names = [await ask_name("10.96.0.20", 80, open_socket=from_pod) for _ in range(30)]
        assert Counter(names) == {"pod1": 10, "pod2": 10, "pod3": 10}
        # the proxy saw the pod's own address (REDIRECT keeps the source)
        assert await ask_name("10.96.0.20", 80, open_socket=proxy_socket_opener(lab.node)) in {"pod1", "pod2", "pod3"}
        assert await ask_name(lab.node_ip, 30080, open_socket=proxy_socket_opener(lab.ext)) in {"pod1", "pod2", "pod3"}
        # NodePort from the node itself (KUBE-NODEPORT-HOST) and from a pod to the node IP (KUBE-NODEPORT-CONTAINER)
        assert await ask_name(lab.node_ip, 30080, open_socket=proxy_socket_opener(lab.node)) in {"pod1", "pod2", "pod3"}
        assert await ask_name(lab.node_ip, 30080, open_socket=from_pod) in {"pod1", "pod2", "pod3"}
        with pytest.raises(ConnectionRefusedError):  # no endpoints: the proxy port is bound, not listening
            await ask_name("10.96.0.21", 80, open_socket=from_pod)
        empty_pp = proxy.services[empty.name].frontends[0].proxy_port
        assert f"--dport 80 -j REDIRECT --to-ports {empty_pp}" in saved

        c = await from_pod(socket.AF_INET, socket.SOCK_DGRAM)
        with c, trio.fail_after(10):
            await c.sendto(b"q", ("10.96.0.20", 53))
            data, src = await c.recvfrom(100)
        assert src == ("10.96.0.20", 53) and data.endswith(b":q")

        # endpoints change: pod1 goes; the portal stays, traffic goes to the others
        await proxy.sync(state_of(replace(tcp, endpoints=eps[1:]), udp, empty), frozenset({tcp.name}), False)
        assert proxy.services[tcp.name].frontends[0].proxy_port == cluster_pp
        names = [await ask_name("10.96.0.20", 80, open_socket=from_pod) for _ in range(4)]
        assert Counter(names) == {"pod2": 2, "pod3": 2}
        # the empty one gets an endpoint: same proxy port, so the portal needs no change
        await proxy.sync(state_of(tcp, udp, replace(empty, endpoints=eps[:1])), frozenset({empty.name}), False)
        assert proxy.services[empty.name].frontends[0].proxy_port == empty_pp
        assert await ask_name("10.96.0.21", 80, open_socket=from_pod) == "pod1"
    finally:
        await proxy.cleanup()
    saved = (await netns.run(lab.node, ["iptables-save", "-t", "nat"])).stdout.decode()
    assert not any(c in saved for c in CHAINS)


@pytest.mark.netns
async def test_namespace_sockets_come_from_the_namespace(netns_lab: NetnsLab) -> None:
    opener = proxy_socket_opener(netns_lab.client)
    assert isinstance(opener, NamespaceSockets)
    opener.batch = 4
    socks = [await opener(socket.AF_INET, socket.SOCK_STREAM) for _ in range(6)]  # two namespace trips
    try:
        for s in socks:
            await s.bind(("10.244.1.20", 0))  # an address only the client pod has
    finally:
        for s in socks:
            s.close()
    opener.close()


def _neighbour(ip: str) -> str:
    """Another address of the same /24 (the next one, or the one before at the top)."""
    head, last = ip.rsplit(".", 1)
    n = int(last)
    return f"{head}.{n + 1 if n < 254 else n - 1}"


async def test_sim_bind_failure_reports_and_leaks_nothing(sim: tuple[SimLab, UserspaceProxy]) -> None:
    lab, proxy = sim
    other = ServicePort(ServicePortName("default", "other", "", "TCP"), _neighbour(lab.cluster_ip), lab.port,
                        endpoints=lab.endpoints(1))
    blocker = await tcp_listener(lab.node_ip, lab.node_port)  # someone else holds the NodePort
    with blocker:
        sp = lab.service(1, type="NodePort", node_port=lab.node_port)
        with pytest.raises(UserspaceSyncError, match="default/web:http"):
            await proxy.sync(state_of(sp, other), frozenset(), True)
        assert sp.name not in proxy.services and other.name in proxy.services  # the others still got served
        with pytest.raises(ConnectionRefusedError):  # the ClusterIP listener made before the failure is gone again
            await ask_name(lab.cluster_ip, lab.port)
        assert await ask_name(other.cluster_ip, other.port) == "pod1"
    await proxy.sync(state_of(sp, other), frozenset(), True)  # the retry (a full sync) succeeds
    assert await ask_name(lab.node_ip, lab.node_port) == "pod1"
