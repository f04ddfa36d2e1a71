"""The nftables renderer: upstream's names, setup, numgen dispatch, affinity sets, no-endpoint rejects, LB firewall, NodePort addresses, transactions."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from kmesh.proxy.model import (
    Endpoint,
    NodeContext,
    ProxyState,
    ServicePort,
    ServicePortName,
)
from kmesh.proxy.nftables_rules import (
    CLUSTER_IPS,
    FIREWALL_IPS,
    MARK_MASQ,
    NO_ENDPOINT_NODEPORTS,
    NO_ENDPOINT_SERVICES,
    REJECT_CHAIN,
    SERVICE_IPS,
    SERVICE_NODEPORTS,
    Existing,
    Installed,
    affinity_set,
    endpoint_chain,
    external_chain,
    firewall_chain,
    full_script,
    ipv4_ports,
    local_chain,
    nodeport_ips,
    parse_listing,
    render,
    render_service,
    service_chain,
    setup,
    transaction,
)
from tests.conftest import require, require_binary

NODE = "node1"
CTX = NodeContext(NODE, ("192.168.56.11",), cluster_cidr="10.0.0.0/8")
SVC1 = ServicePortName("ns1", "svc1", "p80")
EP1, EP2, EP3 = (Endpoint(f"10.180.0.{i}", 80, node=NODE if i == 1 else "node2") for i in (1, 2, 3))


def svc1(*eps: Endpoint, **kw: object) -> ServicePort:
    return ServicePort(SVC1, "172.30.0.41", 80, endpoints=eps, **kw)  # type: ignore[arg-type]


def test_chain_names_are_upstreams() -> None:
    # The names upstream's nftables proxier gives ns1/svc1:p80 and its endpoint 10.180.0.1:80.
    assert service_chain(SVC1) == "service-ULMVA6XW-ns1/svc1/tcp/p80"
    assert firewall_chain(SVC1) == "firewall-ULMVA6XW-ns1/svc1/tcp/p80"
    assert external_chain(SVC1) == "external-ULMVA6XW-ns1/svc1/tcp/p80"
    assert local_chain(SVC1) == "local-ULMVA6XW-ns1/svc1/tcp/p80"
    assert endpoint_chain(SVC1, EP1) == "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    assert affinity_set(SVC1, EP1) == "affinity-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    unnamed = ServicePortName("ns1", "svc1", "", "UDP")
    assert service_chain(unnamed).endswith("-ns1/svc1/udp/")
    long = ServicePortName("n" * 63, "s" * 63, "p" * 63)
    assert len(endpoint_chain(long, EP1)) == len("endpoint-") + 200 and endpoint_chain(long, EP1).endswith("...")


def test_cluster_ip_dispatch_by_numgen_without_probabilities() -> None:
    rs = render(ProxyState({SVC1: svc1(EP3, EP1, EP2)}), CTX)
    svc = service_chain(SVC1)
    assert rs.elements[SERVICE_IPS] == [f"172.30.0.41 . tcp . 80 : goto {svc}"]
    assert rs.elements[CLUSTER_IPS] == ["172.30.0.41"]
    eps = [endpoint_chain(SVC1, e) for e in (EP1, EP2, EP3)]  # sorted by address
    assert rs.chains[svc] == [
        f"ip daddr 172.30.0.41 tcp dport 80 ip saddr != 10.0.0.0/8 jump {MARK_MASQ}",
        f"numgen random mod 3 vmap {{ 0 : goto {eps[0]}, 1 : goto {eps[1]}, 2 : goto {eps[2]} }}",
    ]
    assert rs.chains[eps[0]] == [f"ip saddr 10.180.0.1 jump {MARK_MASQ}", "meta l4proto tcp dnat to 10.180.0.1:80"]
    assert not rs.affinity and "probability" not in full_script(ProxyState({SVC1: svc1(EP1, EP2)}), CTX)
    assert NO_ENDPOINT_SERVICES not in rs.elements


def test_client_ip_affinity_sets() -> None:
    rs = render(ProxyState({SVC1: svc1(EP1, EP2, session_affinity=True, affinity_timeout=300)}), CTX)
    sets = [affinity_set(SVC1, e) for e in (EP1, EP2)]
    eps = [endpoint_chain(SVC1, e) for e in (EP1, EP2)]
    assert rs.affinity == {sets[0]: 300, sets[1]: 300}
    rules = rs.chains[service_chain(SVC1)]
    assert rules[1:] == [f"ip saddr @{sets[0]} goto {eps[0]}", f"ip saddr @{sets[1]} goto {eps[1]}",
                         f"numgen random mod 2 vmap {{ 0 : goto {eps[0]}, 1 : goto {eps[1]} }}"]
    assert rs.chains[eps[1]][1:] == [f"update @{sets[1]} {{ ip saddr }}", "meta l4proto tcp dnat to 10.180.0.2:80"]
    text = full_script(ProxyState({SVC1: svc1(EP1, EP2, session_affinity=True, affinity_timeout=300)}), CTX)
    assert f"add set ip kube-proxy {sets[0]} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 300s ; }}" in text


def test_no_endpoints_are_rejected() -> None:
    sp = svc1(type="NodePort", node_port=30080, external_ips=("1.2.3.4",))
    rs = render(ProxyState({SVC1: sp}), CTX)
    # Upstream comments each no-endpoint element with the service port's name.
    assert rs.elements[NO_ENDPOINT_SERVICES] == [f'172.30.0.41 . tcp . 80 comment "ns1/svc1:p80" : goto {REJECT_CHAIN}',
                                                 f'1.2.3.4 . tcp . 80 comment "ns1/svc1:p80" : goto {REJECT_CHAIN}']
    assert rs.elements[NO_ENDPOINT_NODEPORTS] == [f'tcp . 30080 comment "ns1/svc1:p80" : goto {REJECT_CHAIN}']
    assert rs.elements[CLUSTER_IPS] == ["172.30.0.41"]  # a used ClusterIP even without endpoints
    assert SERVICE_IPS not in rs.elements and not [c for c in rs.chains if "ns1/svc1" in c]
    # Not ready and not terminating endpoints count as none.
    rs = render(ProxyState({SVC1: svc1(replace(EP1, ready=False))}), CTX)
    assert NO_ENDPOINT_SERVICES in rs.elements


def test_node_port_and_external_ips_go_through_the_external_chain() -> None:
    sp = svc1(EP1, type="NodePort", node_port=30080, external_ips=("1.2.3.4",))
    rs = render(ProxyState({SVC1: sp}), CTX)
    ext, svc = external_chain(SVC1), service_chain(SVC1)
    assert rs.elements[SERVICE_NODEPORTS] == [f"tcp . 30080 : goto {ext}"]
    assert f"1.2.3.4 . tcp . 80 : goto {ext}" in rs.elements[SERVICE_IPS]
    assert rs.chains[ext] == [f"jump {MARK_MASQ}", f"goto {svc}"]
    # Addresses of the other family are not this table's (upstream filters them per family).
    rs = render(ProxyState({SVC1: replace(sp, external_ips=("2001:db8::1",), node_port=0)}), CTX)
    assert not [e for e in rs.elements[SERVICE_IPS] if "2001" in e] and ext not in rs.chains


def test_local_traffic_policies() -> None:
    # internalTrafficPolicy Local: the cluster IP goes to local-, with only this node's endpoint.
    rs = render(ProxyState({SVC1: svc1(EP1, EP2, internal_local=True)}), CTX)
    assert rs.elements[SERVICE_IPS] == [f"172.30.0.41 . tcp . 80 : goto {local_chain(SVC1)}"]
    assert rs.chains[local_chain(SVC1)][-1] == f"numgen random mod 1 vmap {{ 0 : goto {endpoint_chain(SVC1, EP1)} }}"
    assert service_chain(SVC1) not in rs.chains and endpoint_chain(SVC1, EP2) not in rs.chains
    # No local endpoint: dropped, not rejected (the service has endpoints elsewhere).
    rs = render(ProxyState({SVC1: svc1(EP2, internal_local=True)}), CTX)
    assert rs.elements[NO_ENDPOINT_SERVICES] == ['172.30.0.41 . tcp . 80 comment "ns1/svc1:p80" : drop']
    # externalTrafficPolicy Local: pods and the node itself still use every endpoint; others only local ones.
    rs = render(ProxyState({SVC1: svc1(EP1, EP2, type="NodePort", node_port=30080, external_local=True)}), CTX)
    assert rs.chains[external_chain(SVC1)] == [
        f'ip saddr 10.0.0.0/8 goto {service_chain(SVC1)} comment "short-circuit pod traffic"',
        f'fib saddr type local jump {MARK_MASQ} comment "masquerade local traffic"',
        f'fib saddr type local goto {service_chain(SVC1)} comment "short-circuit local traffic"',
        f"goto {local_chain(SVC1)}"]
    # No local endpoint: outside traffic is dropped, but pods and the node still short-circuit to service-<h>.
    rs = render(ProxyState({SVC1: svc1(EP2, type="NodePort", node_port=30080, external_local=True)}), CTX)
    assert rs.elements[NO_ENDPOINT_NODEPORTS] == ['tcp . 30080 comment "ns1/svc1:p80" : drop']
    assert rs.elements[SERVICE_NODEPORTS] == [f"tcp . 30080 : goto {external_chain(SVC1)}"]
    assert rs.chains[external_chain(SVC1)][-1] == f'fib saddr type local goto {service_chain(SVC1)} comment "short-circuit local traffic"'
    assert local_chain(SVC1) not in rs.chains and service_chain(SVC1) in rs.chains


def test_full_transaction_deletes_stale_objects_and_keeps_affinity_sets() -> None:
    state = ProxyState({SVC1: svc1(EP1, session_affinity=True)})
    keep, gone = affinity_set(SVC1, EP1), affinity_set(SVC1, EP2)
    existing = Existing(chains={"services", service_chain(SVC1), endpoint_chain(SVC1, EP2), "nat-output"},
                        sets={SERVICE_IPS, keep, gone}, timeouts={keep: 10800, gone: 10800})
    lines = full_script(state, CTX, existing=existing).splitlines()
    stale = endpoint_chain(SVC1, EP2)
    # Stale chains are flushed, their map elements go, then they are deleted; base and top-level chains stay.
    assert lines.index(f"flush chain ip kube-proxy {stale}") < lines.index(f"delete chain ip kube-proxy {stale}")
    assert lines[-2:] == [f"delete chain ip kube-proxy {stale}", f"delete set ip kube-proxy {gone}"]
    assert f"delete set ip kube-proxy {keep}" not in lines
    assert not any(l.startswith("delete chain") and ("services" in l or "nat-output" in l) for l in lines)
    # A changed timeout recreates the set (after the chains using it were flushed).
    existing.timeouts[keep] = 5
    lines = full_script(state, CTX, existing=existing).splitlines()
    assert lines.index(f"flush chain ip kube-proxy {service_chain(SVC1)}") < lines.index(f"delete set ip kube-proxy {keep}")


def test_parse_listing() -> None:
    text = ("table ip kube-proxy {\n\tmap service-ips {\n\t\ttype ipv4_addr\n\t}\n\n\tset affinity-X-a/b/tcp/__1.2.3.4/80 {\n"
            "\t}\n\tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t}\n"
            "\tchain endpoint-Y-a/b/tcp/__1.2.3.4/80 {\n\t}\n}\n")
    ex = parse_listing(text)
    assert ex.chains == {"services", "endpoint-Y-a/b/tcp/__1.2.3.4/80"}
    assert ex.sets == {"service-ips", "affinity-X-a/b/tcp/__1.2.3.4/80"}
    assert parse_listing("").empty


@pytest.mark.netns
async def test_script_is_accepted_by_nft() -> None:
    require(netns_usable(), "root with network namespaces (ip netns)")
    require_binary("nft")
    ns = f"kmnft-{uuid.uuid4().hex[:6]}-rules"
    netns.add(ns)
    try:
        lb = ServicePortName("ns3", "lb", "http")
        state = ProxyState({
            SVC1: svc1(EP1, EP2, session_affinity=True, type="NodePort", node_port=30080, external_local=True),
            ServicePortName("ns2", "svc2", "", "UDP"): ServicePort(ServicePortName("ns2", "svc2", "", "UDP"),
                                                                   "172.30.0.42", 53, node_port=30053),
            lb: ServicePort(lb, "172.30.0.43", 80, type="LoadBalancer", node_port=30081, load_balancer_ips=("5.6.7.8",),
                            load_balancer_source_ranges=("203.0.113.0/25",), endpoints=(EP3,)),
        })
        await netns.run(ns, ["nft", "-f", "-"], input=full_script(state, CTX).encode())
        listing = (await netns.run(ns, ["nft", "list", "table", "ip", "kube-proxy"])).stdout.decode()
        ex = parse_listing(listing)
        assert service_chain(SVC1) in ex.chains and affinity_set(SVC1, EP2) in ex.sets and firewall_chain(lb) in ex.chains
        # A full sync over the installed table gives the same table (the transaction is idempotent).
        await netns.run(ns, ["nft", "-f", "-"], input=full_script(state, CTX, existing=ex).encode())
        assert (await netns.run(ns, ["nft", "list", "table", "ip", "kube-proxy"])).stdout.decode() == listing
    finally:
        netns.delete(ns)


# ------------------------------------------------- what upstream's setupNFTables and syncProxyRules write


def test_setup_is_upstreams() -> None:
    """The Service-independent part of a full sync, in upstream's order, with its comments."""
    t = "ip kube-proxy"
    base = [("filter-prerouting", "filter", "prerouting", -110), ("filter-input", "filter", "input", -110),
            ("filter-forward", "filter", "forward", -110), ("filter-output", "filter", "output", -110),
            ("filter-output-post-dnat", "filter", "output", -90), ("nat-prerouting", "nat", "prerouting", -100),
            ("nat-output", "nat", "output", -100), ("nat-postrouting", "nat", "postrouting", 100)]
    expected = [f'add table {t} {{ comment "rules for kube-proxy" ; }}']
    for c, ty, hook, prio in base:
        expected += [f"add chain {t} {c} {{ type {ty} hook {hook} priority {prio} ; }}", f"flush chain {t} {c}"]
    expected += [
        f"add chain {t} nodeport-endpoints-check", f"flush chain {t} nodeport-endpoints-check",
        f"add rule {t} filter-input ct state new jump nodeport-endpoints-check",
        f"add chain {t} service-endpoints-check", f"flush chain {t} service-endpoints-check",
        f"add rule {t} filter-input ct state new jump service-endpoints-check",
        f"add rule {t} filter-forward ct state new jump service-endpoints-check",
        f"add rule {t} filter-output ct state new jump service-endpoints-check",
        f"add chain {t} firewall-check", f"flush chain {t} firewall-check",
        f"add rule {t} filter-prerouting ct state new jump firewall-check",
        f"add rule {t} filter-output ct state new jump firewall-check",
        f"add chain {t} services", f"flush chain {t} services",
        f"add rule {t} nat-output jump services",
        f"add rule {t} nat-prerouting jump services",
        f"add chain {t} masquerading", f"flush chain {t} masquerading",
        f"add rule {t} nat-postrouting jump masquerading",
        f"add chain {t} cluster-ips-check", f"flush chain {t} cluster-ips-check",
        f"add rule {t} filter-forward ct state new jump cluster-ips-check",
        f"add rule {t} filter-output-post-dnat ct state new jump cluster-ips-check",
        f"add chain {t} mark-for-masquerade", f"flush chain {t} mark-for-masquerade",
        f"add rule {t} mark-for-masquerade mark set mark or 0x4000",
        f"add rule {t} masquerading mark and 0x4000 == 0 return",
        f"add rule {t} masquerading mark set mark xor 0x4000",
        f"add rule {t} masquerading masquerade fully-random",
        f'add set {t} cluster-ips {{ type ipv4_addr ; comment "Active ClusterIPs" ; }}',
        f'add rule {t} cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"',
        f'add rule {t} cluster-ips-check ip daddr {{ 10.96.0.0/12 }} drop comment "Drop traffic to unallocated ClusterIPs"',
        f'add set {t} nodeport-ips {{ type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }}',
        f"flush set {t} nodeport-ips",
        f"add element {t} nodeport-ips {{ 192.168.56.11 }}",
        (f"add map {t} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; "
         'comment "vmap to drop or reject packets to services with no endpoints" ; }'),
        (f"add map {t} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; "
         'comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }'),
        f'add chain {t} reject-chain {{ comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }}',
        f"flush chain {t} reject-chain",
        f"add rule {t} reject-chain reject",
        f"add rule {t} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
        f"add rule {t} nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
        (f"add map {t} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; "
         'comment "destinations that are subject to LoadBalancerSourceRanges" ; }'),
        f"add rule {t} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips",
        (f"add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; "
         'comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }'),
        f'add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }}',
        f"add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        f"flush set {t} cluster-ips", f"flush map {t} service-ips", f"flush map {t} firewall-ips",
        f"flush map {t} no-endpoint-services", f"flush map {t} no-endpoint-nodeports", f"flush map {t} service-nodeports",
    ]
    assert full_script(ProxyState(), CTX).splitlines() == expected
    # Once per process upstream recreates the base chains (so a changed hook or priority applies).
    first = setup(CTX, ["192.168.56.11"], recreate_base=True)
    assert first[1:5] == [f"add chain {t} filter-prerouting", f"delete chain {t} filter-prerouting",
                          f"add chain {t} filter-input", f"delete chain {t} filter-input"]


