"""What every proxy mode renders: service ports and their endpoints, as kube-proxy sees them.

The change tracker (kmesh.proxy.tracker) turns Services and EndpointSlices
into a ``ProxyState``; each mode (userspace, iptables, ipvs, nftables) only renders
that state and applies it. Nothing here talks to the API or the kernel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from kmesh.api.wellknown import CLUSTER_CIDR, SERVICE_CIDR
from kmesh.proxy import topology

DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds; upstream's sessionAffinityConfig.clientIP.timeoutSeconds default
MASQ_MARK = 0x4000


@dataclass(frozen=True, order=True)
class ServicePortName:
    """One port of one Service: ``ns/svc:port`` (``ns/svc`` when the port is unnamed) and its protocol."""

    namespace: str
    name: str
    port: str = ""
    protocol: str = "TCP"  # TCP | UDP | SCTP

    def __str__(self) -> str:
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port}" if self.port else base

    @property
    def proto(self) -> str:
        """The protocol in lower case, as iptables and chain hashes use it."""
        return self.protocol.lower()


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of a service port, with the EndpointSlice conditions that matter to a proxy."""

    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node: str = ""
    zone: str = ""
    zone_hints: frozenset[str] = frozenset()  # hints.forZones: the zones whose nodes should send traffic here

    @property
    def addr(self) -> str:
        """``ip:port`` (``[ip]:port`` for IPv6)."""
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    """Everything a proxy needs about one service port.

    ``endpoints`` are all endpoints the slices list (ready or not), sorted by
    address; ``cluster_endpoints``/``local_endpoints`` apply upstream's
    selection rules (ready ones; if none is ready, the serving-and-terminating
    ones — the terminating fallback). ``cluster_endpoints`` also applies
    topology-aware routing (kmesh.proxy.topology) for a proxy in ``node_zone``.
    """

    name: ServicePortName
    cluster_ip: str
    port: int
    type: str = "ClusterIP"  # ClusterIP | NodePort | LoadBalancer
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    session_affinity: bool = False
    affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT
    internal_local: bool = False  # internalTrafficPolicy: Local
    external_local: bool = False  # externalTrafficPolicy: Local
    load_balancer_source_ranges: tuple[str, ...] = ()
    health_check_node_port: int = 0
    endpoints: tuple[Endpoint, ...] = ()
    node_zone: str = ""  # the zone of the proxy's own node ("" = unknown); stamped by the change tracker
    trigger_time: float | None = field(default=None, compare=False)  # last-change-trigger-time (unix seconds)

    @property
    def protocol(self) -> str:
        """TCP | UDP | SCTP."""
        return self.name.protocol

    @property
    def has_external(self) -> bool:
        """True when traffic can come from outside (NodePort, external or load-balancer IPs)."""
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)

    def cluster_endpoints(self) -> list[Endpoint]:
        """Endpoints of Cluster traffic policy from this node: ready (those hinted for ``node_zone`` when
        hints apply); else serving+terminating."""
        return topology.cluster_endpoints(self.endpoints, self.node_zone)

    def local_endpoints(self, node: str) -> list[Endpoint]:
        """The usable endpoints on ``node`` (for the Local traffic policies)."""
        return usable([e for e in self.endpoints if e.node == node])

    def internal_endpoints(self, node: str) -> list[Endpoint]:
        """Where traffic from pods on ``node`` to the ClusterIP goes (internalTrafficPolicy)."""
        return self.local_endpoints(node) if self.internal_local else self.cluster_endpoints()

    def external_endpoints(self, node: str) -> list[Endpoint]:
        """Where NodePort/external traffic arriving at ``node`` goes (externalTrafficPolicy)."""
        return self.local_endpoints(node) if self.external_local else self.cluster_endpoints()


_E = TypeVar("_E", bound=Endpoint)  # an Endpoint, or a subclass (kmesh.bench.lb.Backend)


def usable(endpoints: Iterable[_E]) -> list[_E]:
    """Upstream's choice: the ready endpoints, or when none is ready the serving terminating ones."""
    eps = list(endpoints)
    ready = [e for e in eps if e.ready]
    if ready:
        return ready
    return [e for e in eps if e.serving and e.terminating]


@dataclass(frozen=True)
class NodeContext:
    """Where a proxy runs: the node, its addresses and the cluster network (for masquerade decisions)."""

    node: str
    node_ips: tuple[str, ...]
    cluster_cidr: str = CLUSTER_CIDR
    netns: str | None = None  # the namespace to program (None: this process's own)
    masquerade_all: bool = False
    nodeport_addresses: tuple[str, ...] = ()  # --nodeport-addresses CIDRs ("primary" allowed); () = every local IP
    service_cidrs: tuple[str, ...] = (SERVICE_CIDR,)  # --service-cluster-ip-range: where ClusterIPs come from


@dataclass
class ProxyState:
    """The desired state at one sync: every service port by name."""

    services: dict[ServicePortName, ServicePort] = field(default_factory=dict)

    def by_service(self, namespace: str, name: str) -> list[ServicePort]:
        """The ports of one Service."""
        return [sp for k, sp in self.services.items() if (k.namespace, k.name) == (namespace, name)]
