"""The Gateway controller against a real API server: a proxy Deployment and LoadBalancer Service per Gateway,
statuses written only while they change, Programmed once the Service has an address, other controllers'
route parents left alone, and the API server's restart survived."""

from __future__ import annotations

from typing import Any

import trio

from kmesh.gateway.controller import GatewayController, resource_name
from tests.support.cluster import Cluster

GW = "gateway.networking.k8s.io/v1"


def _objects() -> list[dict[str, Any]]:
    return [
        {"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "kmesh"},
         "spec": {"controllerName": "kmesh.io/gateway-controller"}},
        {"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "other"},
         "spec": {"controllerName": "example.com/other"}},
        {"apiVersion": GW, "kind": "Gateway", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"gatewayClassName": "kmesh", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}},
        {"apiVersion": GW, "kind": "Gateway", "metadata": {"name": "theirs", "namespace": "default"},
         "spec": {"gatewayClassName": "other", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app", "namespace": "default"},
         "spec": {"selector": {"app": "app"}, "ports": [{"port": 8080}]}},
        {"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": "r", "namespace": "default"},
         "spec": {"parentRefs": [{"name": "web"}, {"name": "theirs"}],
                  "rules": [{"backendRefs": [{"name": "app", "port": 8080}, {"name": "nope", "port": 80}]}]}},
        {"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": "mesh", "namespace": "default"},
         "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "app", "port": 8080}],
                  "rules": [{"backendRefs": [{"name": "app", "port": 8080}]}]}},
    ]


async def _until(cluster: Cluster, kind: str, name: str, pred: Any, ns: str | None = "default") -> dict[str, Any]:
    with trio.fail_after(20):
        while True:
            try:
                obj = await cluster.client.get(kind, name, ns)
                if pred(obj):
                    return obj
            except Exception:
                pass
            await trio.sleep(0.05)  # polling the API server; the controller's writes are the events


def _cond(obj: dict[str, Any], ctype: str) -> tuple[str, str] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c["status"], c["reason"]
    return None


async def test_the_controller_provisions_and_writes_statuses(cluster: Cluster, nursery: trio.Nursery) -> None:
    for o in _objects():
        await cluster.client.create(o)
    ctl: GatewayController = await nursery.start(GatewayController(cluster.client).run)
    cls = await _until(cluster, "GatewayClass", "kmesh", lambda o: _cond(o, "Accepted") == ("True", "Accepted"), None)
    assert cls
    other = await cluster.client.get("GatewayClass", "other")
    assert _cond(other, "Accepted") != ("True", "Accepted")  # not ours: left to its controller
    svc = await _until(cluster, "Service", resource_name("web"), lambda o: True)
    assert svc["spec"]["type"] == "LoadBalancer" and [p["port"] for p in svc["spec"]["ports"]] == [80]
    assert svc["metadata"]["ownerReferences"][0]["kind"] == "Gateway"
    dep = await _until(cluster, "Deployment", resource_name("web"), lambda o: True)
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"] == ["--gateway=default/web"]
    gw = await _until(cluster, "Gateway", "web", lambda o: _cond(o, "Programmed") is not None)
    assert _cond(gw, "Accepted") == ("True", "Accepted")
    assert _cond(gw, "Programmed") == ("False", "AddressNotAssigned")
    assert gw["status"]["listeners"][0]["attachedRoutes"] == 1
    route = await _until(cluster, "HTTPRoute", "r", lambda o: (o.get("status") or {}).get("parents"))
    (parent,) = route["status"]["parents"]
    conds = {c["type"]: (c["status"], c["reason"]) for c in parent["conditions"]}
    assert conds == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", "BackendNotFound")}
    assert parent["parentRef"]["name"] == "web" and parent["controllerName"] == "kmesh.io/gateway-controller"
    mesh = await _until(cluster, "HTTPRoute", "mesh", lambda o: (o.get("status") or {}).get("parents"))
    (parent,) = mesh["status"]["parents"]  # a GAMMA route: its Service parent, under the mesh's name
    assert parent["controllerName"] == "kmesh.io/mesh-controller"
    assert parent["parentRef"] == {"group": "", "kind": "Service", "namespace": "default", "name": "app", "port": 8080}
    assert {c["type"]: (c["status"], c["reason"]) for c in parent["conditions"]} == {
        "Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}

    # another controller's entry for its own Gateway is kept when ours is rewritten
    theirs = {"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "default",
                            "name": "theirs"}, "controllerName": "example.com/other",
              "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                              "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}
    route["status"]["parents"].append(theirs)
    await cluster.client.update_status(route)

    # the Service gets its address (the LoadBalancer IPAM's job): the Gateway becomes Programmed with it
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "192.168.56.240", "ipMode": "VIP"}]}}
    await cluster.client.update_status(svc)
    gw = await _until(cluster, "Gateway", "web", lambda o: _cond(o, "Programmed") == ("True", "Programmed"))
    assert gw["status"]["addresses"] == [{"type": "IPAddress", "value": "192.168.56.240"}]

    # the missing backend appears: ResolvedRefs turns True, the other controller's parent is still there
    await cluster.client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nope", "namespace": "default"},
                                 "spec": {"ports": [{"port": 80}]}})
    route = await _until(cluster, "HTTPRoute", "r", lambda o: any(
        c["type"] == "ResolvedRefs" and c["status"] == "True" for p in o["status"]["parents"] for c in p["conditions"]
        if p["controllerName"] == "kmesh.io/gateway-controller"))
    assert [p["controllerName"] for p in route["status"]["parents"]] == ["example.com/other",
                                                                         "kmesh.io/gateway-controller"]

    # nothing changes: no more writes
    rv = (await cluster.client.get("Gateway", "web", "default"))["metadata"]["resourceVersion"]
    n = ctl.translations
    await cluster.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "unrelated"}})
    await ctl.wait_translations(n + 1)
    assert (await cluster.client.get("Gateway", "web", "default"))["metadata"]["resourceVersion"] == rv
