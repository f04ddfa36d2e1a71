"""The Gateway API translation against upstream's conformance manifests: statuses as the conformance tests
expect them (the data path is checked through the engine in test_conformance_*)."""

from __future__ import annotations

from typing import Any

from kmesh.gateway.gatewayapi import translate
from kmesh.gateway.world import World
from tests.gateway.manifests import INFRA, gateway_class, load, with_defaults


def _world(*names: str) -> World:
    return World.of(with_defaults([gateway_class(), *load("manifests.yaml", *names)]))


def _cond(conds: list[dict[str, Any]], ctype: str) -> tuple[str, str]:
    c = next(c for c in conds if c["type"] == ctype)
    return c["status"], c["reason"]


def _route(t: Any, name: str, ns: str = INFRA) -> dict[str, tuple[str, str]]:
    (parent,) = t.route_parents[(ns, name)]
    return {c["type"]: (c["status"], c["reason"]) for c in parent["conditions"]}


def test_hostname_intersection_statuses() -> None:
    t = translate(_world("httproute-hostname-intersection.yaml"), {(INFRA, "httproute-hostname-intersection"): ["1.2.3.4"]})
    for name in ("specific-host-matches-listener-specific-host", "specific-host-matches-listener-wildcard-host",
                 "wildcard-host-matches-listener-specific-host", "wildcard-host-matches-listener-wildcard-host"):
        assert _route(t, name) == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}, name
    assert _route(t, "no-intersecting-hosts")["Accepted"] == ("False", "NoMatchingListenerHostname")
    gw = t.gateways[(INFRA, "httproute-hostname-intersection")].status
    assert {ls["name"]: ls["attachedRoutes"] for ls in gw["listeners"]} == {
        "listener-1": 2, "listener-2": 1, "listener-3": 1}
    assert _cond(gw["conditions"], "Programmed") == ("True", "Programmed")
    assert gw["addresses"] == [{"type": "IPAddress", "value": "1.2.3.4"}]
    for ls in gw["listeners"]:
        assert ls["supportedKinds"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]
        assert _cond(ls["conditions"], "Accepted")[0] == "True" and _cond(ls["conditions"], "ResolvedRefs")[0] == "True"


def test_invalid_references_have_the_spec_reasons() -> None:
    t = translate(_world("httproute-invalid-backendref-unknown-kind.yaml", "httproute-invalid-nonexistent-backendref.yaml",
                         "httproute-invalid-cross-namespace-backend-ref.yaml", "httproute-invalid-reference-grant.yaml",
                         "httproute-invalid-parentref-not-matching-listener-port.yaml",
                         "httproute-invalid-parentref-not-matching-section-name.yaml",
                         "httproute-invalid-cross-namespace-parent-ref.yaml", "httproute-disallowed-kind.yaml"))
    reasons = {k[1]: {c["type"]: (c["status"], c["reason"]) for p in v for c in p["conditions"]}
               for k, v in t.route_parents.items() if v}
    assert reasons["invalid-backend-ref-unknown-kind"]["ResolvedRefs"] == ("False", "InvalidKind")
    assert reasons["invalid-nonexistent-backend-ref"]["ResolvedRefs"] == ("False", "BackendNotFound")
    assert reasons["invalid-cross-namespace-backend-ref"]["ResolvedRefs"] == ("False", "RefNotPermitted")
    assert reasons["reference-grant"]["ResolvedRefs"] == ("False", "RefNotPermitted")
    assert reasons["httproute-listener-not-matching-route-port"]["Accepted"] == ("False", "NoMatchingParent")
    assert reasons["httproute-listener-not-matching-section-name"]["Accepted"] == ("False", "NoMatchingParent")
    assert reasons["invalid-cross-namespace-parent-ref"]["Accepted"] == ("False", "NotAllowedByListeners")
    assert reasons["disallowed-kind"]["Accepted"] == ("False", "NotAllowedByListeners")


def _svc(ns: str, name: str, *ports: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": name},
            "spec": {"ports": [{"name": f"p{p}", "port": p} for p in ports]}}


def _mesh_route(ns: str, name: str, parent: dict[str, Any], backend: str = "echo-v2") -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"namespace": ns, "name": name, "generation": 2},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", **parent}],
                     "rules": [{"backendRefs": [{"name": backend, "namespace": "mesh", "port": 80}]}]}}


def test_service_parents_get_the_mesh_controllers_status() -> None:
    """GAMMA: a route's Service parents are accepted when the Service (and the port, if named) exists, producer
    (same namespace) or consumer (another namespace, no ReferenceGrant needed); ResolvedRefs as for Gateways."""
    mesh = "gateway-conformance-mesh"
    objs = with_defaults([
        _svc(mesh, "echo", 80, 8080), _svc(mesh, "echo-v2", 80),
        _mesh_route(mesh, "producer", {"name": "echo", "port": 80}, "echo-v2"),
        _mesh_route("consumer", "consumer", {"name": "echo", "namespace": mesh}, "echo-v2"),
        _mesh_route(mesh, "no-such-service", {"name": "nope"}, "echo-v2"),
        _mesh_route(mesh, "no-such-port", {"name": "echo", "port": 9999}, "echo-v2"),
        _mesh_route(mesh, "bad-backend", {"name": "echo"}, "missing"),
    ])
    for o in objs:  # the backends name namespace "mesh" in _mesh_route: point them at the test's namespace
        for rule in (o.get("spec") or {}).get("rules") or []:
            for ref in rule.get("backendRefs") or []:
                ref["namespace"] = mesh
    t = translate(World.of(objs))
    got = {k[1]: p for k, ps in t.route_parents.items() for p in ps}
    assert got["producer"]["controllerName"] == "kmesh.io/mesh-controller"
    assert got["producer"]["parentRef"] == {"group": "", "kind": "Service", "namespace": mesh, "name": "echo",
                                            "port": 80}
    assert _route(t, "producer", mesh) == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}
    # a consumer route's backendRef into the producer's namespace needs no ReferenceGrant (GEP-1294)
    assert _route(t, "consumer", "consumer") == {"Accepted": ("True", "Accepted"),
                                                 "ResolvedRefs": ("True", "ResolvedRefs")}
    assert _route(t, "no-such-service", mesh)["Accepted"] == ("False", "NoMatchingParent")
    assert _route(t, "no-such-port", mesh)["Accepted"] == ("False", "NoMatchingParent")
    assert _route(t, "bad-backend", mesh) == {"Accepted": ("True", "Accepted"),
                                              "ResolvedRefs": ("False", "BackendNotFound")}
    assert all(c["observedGeneration"] == 2 for p in got.values() for c in p["conditions"])
