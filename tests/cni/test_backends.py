"""The vxlan, host-gw and udp backends on a real 3-node namespace lab (tests/cni/topo.py)."""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from kmesh.cni.backends import Backend, BackendError, make_backend
from kmesh.cni.lease import Lease
from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from tests.cni.topo import NETWORK, Node, Topo, tcp_connection
from tests.conftest import require

pytestmark = pytest.mark.netns

BACKENDS = ["host-gw", "vxlan", "udp"]


@pytest.fixture
def topo() -> Iterator[Topo]:
    """Three nodes with a pod each; removed afterwards, also on failure."""
    require(netns_usable(), "root and network namespaces")
    t = Topo(nodes_count=3)
    try:
        yield t.build()
    finally:
        t.destroy()


class Lab:
    """The backends of every node, their leases, and the nursery running them."""

    def __init__(self, topo: Topo, kind: str) -> None:
        self.topo = topo
        self.kind = kind
        self.backends: dict[str, Backend] = {}
        self.leases: dict[str, Lease] = {}
        self.mtu = 0

    def backend(self, node: Node) -> Backend:
        return make_backend(self.kind, netns=node.ns, iface="eth0", public_ip=node.ip, network=NETWORK)

    async def up(self, nursery: trio.Nursery) -> None:
        for node in self.topo.nodes:
            b = self.backend(node)
            data = await b.prepare()
            self.leases[node.ns] = node.lease(self.kind, data)
            self.mtu = await b.configure(self.leases[node.ns])
            self.backends[node.ns] = b
        for node in self.topo.nodes:
            for other in self.topo.nodes:
                if other is not node:
                    await self.backends[node.ns].add_peer(self.leases[other.ns])
            nursery.start_soon(self.backends[node.ns].run)
        self.topo.set_pod_mtu(self.mtu)

    async def close(self) -> None:
        for b in self.backends.values():
            await b.close()


@asynccontextmanager
async def lab(topo: Topo, kind: str) -> AsyncIterator[Lab]:
    """All nodes programmed with ``kind``; backends closed and tasks cancelled on exit."""
    lb = Lab(topo, kind)
    async with trio.open_nursery() as nursery:
        try:
            await lb.up(nursery)
            yield lb
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await lb.close()


async def ping(ns: str, ip: str, tries: int = 1) -> bool:
    """True when ``ip`` answers a ping from ``ns`` (``tries`` attempts, for a first packet that waits on ARP)."""
    for _ in range(tries):
        proc = await netns.run(ns, ["ping", "-c", "1", "-W", "2", ip], check=False)
        if proc.returncode == 0:
            return True
    return False


async def reaches(ns: str, ip: str) -> bool:
    """A positive reachability check: tolerate one lost first packet on a loaded machine."""
    return await ping(ns, ip, tries=3)


async def tcp_roundtrip(client_ns: str, server_ns: str, server_ip: str) -> bytes:
    """Connect from ``client_ns`` to a listener in ``server_ns``; return what came back."""
    with trio.fail_after(10):
        async with tcp_connection(client_ns, server_ns, server_ip) as (client, conn, _):
            payload = b"x" * 100_000  # bigger than one MTU: exercises segmentation through the overlay
            async with trio.open_nursery() as n:
                n.start_soon(sendall, client, payload)
                got = b""
                while len(got) < len(payload):
                    got += await conn.recv(65536)
    return got


async def sendall(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await sock.send(view):]


def routes(ns: str) -> list[str]:
    return [r.replace(" proto static", "").strip() for r in netns.ip(ns, "route", "show").splitlines()]


def neighs(ns: str, dev: str) -> list[str]:
    return sorted(l.strip() for l in netns.ip(ns, "neigh", "show", "dev", dev).splitlines() if l.strip())


async def fdb(ns: str, dev: str) -> list[str]:
    out = (await netns.run(ns, ["bridge", "fdb", "show", "dev", dev])).stdout.decode()
    return [l.strip() for l in out.splitlines() if "dst" in l]


@pytest.mark.parametrize("kind", BACKENDS)
async def test_pods_reach_pods_on_other_nodes(topo: Topo, kind: str) -> None:
    n1, n2, n3 = topo.nodes
    async with lab(topo, kind) as lb:
        assert lb.mtu == {"host-gw": 1500, "vxlan": 1450, "udp": 1472}[kind]
        for peer in (n2, n3):
            assert await reaches(n1.pod_ns, peer.pod_ip), f"{kind}: ping {peer.pod_ip}"
            assert await tcp_roundtrip(n1.pod_ns, peer.pod_ns, peer.pod_ip) == b"x" * 100_000
        assert await reaches(n3.pod_ns, n2.pod_ip)


