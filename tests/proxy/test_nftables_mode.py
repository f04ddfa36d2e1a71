"""The nftables mode in real network namespaces: the table it installs, and traffic through it."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
import trio

from kmesh.net import netns
from kmesh.proxy.model import (
    Endpoint,
    NodeContext,
    ProxyState,
    ServicePort,
    ServicePortName,
)
from kmesh.proxy.nftables import NftablesProxy
from kmesh.proxy.nftables_rules import (
    affinity_set,
    endpoint_chain,
    parse_listing,
    service_chain,
)
from tests.proxy.support import endpoint_slice_yaml, endpoint_yaml, service_yaml
from tests.proxy.traffic_lab import (
    CIP,
    CLIENT_NET,
    DNS,
    NODE,
    POD_NET,
    PODS,
    TCP_PORT,
    UDP_PORT,
    WEB,
    WHOAMI_PORT,
    Lab,
    MakeNs,
    ask_tcp,
    ask_udp,
    mode_lab,
    namespace_factory,
    web,
)
from tests.support.cluster import Cluster

pytestmark = pytest.mark.netns


@pytest.fixture
def make_ns() -> Iterator[MakeNs]:
    """Creates uniquely named namespaces (``kmn-<random>-<what>``) and deletes them all afterwards."""
    with namespace_factory("kmn", ("nft",)) as make:
        yield make


@pytest.fixture
async def lab(make_ns: MakeNs, nursery: trio.Nursery) -> AsyncIterator[tuple[Lab, NftablesProxy]]:
    async with mode_lab(make_ns, nursery, NftablesProxy) as pair:
        yield pair


WHO = ServicePortName("default", "who", "http")


async def installed(mode: NftablesProxy) -> set[str]:
    """The chains and sets of the installed table."""
    ex = parse_listing(await mode.rules())
    return ex.chains | ex.sets


async def test_cluster_ip_reaches_every_endpoint(lab: tuple[Lab, NftablesProxy]) -> None:
    lb, mode = lab
    await mode.sync(ProxyState({WEB: web(lb)}), frozenset({WEB}), True)
    counts = Counter([await ask_tcp(lb.client, CIP, 80) for _ in range(60)])
    assert set(counts) == set(PODS), counts
    text = await mode.rules()
    assert "numgen random mod 3 vmap" in text and f"{CIP} . tcp . 80 : goto {service_chain(WEB)}" in text


async def test_udp_cluster_ip(lab: tuple[Lab, NftablesProxy]) -> None:
    lb, mode = lab
    dns = ServicePort(DNS, "10.96.0.53", 53, endpoints=lb.endpoints(("pod2",), UDP_PORT))
    await mode.sync(ProxyState({DNS: dns}), frozenset({DNS}), True)
    sock = await netns.open_socket(lb.client, type=socket.SOCK_DGRAM)
    with sock:
        assert await ask_udp(sock, "10.96.0.53", 53) == "pod2"


async def test_client_ip_affinity_pins_the_client(lab: tuple[Lab, NftablesProxy]) -> None:
    lb, mode = lab
    state = ProxyState({WEB: web(lb, session_affinity=True)})
    await mode.sync(state, frozenset({WEB}), True)
    answers = {await ask_tcp(lb.client, CIP, 80) for _ in range(30)}
    assert len(answers) == 1 and answers <= set(PODS)
    # The pin is in the endpoint's dynamic set, and survives a later sync.
    (pinned,) = answers
    ep = lb.endpoints((pinned,))[0]
    assert f"{CLIENT_NET}.2" in (await netns.run(lb.node, ["nft", "list", "set", "ip", "kube-proxy",
                                                          affinity_set(WEB, ep)])).stdout.decode()
    await mode.sync(state, frozenset({WEB}), False)
    assert {await ask_tcp(lb.client, CIP, 80) for _ in range(10)} == answers
    # A full sync, and the first (full) sync of a restarted proxy, keep the sets and their entries.
    await mode.sync(state, frozenset(), True)
    await NftablesProxy(mode.ctx).sync(state, frozenset(), True)
    assert f"{CLIENT_NET}.2" in (await netns.run(lb.node, ["nft", "list", "set", "ip", "kube-proxy",
                                                          affinity_set(WEB, ep)])).stdout.decode()
    assert {await ask_tcp(lb.client, CIP, 80) for _ in range(10)} == answers
    # A changed timeout recreates the sets (the transaction deletes and re-adds them).
    await mode.sync(ProxyState({WEB: web(lb, session_affinity=True, affinity_timeout=60)}), frozenset({WEB}), False)
    assert "timeout 1m" in await mode.rules()


async def test_no_endpoints_refuses_connections(lab: tuple[Lab, NftablesProxy]) -> None:
    lb, mode = lab
    await mode.sync(ProxyState({WEB: web(lb, pods=(), type="NodePort", node_port=30050)}), frozenset({WEB}), True)
    with pytest.raises(ConnectionRefusedError):
        await ask_tcp(lb.client, CIP, 80)
    with pytest.raises(ConnectionRefusedError):
        await ask_tcp(lb.client, f"{CLIENT_NET}.1", 30050)
    with pytest.raises(ConnectionRefusedError):  # from the node itself (filter output)
        await ask_tcp(lb.node, CIP, 80)
    # Endpoints appear: a partial sync moves the service from no-endpoint-services to service-ips.
    await mode.sync(ProxyState({WEB: web(lb, pods=("pod2",))}), frozenset({WEB}), False)
    assert await ask_tcp(lb.client, CIP, 80) == "pod2"
    assert await ask_tcp(lb.node, CIP, 80) == "pod2"


async def test_cluster_ip_on_another_port_is_rejected(lab: tuple[Lab, NftablesProxy]) -> None:
    lb, mode = lab
    await mode.sync(ProxyState({WEB: web(lb)}), frozenset({WEB}), True)
    with pytest.raises(ConnectionRefusedError):
        await ask_tcp(lb.client, CIP, 81)


async def test_node_port_masquerades(lab: tuple[Lab, NftablesProxy]) -> None:
    lb, mode = lab
    who = ServicePort(WHO, "10.96.0.60", 80, type="NodePort", node_port=30060,
                      endpoints=lb.endpoints(("pod1",), WHOAMI_PORT))
    await mode.sync(ProxyState({WHO: who}), frozenset({WHO}), True)
    # A pod address (inside the cluster CIDR) to the ClusterIP: the source is kept.
    assert await ask_tcp(lb.client, "10.96.0.60", 80) == f"pod1 {CLIENT_NET}.2"
    # The NodePort: external-<h> marks, masquerading rewrites the source to the node's pod-side address.
    assert await ask_tcp(lb.client, f"{CLIENT_NET}.1", 30060) == f"pod1 {POD_NET}.1"
    # externalTrafficPolicy Local with a local endpoint keeps the client's address.
    local = replace(who, external_local=True)
    await mode.sync(ProxyState({WHO: local}), frozenset({WHO}), False)
    assert await ask_tcp(lb.client, f"{CLIENT_NET}.1", 30060) == f"pod1 {CLIENT_NET}.2"


async def test_scale_down_removes_the_endpoint(lab: tuple[Lab, NftablesProxy]) -> None:
    lb, mode = lab
    other = ServicePort(WHO, "10.96.0.51", 80, endpoints=lb.endpoints(("pod1",)))
    await mode.sync(ProxyState({WEB: web(lb), WHO: other}), frozenset(), True)
    gone = endpoint_chain(WEB, lb.endpoints(("pod3",))[0])
    assert gone in await installed(mode)
    await mode.sync(ProxyState({WEB: web(lb, pods=("pod1", "pod2")), WHO: other}), frozenset({WEB}), False)
    names = await installed(mode)
    assert gone not in names and service_chain(WHO) in names
    answers = Counter([await ask_tcp(lb.client, CIP, 80) for _ in range(60)])
    assert set(answers) == {"pod1", "pod2"}, answers
    assert await ask_tcp(lb.client, "10.96.0.51", 80) == "pod1"
    # Removing the service deletes all its chains.
    await mode.sync(ProxyState({WHO: other}), frozenset({WEB}), False)
    assert not [c for c in await installed(mode) if "/web/" in c]


async def test_cleanup_leaves_no_table(make_ns: MakeNs, nursery: trio.Nursery) -> None:
    ns = make_ns("node")
    mode = NftablesProxy(NodeContext(NODE, (), netns=ns))
    await mode.start(nursery)
    sp = ServicePort(WEB, CIP, 80, session_affinity=True, endpoints=(Endpoint("10.244.3.1", 80),))
    await mode.sync(ProxyState({WEB: sp}), frozenset(), True)
    assert "table ip kube-proxy" in (await netns.run(ns, ["nft", "list", "tables"])).stdout.decode()
    await mode.cleanup()
    assert (await netns.run(ns, ["nft", "list", "tables"])).stdout.decode().strip() == ""
    assert await mode.rules() == ""
    await mode.cleanup()  # twice is fine


# ----------------------------------------------------------------- end to end through the sync loop


async def _until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.05)


async def test_kubectl_to_traffic_through_the_sync_loop(
    lab: tuple[Lab, NftablesProxy], cluster: Cluster, nursery: trio.Nursery
) -> None:
    from kmesh.proxy.runner import SyncConfig, run_proxy

    lb, mode = lab

    def slice_(pods: tuple[str, ...]) -> str:
        return endpoint_slice_yaml(("{name: http, port: 8080, protocol: TCP}",),
                                   [endpoint_yaml(lb.ips[p], NODE) for p in pods])

    await cluster.kubectl("apply", "-f", "-", stdin=service_yaml("10.96.0.70", "{name: http, port: 80, targetPort: 8080}"))
    await cluster.kubectl("apply", "-f", "-", stdin=slice_(PODS))
    await nursery.start(run_proxy, cluster.client, mode, SyncConfig(min_sync_period=0.05))

    async def reaches_all() -> bool:
        try:
            return {await ask_tcp(lb.client, "10.96.0.70", 80) for _ in range(30)} == set(PODS)
        except OSError:
            return False
    await _until(reaches_all)

    await cluster.kubectl("apply", "-f", "-", stdin=slice_(("pod1",)))
    gone = endpoint_chain(WEB, lb.endpoints(("pod3",), TCP_PORT)[0])

    async def only_pod1() -> bool:
        return gone not in await installed(mode)
    await _until(only_pod1)
    assert {await ask_tcp(lb.client, "10.96.0.70", 80) for _ in range(10)} == {"pod1"}

    await cluster.kubectl("delete", "service", "web")

    async def no_chains() -> bool:
        return not [c for c in await installed(mode) if "/web/" in c]  # default/kubernetes stays
    await _until(no_chains)


async def test_hairpin_to_itself_is_masqueraded(lab: tuple[Lab, NftablesProxy]) -> None:
    lb, mode = lab
    who = ServicePort(WHO, "10.96.0.60", 80, endpoints=lb.endpoints(("pod1",), WHOAMI_PORT))
    await mode.sync(ProxyState({WHO: who}), frozenset({WHO}), True)
    # pod1 → its own service → DNAT back to pod1: the endpoint chain's `ip saddr <endpoint>` rule marks it
    # for masquerade, else pod1 would answer itself directly and the connection would never complete.
    assert await ask_tcp(lb.pods["pod1"], "10.96.0.60", 80) == f"pod1 {POD_NET}.1"
    # Another pod keeps its address.
    assert await ask_tcp(lb.pods["pod2"], "10.96.0.60", 80) == f"pod1 {lb.ips['pod2']}"
