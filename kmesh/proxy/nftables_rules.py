"""kube-proxy's nftables rules as text: the proxy state → ``nft -f`` transactions.

Pure rendering, no kernel access, so names, comments and rule order can be
checked against upstream's nftables proxier (v1.33/1.34). Everything lives in
one table, ``ip kube-proxy``:

- base chains hooked as upstream's (filter prerouting/input/forward/output at
  dstnat-10, filter output after DNAT at dstnat+10, nat prerouting/output at
  dstnat, nat postrouting at srcnat), written with numeric priorities because
  nft 1.0.6 accepts ``dstnat`` only on prerouting;
- verdict maps dispatching on ``ip daddr . meta l4proto . th dport``
  (``service-ips``) and, for addresses in the ``nodeport-ips`` set (or every
  local address when ``--nodeport-addresses`` covers all), on
  ``meta l4proto . th dport`` (``service-nodeports``);
- ``no-endpoint-services`` / ``no-endpoint-nodeports`` sending connections to
  services without endpoints to ``reject-chain`` (or to ``drop`` when only
  the Local traffic policy has none);
- ``firewall-ips`` sending new connections to load-balancer IPs with
  ``loadBalancerSourceRanges`` to ``firewall-<h>``, which drops other sources;
- ``cluster-ips`` and ``cluster-ips-check``: a used ClusterIP on a port no
  Service has is rejected, an address of the service CIDRs no Service holds
  is dropped;
- per service port ``service-<h>`` (cluster endpoints), ``local-<h>`` (this
  node's endpoints), ``external-<h>`` (NodePort / external / load-balancer
  IPs) and ``firewall-<h>``, where ``<h>`` is
  ``<8 chars of base32(sha256(ns/svc/proto/port))>-ns/svc/proto/port``; they
  pick an endpoint with ``numgen random mod N vmap`` (no probabilities);
- per endpoint ``endpoint-<h'>`` (``<h'>`` hashes ``...__ip/port``): hairpin
  masquerade mark, affinity set update, DNAT; ClientIP affinity as one
  dynamic set with a timeout per endpoint (``affinity-<h'>``).

``render_service`` gives one service port's share (``ServiceRules``);
``setup`` the Service-independent part a full sync rewrites; ``transaction``
the one script that takes the table from what is installed to the new
rules — everything on a full sync, only changed services' chains and changed
map/set elements on a partial one, as upstream's partial sync does.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from kmesh.proxy import nodeports
from kmesh.proxy.chainhash import hash16
from kmesh.proxy.nodeports import is_loopback
from kmesh.proxy.model import (
    MASQ_MARK,
    Endpoint,
    NodeContext,
    ProxyState,
    ServicePort,
    ServicePortName,
)

FAMILY, TABLE = "ip", "kube-proxy"
T = f"{FAMILY} {TABLE}"

# Base chains.
FILTER_PREROUTING = "filter-prerouting"
FILTER_INPUT = "filter-input"
FILTER_FORWARD = "filter-forward"
FILTER_OUTPUT = "filter-output"
FILTER_OUTPUT_POST_DNAT = "filter-output-post-dnat"
NAT_PREROUTING = "nat-prerouting"
NAT_OUTPUT = "nat-output"
NAT_POSTROUTING = "nat-postrouting"
# Regular chains that do not depend on Services.
SERVICES = "services"
MASQUERADING = "masquerading"
MARK_MASQ = "mark-for-masquerade"
REJECT_CHAIN = "reject-chain"
SERVICE_ENDPOINTS_CHECK = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK = "nodeport-endpoints-check"
CLUSTER_IPS_CHECK = "cluster-ips-check"
FIREWALL_CHECK = "firewall-check"
# Sets and maps.
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
CLUSTER_IPS = "cluster-ips"
FIREWALL_IPS = "firewall-ips"
NODEPORT_IPS = "nodeport-ips"

DNAT_PRIO, SNAT_PRIO = -100, 100
# (name, type, hook, priority), upstream's nftablesBaseChains.
BASE_CHAINS: tuple[tuple[str, str, str, int], ...] = (
    (FILTER_PREROUTING, "filter", "prerouting", DNAT_PRIO - 10),
    (FILTER_INPUT, "filter", "input", DNAT_PRIO - 10),
    (FILTER_FORWARD, "filter", "forward", DNAT_PRIO - 10),
    (FILTER_OUTPUT, "filter", "output", DNAT_PRIO - 10),
    (FILTER_OUTPUT_POST_DNAT, "filter", "output", DNAT_PRIO + 10),
    (NAT_PREROUTING, "nat", "prerouting", DNAT_PRIO),
    (NAT_OUTPUT, "nat", "output", DNAT_PRIO),
    (NAT_POSTROUTING, "nat", "postrouting", SNAT_PRIO),
)
_NEW = "ct state new"
# (target chain, base chain, match), upstream's nftablesJumpChains, in its order.
JUMP_CHAINS: tuple[tuple[str, str, str], ...] = (
    (NODEPORT_ENDPOINTS_CHECK, FILTER_INPUT, _NEW),
    (SERVICE_ENDPOINTS_CHECK, FILTER_INPUT, _NEW),
    (SERVICE_ENDPOINTS_CHECK, FILTER_FORWARD, _NEW),
    (SERVICE_ENDPOINTS_CHECK, FILTER_OUTPUT, _NEW),
    (FIREWALL_CHECK, FILTER_PREROUTING, _NEW),
    (FIREWALL_CHECK, FILTER_OUTPUT, _NEW),
    (SERVICES, NAT_OUTPUT, ""),
    (SERVICES, NAT_PREROUTING, ""),
    (MASQUERADING, NAT_POSTROUTING, ""),
    (CLUSTER_IPS_CHECK, FILTER_FORWARD, _NEW),
    (CLUSTER_IPS_CHECK, FILTER_OUTPUT_POST_DNAT, _NEW),
)
_V4_KEY = "ipv4_addr . inet_proto . inet_service : verdict"
_PORT_KEY = "inet_proto . inet_service : verdict"
# The sets/maps whose elements follow the Services: name → (kind, type, comment), in upstream's flush order.
CONTAINERS: dict[str, tuple[str, str, str]] = {
    CLUSTER_IPS: ("set", "ipv4_addr", "Active ClusterIPs"),
    SERVICE_IPS: ("map", _V4_KEY, "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
    FIREWALL_IPS: ("map", _V4_KEY, "destinations that are subject to LoadBalancerSourceRanges"),
    NO_ENDPOINT_SERVICES: ("map", _V4_KEY, "vmap to drop or reject packets to services with no endpoints"),
    NO_ENDPOINT_NODEPORTS: ("map", _PORT_KEY, "vmap to drop or reject packets to service nodeports with no endpoints"),
    SERVICE_NODEPORTS: ("map", _PORT_KEY, "NodePort traffic"),
}
CHAIN_BASE_MAX = 200  # upstream's chainNameBaseLengthMax (nftables allows 256, prefixes need room)
NO_LOCALHOST = "ip daddr != 127.0.0.0/8"


def _hash_and_truncate(name: str) -> str:
    """``<8 chars of base32(sha256(name))>-<name>``, cut to 200 characters as upstream does."""
    out = f"{hash16(name)[:8]}-{name}"
    return out if len(out) <= CHAIN_BASE_MAX else out[: CHAIN_BASE_MAX - 3] + "..."


def chain_base(name: ServicePortName) -> str:
    """The per-service-port part of chain names: ``<hash>-ns/svc/proto/port``."""
    return _hash_and_truncate(f"{name.namespace}/{name.name}/{name.proto}/{name.port}")


def endpoint_base(name: ServicePortName, ep: Endpoint) -> str:
    """The per-endpoint part: ``<hash>-ns/svc/proto/port__ip/port`` (``:`` of IPv6 → ``.``)."""
    return _hash_and_truncate(
        f"{name.namespace}/{name.name}/{name.proto}/{name.port}__{ep.ip.replace(':', '.')}/{ep.port}")


def service_chain(name: ServicePortName) -> str:
    """``service-<h>``: picks one of the cluster endpoints."""
    return "service-" + chain_base(name)


def local_chain(name: ServicePortName) -> str:
    """``local-<h>``: picks one of this node's endpoints (Local traffic policies)."""
    return "local-" + chain_base(name)


