"""The Gateway API controller for GatewayClass ``kmesh``: statuses, and a proxy Deployment and Service per Gateway.

For each Gateway of a class whose ``controllerName`` is
``kmesh.io/gateway-controller`` it keeps a Deployment and a ``LoadBalancer``
Service named ``<gateway>-kmesh`` in the Gateway's namespace (as Istio names
its automated deployments), owned by the Gateway so deleting it removes them.
The Service's address becomes the Gateway's ``status.addresses``. It writes
the conditions of GatewayClasses, Gateways (and their listeners) and the
``status.parents`` entries of HTTPRoutes for its Gateways and, under the
mesh's controller name, for the Services they attach to (GAMMA), leaving
other controllers' entries alone, and writes only what changed.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import trio

from kmesh.api.errors import APIError
from kmesh.client.api import APIUnavailable, Client
from kmesh.client.informer import Informer
from kmesh.gateway import gatewayapi
from kmesh.gateway.conditions import same
from kmesh.gateway.watch import WorldWatch
from kmesh.gateway.meshparents import MESH_CONTROLLER_NAME
from kmesh.gateway.world import CONTROLLER_NAME, Obj, World, meta

log = logging.getLogger("kmesh.gateway.controller")

KINDS = ("GatewayClass", "Gateway", "HTTPRoute", "Service", "Secret", "ReferenceGrant", "Namespace", "Deployment")
GATEWAY_LABEL = "gateway.networking.k8s.io/gateway-name"
MANAGED_BY = "kmesh-gateway-controller"
GATEWAY_IMAGE = "kmesh/gateway"
COALESCE = 0.05
OURS = (CONTROLLER_NAME, MESH_CONTROLLER_NAME)
"""The controller names of the route statuses this controller writes (Gateway parents and Service parents)."""


def resource_name(gateway: str) -> str:
    """The name of a Gateway's Deployment and Service."""
    return f"{gateway}-kmesh"


def _owner(gw: Obj) -> Obj:
    m = meta(gw)
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "name": m.get("name"),
            "uid": m.get("uid"), "controller": True, "blockOwnerDeletion": True}


def desired_service(gw: Obj, ports: list[tuple[str, int]]) -> Obj:
    """The LoadBalancer Service of a Gateway."""
    m = meta(gw)
    spec: Obj = {"type": "LoadBalancer", "selector": {GATEWAY_LABEL: m.get("name")},
                 "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in ports]
                 or [{"name": "none", "port": 1, "targetPort": 1, "protocol": "TCP"}]}
    wanted = [a.get("value") for a in (gw.get("spec") or {}).get("addresses") or []
              if (a.get("type") or "IPAddress") == "IPAddress" and a.get("value")]
    if wanted:
        spec["loadBalancerIP"] = wanted[0]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": resource_name(m["name"]), "namespace": m.get("namespace"),
                         "labels": {GATEWAY_LABEL: m["name"], "app.kubernetes.io/managed-by": MANAGED_BY},
                         "ownerReferences": [_owner(gw)]},
            "spec": spec}


def desired_deployment(gw: Obj, ports: list[tuple[str, int]], kubeconfig: str = "") -> Obj:
    """The Deployment of a Gateway's proxy pods (reading the API through ``kubeconfig`` when given, else the
    node's in-cluster credentials)."""
    m = meta(gw)
    labels = {GATEWAY_LABEL: m["name"]}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": resource_name(m["name"]), "namespace": m.get("namespace"),
                         "labels": {**labels, "app.kubernetes.io/managed-by": MANAGED_BY},
                         "ownerReferences": [_owner(gw)]},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{
                                      "name": "kmesh-gateway", "image": GATEWAY_IMAGE,
                                      "args": [f"--gateway={m.get('namespace')}/{m['name']}",
                                               *([f"--kubeconfig={kubeconfig}"] if kubeconfig else [])],
                                      "ports": [{"name": n, "containerPort": p, "protocol": "TCP"}
                                                for n, p in ports]}]}}}}


