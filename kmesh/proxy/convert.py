"""Services and EndpointSlices (Kubernetes JSON) → the proxy model, as kube-proxy reads them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Iterable

from kmesh.api.obj import Obj
from kmesh.proxy.model import DEFAULT_AFFINITY_TIMEOUT, Endpoint, ProxyState, ServicePort, ServicePortName

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
HEADLESS_LABEL = "service.kubernetes.io/headless"


def proxied(svc: Obj) -> bool:
    """Whether kube-proxy handles this Service at all (not headless, not ExternalName, no other proxy)."""
    spec = svc.get("spec") or {}
    labels = (svc.get("metadata") or {}).get("labels") or {}
    if PROXY_NAME_LABEL in labels:
        return False
    if spec.get("type") == "ExternalName":
        return False
    cip = spec.get("clusterIP") or ""
    return bool(cip) and cip != "None"


def _trigger_time(slices: Iterable[Obj]) -> float | None:
    latest: float | None = None
    for s in slices:
        raw = ((s.get("metadata") or {}).get("annotations") or {}).get(TRIGGER_ANNOTATION)
        if not raw:
            continue
        try:
            t = dt.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        latest = t if latest is None else max(latest, t)
    return latest


def slice_endpoints(slices: Iterable[Obj], port_name: str, protocol: str) -> Iterator[tuple[Obj, Endpoint]]:
    """Each endpoint of one named port in a service's IPv4 slices, as listed (no de-duplication).

    Yields the slice's endpoint object (for what the model leaves out: targetRef, hostname)
    with the ``Endpoint`` read from it: its first address, nil ready counted as ready, nil
    serving as ready."""
    for s in slices:
        if s.get("addressType", "IPv4") != "IPv4":
            continue
        port = next(
            (p for p in s.get("ports") or [] if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == protocol),
            None,
        )
        if port is None or not port.get("port"):
            continue
        for ep in s.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            ready = cond.get("ready")
            ready = True if ready is None else bool(ready)  # nil ready counts as ready
            serving = cond.get("serving")
            serving = ready if serving is None else bool(serving)
            terminating = bool(cond.get("terminating"))
            hints = frozenset(z.get("name") or "" for z in (ep.get("hints") or {}).get("forZones") or []) - {""}
            for ip in (ep.get("addresses") or [])[:1]:  # kube-proxy uses the first address
                yield ep, Endpoint(ip=ip, port=int(port["port"]), ready=ready, serving=serving, terminating=terminating,
                                   node=ep.get("nodeName") or "", zone=ep.get("zone") or "", zone_hints=hints)


def _endpoints(slices: Iterable[Obj], port_name: str, protocol: str) -> tuple[Endpoint, ...]:
    """The endpoints of one named port across a service's IPv4 slices, de-duplicated and sorted."""
    seen: dict[str, Endpoint] = {}
    for _, e in slice_endpoints(slices, port_name, protocol):
        if e.addr not in seen or (e.ready and not seen[e.addr].ready):
            seen[e.addr] = e
    return tuple(sorted(seen.values(), key=lambda e: (tuple(int(x) for x in e.ip.split(".")) if "." in e.ip else (0,), e.port)))


def _ipv4(addresses: Iterable[str]) -> tuple[str, ...]:
    """The IPv4 addresses (or CIDRs) of ``addresses``: each proxy serves one family, kmesh's IPv4."""
    return tuple(a.strip() for a in addresses if ":" not in a)


def service_ports(svc: Obj, slices: Iterable[Obj], node_zone: str = "") -> list[ServicePort]:
    """The ``ServicePort``s of one Service with its EndpointSlices' endpoints (IPv4 only), for a proxy
    on a node in ``node_zone`` ("" = unknown; topology hints are then not used)."""
    if not proxied(svc):
        return []
    md = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    slices = list(slices)
    affinity = spec.get("sessionAffinity") == "ClientIP"
    timeout = (((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
               or DEFAULT_AFFINITY_TIMEOUT)
    svc_type = spec.get("type") or "ClusterIP"
    # An ingress IP with ipMode Proxy is the load balancer's own address: traffic to it must reach the LB,
    # so the proxy leaves it alone (KEP-1860); VIP (the default) is captured like a ClusterIP.
    lb_ips = _ipv4(i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                   if i.get("ip") and i.get("ipMode") != "Proxy")
    if ":" in (spec.get("clusterIP") or ""):
        return []  # an IPv6 Service: kmesh's proxies are IPv4-only (as an IPv4 kube-proxy of a dual-stack pair)
    trigger = _trigger_time(slices)
    out = []
    for p in spec.get("ports") or []:
        protocol = p.get("protocol") or "TCP"
        name = ServicePortName(md.get("namespace", "default"), md.get("name", ""), p.get("name") or "", protocol)
        out.append(ServicePort(
            name=name,
            cluster_ip=spec["clusterIP"],
            port=int(p["port"]),
            type=svc_type,
            node_port=int(p.get("nodePort") or 0) if svc_type in ("NodePort", "LoadBalancer") else 0,
            external_ips=_ipv4(spec.get("externalIPs") or ()),
            load_balancer_ips=lb_ips if svc_type == "LoadBalancer" else (),
            session_affinity=affinity,
            affinity_timeout=int(timeout),
            internal_local=spec.get("internalTrafficPolicy") == "Local",
            external_local=spec.get("externalTrafficPolicy") == "Local" and svc_type in ("NodePort", "LoadBalancer"),
            load_balancer_source_ranges=_ipv4(spec.get("loadBalancerSourceRanges") or ()) if svc_type == "LoadBalancer" else (),
            health_check_node_port=int(spec.get("healthCheckNodePort") or 0),
            endpoints=_endpoints(slices, p.get("name") or "", protocol),
            node_zone=node_zone,
            trigger_time=trigger,
        ))
    return out


def build_state(services: Iterable[Obj], slices: Iterable[Obj], node_zone: str = "") -> ProxyState:
    """The whole ``ProxyState`` from lists of Services and EndpointSlices (for a proxy in ``node_zone``)."""
    by_service: dict[tuple[str, str], list[Obj]] = {}
    for s in slices:
        md = s.get("metadata") or {}
        owner = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner:
            by_service.setdefault((md.get("namespace", "default"), owner), []).append(s)
    state = ProxyState()
    for svc in services:
        md = svc.get("metadata") or {}
        for sp in service_ports(svc, by_service.get((md.get("namespace", "default"), md.get("name", "")), []), node_zone):
            state.services[sp.name] = sp
    return state