def external_chain(name: ServicePortName) -> str:
    """``external-<h>``: NodePort, external-IP and load-balancer traffic."""
    return "external-" + chain_base(name)


def firewall_chain(name: ServicePortName) -> str:
    """``firewall-<h>``: drops sources outside the load-balancer source ranges."""
    return "firewall-" + chain_base(name)


def endpoint_chain(name: ServicePortName, ep: Endpoint) -> str:
    """``endpoint-<h>``: DNAT to one endpoint."""
    return "endpoint-" + endpoint_base(name, ep)


def affinity_set(name: ServicePortName, ep: Endpoint) -> str:
    """``affinity-<h>``: the client addresses pinned to one endpoint (ClientIP affinity)."""
    return "affinity-" + endpoint_base(name, ep)


def is_service_chain(chain: str) -> bool:
    """Per-service chains are the ones with a ``/`` in their name (upstream's isServiceChainName)."""
    return "/" in chain


def is_affinity_set(name: str) -> bool:
    return name.startswith("affinity-")


def numgen_rule(chains: list[str]) -> str:
    """Pick one of ``chains`` uniformly: ``numgen random mod N vmap { 0 : goto a, 1 : goto b }``."""
    items = ", ".join(f"{i} : goto {c}" for i, c in enumerate(chains))
    return f"numgen random mod {len(chains)} vmap {{ {items} }}"


