"""The iptables renderer against hand-written dumps of upstream kube-proxy's rules.

Each case is a set of Services and EndpointSlices (Kubernetes JSON, also
applied with kubectl in test_iptables_mode); tests/proxy/expected/<case>.txt
is the whole filter + nat table a fresh kube-proxy leaves behind, written
from upstream's documented rules (names use upstream's test fixtures, so
hashes such as KUBE-SVC-XPGD46QRK7WJZT7O for ``ns1/svc1:p80`` are upstream's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from kmesh.proxy.convert import build_state
from kmesh.proxy.iptables_rules import (
    JUMPS,
    Planner,
    RenderConfig,
    normalise,
    parse_save,
    port_proto_hash,
    probability,
    render,
    sep_chain,
    svc_chain,
)
from kmesh.proxy.model import Endpoint, ProxyState, ServicePort, ServicePortName

EXPECTED = Path(__file__).parent / "expected"
NODE = "node1"
CFG = RenderConfig(node=NODE, cluster_cidr="10.0.0.0/8")
Obj = dict[str, Any]


def service(ns: str, name: str, ip: str, ports: list[Obj], type: str = "ClusterIP", **spec: Any) -> Obj:
    """A Service object."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": name},
            "spec": {"type": type, "clusterIP": ip, "ports": ports, **spec}}


def port(p: int, name: str = "p80", proto: str = "TCP", node_port: int | None = None) -> Obj:
    out: Obj = {"port": p, "protocol": proto, "targetPort": p}
    if name:
        out["name"] = name
    if node_port:
        out["nodePort"] = node_port
    return out


def endpoint(ip: str, node: str = "node2", ready: bool = True, serving: bool | None = None,
             terminating: bool | None = None) -> Obj:
    cond: Obj = {"ready": ready}
    if serving is not None:
        cond["serving"] = serving
    if terminating is not None:
        cond["terminating"] = terminating
    return {"addresses": [ip], "conditions": cond, "nodeName": node}


def endpoint_slice(ns: str, svc: str, eps: list[Obj], port_num: int, name: str = "p80", proto: str = "TCP") -> Obj:
    """An EndpointSlice of ``svc`` with one port."""
    p: Obj = {"port": port_num, "protocol": proto}
    if name:
        p["name"] = name
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"namespace": ns, "name": f"{svc}-abc", "labels": {"kubernetes.io/service-name": svc}},
            "endpoints": eps, "ports": [p]}


CASES: dict[str, list[Obj]] = {
    "clusterip_3_endpoints": [
        service("ns1", "svc1", "10.96.0.41", [port(80)]),
        endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1"), endpoint("10.180.0.2"), endpoint("10.180.0.10")], 80),
    ],
    "named_unnamed_ports": [
        service("ns1", "svc1", "10.96.0.41", [port(80)]),
        endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1")], 80),
        service("ns2", "svc2", "10.96.0.42", [port(80, name="")]),
        endpoint_slice("ns2", "svc2", [endpoint("10.180.0.2")], 8080, name=""),
    ],
    "nodeport": [
        service("ns1", "svc1", "10.96.0.41", [port(80, node_port=30001)], type="NodePort"),
        endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1")], 80),
    ],
    "client_ip_affinity": [
        service("ns1", "svc1", "10.96.0.41", [port(80)], sessionAffinity="ClientIP"),
        endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1"), endpoint("10.180.0.2")], 80),
    ],
    "internal_traffic_local": [
        service("ns1", "svc1", "10.96.0.41", [port(80)], internalTrafficPolicy="Local"),
        endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1", node=NODE), endpoint("10.180.2.1")], 80),
        service("ns4", "svc4", "10.96.0.44", [port(80)], internalTrafficPolicy="Local"),
        endpoint_slice("ns4", "svc4", [endpoint("10.180.2.1")], 80),
    ],
    "external_traffic_local": [
        service("ns1", "svc1", "10.96.0.41", [port(80, node_port=30001)], type="NodePort",
                externalTrafficPolicy="Local"),
        endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1"), endpoint("10.180.2.1", node=NODE)], 80),
    ],
    "both_traffic_policies_local": [
        service("ns1", "svc1", "10.96.0.41", [port(80, node_port=30001)], type="NodePort",
                internalTrafficPolicy="Local", externalTrafficPolicy="Local"),
        endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1"), endpoint("10.180.2.1", node=NODE)], 80),
    ],
    "no_endpoints": [
        service("ns1", "svc1", "10.96.0.41", [port(80)]),
        service("ns5", "svc5", "10.96.0.45", [port(80, node_port=30005)], type="NodePort",
                externalIPs=["192.168.99.11"]),
        endpoint_slice("ns5", "svc5", [], 80),
    ],
    "udp": [
        service("ns3", "svc3", "10.96.0.43", [port(53, name="dns", proto="UDP")]),
        endpoint_slice("ns3", "svc3", [endpoint("10.180.0.3"), endpoint("10.180.0.4")], 53, name="dns", proto="UDP"),
    ],
    "terminating_fallback": [
        service("ns6", "svc6", "10.96.0.46", [port(80)]),
        endpoint_slice("ns6", "svc6", [endpoint("10.180.0.6", ready=False, serving=True, terminating=True),
                                       endpoint("10.180.0.7", ready=False, serving=False, terminating=True)], 80),
        service("ns7", "svc7", "10.96.0.47", [port(80)]),
        endpoint_slice("ns7", "svc7", [endpoint("10.180.0.7"),
                                       endpoint("10.180.0.8", ready=False, serving=True, terminating=True)], 80),
    ],
}


