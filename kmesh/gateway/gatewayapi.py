"""The Gateway API in the L7 engine's terms: each Gateway of class ``kmesh`` becomes a proxy Config, and every
GatewayClass, Gateway and HTTPRoute gets the status conditions the spec defines (a route's Service parents,
the mesh's, too: ``kmesh.gateway.meshparents``).

Pure translation (objects in, config and statuses out), so the controller that
writes statuses and the gateway pods that serve traffic compute the same thing
from the same objects. The table each port gets is ordered so that the engine's
"first entry that matches" is the spec's selection: the most specific listener
hostname first (with a 404 fence after each named listener, so a less specific
listener never answers for a host a more specific one owns), then the most
specific route hostname, then the match precedence of the HTTPRoute spec, then
the oldest route, its namespace/name, and rule and match order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kmesh.gateway import hostnames
from kmesh.gateway.conditions import condition
from kmesh.gateway.httproute import CompiledRoute, compile_route, precedence
from kmesh.gateway.meshparents import mesh_parents
from kmesh.gateway.refgrants import GATEWAY_GROUP, permitted
from kmesh.gateway.tlscerts import tls_pair
from kmesh.api.selectors import from_selector_object
from kmesh.gateway.world import CONTROLLER_NAME, Obj, World, meta, nsname
from kmesh.l7.model import Certificate, Config, Listener, Match, RouteEntry, Rule

PROTOCOLS = ("HTTP", "HTTPS")
ROUTE_KIND = {"group": GATEWAY_GROUP, "kind": "HTTPRoute"}


@dataclass
class ListenerState:
    """One Gateway listener as translated: whether it serves, its conditions' inputs and attached routes."""

    spec: Obj
    name: str
    port: int
    protocol: str
    hostname: str | None
    accepted: tuple[bool, str, str] = (True, "Accepted", "Listener is accepted")
    conflicted: tuple[bool, str, str] = (False, "NoConflicts", "No conflicts")
    resolved: tuple[bool, str, str] = (True, "ResolvedRefs", "All references resolved")
    kinds: list[Obj] = field(default_factory=list)
    certificates: list[Certificate] = field(default_factory=list)
    attached: int = 0

    @property
    def serves(self) -> bool:
        """Whether traffic is programmed for this listener."""
        return self.accepted[0] and not self.conflicted[0] and self.resolved[1] != "InvalidCertificateRef" \
            and self.resolved[1] != "RefNotPermitted"


@dataclass
class GatewayResult:
    """What one Gateway of ours becomes."""

    key: tuple[str, str]
    config: Config
    status: Obj
    ports: list[tuple[str, int]]


@dataclass
class Translation:
    """Everything the Gateway API objects of a world translate to."""

    gateways: dict[tuple[str, str], GatewayResult] = field(default_factory=dict)
    route_parents: dict[tuple[str, str], list[Obj]] = field(default_factory=dict)
    classes: dict[str, Obj] = field(default_factory=dict)


def ours(world: World, gateway: Obj) -> bool:
    """Whether a Gateway's class is handled by kmesh's controller."""
    cls = world.gateway_classes.get((gateway.get("spec") or {}).get("gatewayClassName") or "")
    return bool(cls) and (cls.get("spec") or {}).get("controllerName") == CONTROLLER_NAME


def _class_status(cls: Obj) -> Obj:
    gen = int(meta(cls).get("generation") or 1)
    old = (cls.get("status") or {}).get("conditions") or []
    return {"conditions": [condition("Accepted", True, "Accepted", "Handled by kmesh", gen, old)]}


