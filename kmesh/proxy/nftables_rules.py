"""kube-proxy's nftables rules as text: the proxy state → an ``nft -f`` script.

Pure rendering, no kernel access, so names and rules can be checked against
upstream's nftables proxier. Everything lives in one table, ``ip kube-proxy``:

- base chains hooked as upstream's (filter input/forward/output at
  dstnat-10 and output after DNAT at dstnat+10; nat prerouting/output at
  dstnat; nat postrouting at srcnat), written with numeric priorities because
  nft 1.0.6 accepts ``dstnat`` only on prerouting;
- verdict maps dispatching on ``ip daddr . meta l4proto . th dport``
  (``service-ips``) and ``meta l4proto . th dport`` (``service-nodeports``);
- ``no-endpoint-services`` / ``no-endpoint-nodeports`` maps sending
  connections to services without endpoints to ``reject-chain`` (or to
  ``drop`` when only the Local traffic policy has none);
- per service port ``service-<h>`` (cluster endpoints), ``local-<h>``
  (this node's endpoints, for the Local policies), ``external-<h>``
  (NodePort / external / load-balancer IPs), where ``<h>`` is
  ``<8 chars of base32(sha256(ns/svc/proto/port))>-ns/svc/proto/port``;
  they pick an endpoint with ``numgen random mod N vmap`` (no probabilities);
- per endpoint ``endpoint-<h'>`` (``<h'>`` hashes ``...__ip/port``): hairpin
  masquerade mark, affinity set update, DNAT;
- ClientIP affinity as one dynamic set with a timeout per endpoint
  (``affinity-<h'>``), checked before the ``numgen``.

``Ruleset`` is the rendered content; ``script`` turns it into one
transaction that makes an existing table (as ``parse_listing`` read it) equal
to it: flush all rules and map elements, delete chains and sets no longer
rendered, then add everything back. Affinity sets are kept (their entries
survive a sync) unless their timeout changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from kmesh.proxy.iptables_rules import hash16
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

SERVICES = "services"
NODEPORTS = "nodeports"
MASQUERADING = "masquerading"
MARK_MASQ = "mark-for-masquerade"
REJECT_CHAIN = "reject-chain"
SERVICE_ENDPOINTS_CHECK = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK = "nodeport-endpoints-check"
CLUSTER_IPS_CHECK = "cluster-ips-check"

SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
CLUSTER_IPS = "cluster-ips"

DNAT_PRIO, SNAT_PRIO = -100, 100
# (name, type, hook, priority) as upstream's base chains (less filter-prerouting: no LB firewall here).
BASE_CHAINS: tuple[tuple[str, str, str, int], ...] = (
    ("filter-input", "filter", "input", DNAT_PRIO - 10),
    ("filter-forward", "filter", "forward", DNAT_PRIO - 10),
    ("filter-output", "filter", "output", DNAT_PRIO - 10),
    ("filter-output-post-dnat", "filter", "output", DNAT_PRIO + 10),
    ("nat-prerouting", "nat", "prerouting", DNAT_PRIO),
    ("nat-output", "nat", "output", DNAT_PRIO),
    ("nat-postrouting", "nat", "postrouting", SNAT_PRIO),
)
# Maps (key type : verdict) and plain sets whose elements are rewritten on every sync.
MAPS: dict[str, str] = {
    SERVICE_IPS: "ipv4_addr . inet_proto . inet_service : verdict",
    SERVICE_NODEPORTS: "inet_proto . inet_service : verdict",
    NO_ENDPOINT_SERVICES: "ipv4_addr . inet_proto . inet_service : verdict",
    NO_ENDPOINT_NODEPORTS: "inet_proto . inet_service : verdict",
}
SETS: dict[str, str] = {CLUSTER_IPS: "ipv4_addr"}
CHAIN_BASE_MAX = 200  # upstream's chainNameBaseLengthMax (nftables allows 256, prefixes need room)
_NEW = "ct state new"


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


def endpoint_chain(name: ServicePortName, ep: Endpoint) -> str:
    """``endpoint-<h>``: DNAT to one endpoint."""
    return "endpoint-" + endpoint_base(name, ep)


def affinity_set(name: ServicePortName, ep: Endpoint) -> str:
    """``affinity-<h>``: the client addresses pinned to one endpoint (ClientIP affinity)."""
    return "affinity-" + endpoint_base(name, ep)


def numgen_rule(chains: list[str]) -> str:
    """Pick one of ``chains`` uniformly: ``numgen random mod N vmap { 0 : goto a, 1 : goto b }``."""
    items = ", ".join(f"{i} : goto {c}" for i, c in enumerate(chains))
    return f"numgen random mod {len(chains)} vmap {{ {items} }}"


@dataclass
class Ruleset:
    """The rendered content of the table: regular chains with their rules, affinity sets, elements."""

    chains: dict[str, list[str]] = field(default_factory=dict)  # every non-base chain → its rules
    base: dict[str, list[str]] = field(default_factory=dict)  # base chain → its rules
    affinity: dict[str, int] = field(default_factory=dict)  # dynamic set → timeout seconds
    elements: dict[str, list[str]] = field(default_factory=dict)  # map/set → element texts

    def element(self, target: str, text: str) -> None:
        """Add one element to map or set ``target``."""
        self.elements.setdefault(target, []).append(text)


def _by_addr(eps: Iterable[Endpoint]) -> list[Endpoint]:
    return sorted(eps, key=lambda e: e.addr)


def constant_rules(ctx: NodeContext, mark: int = MASQ_MARK) -> Ruleset:
    """The chains that do not depend on Services (base chains' jumps, masquerading, checks)."""
    m = f"{mark:#x}"
    rs = Ruleset()
    rs.base = {
        "filter-input": [f"{_NEW} jump {NODEPORT_ENDPOINTS_CHECK}", f"{_NEW} jump {SERVICE_ENDPOINTS_CHECK}"],
        "filter-forward": [f"{_NEW} jump {SERVICE_ENDPOINTS_CHECK}", f"{_NEW} jump {CLUSTER_IPS_CHECK}"],
        "filter-output": [f"{_NEW} jump {SERVICE_ENDPOINTS_CHECK}"],
        "filter-output-post-dnat": [f"{_NEW} jump {CLUSTER_IPS_CHECK}"],
        "nat-prerouting": [f"jump {SERVICES}"],
        "nat-output": [f"jump {SERVICES}"],
        "nat-postrouting": [f"jump {MASQUERADING}"],
    }
    rs.chains = {
        SERVICES: [
            f"ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}",
            f"fib daddr type local ip daddr != 127.0.0.0/8 jump {NODEPORTS}",
        ],
        NODEPORTS: [f"meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"],
        MASQUERADING: [
            f"meta mark & {m} == 0 return",
            f"meta mark set meta mark ^ {m}",
            "masquerade fully-random",
        ],
        MARK_MASQ: [f"meta mark set meta mark | {m}"],
        REJECT_CHAIN: ["reject"],
        SERVICE_ENDPOINTS_CHECK: [f"ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"],
        NODEPORT_ENDPOINTS_CHECK: [
            f"fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"],
        CLUSTER_IPS_CHECK: [f"ip daddr @{CLUSTER_IPS} reject"],  # a ClusterIP on a port it does not serve
    }
    return rs


def render_service(rs: Ruleset, sp: ServicePort, ctx: NodeContext) -> None:
    """Add one service port's map elements, chains and affinity sets to ``rs``."""
    n = sp.name
    proto = n.proto
    key = f"{proto} . {sp.port}"
    cluster_eps = _by_addr(sp.cluster_endpoints())
    local_eps = _by_addr(sp.local_endpoints(ctx.node))
    external = sp.has_external
    ext_local = sp.external_local and external
    svc, loc, ext = service_chain(n), local_chain(n), external_chain(n)
    internal_target, internal_eps = (loc, local_eps) if sp.internal_local else (svc, cluster_eps)
    external_eps = local_eps if ext_local else cluster_eps
    ext_ips = [*sp.external_ips, *sp.load_balancer_ips]

    if sp.cluster_ip and sp.cluster_ip != "None":
        rs.element(CLUSTER_IPS, sp.cluster_ip)
    if not cluster_eps:  # no usable endpoint at all: refuse connections
        for ip in (sp.cluster_ip, *ext_ips):
            rs.element(NO_ENDPOINT_SERVICES, f"{ip} . {key} : goto {REJECT_CHAIN}")
        if sp.node_port:
            rs.element(NO_ENDPOINT_NODEPORTS, f"{proto} . {sp.node_port} : goto {REJECT_CHAIN}")
        return
    # Capture: cluster IP → internal chain; external addresses and the NodePort → external chain.
    if internal_eps:
        rs.element(SERVICE_IPS, f"{sp.cluster_ip} . {key} : goto {internal_target}")
    else:
        rs.element(NO_ENDPOINT_SERVICES, f"{sp.cluster_ip} . {key} : drop")
    if external:
        if external_eps:
            for ip in ext_ips:
                rs.element(SERVICE_IPS, f"{ip} . {key} : goto {ext}")
            if sp.node_port:
                rs.element(SERVICE_NODEPORTS, f"{proto} . {sp.node_port} : goto {ext}")
        else:
            for ip in ext_ips:
                rs.element(NO_ENDPOINT_SERVICES, f"{ip} . {key} : drop")
            if sp.node_port:
                rs.element(NO_ENDPOINT_NODEPORTS, f"{proto} . {sp.node_port} : drop")

    used: dict[str, list[Endpoint]] = {}
    if not sp.internal_local or (external and not ext_local) or (ext_local and external_eps):
        used[svc] = cluster_eps  # ext_local sends pod and node-local traffic to the cluster chain too
    if local_eps and (sp.internal_local or ext_local):
        used[loc] = local_eps
    # Masquerade cluster-IP traffic not coming from a pod (all of it with masquerade-all).
    if internal_eps:
        masq = f"ip daddr {sp.cluster_ip} {proto} dport {sp.port}"
        if ctx.masquerade_all:
            rs.chains.setdefault(internal_target, []).append(f"{masq} jump {MARK_MASQ}")
        elif ctx.cluster_cidr:
            rs.chains.setdefault(internal_target, []).append(f"{masq} ip saddr != {ctx.cluster_cidr} jump {MARK_MASQ}")
    if external and external_eps:
        rules = rs.chains.setdefault(ext, [])
        if not ext_local:
            rules += [f"jump {MARK_MASQ}", f"goto {svc}"]
        else:
            if ctx.cluster_cidr:
                rules.append(f"ip saddr {ctx.cluster_cidr} goto {svc}")
            rules += [f"fib saddr type local jump {MARK_MASQ}", f"fib saddr type local goto {svc}", f"goto {loc}"]
    reachable: dict[str, Endpoint] = {}
    for chain, eps in used.items():
        rules = rs.chains.setdefault(chain, [])
        if sp.session_affinity:
            rules += [f"ip saddr @{affinity_set(n, e)} goto {endpoint_chain(n, e)}" for e in eps]
        rules.append(numgen_rule([endpoint_chain(n, e) for e in eps]))
        reachable.update((e.addr, e) for e in eps)
    for e in _by_addr(reachable.values()):
        rules = rs.chains.setdefault(endpoint_chain(n, e), [])
        rules.append(f"ip saddr {e.ip} jump {MARK_MASQ}")  # hairpin: an endpoint reaching itself
        if sp.session_affinity:
            aff = affinity_set(n, e)
            rs.affinity[aff] = sp.affinity_timeout
            rules.append(f"update @{aff} {{ ip saddr }}")
        rules.append(f"meta l4proto {proto} dnat to {e.ip}:{e.port}")


def render(state: ProxyState, ctx: NodeContext, mark: int = MASQ_MARK) -> Ruleset:
    """The whole table's content for ``state`` on the node ``ctx`` describes (IPv4 service ports only)."""
    rs = constant_rules(ctx, mark)
    for name in sorted(state.services, key=str):
        sp = state.services[name]
        if ":" in sp.cluster_ip:
            continue  # an IPv6 family is not built: the table is ip (IPv4) only
        render_service(rs, sp, ctx)
    return rs


@dataclass
class Existing:
    """What an installed table holds (from ``nft list table``): chain and set/map names."""

    chains: set[str] = field(default_factory=set)
    sets: set[str] = field(default_factory=set)  # sets and maps

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


def _set_decl(name: str, timeout: int) -> str:
    return f"add set {T} {name} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ; }}"


def script(rs: Ruleset, existing: Existing | None = None, timeouts: dict[str, int] | None = None) -> str:
    """One ``nft -f`` transaction making the table equal ``rs``.

    ``existing`` is what is installed now (None: nothing); ``timeouts`` the
    timeout each affinity set was created with (a set not in it, or with
    another timeout, is recreated, which forgets its entries)."""
    existing = existing or Existing()
    timeouts = timeouts or {}
    lines = [f'add table {T} {{ comment "rules for kube-proxy" ; }}']
    lines += [f"add chain {T} {c} {{ type {t} hook {h} priority {p} ; }}" for c, t, h, p in BASE_CHAINS]
    lines += [f"add map {T} {m} {{ type {ty} ; }}" for m, ty in MAPS.items()]
    lines += [f"add set {T} {s} {{ type {ty} ; }}" for s, ty in SETS.items()]
    lines.append(f"flush table {T}")  # every rule; sets and maps keep their elements
    lines += [f"flush map {T} {m}" for m in MAPS]
    lines += [f"flush set {T} {s}" for s in SETS]
    base = {c for c, *_ in BASE_CHAINS}
    lines += [f"delete chain {T} {c}" for c in sorted(existing.chains - base - set(rs.chains))]
    fixed = set(MAPS) | set(SETS)
    recreate = {s for s in rs.affinity if s in existing.sets and timeouts.get(s) != rs.affinity[s]}
    lines += [f"delete set {T} {s}" for s in sorted((existing.sets - fixed - set(rs.affinity)) | recreate)]
    lines += [f"add chain {T} {c}" for c in rs.chains]
    lines += [_set_decl(s, t) for s, t in rs.affinity.items()]
    for chain, rules in rs.base.items():
        lines += [f"add rule {T} {chain} {r}" for r in rules]
    for chain, rules in rs.chains.items():
        lines += [f"add rule {T} {chain} {r}" for r in rules]
    for target, elems in rs.elements.items():
        for e in elems:
            lines.append(f"add element {T} {target} {{ {e} }}")
    return "\n".join(lines) + "\n"


def render_script(state: ProxyState, ctx: NodeContext) -> str:
    """The script a freshly started proxy applies for ``state`` (nothing installed before)."""
    return script(render(state, ctx))