def _comment(text: str) -> str:
    return f' comment "{text}"'


def source_ranges(sp: ServicePort) -> list[ipaddress.IPv4Network]:
    """The IPv4 ``loadBalancerSourceRanges``, whitespace trimmed (upstream tolerates padding); others ignored."""
    out: list[ipaddress.IPv4Network] = []
    for raw in sp.load_balancer_source_ranges:
        try:
            net = ipaddress.ip_network(raw.strip(), strict=False)
        except ValueError:
            continue  # the API validates them; a bad one is dropped, as upstream's CIDR parse does
        if isinstance(net, ipaddress.IPv4Network):
            out.append(net)
    return out


@dataclass(frozen=True)
class Element:
    """One set element or map entry: its value (a verdict; "" in a set) and comment."""

    value: str = ""
    comment: str = ""

    def text(self, key: str) -> str:
        """The element as ``add element`` takes it: ``key [comment "c"] [: value]``."""
        out = key + (_comment(self.comment) if self.comment else "")
        return f"{out} : {self.value}" if self.value else out


@dataclass
class ServiceRules:
    """One service port's share of the table: its chains with their rules, affinity sets, set/map elements."""

    chains: dict[str, list[str]] = field(default_factory=dict)
    affinity: dict[str, int] = field(default_factory=dict)  # dynamic set → timeout seconds
    elements: dict[str, dict[str, Element]] = field(default_factory=dict)  # set/map → key → element

    def element(self, container: str, key: str, value: str = "", comment: str = "") -> None:
        self.elements.setdefault(container, {})[key] = Element(value, comment)

    def chain(self, name: str) -> list[str]:
        """The rules of chain ``name``, creating it (empty) if new."""
        return self.chains.setdefault(name, [])


def _by_addr(eps: Iterable[Endpoint]) -> list[Endpoint]:
    return sorted(eps, key=lambda e: e.addr)


