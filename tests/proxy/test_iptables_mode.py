"""The iptables mode in real network namespaces: kubectl objects → rules, and traffic through them."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
import trio
import yaml

from kmesh.net import netns
from kmesh.proxy.convert import build_state
from kmesh.proxy.iptables import IptablesProxy
from kmesh.proxy.iptables_rules import normalise, parse_save, sep_chain, svc_chain
from kmesh.proxy.model import (
    Endpoint,
    NodeContext,
    ProxyState,
    ServicePort,
    ServicePortName,
)
from tests.conftest import require_binary
from tests.proxy.support import endpoint_slice_yaml, endpoint_yaml, service_yaml
from tests.proxy.test_iptables_rules import CASES, EXPECTED, NODE
from tests.proxy.traffic_lab import (
    CLIENT_NET,
    DNS,
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


IPTABLES = ("iptables-restore", "iptables-save")


@pytest.fixture
def make_ns() -> Iterator[MakeNs]:
    """Creates uniquely named namespaces (``kmi-<random>-<what>``) and deletes them all afterwards."""
    with namespace_factory("kmi", IPTABLES) as make:
        yield make


async def _saved_expected(ns: str, case: str) -> str:
    """iptables-save of a namespace that holds exactly the expected dump (so both sides are iptables' own text)."""
    await netns.run(ns, ["iptables-restore"], input=(EXPECTED / f"{case}.txt").read_bytes())
    out = await netns.run(ns, ["iptables-save", "-t", "filter"])
    out2 = await netns.run(ns, ["iptables-save", "-t", "nat"])
    return (out.stdout + out2.stdout).decode()


# ----------------------------------------------------------------- kubectl → iptables-save


@pytest.mark.parametrize("case", sorted(CASES))
async def test_kubectl_objects_to_installed_rules(case: str, cluster: Cluster, make_ns: MakeNs, nursery: trio.Nursery) -> None:
    objs = CASES[case]
    namespaces = sorted({o["metadata"]["namespace"] for o in objs})
    docs = [*({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in namespaces), *objs]
    await cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    services, slices = [], []
    for n in namespaces:  # not default: it holds the API server's own `kubernetes` Service
        services += (await cluster.client.list_all("Service", n))[0]
        slices += (await cluster.client.list_all("EndpointSlice", n))[0]
    state = build_state(services, slices)
    assert len(state.services) == sum(len(o["spec"]["ports"]) for o in objs if o["kind"] == "Service")

    node, ref = make_ns("node"), make_ns("ref")
    mode = IptablesProxy(NodeContext(NODE, ("192.168.56.11",), cluster_cidr="10.0.0.0/8", netns=node))
    await mode.start(nursery)
    await mode.sync(state, frozenset(), True)
    got = await mode.rules()
    assert normalise(got) == normalise(await _saved_expected(ref, case))

    await mode.cleanup()
    left = parse_save(await mode.rules())
    assert [c for t in left.values() for c in t if c.startswith("KUBE-")] == []
    assert all(not rules for t in left.values() for rules in t.values())


# ----------------------------------------------------------------- traffic


@pytest.fixture
async def lab(make_ns: MakeNs, nursery: trio.Nursery) -> AsyncIterator[tuple[Lab, IptablesProxy]]:
    async with mode_lab(make_ns, nursery, IptablesProxy) as pair:
        yield pair


OTHER = ServicePortName("default", "other", "http")


def chi_square(counts: Counter[str], keys: tuple[str, ...]) -> float:
    n = sum(counts.values())
    exp = n / len(keys)
    return sum((counts[k] - exp) ** 2 / exp for k in keys)


async def test_cluster_ip_spreads_over_endpoints(lab: tuple[Lab, IptablesProxy]) -> None:
    lb, mode = lab
    await mode.sync(ProxyState({WEB: web(lb)}), frozenset({WEB}), True)
    counts = Counter([await ask_tcp(lb.client, "10.96.0.50", 80) for _ in range(300)])
    assert set(counts) == set(PODS), counts
    assert chi_square(counts, PODS) < 13.82, counts  # 2 degrees of freedom, p = 0.001


async def test_client_ip_affinity_pins_the_client(lab: tuple[Lab, IptablesProxy]) -> None:
    lb, mode = lab
    await mode.sync(ProxyState({WEB: web(lb, session_affinity=True)}), frozenset({WEB}), True)
    answers = {await ask_tcp(lb.client, "10.96.0.50", 80) for _ in range(30)}
    assert len(answers) == 1 and answers <= set(PODS)


async def test_no_endpoints_refuses_connections(lab: tuple[Lab, IptablesProxy]) -> None:
    lb, mode = lab
    await mode.sync(ProxyState({WEB: web(lb, pods=())}), frozenset({WEB}), True)
    with pytest.raises(ConnectionRefusedError):
        await ask_tcp(lb.client, "10.96.0.50", 80)
    # Endpoints appear: a partial sync moves the service from filter REJECT to nat.
    await mode.sync(ProxyState({WEB: web(lb, pods=("pod2",))}), frozenset({WEB}), False)
    assert await ask_tcp(lb.client, "10.96.0.50", 80) == "pod2"


async def test_partial_sync_rewrites_only_the_changed_service(lab: tuple[Lab, IptablesProxy]) -> None:
    lb, mode = lab
    other = ServicePort(OTHER, "10.96.0.51", 80, endpoints=lb.endpoints(("pod1",)))
    await mode.sync(ProxyState({WEB: web(lb), OTHER: other}), frozenset(), True)
    gone = sep_chain(WEB, f"{lb.ips['pod3']}:{TCP_PORT}")
    assert gone in parse_save(await mode.rules())["nat"]

    await mode.sync(ProxyState({WEB: web(lb, pods=("pod1", "pod2")), OTHER: other}), frozenset({WEB}), False)
    text = mode.last_restore
    declared = [l[1:].split()[0] for l in text.splitlines() if l.startswith(":")]
    assert svc_chain(WEB) in declared and svc_chain(OTHER) not in declared
    assert not any(c.startswith("KUBE-SEP-") and c != gone and c not in {
        sep_chain(WEB, f"{lb.ips[p]}:{TCP_PORT}") for p in ("pod1", "pod2")} for c in declared)
    assert f"-X {gone}" in text
    nat = parse_save(await mode.rules())["nat"]
    assert gone not in nat and svc_chain(OTHER) in nat
    answers = Counter([await ask_tcp(lb.client, "10.96.0.50", 80) for _ in range(60)])
    assert set(answers) == {"pod1", "pod2"}
    assert await ask_tcp(lb.client, "10.96.0.51", 80) == "pod1"

    # Removing the service deletes all its chains.
    await mode.sync(ProxyState({OTHER: other}), frozenset({WEB}), False)
    nat = parse_save(await mode.rules())["nat"]
    assert not [c for c in nat if c in (svc_chain(WEB), *(sep_chain(WEB, f"{lb.ips[p]}:{TCP_PORT}") for p in PODS))]


async def test_udp_flows_move_after_endpoint_removal(lab: tuple[Lab, IptablesProxy]) -> None:
    require_binary("conntrack")
    lb, mode = lab
    dns = ServicePort(DNS, "10.96.0.10", 53, endpoints=lb.endpoints(PODS, UDP_PORT))
    await mode.sync(ProxyState({DNS: dns}), frozenset({DNS}), True)
    sock = await netns.open_socket(lb.client, type=socket.SOCK_DGRAM)
    with sock:
        await sock.bind((f"{CLIENT_NET}.2", 40000))
        first = await ask_udp(sock, "10.96.0.10", 53)
        assert all([await ask_udp(sock, "10.96.0.10", 53) == first for _ in range(5)])  # one flow, one endpoint
        left = tuple(p for p in PODS if p != first)
        await mode.sync(ProxyState({DNS: replace(dns, endpoints=lb.endpoints(left, UDP_PORT))}), frozenset({DNS}), False)
        # The server behind the removed endpoint still answers; only the conntrack flush moves the flow.
        assert await ask_udp(sock, "10.96.0.10", 53) in left


async def test_udp_service_getting_endpoints_forgets_rejected_flow(lab: tuple[Lab, IptablesProxy]) -> None:
    require_binary("conntrack")
    lb, mode = lab
    dns = ServicePort(DNS, "10.96.0.10", 53)
    await mode.sync(ProxyState({DNS: dns}), frozenset({DNS}), True)
    sock = await netns.open_socket(lb.client, type=socket.SOCK_DGRAM)
    with sock:
        await sock.bind((f"{CLIENT_NET}.2", 40001))
        await sock.connect(("10.96.0.10", 53))
        await sock.send(b"?")
        with pytest.raises(ConnectionRefusedError), trio.fail_after(5):
            await sock.recv(100)
        await mode.sync(ProxyState({DNS: replace(dns, endpoints=lb.endpoints(("pod1",), UDP_PORT))}),
                        frozenset({DNS}), False)
        await sock.send(b"?")
        with trio.fail_after(5):
            assert await sock.recv(100) == b"pod1"


# ----------------------------------------------------------------- restarts, failures, clean-up


def _svc(name: str, ip: str, eps: tuple[str, ...]) -> ServicePort:
    n = ServicePortName("default", name, "http")
    return ServicePort(n, ip, 80, endpoints=tuple(Endpoint(e, 8080) for e in eps))


async def test_restarted_proxy_removes_leftovers_and_keeps_foreign_rules(make_ns: MakeNs, nursery: trio.Nursery) -> None:
    ns = make_ns("node")
    await netns.run(ns, ["iptables-restore", "--noflush"], input=(
        b"*filter\n:MY-CHAIN - [0:0]\n-A MY-CHAIN -j ACCEPT\n-A INPUT -j MY-CHAIN\nCOMMIT\n"
        b"*nat\n:MY-NAT - [0:0]\n-A PREROUTING -j MY-NAT\nCOMMIT\n"))
    ctx = NodeContext(NODE, (), netns=ns)
    a, b = _svc("a", "10.96.3.1", ("10.244.3.1",)), _svc("b", "10.96.3.2", ("10.244.3.2", "10.244.3.3"))
    first = IptablesProxy(ctx)
    await first.start(nursery)
    await first.sync(ProxyState({a.name: a, b.name: b}), frozenset(), True)

    second = IptablesProxy(ctx)  # a restart: nothing remembered
    await second.start(nursery)
    nat = parse_save(await second.rules())["nat"]
    assert svc_chain(b.name) in nat  # start() leaves the installed services alone
    await second.sync(ProxyState({a.name: a}), frozenset(), True)
    nat = parse_save(await second.rules())["nat"]
    assert svc_chain(a.name) in nat
    assert svc_chain(b.name) not in nat
    assert not {sep_chain(b.name, e.addr) for e in b.endpoints} & set(nat)
    # The jumps exist once, however often start() and full syncs ran.
    saved = await second.rules()
    assert saved.count('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES') == 1

    await second.cleanup()
    left = parse_save(await second.rules())
    assert left["filter"]["MY-CHAIN"] == ["-A MY-CHAIN -j ACCEPT"]
    assert left["filter"]["INPUT"] == ["-A INPUT -j MY-CHAIN"]
    assert left["nat"]["PREROUTING"] == ["-A PREROUTING -j MY-NAT"]
    assert not [c for t in left.values() for c in t if c.startswith("KUBE-")]
    await second.cleanup()  # twice is fine


async def test_failed_restore_forces_a_full_sync(make_ns: MakeNs, nursery: trio.Nursery) -> None:
    ns = make_ns("node")
    mode = IptablesProxy(NodeContext(NODE, (), netns=ns))
    await mode.start(nursery)
    a = _svc("a", "10.96.3.1", ("10.244.3.1",))
    await mode.sync(ProxyState({a.name: a}), frozenset(), True)
    bad = _svc("bad", "10.96.3.300", ("10.244.3.2",))  # not an address: iptables-restore refuses the whole text
    with pytest.raises(Exception, match="iptables-restore"):
        await mode.sync(ProxyState({a.name: a, bad.name: bad}), frozenset({bad.name}), False)
    nat = parse_save(await mode.rules())["nat"]
    assert svc_chain(bad.name) not in nat and svc_chain(a.name) in nat  # all or nothing
    b = _svc("b", "10.96.3.2", ("10.244.3.2",))
    await mode.sync(ProxyState({a.name: a, b.name: b}), frozenset({b.name}), False)
    assert mode.last_plan is not None and mode.last_plan.full
    assert svc_chain(b.name) in parse_save(await mode.rules())["nat"]


WHO = ServicePortName("default", "who", "http")


async def test_masquerade_nodeport_and_off_cluster_sources(lab: tuple[Lab, IptablesProxy]) -> None:
    lb, mode = lab
    who = ServicePort(WHO, "10.96.0.60", 80, type="NodePort", node_port=30060,
                      endpoints=lb.endpoints(("pod1",), WHOAMI_PORT))
    await mode.sync(ProxyState({WHO: who}), frozenset({WHO}), True)
    # From a pod address (inside the cluster CIDR) to the ClusterIP: the source is kept.
    assert await ask_tcp(lb.client, "10.96.0.60", 80) == f"pod1 {CLIENT_NET}.2"
    # To a NodePort: KUBE-EXT marks, KUBE-POSTROUTING masquerades to the node's address on the pod side.
    assert await ask_tcp(lb.client, f"{CLIENT_NET}.1", 30060) == f"pod1 {POD_NET}.1"


async def test_off_cluster_source_is_masqueraded(make_ns: MakeNs, nursery: trio.Nursery) -> None:
    lb = Lab(make_ns)
    await lb.setup()
    await lb.serve(nursery)
    # The cluster CIDR covers only the pods' subnet: the client is "off-cluster" (`! -s` → KUBE-MARK-MASQ).
    mode = IptablesProxy(NodeContext(NODE, (), cluster_cidr=f"{POD_NET}.0/24", netns=lb.node))
    await mode.start(nursery)
    who = ServicePort(WHO, "10.96.0.60", 80, endpoints=lb.endpoints(("pod2",), WHOAMI_PORT))
    await mode.sync(ProxyState({WHO: who}), frozenset(), True)
    assert await ask_tcp(lb.client, "10.96.0.60", 80) == f"pod2 {POD_NET}.1"
    # externalTrafficPolicy Local without a local endpoint: external NodePort traffic is dropped.
    np = replace(who, type="NodePort", node_port=30060, external_local=True,
                 endpoints=lb.endpoints(("pod2",), WHOAMI_PORT, node="elsewhere"))
    await mode.sync(ProxyState({WHO: np}), frozenset({WHO}), False)
    with pytest.raises(trio.TooSlowError), trio.fail_after(1):
        await ask_tcp(lb.client, f"{CLIENT_NET}.1", 30060)
    # With a local endpoint it is accepted.
    await mode.sync(ProxyState({WHO: replace(np, endpoints=lb.endpoints(("pod2",), WHOAMI_PORT))}),
                    frozenset({WHO}), False)
    assert await ask_tcp(lb.client, f"{CLIENT_NET}.1", 30060) == f"pod2 {CLIENT_NET}.2"
    await mode.cleanup()


async def test_external_traffic_local_nodeport(lab: tuple[Lab, IptablesProxy]) -> None:
    lb, mode = lab
    local = ServicePort(WHO, "10.96.0.60", 80, type="NodePort", node_port=30060, external_local=True,
                        endpoints=lb.endpoints(("pod3",), WHOAMI_PORT))
    await mode.sync(ProxyState({WHO: local}), frozenset({WHO}), True)
    # A local endpoint: the client's address is preserved through the NodePort.
    assert await ask_tcp(lb.client, f"{CLIENT_NET}.1", 30060) == f"pod3 {CLIENT_NET}.2"
    # Only endpoints on other nodes: the ClusterIP still works, and so does the NodePort for this
    # client, a pod (KUBE-EXT's "pod traffic" rule short-circuits it to the Cluster chain).
    remote = replace(local, endpoints=lb.endpoints(("pod3",), WHOAMI_PORT, node="elsewhere"))
    await mode.sync(ProxyState({WHO: remote}), frozenset({WHO}), False)
    assert await ask_tcp(lb.client, "10.96.0.60", 80) == f"pod3 {CLIENT_NET}.2"
    assert await ask_tcp(lb.client, f"{CLIENT_NET}.1", 30060) == f"pod3 {CLIENT_NET}.2"
    rules = parse_save(await mode.rules())["filter"]["KUBE-EXTERNAL-SERVICES"]
    assert any("has no local endpoints" in r and "--dport 30060" in r and r.endswith("-j DROP") for r in rules)


# ----------------------------------------------------------------- end to end through the sync loop

E2E_SVC = service_yaml("10.96.0.70", "{name: http, port: 80, targetPort: 8080}")


def _slice(lb: Lab, pods: tuple[str, ...]) -> str:
    return endpoint_slice_yaml(("{name: http, port: 8080, protocol: TCP}",), [endpoint_yaml(lb.ips[p], NODE) for p in pods])


async def _until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.05)


async def test_kubectl_to_traffic_through_the_sync_loop(
    lab: tuple[Lab, IptablesProxy], cluster: Cluster, nursery: trio.Nursery
) -> None:
    from kmesh.proxy.runner import SyncConfig, run_proxy

    lb, mode = lab
    await cluster.kubectl("apply", "-f", "-", stdin=E2E_SVC)
    await cluster.kubectl("apply", "-f", "-", stdin=_slice(lb, PODS))
    await nursery.start(run_proxy, cluster.client, mode, SyncConfig(min_sync_period=0.05))

    async def reaches_all() -> bool:
        try:
            return {await ask_tcp(lb.client, "10.96.0.70", 80) for _ in range(30)} == set(PODS)
        except OSError:
            return False
    await _until(reaches_all)

    # Scale down through the API: the partial sync drops pod3's chain and traffic follows.
    await cluster.kubectl("apply", "-f", "-", stdin=_slice(lb, ("pod1",)))
    gone = sep_chain(ServicePortName("default", "web", "http"), f"{lb.ips['pod3']}:{TCP_PORT}")

    async def only_pod1() -> bool:
        return gone not in parse_save(await mode.rules())["nat"]
    await _until(only_pod1)
    assert {await ask_tcp(lb.client, "10.96.0.70", 80) for _ in range(10)} == {"pod1"}
    assert mode.last_plan is not None and not mode.last_plan.full

    await cluster.kubectl("delete", "service", "web")

    async def no_chains() -> bool:
        nat = parse_save(await mode.rules())["nat"]
        return not [c for c in nat if c.startswith(("KUBE-SVC-", "KUBE-SEP-"))]
    await _until(no_chains)


async def test_flushed_tables_are_detected_and_restored(make_ns: MakeNs, nursery: trio.Nursery) -> None:
    ns = make_ns("node")
    mode = IptablesProxy(NodeContext(NODE, (), netns=ns), monitor_interval=0.05)
    await mode.start(nursery)
    a = _svc("a", "10.96.3.1", ("10.244.3.1",))
    state = ProxyState({a.name: a})
    await mode.sync(state, frozenset(), True)
    assert await mode.canaries_present()
    # Someone flushes everything (as `iptables -F; iptables -X` on every table would).
    for table in ("mangle", "filter", "nat"):
        await netns.run(ns, ["iptables", "-t", table, "-F"])
        await netns.run(ns, ["iptables", "-t", table, "-X"])
    with trio.fail_after(5):
        while not mode.flushes_detected:
            await trio.sleep(0.02)
    await mode.sync(state, frozenset(), False)  # the loop asked for a partial one; it becomes full
    assert mode.last_plan is not None and mode.last_plan.full
    nat = parse_save(await mode.rules())["nat"]
    assert svc_chain(a.name) in nat and nat["PREROUTING"]
    assert await mode.canaries_present()
    await mode.cleanup()
    mangle = await netns.run(ns, ["iptables-save", "-t", "mangle"])
    assert b"KUBE-" not in mangle.stdout


async def test_hairpin_to_itself_is_masqueraded(lab: tuple[Lab, IptablesProxy]) -> None:
    lb, mode = lab
    who = ServicePort(WHO, "10.96.0.60", 80, endpoints=lb.endpoints(("pod1",), WHOAMI_PORT))
    await mode.sync(ProxyState({WHO: who}), frozenset({WHO}), True)
    # pod1 → its own service → DNAT back to pod1: the SEP chain's `-s <endpoint>` rule masquerades it,
    # else pod1 would answer itself directly and the connection would never complete.
    assert await ask_tcp(lb.pods["pod1"], "10.96.0.60", 80) == f"pod1 {POD_NET}.1"
    # Another pod keeps its address.
    assert await ask_tcp(lb.pods["pod2"], "10.96.0.60", 80) == f"pod1 {lb.ips['pod2']}"


async def test_load_balancer_firewall_is_accepted_by_iptables(make_ns: MakeNs, nursery: trio.Nursery) -> None:
    from tests.proxy.test_iptables_rules import LBPort

    ns = make_ns("node")
    mode = IptablesProxy(NodeContext(NODE, ("203.0.113.5",), netns=ns))
    await mode.start(nursery)
    sp = LBPort(ServicePortName("ns5", "svc5", "p80"), "10.96.0.45", 80, type="LoadBalancer",
                load_balancer_ips=("5.6.7.8",), endpoints=(Endpoint("10.180.0.3", 80),),
                load_balancer_source_ranges=("203.0.113.0/25",))
    await mode.sync(ProxyState({sp.name: sp}), frozenset(), True)
    tables = parse_save(await mode.rules())
    assert len(tables["nat"]["KUBE-FW-NUKIZ6OKUXPJNT4C"]) == 3
    assert tables["filter"]["KUBE-PROXY-FIREWALL"][0].endswith("-j DROP")
    # Ranges removed: the firewall chain is deleted as stale.
    await mode.sync(ProxyState({sp.name: replace(sp, load_balancer_source_ranges=())}), frozenset({sp.name}), False)
    tables = parse_save(await mode.rules())
    assert "KUBE-FW-NUKIZ6OKUXPJNT4C" not in tables["nat"] and tables["filter"]["KUBE-PROXY-FIREWALL"] == []
