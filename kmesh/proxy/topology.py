"""Topology-aware endpoint filtering: which endpoints traffic of Cluster policy may use on this node.

kube-proxy's rule (pkg/proxy/topology.go, Kubernetes 1.32): the zone hints of
a service port are used only when every ready endpoint carries one, this
node's zone is known, and at least one ready endpoint is hinted for that
zone; then traffic of Cluster policy goes only to the ready endpoints hinted
for this zone. Otherwise nothing is filtered. When no endpoint is ready the
serving terminating ones are used, whatever their hints. The Local traffic
policies ignore hints. Every proxy mode reaches this through
``ServicePort.cluster_endpoints()``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar


class Hinted(Protocol):
    """What the filter reads of an endpoint."""

    @property
    def ready(self) -> bool: ...

    @property
    def serving(self) -> bool: ...

    @property
    def terminating(self) -> bool: ...

    @property
    def zone_hints(self) -> frozenset[str]: ...


_E = TypeVar("_E", bound=Hinted)


def uses_zone_hints(endpoints: Iterable[Hinted], zone: str) -> bool:
    """Whether hints apply here: all ready endpoints hinted, ``zone`` known, one of them hinted for it."""
    if not zone:
        return False
    for_zone = False
    any_ready = False
    for e in endpoints:
        if not e.ready:
            continue
        any_ready = True
        if not e.zone_hints:
            return False
        for_zone = for_zone or zone in e.zone_hints
    return any_ready and for_zone


def cluster_endpoints(endpoints: Iterable[_E], zone: str) -> list[_E]:
    """The endpoints of Cluster traffic policy on a node in ``zone`` ("" = unknown)."""
    eps = list(endpoints)
    topology = uses_zone_hints(eps, zone)
    ready = [e for e in eps if e.ready and (not topology or zone in e.zone_hints)]
    if ready:
        return ready
    return [e for e in eps if e.serving and e.terminating]
