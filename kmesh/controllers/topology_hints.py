"""Topology hints on EndpointSlice endpoints, as upstream's EndpointSlice controller sets them.

Two ways a Service asks for hints (Kubernetes 1.32):

- ``spec.trafficDistribution: PreferClose``: every ready endpoint is hinted
  for its own zone (upstream's trafficdist package). An endpoint without a
  zone gets no hint, which makes kube-proxy ignore all hints of the Service.
- the annotation ``service.kubernetes.io/topology-mode: Auto`` (or the
  deprecated ``service.kubernetes.io/topology-aware-hints: auto``): ready
  endpoints are shared out among zones in proportion to the allocatable CPU
  of the zones' nodes (upstream's topologycache). Hints are removed when a
  safeguard fails: some node lacks a zone or allocatable CPU, fewer than two
  zones, fewer ready endpoints than zones, an endpoint without a zone, or a
  zone that would get less than its share divided by 1.2 (the 20 % overload
  threshold). The annotation wins over ``trafficDistribution``.

Any other Service has its hints removed. Nothing here talks to the API: the
functions rewrite endpoint dicts in place and say why hints were dropped.
Unlike upstream, which keeps the hints of slices it does not otherwise touch
while they stay within bounds, the allocation is recomputed from the whole
Service every time; it is deterministic (zones in name order, endpoints in the
order given), so an unchanged Service gets unchanged hints.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kmesh.api.meta import parse_quantity
from kmesh.api.obj import Obj
from kmesh.api.wellknown import ZONE_LABEL
from kmesh.controllers import podutil
from kmesh.controllers.scheduler import node_ready


TOPOLOGY_MODE_ANNOTATION = "service.kubernetes.io/topology-mode"
DEPRECATED_HINTS_ANNOTATION = "service.kubernetes.io/topology-aware-hints"
PREFER_CLOSE = "PreferClose"
OVERLOAD_THRESHOLD = 0.2  # the most extra load (20 %) any zone's endpoints may be expected to take
EXCLUDED_NODE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")

# Why hints were removed (the messages of upstream's TopologyAwareHintsDisabled events, reworded).
INSUFFICIENT_NODE_INFO = "insufficient node information: a node has no zone label or no allocatable CPU"
ONE_ZONE_ONLY = "ready nodes are in one zone only"
TOO_FEW_ENDPOINTS = "fewer ready endpoints than zones"
OVERLOADED = "no allocation keeps every zone under the overload threshold"
ENDPOINT_WITHOUT_ZONE = "an endpoint has no zone"
NO_HINTS_ALLOCATED = "no hints allocated for any zone"


def auto_hints(svc: Obj) -> bool:
    """The Service asks for proportional hints by annotation (the deprecated one is read first, as upstream)."""
    ann = podutil.md(svc).get("annotations") or {}
    value = ann.get(DEPRECATED_HINTS_ANNOTATION)
    if value is None:
        value = ann.get(TOPOLOGY_MODE_ANNOTATION)
    return value in ("Auto", "auto")


def prefer_close(svc: Obj) -> bool:
    """The Service asks for same-zone hints through ``spec.trafficDistribution`` (and not by annotation)."""
    return (svc.get("spec") or {}).get("trafficDistribution") == PREFER_CLOSE and not auto_hints(svc)


def _ready(ep: Obj) -> bool:
    return (ep.get("conditions") or {}).get("ready") is True


def _hint(ep: Obj, zone: str) -> None:
    ep["hints"] = {"forZones": [{"name": zone}]}


def clear_hints(endpoints: Iterable[Obj]) -> None:
    """Remove every hint."""
    for ep in endpoints:
        ep.pop("hints", None)


def prefer_close_hints(endpoints: Iterable[Obj]) -> None:
    """Hint each ready endpoint for its own zone; others (not ready, no zone) get none."""
    for ep in endpoints:
        if _ready(ep) and ep.get("zone"):
            _hint(ep, ep["zone"])
        else:
            ep.pop("hints", None)


@dataclass(frozen=True)
class ZoneShares:
    """Each zone's share of the allocatable CPU of the ready nodes; ``ratios`` None when not usable."""

    ratios: dict[str, float] | None
    reason: str = ""


def zone_shares(nodes: Iterable[Obj]) -> ZoneShares:
    """Upstream's SetNodes: ready nodes without a control-plane label, grouped by zone and weighted by CPU.

    One such node without a zone label or with zero allocatable CPU makes the
    information insufficient; so do fewer than two zones."""
    cpu: dict[str, Decimal] = {}
    for node in nodes:
        labels = podutil.labels(node)
        if any(k in labels for k in EXCLUDED_NODE_LABELS) or not node_ready(node):
            continue
        zone = labels.get(ZONE_LABEL) or ""
        alloc = ((node.get("status") or {}).get("allocatable") or {}).get("cpu")
        n = parse_quantity(alloc) if alloc is not None else None
        if not zone or n is None or n <= 0:
            return ZoneShares(None, INSUFFICIENT_NODE_INFO)
        cpu[zone] = cpu.get(zone, Decimal(0)) + n
    total = sum(cpu.values(), Decimal(0))
    if not cpu or total <= 0:
        return ZoneShares(None, INSUFFICIENT_NODE_INFO)
    if len(cpu) < 2:
        return ZoneShares(None, ONE_ZONE_ONLY)
    return ZoneShares({z: float(c / total) for z, c in cpu.items()})


