"""Topology hints as the EndpointSlice controller sets them (kubernetes.io "Topology Aware Routing" and
"Traffic Distribution"): the pure allocation first, then the running controller against a real API server."""

from __future__ import annotations

import copy
from typing import Any

import trio

from kmesh.client.informer import Informer
from kmesh.controllers.topology_hints import (
    ENDPOINT_WITHOUT_ZONE,
    INSUFFICIENT_NODE_INFO,
    ONE_ZONE_ONLY,
    OVERLOADED,
    TOO_FEW_ENDPOINTS,
    allocations,
    apply_hints,
    auto_hints,
    prefer_close,
    zone_shares,
)
from tests.controllers.conftest import Env
from tests.controllers.kubelet import add_node, pod, post_node_status
from tests.controllers.test_endpoints import by_pod, service, wait

Obj = dict[str, Any]
ZONE = "topology.kubernetes.io/zone"


def node(name: str, zone: str | None, cpu: str | None = "2", *, ready: bool = True, **labels: str) -> Obj:
    lbl = dict(labels)
    if zone is not None:
        lbl[ZONE] = zone
    status: Obj = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if cpu is not None:
        status["allocatable"] = {"cpu": cpu}
    return {"metadata": {"name": name, "labels": lbl}, "status": status}


def ep(ip: str, zone: str | None, ready: bool = True) -> Obj:
    out: Obj = {"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": False}}
    if zone:
        out["zone"] = zone
    return out


def hints(eps: list[Obj]) -> list[str | None]:
    return [e["hints"]["forZones"][0]["name"] if "hints" in e else None for e in eps]


def svc(*, annotations: dict[str, str] | None = None, **spec: Any) -> Obj:
    return {"metadata": {"name": "web", "namespace": "default", "annotations": annotations or {}}, "spec": spec}


AUTO = svc(annotations={"service.kubernetes.io/topology-mode": "Auto"})
ABC = [node("n1", "a"), node("n2", "b"), node("n3", "c")]


# ------------------------------------------------------------------ which Services get hints


def test_the_annotation_takes_precedence_and_the_deprecated_one_is_read_first() -> None:
    assert auto_hints(AUTO) and auto_hints(svc(annotations={"service.kubernetes.io/topology-aware-hints": "auto"}))
    assert not auto_hints(svc(annotations={"service.kubernetes.io/topology-mode": "Disabled"}))
    both = svc(annotations={"service.kubernetes.io/topology-aware-hints": "disabled",
                            "service.kubernetes.io/topology-mode": "Auto"})
    assert not auto_hints(both)
    assert prefer_close(svc(trafficDistribution="PreferClose"))
    assert not prefer_close(svc(annotations={"service.kubernetes.io/topology-mode": "Auto"},
                                trafficDistribution="PreferClose"))
    assert prefer_close(svc(annotations={"service.kubernetes.io/topology-mode": "Disabled"},
                            trafficDistribution="PreferClose"))


# ------------------------------------------------------------------ PreferClose


def test_prefer_close_hints_each_ready_endpoint_for_its_own_zone() -> None:
    eps = [ep("10.0.0.1", "a"), ep("10.0.0.2", "b"), ep("10.0.0.3", "b", ready=False), ep("10.0.0.4", "a")]
    assert apply_hints(svc(trafficDistribution="PreferClose"), eps, []) == ""  # nodes do not matter
    assert hints(eps) == ["a", "b", None, "a"]


def test_prefer_close_leaves_an_endpoint_without_zone_unhinted() -> None:
    eps = [ep("10.0.0.1", "a"), ep("10.0.0.2", None)]
    apply_hints(svc(trafficDistribution="PreferClose"), eps, [])
    assert hints(eps) == ["a", None]  # kube-proxy then ignores the Service's hints altogether


def test_hints_go_when_nothing_asks_for_them() -> None:
    eps = [ep("10.0.0.1", "a"), ep("10.0.0.2", "b")]
    apply_hints(svc(trafficDistribution="PreferClose"), eps, [])
    apply_hints(svc(), eps, [])
    assert hints(eps) == [None, None]


# ------------------------------------------------------------------ Auto: node information


def test_zone_shares_follow_allocatable_cpu() -> None:
    shares = zone_shares([node("n1", "a", "2"), node("n2", "a", "2000m"), node("n3", "b", "2")])
    assert shares.ratios is not None
    assert round(shares.ratios["a"], 3) == 0.667 and round(shares.ratios["b"], 3) == 0.333