def service_addresses(svc: Obj | None) -> list[str]:
    """The addresses a LoadBalancer Service was given."""
    ing = (((svc or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [i["ip"] for i in ing if i.get("ip")]


@dataclass
class GatewayController:
    """Runs until cancelled; ``synced`` counts translations (tests await it)."""

    client: Client
    kubeconfig: str = ""  # handed to the proxy pods (a netns lab's pods read the API through the lab's file)
    translations: int = 0
    watch: WorldWatch | None = None
    _done: trio.Condition = field(default_factory=trio.Condition)

    @property
    def informers(self) -> dict[str, Informer]:
        """The informers by kind (empty before ``run`` starts them)."""
        return self.watch.informers if self.watch is not None else {}

    async def run(self, *, task_status: trio.TaskStatus[GatewayController] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the objects and reconcile after each burst of changes."""
        self.watch = WorldWatch(self.client, KINDS, COALESCE)
        async with trio.open_nursery() as n:
            await self.watch.start(n)
            task_status.started(self)
            while True:
                try:
                    await self.reconcile()
                except (APIError, APIUnavailable) as exc:  # a conflict or the server away: again after the next change
                    log.info("gateway controller: %s", exc)
                    self.watch.again()
                    await trio.sleep(0.5)
                async with self._done:
                    self.translations += 1
                    self._done.notify_all()
                await self.watch.changes()

    def world(self) -> World:
        """The objects the informers hold now."""
        return self.watch.world() if self.watch is not None else World()

    async def reconcile(self) -> None:
        """Provision every Gateway of ours and write every status that changed."""
        world = self.world()
        addresses: dict[tuple[str, str], list[str]] = {}
        for key, gw in world.gateways.items():
            if gatewayapi.ours(world, gw):
                addresses[key] = service_addresses(world.services.get((key[0], resource_name(key[1]))))
        t = gatewayapi.translate(world, addresses)
        for key, result in t.gateways.items():
            await self._provision(world.gateways[key], result.ports)
        for name, status in t.classes.items():
            cls = world.gateway_classes[name]
            if not same((cls.get("status") or {}).get("conditions") or [], status["conditions"]):
                await self._write_status(cls, {**(cls.get("status") or {}), **status})
        for key, result in t.gateways.items():
            gw = world.gateways[key]
            old = gw.get("status") or {}
            if _gateway_status_changed(old, result.status):
                await self._write_status(gw, result.status)
        for key, parents in t.route_parents.items():
            route = world.routes[key]
            old_parents = (route.get("status") or {}).get("parents") or []
            others = [p for p in old_parents if p.get("controllerName") not in OURS]
            mine = [p for p in old_parents if p.get("controllerName") in OURS]
            if not _parents_same(mine, parents):
                await self._write_status(route, {**(route.get("status") or {}), "parents": others + parents})

    async def _write_status(self, obj: Obj, status: Obj) -> None:
        new = copy.deepcopy(obj)
        new["status"] = status
        await self.client.update_status(new)

    async def _provision(self, gw: Obj, ports: list[tuple[str, int]]) -> None:
        ns, name = meta(gw).get("namespace"), resource_name(meta(gw)["name"])
        svc = self.informers["Service"].get(name, ns)
        want_svc = desired_service(gw, ports)
        if svc is None:
            await self._create(want_svc)
        elif [(p.get("name"), p.get("port")) for p in svc["spec"].get("ports") or []] != \
                [(p["name"], p["port"]) for p in want_svc["spec"]["ports"]]:
            new = copy.deepcopy(svc)
            new["spec"]["ports"] = want_svc["spec"]["ports"]
            await self.client.update(new)
        dep = self.informers["Deployment"].get(name, ns)
        want_dep = desired_deployment(gw, ports, self.kubeconfig)
        if dep is None:
            await self._create(want_dep)
        else:
            have = dep["spec"]["template"]["spec"]["containers"][0].get("ports") or []
            want = want_dep["spec"]["template"]["spec"]["containers"][0]["ports"]
            if [(p.get("containerPort")) for p in have] != [p["containerPort"] for p in want]:
                new = copy.deepcopy(dep)
                new["spec"]["template"]["spec"]["containers"][0]["ports"] = want
                await self.client.update(new)

    async def _create(self, obj: Obj) -> None:
        try:
            await self.client.create(obj)
        except APIError as exc:
            if exc.code != 409:
                raise

    async def wait_translations(self, count: int) -> None:
        """Return once ``count`` reconciliations have run (for tests and callers that changed something)."""
        async with self._done:
            while self.translations < count:
                await self._done.wait()


def _gateway_status_changed(old: Obj, new: Obj) -> bool:
    if not same(old.get("conditions") or [], new["conditions"]):
        return True
    if (old.get("addresses") or []) != (new.get("addresses") or []):
        return True
    olds = {ls.get("name"): ls for ls in old.get("listeners") or []}
    if set(olds) != {ls["name"] for ls in new["listeners"]}:
        return True
    for ls in new["listeners"]:
        o = olds[ls["name"]]
        if o.get("attachedRoutes") != ls["attachedRoutes"] or o.get("supportedKinds") != ls["supportedKinds"] \
                or not same(o.get("conditions") or [], ls["conditions"]):
            return True
    return False


def _parents_same(a: list[Obj], b: list[Obj]) -> bool:
    if len(a) != len(b):
        return False
    key = lambda p: sorted((p.get("parentRef") or {}).items())  # noqa: E731
    for x, y in zip(sorted(a, key=key), sorted(b, key=key)):
        if x.get("parentRef") != y.get("parentRef") or not same(x.get("conditions") or [], y.get("conditions") or []):
            return False
    return True