def render_service(sp: ServicePort, ctx: NodeContext) -> ServiceRules:
    """One service port's chains, affinity sets and map elements, in upstream's order."""
    out = ServiceRules()
    n = sp.name
    proto, port = n.proto, sp.port
    key = f"{proto} . {port}"
    cluster_eps = _by_addr(sp.cluster_endpoints())
    local_eps = _by_addr(sp.local_endpoints(ctx.node))
    has_endpoints = bool(cluster_eps)
    external_ips, lb_ips = _ipv4(sp.external_ips), _ipv4(sp.load_balancer_ips)  # the other family: not here
    externally = bool(sp.node_port or external_ips or lb_ips)  # upstream's ExternallyAccessible
    svc, loc, ext, fw = service_chain(n), local_chain(n), external_chain(n), firewall_chain(n)
    has_internal = has_endpoints and (bool(local_eps) or not sp.internal_local)
    has_external = has_endpoints and (bool(local_eps) or not sp.external_local)
    internal_chain = loc if sp.internal_local else svc
    external_policy = loc if sp.external_local else svc
    # Upstream's UsesClusterEndpoints / UsesLocalEndpoints: an externally reachable port needs the
    # cluster chain even with externalTrafficPolicy Local (pod and node traffic short-circuits to it).
    uses_cluster = has_endpoints and (not sp.internal_local or externally)
    uses_local = bool(local_eps) and (sp.internal_local or (sp.external_local and externally))
    uses_external = has_endpoints and externally
    ranges = source_ranges(sp)
    uses_fw = bool(lb_ips) and bool(ranges)
    name = str(n)

    # The chains this port uses, created in upstream's order (endpoints, cluster, local, external, firewall).
    reachable = _by_addr({e.addr: e for e in [*(cluster_eps if uses_cluster else []),
                                               *(local_eps if uses_local else [])]}.values())
    for e in reachable:
        out.chain(endpoint_chain(n, e))
    for used, chain in ((uses_cluster, svc), (uses_local, loc), (uses_external, ext), (uses_fw, fw)):
        if used:
            out.chain(chain)

    # No endpoints at all: reject; none for one traffic policy only (Local): drop.
    refuse = f"goto {REJECT_CHAIN}" if not has_endpoints else "drop"
    # Capture the ClusterIP.
    out.element(CLUSTER_IPS, sp.cluster_ip)
    if has_internal:
        out.element(SERVICE_IPS, f"{sp.cluster_ip} . {key}", f"goto {internal_chain}")
    else:
        out.element(NO_ENDPOINT_SERVICES, f"{sp.cluster_ip} . {key}", refuse, name)
    # External IPs.
    for ip in external_ips:
        if has_endpoints:
            out.element(SERVICE_IPS, f"{ip} . {key}", f"goto {ext}")
        if not has_external:
            out.element(NO_ENDPOINT_SERVICES, f"{ip} . {key}", refuse, name)
    # Load-balancer IPs, through firewall-<h> first when source ranges restrict them.
    for ip in lb_ips:
        if has_endpoints:
            out.element(SERVICE_IPS, f"{ip} . {key}", f"goto {ext}")
        if uses_fw:
            out.element(FIREWALL_IPS, f"{ip} . {key}", f"goto {fw}")
    if not has_external:
        for ip in lb_ips:
            out.element(NO_ENDPOINT_SERVICES, f"{ip} . {key}", refuse, name)
    # The NodePort (not subject to the source ranges, as upstream).
    if sp.node_port:
        if has_endpoints:
            out.element(SERVICE_NODEPORTS, f"{proto} . {sp.node_port}", f"goto {ext}")
        if not has_external:
            out.element(NO_ENDPOINT_NODEPORTS, f"{proto} . {sp.node_port}", refuse, name)

    # Internal traffic: masquerade what does not come from a pod (all of it with masquerade-all).
    if has_internal:
        masq = f"ip daddr {sp.cluster_ip} {proto} dport {port}"
        if ctx.masquerade_all:
            out.chain(internal_chain).append(f"{masq} jump {MARK_MASQ}")
        elif ctx.cluster_cidr:
            out.chain(internal_chain).append(f"{masq} ip saddr != {ctx.cluster_cidr} jump {MARK_MASQ}")
    # External traffic.
    if uses_external:
        rules = out.chain(ext)
        if not sp.external_local:
            rules.append(f"jump {MARK_MASQ}")
        else:
            if ctx.cluster_cidr:
                rules.append(f"ip saddr {ctx.cluster_cidr} goto {svc}" + _comment("short-circuit pod traffic"))
            rules.append(f"fib saddr type local jump {MARK_MASQ}" + _comment("masquerade local traffic"))
            rules.append(f"fib saddr type local goto {svc}" + _comment("short-circuit local traffic"))
        if has_external:
            rules.append(f"goto {external_policy}")
    # Load-balancer source ranges; a range holding the node's IP also admits the LB IPs themselves
    # (a VIP-style balancer loops the node's own requests back with the VIP as source).
    if uses_fw:
        sources = [str(r) for r in ranges]
        node_ip = _primary_ipv4(ctx.node_ips)
        if node_ip is not None and any(node_ip in r for r in ranges):
            sources += lb_ips
        out.chain(fw).append(f"ip saddr != {{ {', '.join(sources)} }} drop")
    if sp.session_affinity:
        for e in reachable:
            out.affinity[affinity_set(n, e)] = sp.affinity_timeout
    for used, chain, eps in ((uses_cluster, svc, cluster_eps), (uses_local, loc, local_eps)):
        if used:
            rules = out.chain(chain)
            if sp.session_affinity:
                rules += [f"ip saddr @{affinity_set(n, e)} goto {endpoint_chain(n, e)}" for e in eps]
            rules.append(numgen_rule([endpoint_chain(n, e) for e in eps]))
    for e in reachable:
        rules = out.chain(endpoint_chain(n, e))
        rules.append(f"ip saddr {e.ip} jump {MARK_MASQ}")  # hairpin: an endpoint reaching itself
        if sp.session_affinity:
            rules.append(f"update @{affinity_set(n, e)} {{ ip saddr }}")
        rules.append(f"meta l4proto {proto} dnat to {e.ip}:{e.port}")
    return out