def test_a_node_without_zone_or_cpu_makes_node_information_insufficient() -> None:
    assert zone_shares([*ABC, node("n4", None)]).ratios is None
    assert zone_shares([*ABC, node("n4", None)]).reason == INSUFFICIENT_NODE_INFO
    assert zone_shares([*ABC, node("n4", "a", cpu=None)]).reason == INSUFFICIENT_NODE_INFO
    assert zone_shares([*ABC, node("n4", "a", cpu="0")]).reason == INSUFFICIENT_NODE_INFO


def test_not_ready_and_control_plane_nodes_do_not_count() -> None:
    shares = zone_shares([*ABC, node("cp", None, **{"node-role.kubernetes.io/control-plane": ""}),
                          node("down", None, ready=False), node("n5", "d", ready=False)])
    assert shares.ratios is not None and sorted(shares.ratios) == ["a", "b", "c"]


def test_one_zone_is_not_enough() -> None:
    assert zone_shares([node("n1", "a"), node("n2", "a")]).reason == ONE_ZONE_ONLY
    eps = [ep("10.0.0.1", "a"), ep("10.0.0.2", "a")]
    assert apply_hints(AUTO, eps, [node("n1", "a"), node("n2", "a")]) == ONE_ZONE_ONLY
    assert hints(eps) == [None, None]


# ------------------------------------------------------------------ Auto: allocation


def test_balanced_endpoints_stay_in_their_zone() -> None:
    eps = [ep(f"10.0.0.{i}", z) for i, z in enumerate("aabbcc", 1)]
    assert apply_hints(AUTO, eps, ABC) == ""
    assert hints(eps) == list("aabbcc")


def test_a_zone_with_more_endpoints_than_its_share_gives_some_away() -> None:
    eps = [ep("10.0.0.1", "a"), ep("10.0.0.2", "a"), ep("10.0.0.3", "a"), ep("10.0.0.4", "b")]
    assert apply_hints(AUTO, eps, [node("n1", "a"), node("n2", "b")]) == ""
    assert hints(eps) == ["b", "a", "a", "b"]


def test_every_zone_with_nodes_gets_endpoints_even_without_its_own() -> None:
    eps = [ep("10.0.0.1", "a"), ep("10.0.0.2", "a"), ep("10.0.0.3", "a")]
    assert apply_hints(AUTO, eps, ABC) == ""
    assert sorted(hints(eps)) == ["a", "b", "c"]  # type: ignore[type-var]


def test_shares_are_proportional_to_cpu() -> None:
    nodes = [node("n1", "a", "2"), node("n2", "a", "2"), node("n3", "b", "2")]  # a has 2/3 of the CPU
    eps = [ep(f"10.0.0.{i}", z) for i, z in enumerate("aaabbb", 1)]
    assert apply_hints(AUTO, eps, nodes) == ""
    got = hints(eps)
    assert got.count("a") == 4 and got.count("b") == 2 and got[:3] == ["a", "a", "a"]


def test_fewer_endpoints_than_zones_means_no_hints() -> None:
    eps = [ep("10.0.0.1", "a"), ep("10.0.0.2", "b")]
    why = apply_hints(AUTO, eps, ABC)
    assert why.startswith(TOO_FEW_ENDPOINTS) and hints(eps) == [None, None]


def test_overload_threshold() -> None:
    # The docs' example: zone a twice the size of zone b and two endpoints; whichever zone gets one endpoint,
    # it would take far more than 20 % over its share.
    nodes = [node("n1", "a", "4"), node("n2", "b", "2")]
    eps = [ep("10.0.0.1", "a"), ep("10.0.0.2", "b")]
    why = apply_hints(AUTO, eps, nodes)
    assert why.startswith(OVERLOADED) and hints(eps) == [None, None]
    a = allocations({"a": 2 / 3, "b": 1 / 3}, 6)[0]
    assert a is not None and (a["a"].minimum, a["b"].minimum, a["a"].maximum) == (4, 2, 4)


def test_a_ready_endpoint_without_zone_removes_all_hints() -> None:
    eps = [ep("10.0.0.1", "a"), ep("10.0.0.2", "b"), ep("10.0.0.3", "b"), ep("10.0.0.4", None)]
    assert apply_hints(AUTO, eps, [node("n1", "a"), node("n2", "b")]) == ENDPOINT_WITHOUT_ZONE
    assert hints(eps) == [None, None, None, None]


