"""``--nodeport-addresses`` in the userspace mode: NodePort listeners (sim) and portal rules (netns) per selected address."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import trio

from kmesh.net import netns
from kmesh.proxy.balancer import RoundRobin
from kmesh.proxy.model import (
    Endpoint,
    NodeContext,
    ProxyState,
    ServicePort,
    ServicePortName,
)
from kmesh.proxy.userspace import Frontend, ServiceProxy, Slot, UserspaceProxy
from tests.proxy.test_userspace import ask_name, name_server
from tests.proxy.traffic_lab import (
    CLIENT_NET,
    PODS,
    Lab,
    MakeNs,
    ask_tcp,
    namespace_factory,
)

WEB = ServicePortName("default", "web", "http")


# ---------------------------------------------------------------------------------------------- sim


async def test_sim_binds_only_the_selected_node_ip(nursery: trio.Nursery) -> None:
    r = random.Random()
    base = f"127.1.{r.randrange(1, 255)}"
    chosen, other, pod = f"{base}.10", f"{base}.11", f"127.244.{r.randrange(1, 255)}.{r.randrange(1, 255)}"
    pod_port, node_port = r.randrange(30000, 40000), r.randrange(40000, 50000)
    await name_server(nursery, pod, pod_port, "pod1")
    ctx = NodeContext("node1", (chosen, other), nodeport_addresses=(f"{chosen}/32",))
    proxy = UserspaceProxy(ctx, runtime="sim")
    await proxy.start(nursery)
    sp = ServicePort(WEB, f"127.96.{r.randrange(1, 255)}.{r.randrange(1, 255)}", r.randrange(20000, 30000),
                     type="NodePort", node_port=node_port, endpoints=(Endpoint(pod, pod_port, node="node1"),))
    try:
        await proxy.sync(ProxyState({WEB: sp}), frozenset(), True)
        assert proxy.nodeport_ips == [chosen]
        assert await ask_name(chosen, node_port) == "pod1"
        with pytest.raises(ConnectionRefusedError):
            await ask_name(other, node_port)
        assert f"{chosen}:{node_port}" in proxy.table() and f"{other}:{node_port}" not in proxy.table()
    finally:
        await proxy.cleanup()


def test_portal_rules_name_each_selected_address() -> None:
    proxy = UserspaceProxy(NodeContext("node1", ("192.168.56.11",)), runtime="netns")
    sp = ServicePort(WEB, "10.96.0.20", 80, type="NodePort", node_port=30080)

    rr = RoundRobin([])
    proxy.services[WEB] = ServiceProxy(sp, [Frontend("cluster", rr, [Slot("0.0.0.0", 40001)], [("10.96.0.20", 80)]),
                                            Frontend("nodeport", rr, [Slot("0.0.0.0", 40002)], [])])
    proxy.nodeport_ips = ["192.168.56.11", "10.0.5.1"]
    lines = [ln for ln in proxy.portal_rules().splitlines() if "KUBE-NODEPORT-" in ln and ln.startswith("-A")]
    assert lines == [
        '-A KUBE-NODEPORT-CONTAINER -d 192.168.56.11/32 -p tcp -m comment --comment default/web:http -m tcp --dport 30080 -j REDIRECT --to-ports 40002',
        '-A KUBE-NODEPORT-HOST -d 192.168.56.11/32 -p tcp -m comment --comment default/web:http -m tcp --dport 30080 -j DNAT --to-destination 192.168.56.11:40002',
        '-A KUBE-NODEPORT-CONTAINER -d 10.0.5.1/32 -p tcp -m comment --comment default/web:http -m tcp --dport 30080 -j REDIRECT --to-ports 40002',
        '-A KUBE-NODEPORT-HOST -d 10.0.5.1/32 -p tcp -m comment --comment default/web:http -m tcp --dport 30080 -j DNAT --to-destination 192.168.56.11:40002',
    ]
    proxy.nodeport_ips = None  # every local address: no -d, as before
    assert ("-A KUBE-NODEPORT-CONTAINER -p tcp -m comment --comment default/web:http -m tcp --dport 30080 "
            "-j REDIRECT --to-ports 40002") in proxy.portal_rules()


# ---------------------------------------------------------------------------------------------- netns


@pytest.fixture
def make_ns() -> Iterator[MakeNs]:
    """Namespaces ``kmnpa-<random>-<what>``, all deleted afterwards."""
    with namespace_factory("kmnpa", ("iptables-restore",)) as make:
        yield make


@pytest.mark.netns
async def test_netns_nodeport_answers_only_on_selected_address(make_ns: MakeNs, nursery: trio.Nursery) -> None:
    lab = Lab(make_ns)  # node addresses: 192.168.56.11 (eth0), 10.244.2.1 (to the client), 10.244.1.1 (pods)
    await lab.setup()
    await lab.serve(nursery)
    ctx = NodeContext("node1", (f"{CLIENT_NET}.1",), cluster_cidr="10.244.0.0/16", netns=lab.node,
                      nodeport_addresses=("192.168.56.0/24",))
    proxy = UserspaceProxy(ctx, runtime="netns")
    await proxy.start(nursery)
    sp = ServicePort(WEB, "10.96.0.50", 80, type="NodePort", node_port=30080, endpoints=lab.endpoints(PODS[:1]))
    try:
        await proxy.sync(ProxyState({WEB: sp}), frozenset(), True)
        assert proxy.nodeport_ips == ["192.168.56.11"]
        assert await ask_tcp(lab.client, "192.168.56.11", 30080) == "pod1"
        with pytest.raises(ConnectionRefusedError):  # a local address, not selected: no portal sends it on
            await ask_tcp(lab.client, f"{CLIENT_NET}.1", 30080)
        assert await ask_tcp(lab.client, "10.96.0.50", 80) == "pod1"
        saved = (await netns.run(lab.node, ["iptables-save", "-t", "nat"])).stdout.decode()
        assert "-A KUBE-NODEPORT-CONTAINER -d 192.168.56.11/32 -p tcp" in saved

        # A second address in the CIDR: taken at the next full sync (the NodePort listener is remade).
        netns.ip(lab.node, "addr", "add", "192.168.56.12/24", "dev", "eth0")
        await proxy.sync(ProxyState({WEB: sp}), frozenset({WEB}), False)
        assert proxy.nodeport_ips == ["192.168.56.11"]
        await proxy.sync(ProxyState({WEB: sp}), frozenset(), True)
        assert proxy.nodeport_ips == ["192.168.56.11", "192.168.56.12"]
        assert await ask_tcp(lab.client, "192.168.56.12", 30080) == "pod1"
    finally:
        await proxy.cleanup()