def test_nodeport_addresses() -> None:
    # Default (primary): the node's IPs in nodeport-ips, matched instead of `fib daddr type local`.
    assert nodeport_ips(CTX) == ["192.168.56.11"]
    # CIDRs match the node's addresses; loopback is left out (no localhost NodePorts in this mode).
    ctx = replace(CTX, nodeport_addresses=("127.0.0.0/8", "10.1.0.0/16"))
    assert nodeport_ips(ctx, ["127.0.0.1", "10.1.2.3", "192.168.56.11", "10.2.0.1"]) == ["10.1.2.3"]
    # 0.0.0.0/0: every local address, through fib; the set is deleted (upstream's add+delete).
    every = replace(CTX, nodeport_addresses=("0.0.0.0/0",))
    assert nodeport_ips(every) is None
    lines = full_script(ProxyState(), every).splitlines()
    t = "ip kube-proxy"
    assert lines[lines.index(f'add set {t} nodeport-ips {{ type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }}') + 1] \
        == f"delete set {t} nodeport-ips"
    assert f"add rule {t} services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports" in lines
    assert f"add rule {t} nodeport-endpoints-check ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports" in lines
    assert not [l for l in lines if "@nodeport-ips" in l]


def test_cluster_ips_check_covers_the_ipv4_service_cidrs() -> None:
    ctx = replace(CTX, service_cidrs=("10.96.0.0/12", "fd00:10:96::/108", "172.30.0.0/16"))
    lines = full_script(ProxyState(), ctx).splitlines()
    assert ('add rule ip kube-proxy cluster-ips-check ip daddr { 10.96.0.0/12, 172.30.0.0/16 } drop '
            'comment "Drop traffic to unallocated ClusterIPs"') in lines
    # Without service CIDRs only the reject of unused ports of used ClusterIPs remains.
    lines = full_script(ProxyState(), replace(CTX, service_cidrs=())).splitlines()
    assert [l for l in lines if l.startswith("add rule ip kube-proxy cluster-ips-check")] == [
        'add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"']


