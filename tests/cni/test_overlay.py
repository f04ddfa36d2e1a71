"""run_overlay: the flanneld loop of a node, with both subnet managers.

The sequencing tests drive a RecordingBackend — kmesh's own Backend
interface, only recording the calls — against a real API server or a real
etcd; the last test runs the real host-gw backend in network namespaces.
"""

from __future__ import annotations

import ipaddress
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from kmesh.client.api import Client
from kmesh.cni import subnetenv
from kmesh.cni.lease import Lease
from kmesh.cni.netconf import NetConf
from kmesh.cni.overlay import Overlay, OverlayConfig, run_overlay
from kmesh.cni.subnets import DuplicatePublicIP
from kmesh.cni.subnets.kube import PUBLIC_IP
from kmesh.store.etcd_api import EtcdClient
from kmesh.store.etcd_server import EtcdServer
from tests.cni.conftest import SHM
from tests.conftest import require_binary
from tests.support.cluster import Cluster


class RecordingBackend:
    """A Backend that only records what the overlay asks of it."""

    def __init__(self, mac: str, type: str = "vxlan") -> None:
        self.type = type
        self.mac = mac
        self.calls: list[tuple[Any, ...]] = []
        self.closed = trio.Event()

    async def prepare(self) -> dict[str, Any]:
        self.calls.append(("prepare",))
        return {"VNI": 1, "VtepMAC": self.mac} if self.type == "vxlan" else {}

    async def configure(self, local: Lease) -> int:
        self.calls.append(("configure", str(local.subnet)))
        return 1450

    async def add_peer(self, lease: Lease) -> None:
        self.calls.append(("add", str(lease.subnet), lease.public_ip, lease.vtep_mac))

    async def remove_peer(self, lease: Lease) -> None:
        self.calls.append(("remove", str(lease.subnet), lease.public_ip, lease.vtep_mac))

    async def run(self) -> None:
        self.calls.append(("run",))
        await trio.sleep_forever()

    async def close(self) -> None:
        self.calls.append(("close",))
        self.closed.set()

    def peer_calls(self) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] in ("add", "remove")]


async def add_node(c: Client, name: str, cidr: str) -> None:
    await c.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                    "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})