async def test_vxlan_entries_exactly_per_peer(topo: Topo) -> None:
    n1, n2, n3 = topo.nodes
    async with lab(topo, "vxlan") as lb:
        mac2, mac3 = lb.leases[n2.ns].vtep_mac, lb.leases[n3.ns].vtep_mac
        assert len({mac2, mac3, lb.leases[n1.ns].vtep_mac}) == 3
        assert routes(n1.ns) == [
            "10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1",
            "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
            "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink",
            "192.168.56.0/24 dev eth0 proto kernel scope link src 192.168.56.11",
        ]
        assert neighs(n1.ns, "flannel.1") == [f"10.244.2.0 lladdr {mac2} PERMANENT", f"10.244.3.0 lladdr {mac3} PERMANENT"]
        assert sorted(await fdb(n1.ns, "flannel.1")) == sorted(
            [f"{mac2} dst 192.168.56.12 self permanent", f"{mac3} dst 192.168.56.13 self permanent"])
        detail = netns.ip(n1.ns, "-d", "link", "show", "flannel.1")
        for part in ("vxlan id 1", "local 192.168.56.11", "dev eth0", "dstport 8472", "nolearning", "mtu 1450"):
            assert part in detail
        assert "inet 10.244.1.0/32" in netns.ip(n1.ns, "addr", "show", "dev", "flannel.1")

        await lb.backends[n1.ns].remove_peer(lb.leases[n2.ns])
        assert not any("10.244.2.0" in r for r in routes(n1.ns))
        assert neighs(n1.ns, "flannel.1") == [f"10.244.3.0 lladdr {mac3} PERMANENT"]
        assert await fdb(n1.ns, "flannel.1") == [f"{mac3} dst 192.168.56.13 self permanent"]
        await lb.backends[n1.ns].remove_peer(lb.leases[n2.ns])  # twice: nothing left to remove, no error
        assert not await ping(n1.pod_ns, n2.pod_ip)
        assert await reaches(n1.pod_ns, n3.pod_ip)


async def test_hostgw_routes_and_recheck(topo: Topo) -> None:
    n1, n2, _ = topo.nodes
    async with lab(topo, "host-gw") as lb:
        want = ["10.244.2.0/24 via 192.168.56.12 dev eth0", "10.244.3.0/24 via 192.168.56.13 dev eth0"]
        assert [r for r in routes(n1.ns) if "via" in r] == want
        netns.ip(n1.ns, "route", "del", "10.244.3.0/24")
        assert await lb.backends[n1.ns].recheck_once() == ["10.244.3.0/24"]  # type: ignore[attr-defined]
        assert [r for r in routes(n1.ns) if "via" in r] == want
        assert await lb.backends[n1.ns].recheck_once() == []  # type: ignore[attr-defined]
        await lb.backends[n1.ns].remove_peer(lb.leases[n2.ns])
        assert [r for r in routes(n1.ns) if "via" in r] == want[1:]
        assert not await ping(n1.pod_ns, n2.pod_ip)