def _listeners(world: World, gw: Obj) -> list[ListenerState]:
    gw_ns = nsname(gw)[0]
    states = [ListenerState(ls, ls.get("name") or "", int(ls.get("port") or 0), ls.get("protocol") or "",
                            ls.get("hostname") or None) for ls in (gw.get("spec") or {}).get("listeners") or []]
    by_port: dict[int, list[ListenerState]] = {}
    for s in states:
        by_port.setdefault(s.port, []).append(s)
    for group in by_port.values():
        if len({s.protocol for s in group}) > 1:
            for s in group:
                s.conflicted = (True, "ProtocolConflict", f"port {s.port} has listeners of different protocols")
            continue
        seen: dict[str | None, list[ListenerState]] = {}
        for s in group:
            seen.setdefault(s.hostname, []).append(s)
        for same in seen.values():
            if len(same) > 1:
                for s in same:
                    s.conflicted = (True, "HostnameConflict", f"hostname {s.hostname or '(none)'} is used twice "
                                                              f"on port {s.port}")
    for s in states:
        if s.protocol not in PROTOCOLS:
            s.accepted = (False, "UnsupportedProtocol", f"protocol {s.protocol} is not supported by kmesh "
                                                       f"(HTTP and HTTPS are)")
            continue
        wanted = ((s.spec.get("allowedRoutes") or {}).get("kinds"))
        if wanted is None:
            s.kinds = [dict(ROUTE_KIND)]
        else:
            s.kinds = [dict(ROUTE_KIND) for k in wanted
                       if (k.get("group") or GATEWAY_GROUP) == GATEWAY_GROUP and k.get("kind") == "HTTPRoute"]
            if len(s.kinds) != len(wanted):
                s.resolved = (False, "InvalidRouteKinds", "only HTTPRoute is supported")
        if s.protocol == "HTTPS":
            tls = s.spec.get("tls") or {}
            if (tls.get("mode") or "Terminate") != "Terminate":
                s.accepted = (False, "UnsupportedValue", "HTTPS listeners terminate TLS (mode Terminate)")
                continue
            for ref in tls.get("certificateRefs") or []:
                ns = ref.get("namespace") or gw_ns
                name = ref.get("name") or ""
                if (ref.get("group") or "") != "" or (ref.get("kind") or "Secret") != "Secret":
                    s.resolved = (False, "InvalidCertificateRef", f"certificateRef {name}: not a Secret")
                elif not permitted(world.grants, from_group=GATEWAY_GROUP, from_kind="Gateway", from_namespace=gw_ns,
                                   to_group="", to_kind="Secret", to_namespace=ns, to_name=name):
                    s.resolved = (False, "RefNotPermitted", f"certificateRef {ns}/{name}: no ReferenceGrant allows it")
                else:
                    pair = tls_pair(world.secrets.get((ns, name)), ns, name)
                    if isinstance(pair, str):
                        s.resolved = (False, "InvalidCertificateRef", f"certificateRef {ns}/{name}: {pair}")
                    else:
                        s.certificates.append(Certificate(*pair, hostnames.host_match(s.hostname)))
            if s.resolved[0] and not s.certificates:
                s.resolved = (False, "InvalidCertificateRef", "an HTTPS listener needs a certificateRef")
    return states


def _namespace_allowed(world: World, listener: ListenerState, gw_ns: str, route_ns: str) -> bool:
    ns = ((listener.spec.get("allowedRoutes") or {}).get("namespaces") or {})
    frm = ns.get("from") or "Same"
    if frm == "All":
        return True
    if frm == "Same":
        return route_ns == gw_ns
    if frm == "Selector":
        labels = (meta(world.namespaces.get(route_ns) or {}).get("labels")) or {}
        labels = {**labels, "kubernetes.io/metadata.name": route_ns}
        return from_selector_object(ns.get("selector") or {}).matches(labels)
    return False


def _parent_ref(ref: Obj, route_ns: str) -> Obj:
    out = {"group": ref.get("group") or GATEWAY_GROUP, "kind": ref.get("kind") or "Gateway",
           "namespace": ref.get("namespace") or route_ns, "name": ref.get("name")}
    for k in ("sectionName", "port"):
        if ref.get(k) is not None:
            out[k] = ref[k]
    return out


@dataclass
class _Attachment:
    route: Obj
    compiled: CompiledRoute
    listener: ListenerState
    hosts: list[str]


