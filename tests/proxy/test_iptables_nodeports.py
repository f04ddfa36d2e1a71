"""``--nodeport-addresses`` in the iptables mode: the rules upstream writes, then traffic in a namespace.

Upstream (pkg/proxy/iptables/proxier.go, pkg/proxy/util/nodeport_addresses.go):
with no value or a 0.0.0.0/0 CIDR the last rule of nat KUBE-SERVICES is
``-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS``; otherwise one ``-d <ip>
-j KUBE-NODEPORTS`` per node address the CIDRs select, with the same comment.
Localhost NodePorts (the KUBE-FIREWALL "block incoming localnet connections"
rule, its jumps and ``route_localnet=1``) stay on only when the CIDRs reach
127.0.0.0; a selected loopback address is left out when they are off. The
filter table's rules (KUBE-EXTERNAL-SERVICES' ``--dst-type LOCAL`` for
NodePorts without endpoints, the health-check node port ACCEPT) do not change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import trio

from kmesh.net import netns
from kmesh.proxy.iptables import IptablesProxy
from kmesh.proxy.iptables_rules import (
    JUMPS,
    RenderConfig,
    missing_jumps,
    parse_save,
    render,
)
from kmesh.proxy.model import (
    Endpoint,
    NodeContext,
    ProxyState,
    ServicePort,
    ServicePortName,
)
from tests.proxy.traffic_lab import (
    CLIENT_NET,
    WHOAMI_PORT,
    Lab,
    MakeNs,
    ask_tcp,
    namespace_factory,
)

SVC1 = ServicePortName("ns1", "svc1", "p80")
NP_COMMENT = '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"'
CLUSTER_RULE = ('-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 '
                "--dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O")
LOCALNET_RULE = ('-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 '
                 "! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP")


def nodeport_state(**kw: object) -> ProxyState:
    """Upstream's fixture service ns1/svc1:p80 (172.30.0.41:80, NodePort 3001, endpoint 10.180.0.1:80)."""
    sp = ServicePort(SVC1, "172.30.0.41", 80, type="NodePort", node_port=3001,
                     endpoints=(Endpoint("10.180.0.1", 80, node="node2"),), **kw)  # type: ignore[arg-type]
    return ProxyState({SVC1: sp})


def cfg_for(addresses: tuple[str, ...], chosen: tuple[str, ...] | None, **kw: object) -> RenderConfig:
    """The config a proxy with ``--nodeport-addresses addresses`` renders with once ``chosen`` are selected."""
    ctx = NodeContext("node1", ("192.168.0.2",), cluster_cidr="10.0.0.0/8", nodeport_addresses=addresses)
    return replace(RenderConfig.from_context(ctx, **kw), nodeport_ips=chosen)


def services_chain(cfg: RenderConfig, state: ProxyState | None = None) -> list[str]:
    return parse_save(render(state or nodeport_state(), cfg))["nat"]["KUBE-SERVICES"]


def test_no_value_sends_every_local_address_to_nodeports() -> None:
    cfg = cfg_for((), None)
    assert cfg.localhost_nodeports
    assert services_chain(cfg) == [
        CLUSTER_RULE,
        f"-A KUBE-SERVICES -m comment --comment {NP_COMMENT} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
    ]
    filt = parse_save(render(nodeport_state(), cfg))["filter"]
    assert filt["KUBE-FIREWALL"] == [LOCALNET_RULE]


def test_zero_cidr_is_every_local_address_too() -> None:
    cfg = cfg_for(("0.0.0.0/0",), None)  # nodeports.select gives ALL for a /0
    assert cfg.localhost_nodeports  # 0.0.0.0/0 covers 127.0.0.0
    assert services_chain(cfg)[-1] == (
        f"-A KUBE-SERVICES -m comment --comment {NP_COMMENT} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")