async def test_hostgw_run_restores_deleted_route(topo: Topo) -> None:
    n1, n2, _ = topo.nodes
    b = make_backend("host-gw", netns=n1.ns, iface="eth0", public_ip=n1.ip, network=NETWORK)
    b.recheck = 0.05  # type: ignore[attr-defined]
    await b.prepare()
    await b.configure(n1.lease("host-gw"))
    await b.add_peer(n2.lease("host-gw"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.run)
        netns.ip(n1.ns, "route", "del", "10.244.2.0/24")
        with trio.fail_after(5):
            while "10.244.2.0/24 via 192.168.56.12" not in netns.ip(n1.ns, "route"):
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    await b.close()
    assert "10.244.2.0" not in netns.ip(n1.ns, "route")


async def test_udp_device_route_and_peers(topo: Topo) -> None:
    n1, n2, n3 = topo.nodes
    async with lab(topo, "udp") as lb:
        assert "10.244.0.0/16 dev flannel0 scope link" in routes(n1.ns)
        link = netns.ip(n1.ns, "-d", "link", "show", "flannel0")
        assert "mtu 1472" in link and "tun" in link
        assert "inet 10.244.1.0/32" in netns.ip(n1.ns, "addr", "show", "dev", "flannel0")
        out = (await netns.run(n1.ns, ["ss", "-Hlun", "sport", "= :8285"])).stdout.decode()  # socket inside the node ns
        assert "192.168.56.11:8285" in out
        await lb.backends[n1.ns].remove_peer(lb.leases[n2.ns])
        assert not await ping(n1.pod_ns, n2.pod_ip)
        assert await reaches(n1.pod_ns, n3.pod_ip)
        await lb.backends[n1.ns].add_peer(lb.leases[n2.ns])
        assert await reaches(n1.pod_ns, n2.pod_ip)


def state(ns: str) -> tuple[str, ...]:
    """What a backend programs in a node: links, flannel device details, addresses, routes, permanent neighbours."""
    flannel = [l.split(":")[1].strip().split("@")[0] for l in netns.ip(ns, "-o", "link").splitlines() if ": flannel" in l]
    details = "".join(netns.ip(ns, "-d", "link", "show", "dev", d) for d in flannel)
    perm = "".join(l for l in netns.ip(ns, "neigh").splitlines(True) if "PERMANENT" in l)
    links = "\n".join(f"{l['ifname']} {l['mtu']} {l.get('address')} {'UP' in l['flags']}" for l in json.loads(netns.ip(ns, "-j", "link")))
    addrs = sorted(f"{a['ifname']} {i['local']}/{i['prefixlen']}" for a in json.loads(netns.ip(ns, "-j", "addr"))
                   for i in a.get("addr_info", []))
    return (links, details, "\n".join(addrs), "\n".join(routes(ns)), perm)


@pytest.mark.parametrize("kind", BACKENDS)
async def test_prepare_configure_twice_and_close(topo: Topo, kind: str) -> None:
    n1, n2, _ = topo.nodes
    b = make_backend(kind, netns=n1.ns, iface="eth0", public_ip=n1.ip, network=NETWORK)
    peer = make_backend(kind, netns=n2.ns, iface="eth0", public_ip=n2.ip, network=NETWORK)
    try:
        data = await b.prepare()
        mtu = await b.configure(n1.lease(kind, data))
        peer_lease = n2.lease(kind, await peer.prepare())
        await b.add_peer(peer_lease)
        before = state(n1.ns)
        assert await b.prepare() == data
        assert await b.configure(n1.lease(kind, data)) == mtu
        await b.add_peer(peer_lease)
        after = state(n1.ns)
        assert after == before
        # a restarted agent: a fresh backend object finds the devices and keeps the VTEP MAC
        if kind != "udp":  # the udp device belongs to the fd that made it
            again = make_backend(kind, netns=n1.ns, iface="eth0", public_ip=n1.ip, network=NETWORK)
            assert await again.prepare() == data
    finally:
        await b.close()
        await peer.close()
    links = netns.ip(n1.ns, "link")
    assert "flannel" not in links
    assert [r for r in routes(n1.ns) if "10.244.2" in r or "flannel" in r] == []


async def test_vxlan_recreates_wrong_device_keeping_mac(topo: Topo) -> None:
    n1 = topo.nodes[0]
    netns.ip(n1.ns, "link", "add", "flannel.1", "type", "vxlan", "id", "7", "local", n1.ip, "dev", "eth0", "dstport", "4789")
    mac = json.loads(netns.ip(n1.ns, "-j", "link", "show", "flannel.1"))[0]["address"]
    b = make_backend("vxlan", netns=n1.ns, iface="eth0", public_ip=n1.ip, network=NETWORK)
    try:
        assert await b.prepare() == {"VNI": 1, "VtepMAC": mac}
        detail = netns.ip(n1.ns, "-d", "link", "show", "flannel.1")
        assert "vxlan id 1 " in detail and "dstport 8472" in detail and "nolearning" in detail
    finally:
        await b.close()


async def test_vxlan_direct_routing_uses_routes_on_same_l2(topo: Topo) -> None:
    n1, n2, _ = topo.nodes
    b = make_backend("vxlan", netns=n1.ns, iface="eth0", public_ip=n1.ip, network=NETWORK, direct_routing=True)
    peer = n2.lease("vxlan", {"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:02"})
    far = Lease(subnet=ipaddress.ip_network("10.244.9.0/24"), public_ip="192.168.77.9",
                backend_data={"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:09"})
    netns.ip(n1.ns, "route", "add", "192.168.77.0/24", "via", n2.ip)  # a peer behind a router: not on our L2
    try:
        await b.prepare()
        await b.configure(n1.lease("vxlan"))
        await b.add_peer(peer)
        await b.add_peer(far)
        r = routes(n1.ns)
        assert "10.244.2.0/24 via 192.168.56.12 dev eth0" in r
        assert "10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink" in r
        assert neighs(n1.ns, "flannel.1") == ["10.244.9.0 lladdr aa:bb:cc:00:00:09 PERMANENT"]
        await b.remove_peer(peer)
        assert not any("10.244.2.0" in x for x in routes(n1.ns))
    finally:
        await b.close()


async def test_hostgw_peer_off_link_is_an_error_and_close_tolerates_gone_namespace(topo: Topo) -> None:
    n1, n2, _ = topo.nodes
    b = make_backend("host-gw", netns=n1.ns, iface="eth0", public_ip=n1.ip, network=NETWORK)
    await b.prepare()
    await b.configure(n1.lease("host-gw"))
    far = Lease(subnet=ipaddress.ip_network("10.244.9.0/24"), public_ip="192.168.77.9", backend_type="host-gw")
    with pytest.raises(BackendError, match=n1.ns):
        await b.add_peer(far)  # host-gw needs one L2 segment: the kernel refuses the gateway
    await b.add_peer(n2.lease("host-gw"))
    netns.delete(n1.ns)
    await b.close()  # the namespace (and the routes) are gone already: nothing to do, no error


async def test_udp_close_while_running_stops_the_forwarder(topo: Topo) -> None:
    n1, n2, _ = topo.nodes
    b = make_backend("udp", netns=n1.ns, iface="eth0", public_ip=n1.ip, network=NETWORK)
    await b.prepare()
    await b.configure(n1.lease("udp"))
    await b.add_peer(n2.lease("udp"))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.run)
            await trio.sleep(0.05)
            await b.close()  # run() must return on its own, not die on a closed fd
    assert "flannel0" not in netns.ip(n1.ns, "link")


