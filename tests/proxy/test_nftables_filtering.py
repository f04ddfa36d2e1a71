"""The nftables mode's filtering in real namespaces: load-balancer source ranges, unallocated ClusterIPs, NodePort addresses.

Dropped traffic is shown two ways: the client's connection neither
completes nor is refused, and counters in a table of the test's own
(``ip kmtest``, in the lab's node namespace) see the packet arrive before
kube-proxy's filter chain and never after it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
import trio

from kmesh.net import netns
from kmesh.proxy.model import ProxyState, ServicePort, ServicePortName
from kmesh.proxy.nftables import NftablesProxy
from kmesh.proxy.nftables_rules import firewall_chain
from tests.proxy.traffic_lab import (
    CIP,
    CLIENT_NET,
    POD_NET,
    WEB,
    WHOAMI_PORT,
    Lab,
    MakeNs,
    ask_tcp,
    mode_lab,
    namespace_factory,
    web,
)

pytestmark = pytest.mark.netns

LB = ServicePortName("default", "lb", "http")
LB_IP = "203.0.113.10"
ALLOWED, BLOCKED = f"{CLIENT_NET}.2", f"{CLIENT_NET}.3"  # the client pod's two addresses
NODE_UNDERLAY = "192.168.56.11"


@pytest.fixture
def make_ns() -> Iterator[MakeNs]:
    with namespace_factory("kmnft", ("nft",)) as make:
        yield make


@pytest.fixture
async def lab(make_ns: MakeNs, nursery: trio.Nursery) -> AsyncIterator[tuple[Lab, NftablesProxy]]:
    async with mode_lab(make_ns, nursery, NftablesProxy) as pair:
        netns.ip(pair[0].client, "addr", "add", f"{BLOCKED}/24", "dev", "eth0")
        yield pair


async def unanswered(ns: str, src: str, ip: str, port: int, wait: float = 1.5) -> bool:
    """True when a connection from ``src`` gets neither an answer nor a refusal within ``wait`` seconds."""
    with trio.move_on_after(wait):
        await ask_tcp(ns, ip, port, src)
        return False
    return True


class Watch:
    """SYN counters for ``daddr:port`` in the node namespace: at prerouting -300 (before kube-proxy's
    filter chains) and at a later hook/priority (after them)."""

    def __init__(self, ns: str, daddr: str, port: int, late_hook: str, late_priority: int) -> None:
        self.ns = ns
        match = f"ip daddr {daddr} tcp dport {port} tcp flags & (syn | ack) == syn counter"  # connection attempts
        self.script = (f"add table ip kmtest\nadd chain ip kmtest early {{ type filter hook prerouting priority -300 ; }}\n"
                       f"add chain ip kmtest late {{ type filter hook {late_hook} priority {late_priority} ; }}\n"
                       f"add rule ip kmtest early {match}\nadd rule ip kmtest late {match}\n")

    async def install(self) -> None:
        await netns.run(self.ns, ["nft", "-f", "-"], input=self.script.encode())

    async def counts(self) -> dict[str, int]:
        out = json.loads((await netns.run(self.ns, ["nft", "-j", "list", "table", "ip", "kmtest"])).stdout)
        counts = {}
        for obj in out["nftables"]:
            rule = obj.get("rule")
            if rule:
                counts[rule["chain"]] = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        return counts


def lb_service(lab: Lab, ranges: tuple[str, ...], **kw: object) -> ServicePort:
    return ServicePort(LB, "10.96.0.61", 80, type="LoadBalancer", node_port=30061,  # type: ignore[arg-type]
                       load_balancer_ips=(LB_IP,), load_balancer_source_ranges=ranges,
                       endpoints=lab.endpoints(("pod1",), WHOAMI_PORT), **kw)


async def test_load_balancer_source_ranges(lab: tuple[Lab, NftablesProxy]) -> None:
    lb, mode = lab
    await mode.sync(ProxyState({LB: lb_service(lb, (f"{ALLOWED}/32",))}), frozenset({LB}), True)
    watch = Watch(lb.node, LB_IP, 80, "prerouting", -105)  # after filter-prerouting (-110), before DNAT (-100)
    await watch.install()
    # Inside the range: through the LB IP to the endpoint (masqueraded: externalTrafficPolicy Cluster).
    assert await ask_tcp(lb.client, LB_IP, 80, ALLOWED) == f"pod1 {POD_NET}.1"
    # Outside: dropped by firewall-<h> before DNAT.
    assert await unanswered(lb.client, BLOCKED, LB_IP, 80)
    counts = await watch.counts()
    assert counts["early"] > 1 and counts["late"] == 1, counts  # only the allowed SYN got past the firewall
    # The NodePort is not subject to the ranges (as upstream).
    assert await ask_tcp(lb.client, f"{CLIENT_NET}.1", 30061, BLOCKED) == f"pod1 {POD_NET}.1"
    # A partial sync widens the range: the second address gets through now.
    await mode.sync(ProxyState({LB: lb_service(lb, (f"{CLIENT_NET}.0/24",))}), frozenset({LB}), False)
    assert await ask_tcp(lb.client, LB_IP, 80, BLOCKED) == f"pod1 {POD_NET}.1"
    # No ranges: no firewall chain at all.
    await mode.sync(ProxyState({LB: lb_service(lb, ())}), frozenset({LB}), False)
    assert firewall_chain(LB) not in await mode.rules()
    assert await ask_tcp(lb.client, LB_IP, 80, BLOCKED) == f"pod1 {POD_NET}.1"


async def test_unallocated_cluster_ips_are_dropped_and_unused_ports_rejected(lab: tuple[Lab, NftablesProxy]) -> None:
    lb, mode = lab
    await mode.sync(ProxyState({WEB: web(lb)}), frozenset({WEB}), True)
    assert await ask_tcp(lb.client, CIP, 80) in ("pod1", "pod2", "pod3")
    # A used ClusterIP on a port no Service has: rejected (cluster-ips-check, forward).
    with pytest.raises(ConnectionRefusedError):
        await ask_tcp(lb.client, CIP, 81)
    # From the node itself too (filter-output-post-dnat).
    with pytest.raises(ConnectionRefusedError):
        await ask_tcp(lb.node, CIP, 81)
    # An address of 10.96.0.0/12 no Service holds: dropped in forward before it is routed out.
    free = "10.96.7.7"
    watch = Watch(lb.node, free, 80, "forward", 0)  # forward 0 runs after filter-forward (-110)
    await watch.install()
    assert await unanswered(lb.client, ALLOWED, free, 80)
    counts = await watch.counts()
    assert counts["early"] >= 1 and counts["late"] == 0, counts
    # The address becomes a ClusterIP: a partial sync takes it out of the drop.
    other = ServicePortName("default", "other", "http")
    sp = ServicePort(other, free, 80, endpoints=lb.endpoints(("pod2",)))
    await mode.sync(ProxyState({WEB: web(lb), other: sp}), frozenset({other}), False)
    assert await ask_tcp(lb.client, free, 80) == "pod2"


async def test_node_ports_answer_only_on_the_selected_addresses(lab: tuple[Lab, NftablesProxy]) -> None:
    lb, first = lab
    await first.cleanup()
    who = ServicePortName("default", "who", "http")
    state = ProxyState({who: ServicePort(who, "10.96.0.62", 80, type="NodePort", node_port=30062,
                                         endpoints=lb.endpoints(("pod1",), WHOAMI_PORT))})
    addresses = {"node IP": f"{CLIENT_NET}.1", "underlay": NODE_UNDERLAY, "pod bridge": f"{POD_NET}.1"}
    cases = {
        (): {"node IP"},  # the nftables default: primary, the node's IPs (ctx.node_ips)
        ("192.168.56.0/24",): {"underlay"},
        ("10.244.0.0/16",): {"node IP", "pod bridge"},
        ("0.0.0.0/0",): set(addresses),  # every local address, through fib daddr type local
    }
    for flag, expected in cases.items():
        mode = NftablesProxy(replace(first.ctx, nodeport_addresses=flag))
        try:
            await mode.sync(state, frozenset(state.services), True)
            answered = set()
            for what, ip in addresses.items():
                try:
                    assert await ask_tcp(lb.client, ip, 30062) == f"pod1 {POD_NET}.1"
                    answered.add(what)
                except ConnectionRefusedError:  # not DNATed: nothing listens on the node's port
                    pass
            assert answered == expected, flag
        finally:
            await mode.cleanup()