def test_cidrs_give_one_rule_per_selected_address_and_turn_localhost_nodeports_off() -> None:
    cfg = cfg_for(("192.168.0.0/24", "10.20.0.0/16"), ("192.168.0.2", "10.20.30.40"))
    assert not cfg.localhost_nodeports
    text = render(nodeport_state(), cfg)
    tables = parse_save(text)
    assert tables["nat"]["KUBE-SERVICES"] == [
        CLUSTER_RULE,
        f"-A KUBE-SERVICES -m comment --comment {NP_COMMENT} -d 192.168.0.2 -j KUBE-NODEPORTS",
        f"-A KUBE-SERVICES -m comment --comment {NP_COMMENT} -d 10.20.30.40 -j KUBE-NODEPORTS",
    ]
    # Localhost NodePorts off: no KUBE-FIREWALL chain and no jumps to it.
    assert "KUBE-FIREWALL" not in tables["filter"]
    assert all(j.dst != "KUBE-FIREWALL" for j in missing_jumps("", cfg))
    assert {j.dst for j in missing_jumps("", cfg)} == {j.dst for j in JUMPS} - {"KUBE-FIREWALL"}
    # The NodePort chain itself is the same as without the flag.
    assert tables["nat"]["KUBE-NODEPORTS"] == parse_save(render(nodeport_state(), cfg_for((), None)))["nat"]["KUBE-NODEPORTS"]


def test_no_address_matches_means_no_nodeport_rule() -> None:
    assert services_chain(cfg_for(("203.0.113.0/24",), ())) == [CLUSTER_RULE]


def test_loopback_cidr_keeps_localhost_nodeports_and_its_address() -> None:
    cfg = cfg_for(("192.168.0.0/24", "127.0.0.0/8"), ("192.168.0.2", "127.0.0.1"))
    assert cfg.localhost_nodeports
    assert services_chain(cfg)[1:] == [
        f"-A KUBE-SERVICES -m comment --comment {NP_COMMENT} -d 192.168.0.2 -j KUBE-NODEPORTS",
        f"-A KUBE-SERVICES -m comment --comment {NP_COMMENT} -d 127.0.0.1 -j KUBE-NODEPORTS",
    ]
    assert parse_save(render(nodeport_state(), cfg))["filter"]["KUBE-FIREWALL"] == [LOCALNET_RULE]
    # --iptables-localhost-nodeports=false: the loopback address is left out (upstream logs an error).
    off = cfg_for(("192.168.0.0/24", "127.0.0.0/8"), ("192.168.0.2", "127.0.0.1"), localhost_nodeports=False)
    assert services_chain(off)[1:] == [
        f"-A KUBE-SERVICES -m comment --comment {NP_COMMENT} -d 192.168.0.2 -j KUBE-NODEPORTS"]
    # ...and with every address, loopback is excluded by the rule itself.
    assert services_chain(cfg_for((), None, localhost_nodeports=False))[-1] == (
        f"-A KUBE-SERVICES -m comment --comment {NP_COMMENT} -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS")


def test_primary_is_the_node_ips_without_localhost() -> None:
    cfg = cfg_for(("primary",), ("192.168.0.2",))
    assert not cfg.localhost_nodeports
    assert services_chain(cfg)[-1] == f"-A KUBE-SERVICES -m comment --comment {NP_COMMENT} -d 192.168.0.2 -j KUBE-NODEPORTS"


def test_ipv6_addresses_are_not_in_the_ipv4_rules() -> None:
    cfg = cfg_for(("192.168.0.0/24", "2001:db8::/64"), ("192.168.0.2", "2001:db8::1"))
    assert services_chain(cfg)[1:] == [f"-A KUBE-SERVICES -m comment --comment {NP_COMMENT} -d 192.168.0.2 -j KUBE-NODEPORTS"]


def test_filter_rules_do_not_depend_on_nodeport_addresses() -> None:
    """No endpoints → KUBE-EXTERNAL-SERVICES REJECT with --dst-type LOCAL; health-check port ACCEPT: as without the flag."""
    none = ProxyState({SVC1: replace(nodeport_state().services[SVC1], endpoints=(), health_check_node_port=30000,
                                     external_local=True)})
    with_flag = parse_save(render(none, cfg_for(("192.168.0.0/24",), ("192.168.0.2",))))["filter"]
    without = parse_save(render(none, cfg_for((), None)))["filter"]
    for chain in ("KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-SERVICES"):
        assert with_flag[chain] == without[chain]
    assert with_flag["KUBE-EXTERNAL-SERVICES"] == [
        ('-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m addrtype --dst-type LOCAL '
         "-m tcp -p tcp --dport 3001 -j REJECT")]