def _ipv4(ips: Iterable[str]) -> list[str]:
    return [ip for ip in ips if ":" not in ip]


def _primary_ipv4(ips: Sequence[str]) -> ipaddress.IPv4Address | None:
    """The node's IPv4 address (upstream's single nodeIP per family)."""
    for ip in ips:
        addr = ipaddress.ip_address(ip)
        if isinstance(addr, ipaddress.IPv4Address):
            return addr
    return None


def nodeport_ips(ctx: NodeContext, local_ips: Iterable[str] = ()) -> list[str] | None:
    """The addresses for the ``nodeport-ips`` set; None when NodePorts open on every local address.

    ``--nodeport-addresses`` defaults to ``primary`` (the node's IPs) in this
    mode; IPv6 and loopback addresses are left out (upstream does not support
    localhost NodePorts in nftables mode)."""
    chosen = nodeports.select(nodeports.effective(ctx.nodeport_addresses, "nftables"), ctx.node_ips, local_ips)
    if chosen is nodeports.ALL:
        return None
    return [ip for ip in chosen if ipaddress.ip_address(ip).version == 4 and not is_loopback(ip)]


def setup(ctx: NodeContext, nodeports_on: list[str] | None, *, recreate_base: bool = False,
          mark: int = MASQ_MARK) -> list[str]:
    """The Service-independent part of the table, as a full sync (re)writes it (upstream's setupNFTables).

    ``nodeports_on``: the ``nodeport-ips`` addresses, None for every local
    address. ``recreate_base`` deletes the base chains first (upstream does so
    once per process, so a changed hook or priority can be applied). Ends by
    flushing the Service-dependent sets and maps."""
    m = f"{mark:#x}"
    lines = [f'add table {T} {{ comment "rules for kube-proxy" ; }}']
    if recreate_base:
        for c, *_ in BASE_CHAINS:
            lines += [f"add chain {T} {c}", f"delete chain {T} {c}"]
    for c, ty, hook, prio in BASE_CHAINS:
        lines += [f"add chain {T} {c} {{ type {ty} hook {hook} priority {prio} ; }}", f"flush chain {T} {c}"]
    created: set[str] = set()

    def ensure(chain: str) -> None:
        if chain not in created:
            created.add(chain)
            lines.extend([f"add chain {T} {chain}", f"flush chain {T} {chain}"])

    for dst, src, match in JUMP_CHAINS:
        ensure(dst)
        lines.append(f"add rule {T} {src} {match + ' ' if match else ''}jump {dst}")
    for chain in (SERVICES, CLUSTER_IPS_CHECK, MASQUERADING, MARK_MASQ):
        ensure(chain)
    lines += [
        f"add rule {T} {MARK_MASQ} mark set mark or {m}",
        f"add rule {T} {MASQUERADING} mark and {m} == 0 return",
        f"add rule {T} {MASQUERADING} mark set mark xor {m}",
        f"add rule {T} {MASQUERADING} masquerade fully-random",
    ]
    kind, ty, comment = CONTAINERS[CLUSTER_IPS]
    lines.append(f'add {kind} {T} {CLUSTER_IPS} {{ type {ty} ; comment "{comment}" ; }}')
    lines.append(f"add rule {T} {CLUSTER_IPS_CHECK} ip daddr @{CLUSTER_IPS} reject"
                 + _comment("Reject traffic to invalid ports of ClusterIPs"))
    cidrs = [c for c in ctx.service_cidrs if ipaddress.ip_network(c, strict=False).version == 4]
    if cidrs:
        lines.append(f"add rule {T} {CLUSTER_IPS_CHECK} ip daddr {{ {', '.join(cidrs)} }} drop"
                     + _comment("Drop traffic to unallocated ClusterIPs"))
    lines.append(f'add set {T} {NODEPORT_IPS} {{ type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }}')
    if nodeports_on is None:
        lines.append(f"delete set {T} {NODEPORT_IPS}")
    else:
        lines.append(f"flush set {T} {NODEPORT_IPS}")
        lines += [f"add element {T} {NODEPORT_IPS} {{ {ip} }}" for ip in nodeports_on]
    for name in (NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS):
        kind, ty, comment = CONTAINERS[name]
        lines.append(f'add {kind} {T} {name} {{ type {ty} ; comment "{comment}" ; }}')
    lines += [
        f'add chain {T} {REJECT_CHAIN} {{ comment "helper for @{NO_ENDPOINT_SERVICES} / @{NO_ENDPOINT_NODEPORTS}" ; }}',
        f"flush chain {T} {REJECT_CHAIN}",
        f"add rule {T} {REJECT_CHAIN} reject",
        f"add rule {T} {SERVICE_ENDPOINTS_CHECK} ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}",
    ]
    on_nodeport_ips = NO_LOCALHOST if nodeports_on is None else f"ip daddr @{NODEPORT_IPS}"
    lines.append(f"add rule {T} {NODEPORT_ENDPOINTS_CHECK} {on_nodeport_ips} "
                 f"meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}")
    kind, ty, comment = CONTAINERS[FIREWALL_IPS]
    lines += [
        f'add {kind} {T} {FIREWALL_IPS} {{ type {ty} ; comment "{comment}" ; }}',
        f"add rule {T} {FIREWALL_CHECK} ip daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}",
    ]
    for name in (SERVICE_IPS, SERVICE_NODEPORTS):
        kind, ty, comment = CONTAINERS[name]
        lines.append(f'add {kind} {T} {name} {{ type {ty} ; comment "{comment}" ; }}')
    lines.append(f"add rule {T} {SERVICES} ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}")
    on_local = f"fib daddr type local {NO_LOCALHOST}" if nodeports_on is None else f"ip daddr @{NODEPORT_IPS}"
    lines.append(f"add rule {T} {SERVICES} {on_local} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}")
    lines += [f"flush {CONTAINERS[name][0]} {T} {name}" for name in CONTAINERS]
    return lines