def case_state(case: str) -> ProxyState:
    """The proxy state of one case, through the same conversion the proxy uses."""
    objs = CASES[case]
    return build_state([o for o in objs if o["kind"] == "Service"], [o for o in objs if o["kind"] == "EndpointSlice"])


def expected(case: str) -> str:
    return (EXPECTED / f"{case}.txt").read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_full_sync_matches_expected_dump(case: str) -> None:
    got = render(case_state(case), CFG, jumps=JUMPS)
    assert normalise(got) == normalise(expected(case))


def test_every_case_has_a_dump() -> None:
    assert sorted(p.stem for p in EXPECTED.glob("*.txt")) == sorted(CASES)


def test_chain_names_are_upstreams() -> None:
    # Values from upstream's proxier tests.
    name = ServicePortName("ns1", "svc1", "p80")
    assert port_proto_hash("ns1/svc1:p80", "tcp") == "XPGD46QRK7WJZT7O"
    assert svc_chain(name) == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert sep_chain(name, "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert svc_chain(ServicePortName("ns4", "svc4", "p80")) == "KUBE-SVC-4SW47YFZTEDKD3PK"
    # The protocol is part of the hash.
    assert svc_chain(ServicePortName("ns1", "svc1", "p80", "UDP")) != svc_chain(name)


def test_probabilities() -> None:
    assert [probability(n) for n in (4, 3, 2)] == ["0.2500000000", "0.3333333333", "0.5000000000"]


def test_restore_text_shape() -> None:
    text = render(case_state("clusterip_3_endpoints"), CFG)
    lines = text.splitlines()
    # The mangle canary (full syncs only), then filter, then nat; each table's declarations precede its rules.
    assert lines[:4] == ["*mangle", ":KUBE-PROXY-CANARY - [0:0]", "COMMIT", "*filter"]
    assert lines.count("COMMIT") == 3 and lines.index("*nat") > lines.index("*filter")
    nat = lines[lines.index("*nat") + 1:]
    first_rule = next(i for i, l in enumerate(nat) if not l.startswith(":"))
    assert all(not l.startswith(":") for l in nat[first_rule:])
    assert nat[:4] == [":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]", ":KUBE-POSTROUTING - [0:0]",
                       ":KUBE-MARK-MASQ - [0:0]"]
    # The nodeports jump is the last rule of KUBE-SERVICES.
    assert parse_save(text)["nat"]["KUBE-SERVICES"][-1].endswith("-j KUBE-NODEPORTS")


def _sp(name: str, ip: str, eps: list[str], proto: str = "TCP") -> ServicePort:
    return ServicePort(ServicePortName("ns", name, "p", proto), ip, 80,
                       endpoints=tuple(Endpoint(e, 80) for e in eps))


def test_partial_sync_rewrites_only_changed_service_chains() -> None:
    a, b = _sp("a", "10.96.1.1", ["10.1.0.1", "10.1.0.2"]), _sp("b", "10.96.1.2", ["10.1.0.3"])
    planner = Planner(CFG)
    planner.commit(planner.plan(ProxyState({a.name: a, b.name: b}), full=True))
    a2 = _sp("a", "10.96.1.1", ["10.1.0.1"])
    plan = planner.plan(ProxyState({a.name: a2, b.name: b}), {a.name}, full=False)
    tables = parse_save(plan.text)
    assert svc_chain(a.name) in tables["nat"] and svc_chain(b.name) not in tables["nat"]
    assert sep_chain(b.name, "10.1.0.3:80") not in plan.text
    gone = sep_chain(a.name, "10.1.0.2:80")
    assert plan.deleted == [gone] and f"-X {gone}" in plan.text
    # Only endpoints changed: nat KUBE-SERVICES keeps its rules and is not rewritten; neither are the
    # chains whose content never changes (a full sync rewrites them).
    assert ":KUBE-SERVICES" not in plan.text.split("*nat")[1]
    assert not {"KUBE-MARK-MASQ", "KUBE-POSTROUTING", "KUBE-FORWARD", "KUBE-FIREWALL"} & {
        l[1:].split()[0] for l in plan.text.splitlines() if l.startswith(":")}
    planner.commit(plan)

    # Removing every endpoint moves the service to filter REJECT: both KUBE-SERVICES are rewritten.
    a3 = _sp("a", "10.96.1.1", [])
    plan = planner.plan(ProxyState({a.name: a3, b.name: b}), {a.name}, full=False)
    tables = parse_save(plan.text)
    assert any("has no endpoints" in r for r in tables["filter"]["KUBE-SERVICES"])
    assert [r for r in tables["nat"]["KUBE-SERVICES"] if "cluster IP" in r] == [
        r for r in tables["nat"]["KUBE-SERVICES"] if svc_chain(b.name) in r]
    assert sorted(plan.deleted) == sorted([svc_chain(a.name), sep_chain(a.name, "10.1.0.1:80")])
    planner.commit(plan)

    # A removed service: its chains go, KUBE-SERVICES is rewritten without it.
    plan = planner.plan(ProxyState({a.name: a3}), {b.name}, full=False)
    assert sorted(plan.deleted) == sorted([svc_chain(b.name), sep_chain(b.name, "10.1.0.3:80")])
    assert not any(svc_chain(b.name) in r for r in parse_save(plan.text)["nat"]["KUBE-SERVICES"])


def test_full_sync_deletes_leftover_chains() -> None:
    a = _sp("a", "10.96.1.1", ["10.1.0.1"])
    plan = Planner(CFG).plan(ProxyState({a.name: a}), full=True,
                             existing=["KUBE-SVC-LEFTOVER", "KUBE-SEP-LEFTOVER", "KUBE-SERVICES", "MY-CHAIN"])
    assert plan.deleted == ["KUBE-SEP-LEFTOVER", "KUBE-SVC-LEFTOVER"]


def test_large_cluster_drops_endpoint_comments() -> None:
    a = _sp("a", "10.96.1.1", ["10.1.0.1", "10.1.0.2"])
    text = render(ProxyState({a.name: a}), RenderConfig(node=NODE, large_cluster_endpoints=1))
    sep = sep_chain(a.name, "10.1.0.1:80")
    rules = parse_save(text)["nat"]
    assert rules[sep] == [f"-A {sep} -s 10.1.0.1 -j KUBE-MARK-MASQ",
                          f"-A {sep} -m tcp -p tcp -j DNAT --to-destination 10.1.0.1:80"]
    assert all("->" not in r for r in rules[svc_chain(a.name)])
    # The cluster IP rules keep their comments.
    assert '"ns/a:p cluster IP"' in rules["KUBE-SERVICES"][0]


def test_masquerade_all() -> None:
    a = _sp("a", "10.96.1.1", ["10.1.0.1"])
    rules = parse_save(render(ProxyState({a.name: a}), RenderConfig(node=NODE, masquerade_all=True)))["nat"]
    assert rules[svc_chain(a.name)][0].endswith("--dport 80 -j KUBE-MARK-MASQ")


def test_change_that_renders_alike_writes_nothing_for_the_service() -> None:
    a = _sp("a", "10.96.1.1", ["10.1.0.1"])
    planner = Planner(CFG)
    planner.commit(planner.plan(ProxyState({a.name: a}), full=True))
    # Only the trigger time differs (the tracker still reports the service as changed).
    plan = planner.plan(ProxyState({a.name: replace(a, trigger_time=1.0)}), {a.name}, full=False)
    assert plan.text == "*filter\nCOMMIT\n*nat\nCOMMIT\n" and plan.empty
    assert plan.chains == planner.chains and plan.deleted == []


# ----------------------------------------------------------------- UDP conntrack clean-up (pure part)


def test_conntrack_flushes_for_udp_changes() -> None:
    from kmesh.proxy.conntrack import Flush, stale_flushes

    dns = replace(_sp("dns", "10.96.0.10", ["10.1.0.1", "10.1.0.2"], "UDP"), external_ips=("192.168.99.10",),
                  node_port=30053, type="NodePort")
    fewer = replace(dns, endpoints=dns.endpoints[:1])
    # An endpoint went away: flows DNATed to it, through every address of the service.
    assert stale_flushes({dns.name: dns}, {dns.name: fewer}, [dns.name], NODE) == sorted([
        Flush(orig_dst="10.96.0.10", dst_nat="10.1.0.2"), Flush(orig_dst="192.168.99.10", dst_nat="10.1.0.2"),
        Flush(dport=30053, dst_nat="10.1.0.2")])
    # The first endpoint appeared: everything to the service's addresses.
    empty = replace(dns, endpoints=())
    assert stale_flushes({dns.name: empty}, {dns.name: fewer}, [dns.name], NODE) == sorted([
        Flush(orig_dst="10.96.0.10"), Flush(orig_dst="192.168.99.10"), Flush(dport=30053)])
    # The service was deleted.
    assert Flush(orig_dst="10.96.0.10") in stale_flushes({dns.name: dns}, {}, [dns.name], NODE)
    # TCP never, nor UDP services that did not change, nor new ones.
    web = _sp("web", "10.96.0.11", ["10.1.0.1", "10.1.0.2"])
    assert stale_flushes({web.name: web}, {web.name: replace(web, endpoints=())}, [web.name], NODE) == []
    assert stale_flushes({}, {dns.name: dns}, [dns.name], NODE) == []
    assert Flush(orig_dst="10.96.0.10", dst_nat="10.1.0.2").argv() == [
        "conntrack", "-D", "--orig-dst", "10.96.0.10", "-p", "udp", "--dst-nat", "10.1.0.2"]


def test_fast_hash_is_base32_of_sha256() -> None:
    import base64
    import hashlib

    from kmesh.proxy.chainhash import hash16

    for text in ("", "ns1/svc1:p80tcp", "ns/ü:pudp10.0.0.1:53", "x" * 300):
        assert hash16(text) == base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


@dataclass(frozen=True)
class LBPort(ServicePort):
    """A service port with loadBalancerSourceRanges (read by the renderer when the model carries them)."""

    load_balancer_source_ranges: tuple[str, ...] = ()
    health_check_node_port: int = 0


def test_load_balancer_source_ranges_use_a_firewall_chain() -> None:
    # Upstream's fixture ns5/svc5:p80 (KUBE-*-NUKIZ6OKUXPJNT4C, endpoint chain KUBE-SEP-I77PXRDZVX7PMWMN).
    sp = LBPort(ServicePortName("ns5", "svc5", "p80"), "10.96.0.45", 80, type="LoadBalancer",
                load_balancer_ips=("5.6.7.8",), endpoints=(Endpoint("10.180.0.3", 80),),
                load_balancer_source_ranges=("203.0.113.0/25",))
    tables = parse_save(render(ProxyState({sp.name: sp}), CFG))
    assert tables["filter"]["KUBE-PROXY-FIREWALL"] == [
        ('-A KUBE-PROXY-FIREWALL -m comment --comment "ns5/svc5:p80 traffic not accepted by KUBE-FW-NUKIZ6OKUXPJNT4C" '
        "-m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP")]
    assert tables["nat"]["KUBE-SERVICES"][1] == (
        '-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 '
        "-j KUBE-FW-NUKIZ6OKUXPJNT4C")
    assert tables["nat"]["KUBE-FW-NUKIZ6OKUXPJNT4C"] == [
        ('-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 203.0.113.0/25 '
        "-j KUBE-EXT-NUKIZ6OKUXPJNT4C"),
        ('-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by '
        'KUBE-PROXY-FIREWALL"'),
    ]
    assert tables["nat"]["KUBE-EXT-NUKIZ6OKUXPJNT4C"][-1] == "-A KUBE-EXT-NUKIZ6OKUXPJNT4C -j KUBE-SVC-NUKIZ6OKUXPJNT4C"
    assert "KUBE-SEP-I77PXRDZVX7PMWMN" in tables["nat"]
    # A range holding the node's IP also admits the LB IP itself as a source (VIP-style load balancers).
    node_in_range = RenderConfig(node=NODE, cluster_cidr="10.0.0.0/8", node_ip="203.0.113.5")
    fw = parse_save(render(ProxyState({sp.name: sp}), node_in_range))["nat"]["KUBE-FW-NUKIZ6OKUXPJNT4C"]
    assert fw[1] == ('-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 5.6.7.8 '
                     "-j KUBE-EXT-NUKIZ6OKUXPJNT4C")
    # Without source ranges the LB IP goes straight to KUBE-EXT-.
    plain = replace(sp, load_balancer_source_ranges=())
    nat = parse_save(render(ProxyState({sp.name: plain}), CFG))["nat"]
    assert nat["KUBE-SERVICES"][1].endswith("-j KUBE-EXT-NUKIZ6OKUXPJNT4C") and "KUBE-FW-NUKIZ6OKUXPJNT4C" not in nat


def test_health_check_node_port_is_accepted() -> None:
    sp = LBPort(ServicePortName("ns2", "svc2", "p80"), "10.96.0.42", 80, type="NodePort", node_port=30002,
                external_local=True, health_check_node_port=30000, endpoints=(Endpoint("10.180.0.2", 80),))
    rules = parse_save(render(ProxyState({sp.name: sp}), CFG))["filter"]["KUBE-NODEPORTS"]
    # As upstream's test expects it.
    assert rules == [('-A KUBE-NODEPORTS -m comment --comment "ns2/svc2:p80 health check node port" '
                     "-m tcp -p tcp --dport 30000 -j ACCEPT")]