def _entries(attachments: list[_Attachment], listeners: list[ListenerState], port: int) -> tuple[RouteEntry, ...]:
    keyed: list[tuple[Any, RouteEntry]] = []
    for a in attachments:
        if a.listener.port != port:
            continue
        lspec, lhost = hostnames.specificity(a.listener.hostname), a.listener.hostname or ""
        rmeta = meta(a.route)
        route_key = (rmeta.get("creationTimestamp") or "", f"{rmeta.get('namespace')}/{rmeta.get('name')}")
        for host in a.hosts or [a.listener.hostname]:
            hm = hostnames.host_match(host)
            for cr in a.compiled.rules:
                for mi, m in enumerate(cr.matches):
                    key = (lspec, lhost, 0, hostnames.specificity(host), precedence(m), route_key, cr.index, mi)
                    keyed.append((key, RouteEntry(hm, m, cr.rule)))
    for ls in listeners:
        if ls.port == port and ls.hostname and ls.serves:
            fence = Rule(name=f"listener {ls.name}: no route matched", direct=404)
            keyed.append(((hostnames.specificity(ls.hostname), ls.hostname, 1), RouteEntry(
                hostnames.host_match(ls.hostname), Match(), fence)))
    keyed.sort(key=lambda kv: kv[0])
    return tuple(e for _, e in keyed)


def _listener_status(s: ListenerState, gen: int, old: list[Obj]) -> Obj:
    prev = next((x.get("conditions") or [] for x in old if x.get("name") == s.name), [])
    programmed = s.serves
    return {
        "name": s.name,
        "supportedKinds": s.kinds,
        "attachedRoutes": s.attached,
        "conditions": [
            condition("Accepted", s.accepted[0], *s.accepted[1:], gen, prev),
            condition("Conflicted", s.conflicted[0], *s.conflicted[1:], gen, prev),
            condition("ResolvedRefs", s.resolved[0], *s.resolved[1:], gen, prev),
            condition("Programmed", programmed, "Programmed" if programmed else "Invalid",
                      "Listener is programmed" if programmed else "Listener is not valid", gen, prev),
        ],
    }


def translate(world: World, addresses: dict[tuple[str, str], list[str]] | None = None) -> Translation:
    """Configs and statuses for every Gateway API object of kmesh's class in ``world``.

    ``addresses`` maps a Gateway to the addresses its Service was given; a
    Gateway without one is not ``Programmed`` (``AddressNotAssigned``).
    """
    addresses = addresses or {}
    out = Translation()
    for name, cls in world.gateway_classes.items():
        if (cls.get("spec") or {}).get("controllerName") == CONTROLLER_NAME:
            out.classes[name] = _class_status(cls)
    gateways = {k: g for k, g in world.gateways.items() if ours(world, g)}
    states = {k: _listeners(world, g) for k, g in gateways.items()}
    compiled = {k: compile_route(r, world) for k, r in world.routes.items()}
    attachments: dict[tuple[str, str], list[_Attachment]] = {k: [] for k in gateways}
    for rkey, route in sorted(world.routes.items()):
        route_ns = rkey[0]
        cr = compiled[rkey]
        parents: list[Obj] = []
        for ref in (route.get("spec") or {}).get("parentRefs") or []:
            if (ref.get("group") or GATEWAY_GROUP) != GATEWAY_GROUP or (ref.get("kind") or "Gateway") != "Gateway":
                continue
            gkey = (ref.get("namespace") or route_ns, ref.get("name") or "")
            if gkey not in gateways:
                continue
            accepted = _attach(world, gateways[gkey], states[gkey], route, cr, ref, attachments[gkey])
            gen = int(meta(route).get("generation") or 1)
            old = next((p.get("conditions") or [] for p in (route.get("status") or {}).get("parents") or []
                        if p.get("controllerName") == CONTROLLER_NAME
                        and _same_parent(p.get("parentRef") or {}, ref, route_ns)), [])
            if cr.unsupported and accepted[0]:
                accepted = (False, "UnsupportedValue", cr.unsupported)
            problem = cr.problems[0] if cr.problems else None
            resolved = (False, problem.reason, problem.message) if problem else \
                (True, "ResolvedRefs", "All references resolved")
            parents.append({
                "parentRef": _parent_ref(ref, route_ns),
                "controllerName": CONTROLLER_NAME,
                "conditions": [condition("Accepted", accepted[0], accepted[1], accepted[2], gen, old),
                               condition("ResolvedRefs", resolved[0], resolved[1], resolved[2], gen, old)],
            })
        out.route_parents[rkey] = parents + mesh_parents(world, route)
    for gkey, gw in gateways.items():
        out.gateways[gkey] = _gateway_result(gkey, gw, states[gkey], attachments[gkey], addresses.get(gkey) or [])
    return out


