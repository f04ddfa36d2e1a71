"""flannel's masquerade and forward rules, applied inside a lab node and checked with iptables-save and traffic."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from kmesh.cni.backends import make_backend
from kmesh.cni.backends.masq import apply_masq, masq_rules, remove_masq
from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from tests.cni.topo import NETWORK, Topo, tcp_connection
from tests.conftest import require, require_binary

pytestmark = pytest.mark.netns


@pytest.fixture
def topo() -> Iterator[Topo]:
    require(netns_usable(), "root and network namespaces")
    require_binary("iptables-restore")
    t = Topo(nodes_count=2)
    try:
        yield t.build()
    finally:
        t.destroy()


async def saved(ns: str) -> list[str]:
    out = (await netns.run(ns, ["iptables-save"])).stdout.decode()
    return [l for l in out.splitlines() if "FLANNEL" in l]


async def test_rules_exact_and_idempotent(topo: Topo) -> None:
    n1 = topo.nodes[0]
    await apply_masq(n1.ns, NETWORK, str(n1.subnet))
    first = await saved(n1.ns)
    assert first == [  # iptables-save prints the filter table first
        ":FLANNEL-FWD - [0:0]",
        '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
        '-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
        '-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
        ":FLANNEL-POSTRTG - [0:0]",
        '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
        '-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN',
        '-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN',
        '-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
        '-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
        '-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
        '-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
    ]
    await apply_masq(n1.ns, NETWORK, str(n1.subnet))
    assert await saved(n1.ns) == first
    await remove_masq(n1.ns)
    assert await saved(n1.ns) == []
    await remove_masq(n1.ns)  # twice is fine


async def test_pod_to_outside_is_masqueraded_pod_to_pod_is_not(topo: Topo) -> None:
    n1, n2 = topo.nodes
    backends = [make_backend("host-gw", netns=n.ns, iface="eth0", public_ip=n.ip, network=NETWORK) for n in topo.nodes]
    try:
        for b, n, other in ((backends[0], n1, n2), (backends[1], n2, n1)):
            await b.prepare()
            await b.configure(n.lease("host-gw"))
            await b.add_peer(other.lease("host-gw"))
        await apply_masq(n1.ns, NETWORK, str(n1.subnet))
        assert await source_seen(n1.pod_ns, n2.ns, n2.ip) == n1.ip  # to a node address: NAT to node1's IP
        assert await source_seen(n1.pod_ns, n2.pod_ns, n2.pod_ip) == n1.pod_ip  # inside the cluster network: no NAT
    finally:
        for b in backends:
            await b.close()
        await remove_masq(n1.ns)


async def source_seen(client_ns: str, server_ns: str, server_ip: str) -> str:
    """The client address a TCP server in ``server_ns`` sees for a connection from ``client_ns``."""
    with trio.fail_after(10):
        async with tcp_connection(client_ns, server_ns, server_ip) as (_, _, peer):
            return peer


def test_rules_without_random_fully() -> None:
    rules = masq_rules("10.244.0.0/16", "10.244.7.0/24", random_fully=False)
    assert rules[-1].endswith("-j MASQUERADE") and "--random-fully" not in "".join(rules)
