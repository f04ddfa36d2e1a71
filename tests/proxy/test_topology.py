"""Topology-aware routing in the proxy, from kubernetes.io "Topology Aware Routing" / "Traffic Distribution":
kube-proxy uses zone hints only when every ready endpoint has one and one is hinted for its node's zone, and
Local traffic policies ignore them. Then the change tracker following its Node's zone label."""

from __future__ import annotations

import trio

from kmesh.proxy.convert import build_state
from kmesh.proxy.model import Endpoint, ServicePort, ServicePortName
from kmesh.proxy.runner import ProxyRunner, SyncConfig, run_proxy
from kmesh.proxy.topology import uses_zone_hints
from tests.proxy.support import endpoint_slice_yaml, service_yaml
from tests.proxy.test_tracker import RecordingMode
from tests.support.cluster import Cluster

WEB = ServicePortName("default", "web", "http", "TCP")


def ep(ip: str, *hints: str, node: str = "", ready: bool = True, serving: bool | None = None,
       terminating: bool = False) -> Endpoint:
    return Endpoint(ip, 80, ready=ready, serving=ready if serving is None else serving, terminating=terminating,
                    node=node, zone_hints=frozenset(hints))


def port(*eps: Endpoint, zone: str = "a", **kw: object) -> ServicePort:
    return ServicePort(WEB, "10.96.0.50", 80, endpoints=eps, node_zone=zone, **kw)  # type: ignore[arg-type]


def ips(eps: list[Endpoint]) -> list[str]:
    return [e.ip for e in eps]


HINTED = (ep("10.244.1.1", "a", node="n1"), ep("10.244.2.1", "b", node="n2"), ep("10.244.3.1", "a", node="n3"))


def test_hints_for_this_zone_are_used() -> None:
    assert ips(port(*HINTED).cluster_endpoints()) == ["10.244.1.1", "10.244.3.1"]
    assert ips(port(*HINTED, zone="b").cluster_endpoints()) == ["10.244.2.1"]
    # Cluster policy for NodePort/external traffic uses the same endpoints.
    sp = port(*HINTED, type="NodePort", node_port=30080)
    assert ips(sp.internal_endpoints("n2")) == ips(sp.external_endpoints("n2")) == ["10.244.1.1", "10.244.3.1"]


def test_one_ready_endpoint_without_hints_turns_them_off() -> None:
    sp = port(*HINTED, ep("10.244.4.1"))
    assert ips(sp.cluster_endpoints()) == ["10.244.1.1", "10.244.2.1", "10.244.3.1", "10.244.4.1"]


def test_not_ready_endpoints_do_not_count() -> None:
    sp = port(*HINTED, ep("10.244.4.1", ready=False))
    assert ips(sp.cluster_endpoints()) == ["10.244.1.1", "10.244.3.1"]


def test_unknown_node_zone_or_no_hint_for_it_means_every_endpoint() -> None:
    every = ["10.244.1.1", "10.244.2.1", "10.244.3.1"]
    assert ips(port(*HINTED, zone="").cluster_endpoints()) == every
    assert ips(port(*HINTED, zone="c").cluster_endpoints()) == every  # zone c is not represented in hints
    assert not uses_zone_hints([], "a")


def test_the_terminating_fallback_ignores_hints() -> None:
    sp = port(ep("10.244.1.1", "a", ready=False, serving=True, terminating=True),
              ep("10.244.2.1", "b", ready=False, serving=True, terminating=True))
    assert ips(sp.cluster_endpoints()) == ["10.244.1.1", "10.244.2.1"]


def test_local_policies_ignore_hints() -> None:
    eps = (ep("10.244.1.1", "b", node="n1"), ep("10.244.2.1", "a", node="n2"))  # n1's endpoint given to zone b
    assert ips(port(*eps, internal_local=True).internal_endpoints("n1")) == ["10.244.1.1"]
    sp = port(*eps, type="NodePort", node_port=30080, external_local=True)
    assert ips(sp.external_endpoints("n1")) == ["10.244.1.1"]
    assert ips(sp.internal_endpoints("n1")) == ["10.244.2.1"]  # Cluster internal policy: hints apply


def test_bench_expects_what_the_proxy_does() -> None:
    from kmesh.bench.lb import Backend, Expectation, ServiceTarget, expected_shares

    backends = tuple(Backend(ip=e.ip, port=80, node=e.node, zone_hints=e.zone_hints, name=e.node) for e in HINTED)
    target = ServiceTarget("default", "web", "10.96.0.50", 80, endpoints=backends)
    uniform = Expectation("uniform", ())
    assert expected_shares(target, uniform, "n2", "a") == {"n1": 0.5, "n2": 0.0, "n3": 0.5}
    assert expected_shares(target, uniform, "n2", "") == {"n1": 1 / 3, "n2": 1 / 3, "n3": 1 / 3}


SLICE = endpoint_slice_yaml(
    ("{name: http, port: 9376, protocol: TCP}",),
    ("{addresses: [10.244.1.2], conditions: {ready: true}, nodeName: node-1, zone: a, hints: {forZones: [{name: a}]}}",
     "{addresses: [10.244.2.2], conditions: {ready: true}, nodeName: node-2, zone: b, hints: {forZones: [{name: b}]}}"),
)
SVC = service_yaml("10.96.0.50", "{name: http, port: 80, targetPort: 9376}")
NODE = "apiVersion: v1\nkind: Node\nmetadata: {name: node-1, labels: {topology.kubernetes.io/zone: a}}\n"


def test_slices_hints_reach_the_model() -> None:
    import yaml

    state = build_state([yaml.safe_load(SVC)], [yaml.safe_load(SLICE)], node_zone="b")
    sp = state.services[WEB]
    assert [sorted(e.zone_hints) for e in sp.endpoints] == [["a"], ["b"]]
    assert sp.node_zone == "b" and ips(sp.cluster_endpoints()) == ["10.244.2.2"]


async def test_the_proxy_follows_its_nodes_zone_label(cluster: Cluster, nursery: trio.Nursery) -> None:
    await cluster.kubectl("apply", "-f", "-", stdin=NODE + "---\n" + SVC + "---\n" + SLICE)
    mode = RecordingMode()  # runs as node-1
    runner: ProxyRunner = await nursery.start(run_proxy, cluster.client, mode, SyncConfig(min_sync_period=0.0))

    async def until_endpoints(want: list[str]) -> None:
        with trio.fail_after(10):
            while not (WEB in mode.calls[-1][0].services
                       and ips(mode.calls[-1][0].services[WEB].cluster_endpoints()) == want):
                await mode.changed.wait()

    await until_endpoints(["10.244.1.2"])
    await cluster.kubectl("label", "node", "node-1", "--overwrite", "topology.kubernetes.io/zone=b")
    await until_endpoints(["10.244.2.2"])
    assert WEB in mode.calls[-1][1]  # a zone change names the service port as changed
    await cluster.kubectl("label", "node", "node-1", "topology.kubernetes.io/zone-")
    await until_endpoints(["10.244.1.2", "10.244.2.2"])
    await cluster.kubectl("label", "node", "node-1", "topology.kubernetes.io/zone=c")
    await until_endpoints(["10.244.1.2", "10.244.2.2"])  # no endpoint hinted for zone c
    assert runner.tracker.zone == "c"
