"""A Service port's ready endpoints, read from its EndpointSlices (the proxy balances over them itself)."""

from __future__ import annotations

from collections.abc import Iterable

from kmesh.gateway.world import Obj
from kmesh.l7.model import Endpoint

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def service_port_name(service: Obj, port: int) -> str | None:
    """The name of ``service``'s TCP port ``port`` ("" when unnamed), or None if it has no such port."""
    for p in (service.get("spec") or {}).get("ports") or []:
        if int(p.get("port") or 0) == port and (p.get("protocol") or "TCP") == "TCP":
            return p.get("name") or ""
    return None


def ready_endpoints(service: Obj, port: int, slices: Iterable[Obj]) -> list[Endpoint]:
    """The ready endpoints of ``service``'s port ``port`` in ``slices`` (the Service's own slices), sorted.

    Ready is the slice's ``conditions.ready`` (absent means ready); terminating
    endpoints are left out, as upstream's proxies do while others are ready.
    """
    name = service_port_name(service, port)
    if name is None:
        return []
    out: set[Endpoint] = set()
    for s in slices:
        if s.get("addressType") not in (None, "IPv4"):
            continue
        target = next((int(p["port"]) for p in s.get("ports") or []
                       if (p.get("name") or "") == name and (p.get("protocol") or "TCP") == "TCP" and p.get("port")),
                      None)
        if target is None:
            continue
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            ref = ep.get("targetRef") or {}
            for ip in ep.get("addresses") or []:
                out.add(Endpoint(ip, target, ref.get("name") or "", ep.get("nodeName") or ""))
    return sorted(out, key=lambda e: (e.ip, e.port))