def merged_elements(rules: Iterable[ServiceRules]) -> dict[str, dict[str, Element]]:
    """Every service port's elements per set/map (a key two ports share: the later one wins)."""
    out: dict[str, dict[str, Element]] = {name: {} for name in CONTAINERS}
    for r in rules:
        for container, elems in r.elements.items():
            out[container].update(elems)
    return out


@dataclass
class Installed:
    """What one proxy last applied successfully: the base a partial sync changes."""

    ports: dict[ServicePortName, ServicePort] = field(default_factory=dict)
    rules: dict[ServicePortName, ServiceRules] = field(default_factory=dict)
    elements: dict[str, dict[str, Element]] = field(default_factory=dict)
    timeouts: dict[str, int] = field(default_factory=dict)  # affinity set → the timeout it was created with


@dataclass
class Existing:
    """What an installed table holds (from ``nft list``): chain names, set/map names, affinity set timeouts."""

    chains: set[str] = field(default_factory=set)
    sets: set[str] = field(default_factory=set)  # sets and maps
    timeouts: dict[str, int] = field(default_factory=dict)  # set → timeout seconds (sets with one)

    @property
    def empty(self) -> bool:
        return not self.chains and not self.sets


_DECL = re.compile(r"^\s*(chain|set|map)\s+(\S+)\s*\{", re.MULTILINE)