@dataclass(frozen=True)
class Allocation:
    """How many endpoints a zone should get: ``desired`` (its CPU share), at least ``minimum``, at most ``maximum``."""

    minimum: int
    maximum: int
    desired: float


def allocations(ratios: dict[str, float], endpoints: int) -> tuple[dict[str, Allocation] | None, str]:
    """Upstream's getAllocations: per zone, the share of ``endpoints`` and its overload-bounded minimum.

    None (with the reason) when there are fewer endpoints than zones, or when the
    minimums, each the share divided by 1 + OVERLOAD_THRESHOLD and rounded up,
    add up to more than there are endpoints."""
    if len(ratios) > endpoints:
        return None, f"{TOO_FEW_ENDPOINTS} ({endpoints} endpoints, {len(ratios)} zones)"
    mins: dict[str, tuple[int, float]] = {}
    for zone in sorted(ratios):
        desired = ratios[zone] * endpoints
        minimum = math.ceil(desired / (1 + OVERLOAD_THRESHOLD))
        mins[zone] = (minimum, max(desired, float(minimum)))
    spare = endpoints - sum(m for m, _ in mins.values())
    if spare < 0:
        return None, f"{OVERLOADED} ({endpoints} endpoints, {len(ratios)} zones)"
    return {z: Allocation(m, m + spare, d) for z, (m, d) in mins.items()}, ""


def _most(values: dict[str, float]) -> tuple[str, float]:
    """The zone with the largest positive value (the first by name on ties), or ("", 0)."""
    best, num = "", 0.0
    for zone in sorted(values):
        if values[zone] > num:
            best, num = zone, values[zone]
    return best, num


def giving_and_receiving(allocs: dict[str, Allocation],
                         hinted: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """How many endpoints each zone gives away and each receives, to move from ``hinted`` towards ``desired``.

    Whole endpoints move from the zone with the largest surplus to the one with
    the largest deficit while both are at least half an endpoint and one of them
    is at least a whole one (upstream's rounding)."""
    give_f: dict[str, float] = {}
    take_f: dict[str, float] = {}
    for zone, a in allocs.items():
        have = float(hinted.get(zone, 0))
        if have > a.desired:
            give_f[zone] = have - a.desired
        elif have < a.desired:
            take_f[zone] = a.desired - have
    give: dict[str, int] = {}
    take: dict[str, int] = {}
    while True:
        gz, gn = _most(give_f)
        tz, tn = _most(take_f)
        if not gz or not tz or (gn < 1.0 and tn < 1.0) or gn < 0.5 or tn < 0.5:
            break
        give[gz] = give.get(gz, 0) + 1
        give_f[gz] -= 1
        take[tz] = take.get(tz, 0) + 1
        take_f[tz] -= 1
    return give, take


def proportional_hints(endpoints: list[Obj], ratios: dict[str, float] | None, reason: str = "") -> str:
    """Upstream's AddHints over one Service's endpoints; "" on success, else why all hints were removed.

    Every ready endpoint starts hinted for its own zone; then endpoints of zones
    above their share are re-hinted, in order, for zones below theirs."""
    if ratios is None:
        clear_hints(endpoints)
        return reason or INSUFFICIENT_NODE_INFO
    ready = [ep for ep in endpoints if _ready(ep)]
    allocs, why = allocations(ratios, len(ready))
    if allocs is None:
        clear_hints(endpoints)
        return why
    if any(not ep.get("zone") for ep in ready):
        clear_hints(endpoints)
        return ENDPOINT_WITHOUT_ZONE
    hinted: dict[str, int] = {}
    for ep in endpoints:
        if not _ready(ep):
            ep.pop("hints", None)
            continue
        _hint(ep, ep["zone"])
        hinted[ep["zone"]] = hinted.get(ep["zone"], 0) + 1
    give, take = giving_and_receiving(allocs, hinted)
    for ep in ready:
        if not give or not take:
            break
        src = ep["zone"]
        if give.get(src, 0) <= 0:
            continue
        dst = next(z for z in sorted(take) if take[z] > 0)
        _hint(ep, dst)
        for counts, zone in ((give, src), (take, dst)):
            counts[zone] -= 1
            if counts[zone] == 0:
                del counts[zone]
        hinted[dst] = hinted.get(dst, 0) + 1
        hinted[src] -= 1
    if not any(hinted.values()):
        clear_hints(endpoints)
        return NO_HINTS_ALLOCATED
    return ""


def apply_hints(svc: Obj, endpoints: list[Obj], nodes: Iterable[Obj]) -> str:
    """Set or remove the hints of a Service's endpoints (all its slices' endpoints, in order).

    Returns "" when the Service's hints are as asked (or it asks for none),
    else why proportional hints were removed."""
    if auto_hints(svc):
        shares = zone_shares(nodes)
        return proportional_hints(endpoints, shares.ratios, shares.reason)
    if prefer_close(svc):
        prefer_close_hints(endpoints)
    else:
        clear_hints(endpoints)
    return ""


def topology_fingerprint(node: Obj | None) -> tuple[Any, ...]:
    """What of a Node matters to proportional hints: a change elsewhere does not requeue Services."""
    if node is None:
        return ()
    labels = podutil.labels(node)
    return (
        labels.get(ZONE_LABEL), tuple(k for k in EXCLUDED_NODE_LABELS if k in labels), node_ready(node),
        ((node.get("status") or {}).get("allocatable") or {}).get("cpu"),
    )