LB = ServicePortName("ns5", "svc5", "p80")


def lb(*eps: Endpoint, ranges: tuple[str, ...] = ("192.168.0.0/24", " 203.0.113.0/25"), **kw: object) -> ServicePort:
    return ServicePort(LB, "172.30.0.45", 80, type="LoadBalancer", node_port=3002,  # type: ignore[arg-type]
                       load_balancer_ips=("1.2.3.4", "5.6.7.8"), load_balancer_source_ranges=ranges, endpoints=eps, **kw)


def test_load_balancer_source_ranges() -> None:
    rs = render(ProxyState({LB: lb(EP3)}), CTX)
    fw, ext = firewall_chain(LB), external_chain(LB)
    # Padding is trimmed; sources outside the ranges are dropped before DNAT.
    assert rs.chains[fw] == ["ip saddr != { 192.168.0.0/24, 203.0.113.0/25 } drop"]
    assert rs.elements[FIREWALL_IPS] == [f"1.2.3.4 . tcp . 80 : goto {fw}", f"5.6.7.8 . tcp . 80 : goto {fw}"]
    assert rs.elements[SERVICE_IPS][1:] == [f"1.2.3.4 . tcp . 80 : goto {ext}", f"5.6.7.8 . tcp . 80 : goto {ext}"]
    # The NodePort is not subject to the ranges (as upstream: "for better or for worse").
    assert rs.elements[SERVICE_NODEPORTS] == [f"tcp . 3002 : goto {ext}"]
    # A range holding the node's IP also admits the LB IPs (a VIP-style LB loops the node's own requests back).
    rs = render(ProxyState({LB: lb(EP3)}), replace(CTX, node_ips=("192.168.0.2",)))
    assert rs.chains[fw] == ["ip saddr != { 192.168.0.0/24, 203.0.113.0/25, 1.2.3.4, 5.6.7.8 } drop"]
    # Without endpoints the firewall still applies, and the LB IPs reject.
    rs = render(ProxyState({LB: lb()}), CTX)
    assert fw in rs.chains and FIREWALL_IPS in rs.elements
    assert f'1.2.3.4 . tcp . 80 comment "ns5/svc5:p80" : goto {REJECT_CHAIN}' in rs.elements[NO_ENDPOINT_SERVICES]
    # No firewall without LB IPs, or when no range is IPv4 (the other family's ranges are ignored).
    assert fw not in render(ProxyState({LB: replace(lb(EP3), load_balancer_ips=())}), CTX).chains
    rs = render(ProxyState({LB: lb(EP3, ranges=("2001:db8::/64",))}), CTX)
    assert fw not in rs.chains and FIREWALL_IPS not in rs.elements


