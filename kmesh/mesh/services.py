"""What a sidecar knows about each Service port: its virtual listener in the L7 engine and its protocol.

A meshed client connects to a ClusterIP; the redirect rules hand the
connection to the sidecar, which reads the original destination and looks it
up here. Every TCP port of every Service with a ClusterIP becomes one virtual
listener of the sidecar's engine (nothing is bound: the sidecar adopts the
connection into it) whose single route sends requests to that Service port,
so HTTP is balanced per request over the ready endpoints; the same endpoint
sets serve connections balanced as plain TCP.

HTTPRoutes attached to a Service (GAMMA, the Gateway API's mesh support:
``parentRefs`` of kind Service, optionally with a port) replace that default
route for the Service's HTTP: their rules are compiled by the Gateway API
code and ordered by the spec's precedence, and a request that matches none
gets 404. Routes in the Service's own namespace (producer routes) serve every
client; a route in the client's namespace (a consumer route) serves only the
clients of that namespace and, where it attaches, takes the place of the
producer routes. Route statuses are not written yet.

Protocol selection, as Istio's: the port's ``appProtocol`` (``http``,
``kubernetes.io/h2c``; anything else is TCP), else the port's name prefix
(``http``, ``http2``, ``h2c``: HTTP), else the first bytes the client sends
(an HTTP/1 request line) within a short window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kmesh.gateway.httproute import compile_route, precedence
from kmesh.gateway.meshparents import is_service_ref
from kmesh.gateway.world import Obj, World, meta
from kmesh.l7.model import Backend, Config, HostMatch, Listener, Match, RouteEntry, Rule

HTTP_APP_PROTOCOLS = frozenset({"http", "kubernetes.io/h2c"})
HTTP_NAME_PREFIXES = ("http", "h2c")


@dataclass(frozen=True)
class ServicePort:
    """One TCP port of a Service, as the sidecar serves it."""

    namespace: str
    service: str
    port: int
    listener: int
    """The engine's virtual listener number for this port."""
    protocol: str
    """"http", "tcp" or "" (not declared: look at the first bytes)."""


def port_protocol(port: Obj) -> str:
    """``http``, ``tcp`` or ``""`` (undeclared) for one entry of a Service's ``spec.ports``."""
    app = port.get("appProtocol")
    if app:
        return "http" if app in HTTP_APP_PROTOCOLS else "tcp"
    name = (port.get("name") or "").lower()
    if name.startswith(HTTP_NAME_PREFIXES):
        return "http"
    return ""


def _attached(route: Obj, namespace: str, service: str, port: int) -> bool:
    """Whether ``route`` has a parentRef to Service ``namespace/service`` that covers ``port``."""
    rns = meta(route).get("namespace") or ""
    for ref in (route.get("spec") or {}).get("parentRefs") or []:
        if not is_service_ref(ref):
            continue
        if ref.get("name") == service and (ref.get("namespace") or rns) == namespace and \
                ref.get("port") in (None, port):
            return True
    return False


def mesh_routes(world: World, namespace: str, service: str, port: int, client_namespace: str) -> list[Obj]:
    """The HTTPRoutes that serve requests from ``client_namespace`` to a Service port (see the module
    docstring: consumer routes first, else producer routes)."""
    attached = [r for r in world.routes.values() if _attached(r, namespace, service, port)]
    consumer = [r for r in attached if (meta(r).get("namespace") or "") == client_namespace != namespace]
    if consumer:
        return consumer
    return [r for r in attached if (meta(r).get("namespace") or "") == namespace]


def route_entries(routes: list[Obj], world: World) -> tuple[RouteEntry, ...]:
    """The route table of a Service port from its HTTPRoutes, in the spec's precedence."""
    keyed: list[tuple[Any, RouteEntry]] = []
    for route in routes:
        md = meta(route)
        route_key = (md.get("creationTimestamp") or "", f"{md.get('namespace')}/{md.get('name')}")
        compiled = compile_route(route, world, mesh=True)
        for cr in compiled.rules:
            for mi, m in enumerate(cr.matches):
                keyed.append(((precedence(m), route_key, cr.index, mi), RouteEntry(HostMatch(), m, cr.rule)))
    keyed.sort(key=lambda kv: kv[0])
    return tuple(e for _, e in keyed)


@dataclass
class ServiceTable:
    """ClusterIP:port → ServicePort, rebuilt from the world; listener numbers stay stable across rebuilds.

    ``client_namespace`` is the namespace of the sidecar's pod (for consumer routes)."""

    client_namespace: str = ""
    by_address: dict[tuple[str, int], ServicePort] = field(default_factory=dict)
    _numbers: dict[tuple[str, str, int], int] = field(default_factory=dict)
    _last: int = 0

    def _number(self, key: tuple[str, str, int]) -> int:
        n = self._numbers.get(key)
        if n is None:
            self._last += 1
            n = self._numbers[key] = self._last
        return n

    def build(self, world: World) -> Config:
        """The engine config for ``world``'s Services (and refresh ``by_address``)."""
        by_address: dict[tuple[str, int], ServicePort] = {}
        listeners: list[Listener] = []
        for (ns, name), svc in sorted(world.services.items()):
            spec = svc.get("spec") or {}
            ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"]
            if not ips:
                continue
            for p in spec.get("ports") or []:
                if (p.get("protocol") or "TCP") != "TCP" or not p.get("port"):
                    continue
                port = int(p["port"])
                key = (ns, name, port)
                sp = ServicePort(ns, name, port, self._number(key), port_protocol(p))
                for ip in ips:
                    by_address[(ip, port)] = sp
                routes = mesh_routes(world, ns, name, port, self.client_namespace)
                if routes:
                    entries = route_entries(routes, world)
                else:
                    backend = Backend(ns, name, port, app_protocol=p.get("appProtocol"))
                    entries = (RouteEntry(HostMatch(), Match(), Rule((backend,), name=f"{ns}/{name}:{port}")),)
                listeners.append(Listener(sp.listener, entries, name=f"{ns}/{name}:{port}"))
        live = {(sp.namespace, sp.service, sp.port) for sp in by_address.values()}
        for key in [k for k in self._numbers if k not in live]:
            del self._numbers[key]  # a port that comes back gets a new number: its old listener is gone
        self.by_address = by_address
        return Config(tuple(sorted(listeners, key=lambda ls: ls.port)))