def test_not_ready_endpoints_are_neither_hinted_nor_counted() -> None:
    eps = [ep("10.0.0.1", "a"), ep("10.0.0.2", "b"), ep("10.0.0.3", None, ready=False)]
    eps[2]["hints"] = {"forZones": [{"name": "a"}]}
    assert apply_hints(AUTO, eps, [node("n1", "a"), node("n2", "b")]) == ""
    assert hints(eps) == ["a", "b", None]


def test_the_allocation_is_stable() -> None:
    eps = [ep(f"10.0.0.{i}", z) for i, z in enumerate("aaaab", 1)]
    apply_hints(AUTO, eps, ABC[:2])
    again = copy.deepcopy(eps)
    apply_hints(AUTO, again, ABC[:2])
    assert again == eps


# ------------------------------------------------------------------ the running controller


async def _zone_node(env: Env, name: str, zone: str, cpu: str = "2") -> None:
    await add_node(env.client, name, labels={ZONE: zone})
    await post_node_status(env.client, name, lambda n: n["status"].update(allocatable={"cpu": cpu}))


def _zones_by_pod(slices: Any) -> dict[str, str | None]:
    return {name: (e.get("hints") or {}).get("forZones", [{}])[0].get("name")
            for name, e in by_pod(slices, "web").items()}


def _reasons(events: Informer) -> list[str]:
    evs = [e for e in events.list("default") if e["involvedObject"]["name"] == "web"]
    return [e["reason"] for e in sorted(evs, key=lambda e: int(e["metadata"]["resourceVersion"]))]


async def test_controller_writes_prefer_close_and_auto_hints(env: Env, nursery: trio.Nursery) -> None:
    c = env.client
    events = Informer(c, "Event", namespace="default")
    await nursery.start(events.run)
    await _zone_node(env, "n1", "a")
    await _zone_node(env, "n2", "b")
    slices = env.informer("EndpointSlice")
    nodes = env.informer("Node")
    await wait(nodes, lambda i: all((i.get(n) or {}).get("status", {}).get("allocatable") for n in ("n1", "n2")))
    for i, n in enumerate(["n1", "n1", "n1", "n2"]):
        await c.create(pod(f"web-{i}", {"app": "web"}, node=n, ports=[{"containerPort": 9376}]))
    await c.create(service("web", {"app": "web"}, trafficDistribution="PreferClose"))
    want_close = {"web-0": "a", "web-1": "a", "web-2": "a", "web-3": "b"}
    await wait(slices, lambda i: _zones_by_pod(i) == want_close)

    # The annotation wins: zone a has 3 of 4 endpoints for half the CPU, so it gives one to b.
    cur = await c.get("Service", "web", "default")
    cur["metadata"]["annotations"] = {"service.kubernetes.io/topology-mode": "Auto"}
    await c.update(cur)
    await wait(slices, lambda i: sorted(v or "" for v in _zones_by_pod(i).values()) == ["a", "a", "b", "b"])
    assert _zones_by_pod(slices)["web-0"] == "b"
    await wait(events, lambda i: _reasons(i) == ["TopologyAwareHintsEnabled"])

    # A new node without a zone label: node information is insufficient, the hints go.
    await add_node(c, "n3")
    n3 = copy.deepcopy(await c.get("Node", "n3"))
    n3["status"]["allocatable"] = {"cpu": "2"}
    await c.update_status(n3)
    await wait(slices, lambda i: set(_zones_by_pod(i).values()) == {None})
    await wait(events, lambda i: _reasons(i)[-1:] == ["TopologyAwareHintsDisabled"])
    last = [e for e in events.list("default") if e["reason"] == "TopologyAwareHintsDisabled"][0]
    assert INSUFFICIENT_NODE_INFO in last["message"] and last["type"] == "Warning"

    # Without it, the allocation comes back.
    await c.delete("Node", "n3")
    await wait(slices, lambda i: sorted(v or "" for v in _zones_by_pod(i).values()) == ["a", "a", "b", "b"])

    # Neither annotation nor trafficDistribution: no hints.
    cur = await c.get("Service", "web", "default")
    cur["metadata"]["annotations"] = {}
    cur["spec"].pop("trafficDistribution")
    await c.update(cur)
    await wait(slices, lambda i: set(_zones_by_pod(i).values()) == {None})
    enabled, disabled = "TopologyAwareHintsEnabled", "TopologyAwareHintsDisabled"
    await wait(events, lambda i: _reasons(i) == [enabled, disabled, enabled, disabled])