def test_partial_transaction_touches_only_what_changed() -> None:
    svc2 = ServicePortName("ns2", "svc2", "p80")
    two = ServicePort(svc2, "172.30.0.42", 80, endpoints=(EP2,))
    state = ProxyState({SVC1: svc1(EP1, EP2), svc2: two})
    ports = ipv4_ports(state)
    rules = {n: render_service(sp, CTX) for n, sp in ports.items()}
    installed = transaction(ports, rules, rules, Installed(), setup_lines=setup(CTX, [])).after
    # svc1 loses EP2: only its chains are rewritten, EP2's chain deleted; the maps do not change.
    state2 = ProxyState({SVC1: svc1(EP1), svc2: two})
    ports2 = ipv4_ports(state2)
    rules2 = {SVC1: render_service(ports2[SVC1], CTX), svc2: installed.rules[svc2]}
    lines = transaction(ports2, rules2, {SVC1}, installed).text.splitlines()
    t, gone = "ip kube-proxy", endpoint_chain(SVC1, EP2)
    assert not [l for l in lines if "ns2/svc2" in l] and not [l for l in lines if "element" in l]
    assert lines[:4] == [f"add chain {t} {endpoint_chain(SVC1, EP1)}", f"flush chain {t} {endpoint_chain(SVC1, EP1)}",
                         f"add chain {t} {service_chain(SVC1)}", f"flush chain {t} {service_chain(SVC1)}"]
    assert lines.index(f"flush chain {t} {gone}") < lines.index(f"delete chain {t} {gone}") == len(lines) - 1
    # svc2 is removed: its elements are deleted before its chains.
    after = transaction(ports2, rules2, {SVC1}, installed).after
    lines = transaction({SVC1: ports2[SVC1]}, {SVC1: rules2[SVC1]}, {svc2}, after).text.splitlines()
    assert lines == [
        f"flush chain {t} {endpoint_chain(svc2, EP2)}", f"flush chain {t} {service_chain(svc2)}",
        f"delete element {t} cluster-ips {{ 172.30.0.42 }}",
        f"delete element {t} service-ips {{ 172.30.0.42 . tcp . 80 }}",
        f"delete chain {t} {endpoint_chain(svc2, EP2)}", f"delete chain {t} {service_chain(svc2)}"]
    # A changed verdict is a delete and an add of the same key.
    empty = {svc2: ServicePort(svc2, "172.30.0.42", 80)}
    lines = transaction(empty, {svc2: render_service(empty[svc2], CTX)}, {svc2}, after).text.splitlines()
    assert lines.index(f"delete element {t} service-ips {{ 172.30.0.42 . tcp . 80 }}") < lines.index(
        f'add element {t} no-endpoint-services {{ 172.30.0.42 . tcp . 80 comment "ns2/svc2:p80" : goto reject-chain }}')