async def test_kube_overlay_sequence_subnet_env_and_peers(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster.client
    for i in (1, 2, 3):
        await add_node(c, f"n{i}", f"10.244.{i}.0/24")
    b1, b2, b3 = RecordingBackend("aa:00:00:00:00:01"), RecordingBackend("aa:00:00:00:00:02"), RecordingBackend("", "host-gw")
    cfg = {i: OverlayConfig(f"n{i}", f"192.168.56.{10 + i}", "kube", subnet_env=tmp_path / f"n{i}" / "subnet.env",
                            ip_masq=i != 2) for i in (1, 2, 3)}
    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            o1: Overlay = await n.start(run_overlay, c, cfg[1], b1)
            assert o1.lease.subnet == ipaddress.IPv4Network("10.244.1.0/24") and o1.mtu == 1450
            assert b1.calls[:2] == [("prepare",), ("configure", "10.244.1.0/24")]
            assert o1.peers == {}
            assert (tmp_path / "n1" / "subnet.env").read_text() == (
                "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")

            o2: Overlay = await n.start(run_overlay, c, cfg[2], b2)
            assert [k for k in o2.peers] == ["10.244.1.0-24"]  # n1 was programmed before started()
            assert b2.peer_calls() == [("add", "10.244.1.0/24", "192.168.56.11", "aa:00:00:00:00:01")]
            assert subnetenv.read(cfg[2].subnet_env).ipmasq is False
            await o1.wait_for(lambda o: "10.244.2.0-24" in o.peers)
            assert b1.peer_calls() == [("add", "10.244.2.0/24", "192.168.56.12", "aa:00:00:00:00:02")]

            # a node on another backend type is no peer of a vxlan node
            await n.start(run_overlay, c, cfg[3], b3)
            assert b3.peer_calls() == []  # and the vxlan nodes are none of its
            # the public IP of n2 moves: remove, then add with the new address
            await c.patch("Node", "n2", {"metadata": {"annotations": {PUBLIC_IP: "192.168.56.22"}}})
            await o1.wait_for(lambda o: o.peers["10.244.2.0-24"].public_ip == "192.168.56.22")
            assert b1.peer_calls()[1:] == [("remove", "10.244.2.0/24", "192.168.56.12", "aa:00:00:00:00:02"),
                                           ("add", "10.244.2.0/24", "192.168.56.22", "aa:00:00:00:00:02")]
            # n2 leaves the cluster
            await c.delete("Node", "n2")
            await o1.wait_for(lambda o: not o.peers)
            assert b1.peer_calls()[-1] == ("remove", "10.244.2.0/24", "192.168.56.22", "aa:00:00:00:00:02")
            assert ("run",) in b1.calls
            n.cancel_scope.cancel()
    assert b1.calls[-1] == ("close",) and b2.calls[-1] == ("close",)


@pytest.mark.etcd
async def test_etcd_overlay_restart_keeps_subnet_and_dead_peer_expires(
    etcd_server: EtcdServer, etcd: EtcdClient, tmp_path: Path
) -> None:
    prefix = f"/kmesh-test-{uuid.uuid4().hex[:10]}/network"
    netconf = NetConf.parse({"Network": "10.50.0.0/16", "Backend": {"Type": "vxlan"}})

    def cfg(i: int, ttl: float = 3600, margin: float = 60) -> OverlayConfig:
        return OverlayConfig(f"n{i}", f"192.168.56.{10 + i}", "etcd", netconf=netconf, etcd_url=etcd_server.url,
                             etcd_prefix=prefix, subnet_env=tmp_path / f"n{i}.env", lease_ttl=ttl, renew_margin=margin)

    b1, b2 = RecordingBackend("aa:00:00:00:00:01"), RecordingBackend("aa:00:00:00:00:02")
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            o1: Overlay = await n.start(run_overlay, None, cfg(1), b1)
            assert netconf.allows(o1.lease.subnet)
            assert subnetenv.read(cfg(1).subnet_env).subnet == o1.lease.subnet
            # n2 with a 3 s lease that it renews
            scope2 = trio.CancelScope()

            async def node2(*, task_status: trio.TaskStatus[Overlay] = trio.TASK_STATUS_IGNORED) -> None:
                with scope2:
                    await run_overlay(None, cfg(2, ttl=3, margin=1.5), b2, task_status=task_status)

            o2: Overlay = await n.start(node2)
            await o1.wait_for(lambda o: o2.lease.key in o.peers)
            assert o2.peers == {o1.lease.key: o1.lease}
            renewed = o2.manager.renewals  # type: ignore[attr-defined]
            await o2.manager.wait_renewed(renewed + 2)  # type: ignore[attr-defined]
            assert b1.peer_calls() == [("add", str(o2.lease.subnet), "192.168.56.12", "aa:00:00:00:00:02")]

            n.cancel_scope.cancel()  # both nodes stop; their leases stay
    assert b1.calls[-1] == ("close",) and b2.calls[-1] == ("close",)
    n1_subnet = o1.lease.subnet

    # restart: n2 first (it sees n1's old lease), then n1 with a new VTEP MAC keeps its subnet
    b1b, b2b = RecordingBackend("aa:00:00:00:00:11"), RecordingBackend("aa:00:00:00:00:02")
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            scope2 = trio.CancelScope()

            async def node2b(*, task_status: trio.TaskStatus[Overlay] = trio.TASK_STATUS_IGNORED) -> None:
                with scope2:
                    await run_overlay(None, cfg(2, ttl=3, margin=1.5), b2b, task_status=task_status)

            o2 = await n.start(node2b)
            assert b2b.peer_calls() == [("add", str(n1_subnet), "192.168.56.11", "aa:00:00:00:00:01")]
            o1 = await n.start(run_overlay, None, cfg(1), b1b)
            assert o1.lease.subnet == n1_subnet
            await o2.wait_for(lambda o: o.peers[o1.lease.key].vtep_mac == "aa:00:00:00:00:11")
            assert b2b.peer_calls()[1:] == [("remove", str(n1_subnet), "192.168.56.11", "aa:00:00:00:00:01"),
                                            ("add", str(n1_subnet), "192.168.56.11", "aa:00:00:00:00:11")]
            # n2 dies without releasing: nobody renews its 3 s lease, it expires, n1 drops the peer
            assert o2.lease.key in o1.peers
            scope2.cancel()
            await o1.wait_for(lambda o: o2.lease.key not in o.peers)
            assert b1b.peer_calls()[-1] == ("remove", str(o2.lease.subnet), "192.168.56.12", "aa:00:00:00:00:02")
            n.cancel_scope.cancel()

    # a second node reporting n1's public IP (the Vagrant pitfall) cannot start
    bad = OverlayConfig("n9", "192.168.56.11", "etcd", etcd_url=etcd_server.url, etcd_prefix=prefix,
                        subnet_env=tmp_path / "n9.env")
    b9 = RecordingBackend("aa:00:00:00:00:99")
    with trio.fail_after(10), pytest.raises(DuplicatePublicIP, match="192.168.56.11"):
        await run_overlay(None, bad, b9)
    assert b9.calls == [("prepare",), ("close",)]
    assert not (tmp_path / "n9.env").exists()


@pytest.mark.netns
@pytest.mark.parametrize("kind", ["host-gw", "vxlan", "udp"])
async def test_real_backend_in_namespaces(cluster: Cluster, tmp_path: Path, kind: str) -> None:
    """Two namespace nodes run run_overlay with a real backend and the kube manager: pods reach each other,
    a deleted Node's route goes, and closing the overlay removes what the backend made."""
    from kmesh.cni.backends import make_backend
    from kmesh.net import netns
    from kmesh.net.netns_check import netns_usable
    from tests.cni.topo import NETWORK, Topo
    from tests.conftest import require

    require(netns_usable(), "root and network namespaces")
    c = cluster.client
    topo = Topo(nodes_count=2)
    try:
        topo.build()
        n1, n2 = topo.nodes
        for node in topo.nodes:
            await add_node(c, node.name, str(node.subnet))

        def overlay_of(node: Any) -> tuple[OverlayConfig, Any]:
            cfg = OverlayConfig(node.name, node.ip, "kube", netconf=NetConf.default(NETWORK, kind),
                                subnet_env=tmp_path / node.name / "subnet.env")
            return cfg, make_backend(kind, netns=node.ns, iface="eth0", public_ip=node.ip, network=NETWORK)

        async def ping(ns: str, ip: str) -> bool:
            return (await netns.run(ns, ["ping", "-c", "1", "-W", "2", ip], check=False)).returncode == 0

        def route_to(ns: str, subnet: Any) -> str:
            return netns.ip(ns, "route", "show", str(subnet)).strip()

        with trio.fail_after(40):
            async with trio.open_nursery() as n:
                o1: Overlay = await n.start(run_overlay, c, *overlay_of(n1))
                scope2, done2 = trio.CancelScope(), trio.Event()

                async def node2(*, task_status: trio.TaskStatus[Overlay] = trio.TASK_STATUS_IGNORED) -> None:
                    with scope2:
                        await run_overlay(c, *overlay_of(n2), task_status=task_status)
                    done2.set()

                o2: Overlay = await n.start(node2)
                await o1.wait_for(lambda o: n2.subnet in {p.subnet for p in o.peers.values()})
                assert subnetenv.read(tmp_path / n1.name / "subnet.env").mtu == o1.mtu
                topo.set_pod_mtu(min(o1.mtu, o2.mtu))
                assert await ping(n1.pod_ns, n2.pod_ip)
                assert await ping(n2.pod_ns, n1.pod_ip)
                if kind == "host-gw":
                    assert f"via {n2.ip}" in route_to(n1.ns, n2.subnet)
                elif kind == "vxlan":
                    assert "dev flannel.1" in route_to(n1.ns, n2.subnet)

                # node2's overlay stops: its backend cleans up, its Node (and lease) stay
                scope2.cancel()
                await done2.wait()
                assert route_to(n2.ns, n1.subnet) == ""
                # node2 leaves the cluster: node1 drops its route
                await c.delete("Node", n2.name)
                await o1.wait_for(lambda o: not o.peers)
                assert route_to(n1.ns, n2.subnet) == ""
                assert not await ping(n1.pod_ns, n2.pod_ip)
                n.cancel_scope.cancel()
        if kind == "vxlan":
            assert "flannel.1" not in netns.ip(n1.ns, "link", "show")
    finally:
        topo.destroy()


async def test_kube_overlay_keeps_peers_through_an_api_outage(nursery: trio.Nursery, tmp_path: Path) -> None:
    from kmesh.apiserver.server import ServerConfig
    from kmesh.client.kubeconfig import Credentials
    from tests.support.cluster import serve_stoppable

    db = f"sqlite://{tmp_path / 'store.db'}"
    srv, server = await nursery.start(serve_stoppable, ServerConfig(data_dir=tmp_path / "api", store_url=db, port=0))
    port = int(srv.url.rsplit(":", 1)[1])
    c = Client(Credentials(srv.url, srv.pki.ca_pem(), srv.pki.token))
    try:
        for i in (1, 2, 3):
            await add_node(c, f"n{i}", f"10.244.{i}.0/24")
        b1, b2 = RecordingBackend("aa:00:00:00:00:01"), RecordingBackend("aa:00:00:00:00:02")
        with trio.fail_after(30):
            async with trio.open_nursery() as n:
                o1: Overlay = await n.start(run_overlay, c, OverlayConfig("n1", "192.168.56.11", subnet_env=tmp_path / "1"), b1)
                await n.start(run_overlay, c, OverlayConfig("n2", "192.168.56.12", subnet_env=tmp_path / "2"), b2)
                await o1.wait_for(lambda o: "10.244.2.0-24" in o.peers)

                await server.stop()
                # nothing is taken down while the API server is away
                assert list(o1.peers) == ["10.244.2.0-24"]
                assert [call[0] for call in b1.peer_calls()] == ["add"]

                _, server = await n.start(serve_stoppable, ServerConfig(data_dir=tmp_path / "api", store_url=db, port=port))
                # after the outage the overlay follows the API again: n3 joins, n2 leaves
                b3 = RecordingBackend("aa:00:00:00:00:03")
                await n.start(run_overlay, c, OverlayConfig("n3", "192.168.56.13", subnet_env=tmp_path / "3"), b3)
                await c.delete("Node", "n2")
                await o1.wait_for(lambda o: list(o.peers) == ["10.244.3.0-24"])
                assert [call[:2] for call in b1.peer_calls()] == [
                    ("add", "10.244.2.0/24"), ("add", "10.244.3.0/24"), ("remove", "10.244.2.0/24")]
                n.cancel_scope.cancel()
    finally:
        await c.aclose()
        await server.stop()


@pytest.mark.etcd
async def test_etcd_overlay_keeps_peers_and_lease_through_an_etcd_outage(tmp_path: Path) -> None:
    require_binary("etcd")
    prefix = "/coreos.com/network"
    netconf = NetConf.parse({"Network": "10.60.0.0/16"})
    async with EtcdServer(tmp_root=SHM, die_with_parent=True) as server:

        def cfg(i: int) -> OverlayConfig:
            return OverlayConfig(f"n{i}", f"192.168.56.{10 + i}", "etcd", netconf=netconf, etcd_url=server.url,
                                 etcd_prefix=prefix, subnet_env=tmp_path / f"n{i}.env", lease_ttl=4, renew_margin=2)

        b1, b2, b3 = (RecordingBackend(f"aa:00:00:00:00:0{i}") for i in (1, 2, 3))
        with trio.fail_after(40):
            async with trio.open_nursery() as n:
                o1: Overlay = await n.start(run_overlay, None, cfg(1), b1)
                o2: Overlay = await n.start(run_overlay, None, cfg(2), b2)
                await o1.wait_for(lambda o: o2.lease.key in o.peers)
                renewals = o1.manager.renewals  # type: ignore[attr-defined]

                server.kill()
                assert list(o1.peers) == [o2.lease.key]
                await trio.sleep(1)  # an outage, shorter than the lease left (nothing to await while etcd is gone)
                assert list(o1.peers) == [o2.lease.key]
                await server.astart()

                # the watch resumes where it stopped, renewals resume, new peers are seen
                await o1.manager.wait_renewed(renewals + 2)  # type: ignore[attr-defined]
                o3: Overlay = await n.start(run_overlay, None, cfg(3), b3)
                await o1.wait_for(lambda o: o3.lease.key in o.peers)
                assert [call[0] for call in b1.peer_calls()] == ["add", "add"]
                assert len({o1.lease.subnet, o2.lease.subnet, o3.lease.subnet}) == 3
                n.cancel_scope.cancel()
