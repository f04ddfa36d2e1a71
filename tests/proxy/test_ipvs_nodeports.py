"""``--nodeport-addresses`` in the IPVS mode: NodePort virtual servers only on the selected node addresses.

Upstream (pkg/proxy/ipvs/proxier.go): without the flag (or with a 0.0.0.0/0
CIDR) a NodePort gets a virtual server on every local address except
kube-ipvs0's (and loopback); with it, on the addresses the CIDRs select,
loopback left out. The ipsets (KUBE-NODE-PORT-TCP/UDP are port bitmaps) and
the iptables rules (``-m addrtype --dst-type LOCAL -j KUBE-NODE-PORT``) are
the same either way.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from kmesh.proxy.ipvs import IPVSConfig, IpvsProxy, desired_state, iptables_text
from kmesh.proxy.model import NodeContext, ProxyState, ServicePort, ServicePortName
from tests.proxy.traffic_lab import (
    CLIENT_NET,
    PODS,
    Lab,
    MakeNs,
    ask_tcp,
    namespace_factory,
)

WEB = ServicePortName("default", "web", "http")
CTX = NodeContext("node1", ("192.168.56.11",), cluster_cidr="10.244.0.0/16")


def nodeport_keys(vss: list, port: int) -> set[str]:  # type: ignore[type-arg]
    return {v.key[1] for v in vss if v.key[2] == port}


def test_desired_state_puts_nodeports_on_the_given_addresses_only() -> None:
    sp = ServicePort(WEB, "10.96.0.50", 80, type="NodePort", node_port=30080)
    state = ProxyState({WEB: sp})
    vss, sets, _ = desired_state(state, CTX, nodeport_ips=["192.168.56.11", "10.0.5.1"])
    assert nodeport_keys(vss, 30080) == {"192.168.56.11", "10.0.5.1"}
    assert nodeport_keys(desired_state(state, CTX, nodeport_ips=[])[0], 30080) == set()
    assert nodeport_keys(desired_state(state, CTX)[0], 30080) == {"192.168.56.11"}  # None: the node IPs
    # The ipsets and rules do not depend on the addresses.
    _, sets_none, _ = desired_state(state, CTX, nodeport_ips=[])
    assert sets.members == sets_none.members and sets.members["KUBE-NODE-PORT-TCP"] == {"30080"}
    assert iptables_text(sets, CTX.cluster_cidr) == iptables_text(sets_none, CTX.cluster_cidr)
    assert "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT" in iptables_text(sets, CTX.cluster_cidr)


# ----------------------------------------------------------------- in a namespace


@pytest.fixture
def make_ns() -> Iterator[MakeNs]:
    """Namespaces ``kmnpa-<random>-<what>``, all deleted afterwards."""
    with namespace_factory("kmnpa", ("ipset", "iptables-restore", "iptables-save")) as make:
        yield make


def web(lab: Lab) -> ProxyState:
    return ProxyState({WEB: ServicePort(WEB, "10.96.0.50", 80, type="NodePort", node_port=30080,
                                        endpoints=lab.endpoints(PODS[:1]))})


async def started(lab: Lab, nursery: trio.Nursery, *addresses: str) -> IpvsProxy:
    ctx = NodeContext("node1", (f"{CLIENT_NET}.1",), cluster_cidr="10.244.0.0/16", netns=lab.node,
                      nodeport_addresses=addresses)
    mode = IpvsProxy(ctx, config=IPVSConfig(data_path="userspace", sweep_interval=0.05))
    await mode.start(nursery)
    return mode


@pytest.mark.netns
async def test_nodeport_answers_only_on_selected_address(make_ns: MakeNs, nursery: trio.Nursery) -> None:
    lab = Lab(make_ns)  # node addresses: 192.168.56.11 (eth0), 10.244.2.1 (to the client), 10.244.1.1 (pods)
    await lab.setup()
    await lab.serve(nursery)
    mode = await started(lab, nursery, "192.168.56.0/24")
    try:
        await mode.sync(web(lab), frozenset(), True)
        assert mode.nodeport_ips == ["192.168.56.11"]
        table = await mode.table_text()
        assert "TCP  192.168.56.11:30080 rr\n" in table and ":30080" not in table.replace("192.168.56.11:30080", "")
        assert await ask_tcp(lab.client, "192.168.56.11", 30080) == "pod1"
        with pytest.raises(ConnectionRefusedError):  # another local address of the node: no virtual server
            await ask_tcp(lab.client, f"{CLIENT_NET}.1", 30080)
        assert await ask_tcp(lab.client, "10.96.0.50", 80) == "pod1"
    finally:
        await mode.cleanup()


@pytest.mark.netns
async def test_without_the_flag_every_local_address_but_kube_ipvs0(make_ns: MakeNs, nursery: trio.Nursery) -> None:
    lab = Lab(make_ns)
    await lab.setup()
    await lab.serve(nursery)
    mode = await started(lab, nursery)
    try:
        await mode.sync(web(lab), frozenset(), True)
        assert mode.nodeport_ips is not None
        assert set(mode.nodeport_ips) == {"10.244.1.1", "192.168.56.11", f"{CLIENT_NET}.1"}  # not 127.0.0.1, not 10.96.0.50
        for ip in ("192.168.56.11", f"{CLIENT_NET}.1"):
            assert await ask_tcp(lab.client, ip, 30080) == "pod1"
        await mode.sync(web(lab), frozenset(), True)  # a full sync again: kube-ipvs0's 10.96.0.50 stays out
        assert "10.96.0.50" not in mode.nodeport_ips
    finally:
        await mode.cleanup()