def parse_listing(text: str) -> Existing:
    """The chains and sets/maps named in ``nft list table ip kube-proxy`` output."""
    out = Existing()
    for kind, name in _DECL.findall(text):
        (out.chains if kind == "chain" else out.sets).add(name)
    return out


def parse_json_listing(chains_json: str, sets_json: str) -> Existing:
    """This table's chains and sets from ``nft -j list chains ip`` and ``nft -j list sets ip``."""
    out = Existing()
    for text, kind in ((chains_json, "chain"), (sets_json, "set")):
        for obj in (json.loads(text) if text.strip() else {}).get("nftables", []):
            item = obj.get(kind)
            if not item or item.get("table") != TABLE or item.get("family") != FAMILY:
                continue
            if kind == "chain":
                out.chains.add(item["name"])
            else:
                out.sets.add(item["name"])
                if isinstance(item.get("timeout"), int):
                    out.timeouts[item["name"]] = item["timeout"]
    return out


def _set_decl(name: str, timeout: int) -> str:
    return f"add set {T} {name} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ; }}"


@dataclass
class Transaction:
    """One ``nft -f`` script and what will be installed once it succeeds."""

    text: str
    after: Installed


def transaction(ports: Mapping[ServicePortName, ServicePort], rules: Mapping[ServicePortName, ServiceRules],
                changed: Iterable[ServicePortName], before: Installed, *, setup_lines: list[str] | None = None,
                existing: Existing | None = None) -> Transaction:
    """The script taking the table from ``before`` (or, on a full sync, from ``existing``) to ``rules``.

    Full sync (``setup_lines`` given): the setup, then every service port's
    chains flushed and rewritten and every element added; chains and affinity
    sets in ``existing`` that no port uses are deleted. Partial sync: only the
    ``changed`` ports' chains are flushed and rewritten, only elements that
    differ from ``before`` are deleted or added, and the chains and affinity
    sets ``before`` had and ``rules`` has not are deleted. Affinity sets keep
    their entries unless their timeout changed (then they are recreated)."""
    full = setup_lines is not None
    lines = list(setup_lines or [])
    if full:
        existing = existing or Existing()
        installed_chains = {c for c in existing.chains if is_service_chain(c)}
        installed_sets = {s: existing.timeouts.get(s, -1) for s in existing.sets if is_affinity_set(s)}
        installed_elements: dict[str, dict[str, Element]] = {}
        rewrite = list(rules)
    else:
        installed_chains = {c for r in before.rules.values() for c in r.chains}
        installed_sets = dict(before.timeouts)
        installed_elements = before.elements
        dirty = set(changed)
        rewrite = [n for n in rules if n in dirty]
    active_chains = {c for r in rules.values() for c in r.chains}
    active_sets = {s: t for r in rules.values() for s, t in r.affinity.items()}
    stale_chains = sorted(installed_chains - active_chains)
    stale_sets = sorted(set(installed_sets) - set(active_sets))

    for n in rewrite:
        for chain in rules[n].chains:
            lines += [f"add chain {T} {chain}", f"flush chain {T} {chain}"]
    lines += [f"flush chain {T} {c}" for c in stale_chains]
    for n in rewrite:
        for s, timeout in rules[n].affinity.items():
            if s in installed_sets and installed_sets[s] != timeout:
                lines.append(f"delete set {T} {s}")
            lines.append(_set_decl(s, timeout))
    for n in rewrite:
        for chain, chain_rules in rules[n].chains.items():
            lines += [f"add rule {T} {chain} {r}" for r in chain_rules]
    desired = merged_elements(rules.values())
    adds: list[str] = []
    for container in CONTAINERS:
        want, have = desired[container], installed_elements.get(container, {})
        for key, old in have.items():
            if want.get(key) != old:
                lines.append(f"delete element {T} {container} {{ {key} }}")
        adds += [f"add element {T} {container} {{ {e.text(key)} }}" for key, e in want.items() if have.get(key) != e]
    lines += adds
    lines += [f"delete chain {T} {c}" for c in stale_chains]
    lines += [f"delete set {T} {s}" for s in stale_sets]
    after = Installed(ports=dict(ports), rules=dict(rules), elements=desired, timeouts=active_sets)
    return Transaction("\n".join(lines) + "\n" if lines else "", after)