def _same_parent(a: Obj, ref: Obj, route_ns: str) -> bool:
    b = _parent_ref(ref, route_ns)
    return all(a.get(k) == b.get(k) for k in ("group", "kind", "namespace", "name", "sectionName", "port"))


def _attach(world: World, gw: Obj, states: list[ListenerState], route: Obj, cr: CompiledRoute, ref: Obj,
            into: list[_Attachment]) -> tuple[bool, str, str]:
    """Attach a route to the listeners its parentRef selects; the route's ``Accepted`` condition for it."""
    gw_ns = nsname(gw)[0]
    route_ns = nsname(route)[0]
    section, port = ref.get("sectionName"), ref.get("port")
    candidates = [s for s in states if (section is None or s.name == section) and (port is None or s.port == port)]
    if not candidates:
        return (False, "NoMatchingParent", "no listener matches the parentRef's sectionName and port")
    allowed = [s for s in candidates if s.accepted[0] and _namespace_allowed(world, s, gw_ns, route_ns)
               and ROUTE_KIND in s.kinds]
    if not allowed:
        return (False, "NotAllowedByListeners", "no listener allows this route (namespace or kind)")
    route_hosts = list((route.get("spec") or {}).get("hostnames") or [])
    hit = False
    for s in allowed:
        hosts = hostnames.intersect(s.hostname, route_hosts)
        if hosts is None:
            continue
        hit = True
        s.attached += 1
        into.append(_Attachment(route, cr, s, hosts))
    if not hit:
        return (False, "NoMatchingListenerHostname", "no listener hostname intersects the route's hostnames")
    return (True, "Accepted", "Route is accepted")


def _gateway_result(key: tuple[str, str], gw: Obj, states: list[ListenerState], attachments: list[_Attachment],
                    addrs: list[str]) -> GatewayResult:
    gen = int(meta(gw).get("generation") or 1)
    old_status = gw.get("status") or {}
    old = old_status.get("conditions") or []
    listeners: list[Listener] = []
    for port in sorted({s.port for s in states if s.serves}):
        serving = [s for s in states if s.port == port and s.serves]
        certs = tuple(c for s in sorted(serving, key=lambda s: hostnames.specificity(s.hostname))
                      for c in s.certificates)
        listeners.append(Listener(port, _entries(attachments, serving, port), certs,
                                  name=",".join(s.name for s in serving)))
    all_valid = all(s.serves and s.resolved[0] for s in states)
    status: Obj = {
        "conditions": [
            condition("Accepted", True, "Accepted" if all_valid else "ListenersNotValid",
                      "Gateway is accepted" if all_valid else "some listeners are not valid", gen, old),
            condition("Programmed", bool(addrs), "Programmed" if addrs else "AddressNotAssigned",
                      "Gateway is programmed" if addrs else "waiting for a LoadBalancer address", gen, old),
        ],
        "listeners": [_listener_status(s, gen, old_status.get("listeners") or []) for s in states],
    }
    if addrs:
        status["addresses"] = [{"type": "IPAddress", "value": a} for a in addrs]
    ports = sorted({(f"{s.protocol.lower()}-{s.port}", s.port) for s in states if s.serves})
    return GatewayResult(key, Config(tuple(listeners)), status, ports)