# ----------------------------------------------------------------- in a namespace


@pytest.fixture
def make_ns() -> Iterator[MakeNs]:
    """Namespaces ``kmnpa-<random>-<what>``, all deleted afterwards."""
    with namespace_factory("kmnpa", ("iptables-restore", "iptables-save")) as make:
        yield make


WHO = ServicePortName("default", "who", "http")


def who(lab: Lab) -> ProxyState:
    sp = ServicePort(WHO, "10.96.0.60", 80, type="NodePort", node_port=30060,
                     endpoints=lab.endpoints(("pod1",), WHOAMI_PORT))
    return ProxyState({WHO: sp})


async def sysctl(ns: str, key: str) -> str:
    return (await netns.run(ns, ["sysctl", "-n", key])).stdout.decode().strip()


@pytest.mark.netns
async def test_nodeport_answers_only_on_selected_address(make_ns: MakeNs, nursery: trio.Nursery) -> None:
    lab = Lab(make_ns)  # node addresses: 192.168.56.11 (eth0), 10.244.2.1 (to the client), 10.244.1.1 (pods)
    await lab.setup()
    await lab.serve(nursery)
    ctx = NodeContext("node1", (f"{CLIENT_NET}.1",), cluster_cidr="10.244.0.0/16", netns=lab.node,
                      nodeport_addresses=("192.168.56.0/24",))
    mode = IptablesProxy(ctx, monitor_interval=0)
    await mode.start(nursery)
    try:
        await mode.sync(who(lab), frozenset(), True)
        assert await ask_tcp(lab.client, "192.168.56.11", 30060) == "pod1 10.244.1.1"
        with pytest.raises(ConnectionRefusedError):  # a local address of the node, not selected: nothing there
            await ask_tcp(lab.client, f"{CLIENT_NET}.1", 30060)
        assert await ask_tcp(lab.client, "10.96.0.60", 80) == f"pod1 {CLIENT_NET}.2"  # ClusterIP untouched
        assert await sysctl(lab.node, "net.ipv4.conf.all.route_localnet") == "0"  # no loopback: not set
        nat = parse_save(await mode.rules())["nat"]["KUBE-SERVICES"]
        assert nat[-1] == f"-A KUBE-SERVICES -d 192.168.56.11/32 -m comment --comment {NP_COMMENT} -j KUBE-NODEPORTS"

        # A new address in the CIDR counts from the next full sync, not on a partial one.
        netns.ip(lab.node, "addr", "add", "192.168.56.12/24", "dev", "eth0")
        await mode.sync(who(lab), frozenset({WHO}), False)
        assert mode.cfg.nodeport_ips == ("192.168.56.11",)
        await mode.sync(who(lab), frozenset(), True)
        assert mode.cfg.nodeport_ips == ("192.168.56.11", "192.168.56.12")
        assert await ask_tcp(lab.client, "192.168.56.12", 30060) == "pod1 10.244.1.1"
    finally:
        await mode.cleanup()


@pytest.mark.netns
async def test_default_sets_route_localnet_and_answers_on_every_address(make_ns: MakeNs, nursery: trio.Nursery) -> None:
    lab = Lab(make_ns)
    await lab.setup()
    await lab.serve(nursery)
    mode = IptablesProxy(NodeContext("node1", (f"{CLIENT_NET}.1",), cluster_cidr="10.244.0.0/16", netns=lab.node),
                         monitor_interval=0)
    await mode.start(nursery)
    try:
        await mode.sync(who(lab), frozenset(), True)
        assert mode.cfg.nodeport_ips is None
        assert await sysctl(lab.node, "net.ipv4.conf.all.route_localnet") == "1"
        for ip in ("192.168.56.11", f"{CLIENT_NET}.1"):
            assert (await ask_tcp(lab.client, ip, 30060)).startswith("pod1 ")
        assert (await ask_tcp(lab.node, "127.0.0.1", 30060)).startswith("pod1 ")  # localhost NodePort
    finally:
        await mode.cleanup()