@dataclass
class Ruleset:
    """Every service port's rules together (for reading and tests): chains, affinity sets, elements as text."""

    services: dict[ServicePortName, ServiceRules] = field(default_factory=dict)

    @property
    def chains(self) -> dict[str, list[str]]:
        return {c: r for s in self.services.values() for c, r in s.chains.items()}

    @property
    def affinity(self) -> dict[str, int]:
        return {k: t for s in self.services.values() for k, t in s.affinity.items()}

    @property
    def elements(self) -> dict[str, list[str]]:
        """Set/map → its elements' texts (``key [comment "c"] [: verdict]``); empty ones left out."""
        return {c: [e.text(k) for k, e in elems.items()]
                for c, elems in merged_elements(self.services.values()).items() if elems}


def ipv4_ports(state: ProxyState) -> dict[ServicePortName, ServicePort]:
    """The service ports this IPv4-only table serves, sorted by name (an IPv6 ClusterIP is not built)."""
    return {n: state.services[n] for n in sorted(state.services, key=str) if ":" not in state.services[n].cluster_ip}


def render(state: ProxyState, ctx: NodeContext) -> Ruleset:
    """Every IPv4 service port's rules for ``state`` on the node ``ctx`` describes."""
    return Ruleset({n: render_service(sp, ctx) for n, sp in ipv4_ports(state).items()})


def full_script(state: ProxyState, ctx: NodeContext, local_ips: Iterable[str] = (),
                existing: Existing | None = None) -> str:
    """The script of a full sync of ``state`` over ``existing`` (None: an empty namespace) on a node
    holding ``local_ips`` (what ``--nodeport-addresses`` CIDRs are matched against)."""
    ports = ipv4_ports(state)
    rules = {n: render_service(sp, ctx) for n, sp in ports.items()}
    return transaction(ports, rules, rules, Installed(), setup_lines=setup(ctx, nodeport_ips(ctx, local_ips)),
                       existing=existing).text