AGENT_SCRIPT = """
import json, sys, trio
from kmesh.cni.backends import make_backend
from kmesh.cni.lease import Lease
import ipaddress
async def main():
    b = make_backend(sys.argv[1], netns=None, iface="eth0", public_ip=sys.argv[2], network="10.244.0.0/16")
    data = await b.prepare()
    mtu = await b.configure(Lease(ipaddress.ip_network(sys.argv[3]), sys.argv[2], sys.argv[1], data))
    await b.add_peer(Lease(ipaddress.ip_network("10.244.2.0/24"), "192.168.56.12", sys.argv[1],
                           {"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:02"}))
    print(json.dumps({"data": data, "mtu": mtu}))
trio.run(main)
"""


@pytest.mark.parametrize("kind", ["host-gw", "vxlan"])
async def test_netns_none_programs_the_namespace_the_process_runs_in(topo: Topo, kind: str) -> None:
    """The real agent runs inside its node namespace and passes netns=None."""
    n1 = topo.nodes[0]
    argv = netns.nsenter_argv(n1.ns, [sys.executable, "-c", AGENT_SCRIPT, kind, n1.ip, str(n1.subnet)])
    proc = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False,
                                  cwd=str(Path(__file__).resolve().parents[2]))
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    want = "10.244.2.0/24 via 192.168.56.12 dev eth0" if kind == "host-gw" else "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"
    assert want in routes(n1.ns)
    assert out["mtu"] == (1500 if kind == "host-gw" else 1450)
    if kind == "vxlan":
        assert out["data"]["VtepMAC"] == json.loads(netns.ip(n1.ns, "-j", "link", "show", "flannel.1"))[0]["address"]


def test_make_backend_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("ipsec", netns=None, iface="eth0", public_ip="192.168.56.11", network=NETWORK)


def test_udp_peer_table_longest_prefix() -> None:
    from kmesh.cni.backends.udp import PeerTable

    t = PeerTable()
    t.set(ipaddress.ip_network("10.244.2.0/24"), "192.168.56.12")
    t.set(ipaddress.ip_network("10.244.0.0/16"), "192.168.56.99")
    ip = lambda s: int(ipaddress.ip_address(s))
    assert t.lookup(ip("10.244.2.7")) == "192.168.56.12"
    assert t.lookup(ip("10.244.3.7")) == "192.168.56.99"
    assert t.lookup(ip("10.9.0.1")) is None
    t.discard(ipaddress.ip_network("10.244.2.0/24"))
    assert t.lookup(ip("10.244.2.7")) == "192.168.56.99" and len(t) == 1
