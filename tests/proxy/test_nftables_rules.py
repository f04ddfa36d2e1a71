"""The nftables renderer: upstream's names, numgen dispatch, affinity sets, no-endpoint rejects, the transaction."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from kmesh.lab import netns
from kmesh.lab.netns_check import netns_usable
from kmesh.proxy.model import (
    Endpoint,
    NodeContext,
    ProxyState,
    ServicePort,
    ServicePortName,
)
from kmesh.proxy.nftables_rules import (
    CLUSTER_IPS,
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
    parse_listing,
    render,
    render_service,
    service_chain,
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
