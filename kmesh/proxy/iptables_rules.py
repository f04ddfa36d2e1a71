"""kube-proxy's iptables rules as text: the proxy state → ``iptables-restore`` input.

Pure rendering, no kernel access, so the rules can be checked line by line
against upstream's documented output. The layout follows upstream's
``syncProxyRules``: shared chains (``KUBE-SERVICES``, ``KUBE-NODEPORTS``,
``KUBE-POSTROUTING``, ``KUBE-MARK-MASQ`` in nat; ``KUBE-SERVICES``,
``KUBE-EXTERNAL-SERVICES``, ``KUBE-FORWARD``, ``KUBE-NODEPORTS``,
``KUBE-PROXY-FIREWALL``, ``KUBE-FIREWALL`` in filter) plus, per service port,
``KUBE-SVC-``/``KUBE-SVL-``/``KUBE-EXT-``/``KUBE-FW-`` chains and one
``KUBE-SEP-`` chain per endpoint.

``Planner`` remembers what each service port rendered to at the last applied
sync, so a partial sync re-renders only the changed service ports, rewrites
a shared chain only when its content changed (upstream rewrites them all on
every sync; the content is the same, the restore is cheaper), and deletes
(``-X``) the chains that are no longer produced. A full sync rewrites
everything.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from kmesh.api.wellknown import CLUSTER_CIDR
from kmesh.proxy import nodeports
from kmesh.proxy.chainhash import hash16
from kmesh.proxy.model import (
    MASQ_MARK,
    Endpoint,
    NodeContext,
    ProxyState,
    ServicePort,
    ServicePortName,
    usable,
)
from kmesh.proxy.nodeports import contains_ipv4_loopback, is_loopback

SERVICES = "KUBE-SERVICES"
EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
NODEPORTS = "KUBE-NODEPORTS"
POSTROUTING = "KUBE-POSTROUTING"
MARK_MASQ = "KUBE-MARK-MASQ"
FORWARD = "KUBE-FORWARD"
PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
FIREWALL = "KUBE-FIREWALL"  # kubelet's anti-martian chain, duplicated by kube-proxy
CANARY = "KUBE-PROXY-CANARY"  # empty chains whose disappearance tells that the tables were flushed
CANARY_TABLES = ("mangle", "nat", "filter")

FILTER_CHAINS = (SERVICES, EXTERNAL_SERVICES, FORWARD, NODEPORTS, PROXY_FIREWALL)
NAT_CHAINS = (SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ)
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-FW-", "KUBE-EXT-")
LARGE_CLUSTER_ENDPOINTS = 1000  # above this many endpoints, per-endpoint comments are dropped
BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
NODEPORTS_COMMENT = '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"'


@dataclass(frozen=True)
class Jump:
    """A rule in a built-in chain that leads into one of kube-proxy's chains."""

    table: str
    src: str
    dst: str
    comment: str = ""
    extra: str = ""

    def spec(self) -> str:
        """The rule's match and target, as written to iptables-restore (and printed by iptables-save)."""
        parts = [p for p in (self.extra, f'-m comment --comment "{self.comment}"' if self.comment else "") if p]
        return " ".join([*parts, f"-j {self.dst}"])


_NEW = "-m conntrack --ctstate NEW"
# Upstream's iptablesJumpChains followed by the kubelet jumps, in the order they are ensured (each prepended).
JUMPS: tuple[Jump, ...] = (
    Jump("filter", "INPUT", EXTERNAL_SERVICES, "kubernetes externally-visible service portals", _NEW),
    Jump("filter", "FORWARD", EXTERNAL_SERVICES, "kubernetes externally-visible service portals", _NEW),
    Jump("filter", "INPUT", NODEPORTS, "kubernetes health check service ports"),
    Jump("filter", "FORWARD", SERVICES, "kubernetes service portals", _NEW),
    Jump("filter", "OUTPUT", SERVICES, "kubernetes service portals", _NEW),
    Jump("filter", "FORWARD", FORWARD, "kubernetes forwarding rules"),
    Jump("filter", "INPUT", PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    Jump("filter", "OUTPUT", PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    Jump("filter", "FORWARD", PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    Jump("nat", "OUTPUT", SERVICES, "kubernetes service portals"),
    Jump("nat", "PREROUTING", SERVICES, "kubernetes service portals"),
    Jump("nat", "POSTROUTING", POSTROUTING, "kubernetes postrouting rules"),
    Jump("filter", "INPUT", FIREWALL),
    Jump("filter", "OUTPUT", FIREWALL),
)


def port_proto_hash(svc_port_name: str, proto: str) -> str:
    """Upstream's 16-character chain suffix: base32(sha256(name + proto))[:16]."""
    return hash16(svc_port_name + proto)


def svc_chain(name: ServicePortName) -> str:
    """``KUBE-SVC-<h>``: dispatch to the endpoints of Cluster traffic policy."""
    return "KUBE-SVC-" + port_proto_hash(str(name), name.proto)


def svl_chain(name: ServicePortName) -> str:
    """``KUBE-SVL-<h>``: dispatch to this node's endpoints (Local traffic policy)."""
    return "KUBE-SVL-" + port_proto_hash(str(name), name.proto)


def ext_chain(name: ServicePortName) -> str:
    """``KUBE-EXT-<h>``: NodePort / external IP / load-balancer traffic."""
    return "KUBE-EXT-" + port_proto_hash(str(name), name.proto)


def fw_chain(name: ServicePortName) -> str:
    """``KUBE-FW-<h>``: load-balancer source ranges."""
    return "KUBE-FW-" + port_proto_hash(str(name), name.proto)


def sep_chain(name: ServicePortName, endpoint: str) -> str:
    """``KUBE-SEP-<h>`` of one endpoint (``ip:port``) of a service port."""
    return "KUBE-SEP-" + hash16(str(name) + name.proto + endpoint)


def is_service_chain(chain: str) -> bool:
    """True for the per-service chains kube-proxy creates and deletes on its own."""
    return chain.startswith(SERVICE_CHAIN_PREFIXES)


def probability(n: int) -> str:
    """The statistic match's probability for picking 1 of ``n`` remaining endpoints, as upstream prints it."""
    return f"{1.0 / n:0.10f}"


@dataclass(frozen=True)
class RenderConfig:
    """The node-wide knobs that shape the rules (from kube-proxy's flags)."""

    node: str = ""
    cluster_cidr: str = CLUSTER_CIDR  # detect-local-mode ClusterCIDR; "" = no local detector
    masquerade_all: bool = False
    masq_mark: int = MASQ_MARK
    localhost_nodeports: bool = True  # upstream's default (iptables.localhostNodePorts)
    random_fully: bool = True  # iptables ≥ 1.6.2 has MASQUERADE --random-fully
    conntrack_liberal: bool = False  # nf_conntrack_tcp_be_liberal set → no INVALID drop rule
    large_cluster_endpoints: int = LARGE_CLUSTER_ENDPOINTS
    node_ip: str = ""  # the node's primary IP (a load-balancer source range containing it admits the LB IPs)
    # --nodeport-addresses resolved at the last full sync: the addresses KUBE-SERVICES sends on to
    # KUBE-NODEPORTS; None = every local address (no flag, or a 0.0.0.0/0 CIDR)
    nodeport_ips: tuple[str, ...] | None = None

    @classmethod
    def from_context(cls, ctx: NodeContext, **kw: object) -> RenderConfig:
        """The config of a proxy running as ``ctx`` describes.

        As upstream, localhost NodePorts are off unless ``--nodeport-addresses``
        reaches a loopback address (no flag does)."""
        localhost = bool(kw.pop("localhost_nodeports", True))
        localhost = localhost and contains_ipv4_loopback(nodeports.effective(ctx.nodeport_addresses, "iptables"))
        return cls(node=ctx.node, cluster_cidr=ctx.cluster_cidr, masquerade_all=ctx.masquerade_all,  # type: ignore[arg-type]
                   node_ip=ctx.node_ips[0] if ctx.node_ips else "", localhost_nodeports=localhost, **kw)

    @property
    def mark(self) -> str:
        return f"{self.masq_mark:#x}"


@dataclass
class ServiceRules:
    """What one service port contributes: lines in the shared chains and its own nat chains."""

    nat_services: list[str] = field(default_factory=list)
    nat_nodeports: list[str] = field(default_factory=list)
    filter_services: list[str] = field(default_factory=list)
    filter_external: list[str] = field(default_factory=list)
    filter_nodeports: list[str] = field(default_factory=list)
    filter_firewall: list[str] = field(default_factory=list)
    chains: dict[str, list[str]] = field(default_factory=dict)  # nat chain → its rules, in creation order
    endpoints: int = 0  # endpoints counted for large-cluster mode


# (table, chain) → the ServiceRules attribute holding a service's lines in it.
SHARED_SLOTS: dict[tuple[str, str], str] = {
    ("filter", SERVICES): "filter_services",
    ("filter", EXTERNAL_SERVICES): "filter_external",
    ("filter", NODEPORTS): "filter_nodeports",
    ("filter", PROXY_FIREWALL): "filter_firewall",
    ("nat", SERVICES): "nat_services",
    ("nat", NODEPORTS): "nat_nodeports",
}


def _by_addr(eps: Iterable[Endpoint]) -> list[Endpoint]:
    """Upstream's endpoint order: by the ``ip:port`` string."""
    return sorted(eps, key=lambda e: e.addr)


def render_service(sp: ServicePort, cfg: RenderConfig, large: bool = False) -> ServiceRules:
    """The rules of one service port, as upstream's syncProxyRules writes them."""
    out = ServiceRules(endpoints=len(sp.endpoints))
    name = str(sp.name)
    proto = sp.name.proto
    cip, port = sp.cluster_ip, str(sp.port)
    match = f"-m {proto} -p {proto}"
    external = sp.has_external
    internal_local = sp.internal_local
    external_local = sp.external_local and external
    uses_cluster = not internal_local or external  # external traffic from this node short-circuits to Cluster
    uses_local = internal_local or (external and external_local)

    eps = _by_addr(sp.endpoints)
    cluster_eps = _by_addr(sp.cluster_endpoints()) if uses_cluster else []
    has_endpoints = bool(cluster_eps)
    local_eps: list[Endpoint] = []
    if uses_local:
        local_eps = usable([e for e in eps if e.node and e.node == cfg.node])
        has_endpoints = has_endpoints or bool(usable(eps))
    if not uses_local:
        reachable = cluster_eps
    elif not uses_cluster:
        reachable = local_eps
    else:
        reachable = _by_addr({e.addr: e for e in [*cluster_eps, *local_eps]}.values())

    h = port_proto_hash(name, proto)
    cluster_chain, local_chain, external_chain = f"KUBE-SVC-{h}", f"KUBE-SVL-{h}", f"KUBE-EXT-{h}"
    seps = {e.addr: sep_chain(sp.name, e.addr) for e in reachable}
    uses_cluster_chain = bool(cluster_eps) and uses_cluster
    uses_local_chain = bool(local_eps) and uses_local
    internal_chain, has_internal = cluster_chain, has_endpoints
    if internal_local:
        internal_chain = local_chain
        has_internal = has_internal and bool(local_eps)
    external_policy_chain, has_external_eps = cluster_chain, has_endpoints
    if external_local:
        external_policy_chain = local_chain
        has_external_eps = has_external_eps and bool(local_eps)
    uses_external_chain = has_endpoints and external

    internal_target = internal_comment = external_target = external_comment = ""
    if not has_endpoints:
        internal_target = external_target = "REJECT"
        internal_comment = external_comment = f'"{name} has no endpoints"'
    else:
        if not has_internal:
            internal_target, internal_comment = "DROP", f'"{name} has no local endpoints"'
        if not has_external_eps:
            external_target, external_comment = "DROP", f'"{name} has no local endpoints"'

    # Capture the cluster IP.
    if has_internal:
        out.nat_services.append(
            f'-A {SERVICES} -m comment --comment "{name} cluster IP" {match} -d {cip} --dport {port} -j {internal_chain}')
    else:
        out.filter_services.append(
            f"-A {SERVICES} -m comment --comment {internal_comment} {match} -d {cip} --dport {port} -j {internal_target}")
    # External IPs.
    for ip in sp.external_ips:
        if has_endpoints:
            out.nat_services.append(
                f'-A {SERVICES} -m comment --comment "{name} external IP" {match} -d {ip} --dport {port} -j {external_chain}')
        if not has_external_eps:
            out.filter_external.append(
                f"-A {EXTERNAL_SERVICES} -m comment --comment {external_comment} {match} -d {ip} --dport {port} -j {external_target}")
    # Load-balancer ingress IPs, through KUBE-FW- when source ranges restrict them.
    ranges: tuple[str, ...] = sp.load_balancer_source_ranges
    uses_fw_chain = has_endpoints and bool(sp.load_balancer_ips) and bool(ranges)
    lb_chain = f"KUBE-FW-{h}" if uses_fw_chain else external_chain
    for ip in sp.load_balancer_ips:
        if has_endpoints:
            out.nat_services.append(
                f'-A {SERVICES} -m comment --comment "{name} loadbalancer IP" {match} -d {ip} --dport {port} -j {lb_chain}')
        if uses_fw_chain:
            out.filter_firewall.append(
                f'-A {PROXY_FIREWALL} -m comment --comment "{name} traffic not accepted by {lb_chain}" '
                f"{match} -d {ip} --dport {port} -j DROP")
    if not has_external_eps:
        for ip in sp.load_balancer_ips:
            out.filter_external.append(
                f"-A {EXTERNAL_SERVICES} -m comment --comment {external_comment} {match} -d {ip} --dport {port} -j {external_target}")
    # Node ports.
    if sp.node_port:
        if has_endpoints:
            out.nat_nodeports.append(
                f"-A {NODEPORTS} -m comment --comment {name} {match} --dport {sp.node_port} -j {external_chain}")
        if not has_external_eps:
            out.filter_external.append(
                f"-A {EXTERNAL_SERVICES} -m comment --comment {external_comment} -m addrtype --dst-type LOCAL "
                f"{match} --dport {sp.node_port} -j {external_target}")

    # Health-check node port (externalTrafficPolicy Local): accepted whether or not there are local endpoints.
    hc_port = sp.health_check_node_port
    if hc_port:
        out.filter_nodeports.append(
            f'-A {NODEPORTS} -m comment --comment "{name} health check node port" -m tcp -p tcp --dport {hc_port} -j ACCEPT')

    chains = out.chains

    def rule(chain: str, text: str) -> None:
        chains.setdefault(chain, []).append(f"-A {chain} {text}")

    # Internal traffic: masquerade what does not come from a pod (or everything with masquerade-all).
    if has_internal:
        base = f'-m comment --comment "{name} cluster IP" {match} -d {cip} --dport {port}'
        if cfg.masquerade_all:
            rule(internal_chain, f"{base} -j {MARK_MASQ}")
        elif cfg.cluster_cidr:
            rule(internal_chain, f"{base} ! -s {cfg.cluster_cidr} -j {MARK_MASQ}")
    # External traffic.
    if uses_external_chain:
        chains.setdefault(external_chain, [])
        if not external_local:
            rule(external_chain, f'-m comment --comment "masquerade traffic for {name} external destinations" -j {MARK_MASQ}')
        else:
            if cfg.cluster_cidr:
                rule(external_chain, f'-m comment --comment "pod traffic for {name} external destinations" '
                                     f"-s {cfg.cluster_cidr} -j {cluster_chain}")
            rule(external_chain, f'-m comment --comment "masquerade LOCAL traffic for {name} external destinations" '
                                 f"-m addrtype --src-type LOCAL -j {MARK_MASQ}")
            rule(external_chain, f'-m comment --comment "route LOCAL traffic for {name} external destinations" '
                                 f"-m addrtype --src-type LOCAL -j {cluster_chain}")
        if has_external_eps:
            rule(external_chain, f"-j {external_policy_chain}")
    if uses_fw_chain:
        fw = f'-m comment --comment "{name} loadbalancer IP"'
        for cidr in ranges:
            rule(lb_chain, f"{fw} -s {cidr} -j {external_chain}")
        if cfg.node_ip and any(_contains(cidr, cfg.node_ip) for cidr in ranges):
            for ip in sp.load_balancer_ips:  # a VIP-style LB loops the node's own requests back from the VIP
                rule(lb_chain, f"{fw} -s {ip} -j {external_chain}")
        rule(lb_chain, f'-m comment --comment "other traffic to {name} will be dropped by {PROXY_FIREWALL}"')
    if uses_cluster_chain:
        chains.setdefault(cluster_chain, [])
        _endpoint_rules(chains[cluster_chain], cluster_chain, name, sp, cluster_eps, seps, large)
    if uses_local_chain:
        chains.setdefault(local_chain, [])
        _endpoint_rules(chains[local_chain], local_chain, name, sp, local_eps, seps, large)
    comment = "" if large else f"-m comment --comment {name} "
    for ep in reachable:
        sep = seps[ep.addr]
        recent = f"-m recent --name {sep} --set " if sp.session_affinity else ""
        chains[sep] = [
            f"-A {sep} {comment}-s {ep.ip} -j {MARK_MASQ}",
            f"-A {sep} {comment}{recent}{match} -j DNAT --to-destination {ep.addr}",
        ]
    return out


def _contains(cidr: str, ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def _endpoint_rules(lines: list[str], chain: str, name: str, sp: ServicePort, eps: list[Endpoint],
                    seps: dict[str, str], large: bool) -> None:
    """Affinity checks, then one statistic rule per endpoint (the last one unconditional)."""
    if sp.session_affinity:
        for ep in eps:
            sep = seps[ep.addr]
            comment = "" if large else f'-m comment --comment "{name} -> {ep.addr}" '
            lines.append(f"-A {chain} {comment}-m recent --name {sep} --rcheck --seconds {sp.affinity_timeout} --reap -j {sep}")
    n = len(eps)
    for i, ep in enumerate(eps):
        sep = seps[ep.addr]
        comment = "" if large else f'-m comment --comment "{name} -> {ep.addr}" '
        stat = f"-m statistic --mode random --probability {probability(n - i)} " if i < n - 1 else ""
        lines.append(f"-A {chain} {comment}{stat}-j {sep}")


def constant_rules(cfg: RenderConfig) -> dict[tuple[str, str], list[str]]:
    """The shared chains whose rules do not depend on Services."""
    mark = cfg.mark
    masq = f'-A {POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
    if cfg.random_fully:
        masq += " --random-fully"
    out: dict[tuple[str, str], list[str]] = {
        ("nat", POSTROUTING): [
            f"-A {POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN",
            f"-A {POSTROUTING} -j MARK --xor-mark {mark}",
            masq,
        ],
        ("nat", MARK_MASQ): [f"-A {MARK_MASQ} -j MARK --or-mark {mark}"],
        ("filter", FORWARD): [
            *([] if cfg.conntrack_liberal else [f"-A {FORWARD} -m conntrack --ctstate INVALID -j DROP"]),
            f'-A {FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark {mark}/{mark} -j ACCEPT',
            (f'-A {FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack '
            f"--ctstate RELATED,ESTABLISHED -j ACCEPT"),
        ],
    }
    if cfg.localhost_nodeports:
        out[("filter", FIREWALL)] = [
            (f'-A {FIREWALL} -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 '
            f"! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP")
        ]
    return out


def nodeports_jump(cfg: RenderConfig) -> list[str]:
    """The last rules of nat KUBE-SERVICES: NodePort destinations go on to KUBE-NODEPORTS.

    Every local address (``-m addrtype --dst-type LOCAL``) when ``cfg.nodeport_ips`` is None; else
    one ``-d <ip>`` rule per selected IPv4 address, a loopback one only with localhost NodePorts."""
    head = f"-A {SERVICES} -m comment --comment {NODEPORTS_COMMENT}"
    if cfg.nodeport_ips is None:
        dest = "-m addrtype --dst-type LOCAL" + ("" if cfg.localhost_nodeports else " ! -d 127.0.0.0/8")
        return [f"{head} {dest} -j {NODEPORTS}"]
    return [f"{head} -d {ip} -j {NODEPORTS}" for ip in cfg.nodeport_ips
            if ":" not in ip and (cfg.localhost_nodeports or not is_loopback(ip))]


def shared_chain_order(cfg: RenderConfig) -> dict[str, list[str]]:
    """Per table, the shared chains in the order upstream declares them."""
    filt = list(FILTER_CHAINS) + ([FIREWALL] if cfg.localhost_nodeports else [])
    return {"filter": filt, "nat": list(NAT_CHAINS)}


def jump_lines(missing: Iterable[Jump]) -> dict[str, list[str]]:
    """``-I <builtin> 1`` lines for jumps not yet installed, in upstream's EnsureRule(Prepend) order."""
    out: dict[str, list[str]] = {"filter": [], "nat": []}
    for j in missing:
        out[j.table].append(f"-I {j.src} 1 {j.spec()}")
    return out


def missing_jumps(saved: str, cfg: RenderConfig) -> list[Jump]:
    """The jumps of ``JUMPS`` that an ``iptables-save`` text lacks."""
    tables = parse_save(saved)
    out = []
    for j in JUMPS:
        if j.dst == FIREWALL and not cfg.localhost_nodeports:
            continue
        rules = tables.get(j.table, {}).get(j.src, [])
        if f"-A {j.src} {j.spec()}" not in rules:
            out.append(j)
    return out


def parse_save(text: str) -> dict[str, dict[str, list[str]]]:
    """``iptables-save``/restore text → table → chain → its ``-A`` lines (declared chains included, empty)."""
    return _read_tables(text)


def _read_tables(text: str, *, builtin_decls: bool = True, inserts: bool = False, reset_on_commit: bool = True) -> dict[str, dict[str, list[str]]]:
    """Replay restore/save text into table → chain → ``-A`` lines (``-X`` deletes a chain).

    ``builtin_decls``: ``:CHAIN`` lines of built-in chains declare them too; ``inserts``: apply
    ``-I <chain> N`` lines (else they are skipped); ``reset_on_commit``: lines between ``COMMIT``
    and the next ``*table`` are skipped (else they go on into the table just committed)."""
    tables: dict[str, dict[str, list[str]]] = {}
    cur: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            cur = tables.setdefault(line[1:], {})
        elif line == "COMMIT":
            if reset_on_commit:
                cur = None
        elif cur is None:
            continue
        elif line.startswith(":"):
            if builtin_decls or line[1:].split()[0] not in BUILTIN_CHAINS:
                cur.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            cur.setdefault(line.split(None, 2)[1], []).append(line)
        elif line.startswith("-I ") and inserts:
            _, chain, pos, rest = line.split(None, 3)
            cur.setdefault(chain, []).insert(int(pos) - 1, f"-A {chain} {rest}")
        elif line.startswith("-X "):
            cur.pop(line.split()[1], None)
    return tables


@dataclass
class Plan:
    """One sync's restore input and the bookkeeping to keep once it is applied."""

    text: str
    full: bool
    rewritten: list[tuple[str, str]]  # (table, chain) declared (so flushed and rewritten)
    deleted: list[str]  # nat chains removed with -X
    services: dict[ServicePortName, tuple[ServicePort, ServiceRules]]
    order: list[ServicePortName]
    chains: set[str]  # per-service nat chains installed after this sync
    large: bool
    rules_rendered: int  # service ports rendered in this sync
    endpoints: int  # endpoints of all service ports (large-cluster mode above the threshold)

    @property
    def empty(self) -> bool:
        """True when the text changes nothing (only table headers and COMMITs)."""
        return all(line.startswith("*") or line == "COMMIT" for line in self.text.splitlines())


class Planner:
    """Turns successive (state, changed, full) into restore texts, remembering what was applied."""

    def __init__(self, cfg: RenderConfig) -> None:
        self.cfg = cfg
        self.services: dict[ServicePortName, tuple[ServicePort, ServiceRules]] = {}
        self.order: list[ServicePortName] = []
        self.chains: set[str] = set()
        self.large: bool | None = None
        self.total = 0

    def plan(
        self,
        state: ProxyState,
        changed: Iterable[ServicePortName] = (),
        full: bool = True,
        *,
        existing: Iterable[str] = (),
        jumps: Iterable[Jump] = (),
    ) -> Plan:
        """The restore text making the kernel match ``state``.

        ``existing`` are nat chains found installed (a full sync deletes the
        stale per-service ones among them); ``jumps`` are built-in-chain jumps
        to add. Nothing is remembered until ``commit``.
        """
        cfg = self.cfg
        if full or self.large is None:
            total = sum(len(sp.endpoints) for sp in state.services.values())
        else:  # adjust the last count by the changed service ports only
            total = self.total
            for n in set(changed):
                if n in self.services:
                    total -= len(self.services[n][0].endpoints)
                if n in state.services:
                    total += len(state.services[n].endpoints)
        large = total > cfg.large_cluster_endpoints
        if self.large is not None and large != self.large:
            full = True  # comments appear or vanish everywhere
        old = self.services
        if full:
            todo = set(state.services)
            gone = set(old) - todo
        else:
            todo = {n for n in changed if n in state.services}
            gone = {n for n in changed if n not in state.services and n in old}
        services = dict(old) if not full else {}
        for n in gone:
            services.pop(n, None)
        fresh: dict[ServicePortName, ServiceRules] = {}
        for n in todo:
            sp = state.services[n]
            prev = old.get(n)
            if not full and prev is not None and prev[0] == sp and self.large == large:
                rules = prev[1]
            else:
                rules = render_service(sp, cfg, large)
            services[n] = (sp, rules)
            fresh[n] = rules
        if full or gone or any(n not in old for n in todo):
            order = sorted(services, key=str)
        else:
            order = self.order

        # Which shared chains to rewrite: all on a full sync, else those whose service lines changed.
        empty = ServiceRules()
        rewrite: list[tuple[str, str]] = []
        for key, slot in SHARED_SLOTS.items():
            if full or any(getattr(old.get(n, (None, empty))[1], slot) != getattr(services.get(n, (None, empty))[1], slot)
                           for n in (*todo, *gone)):
                rewrite.append(key)
        const = constant_rules(cfg)
        if full or self.large is None:
            # Their content never changes, and rewriting KUBE-MARK-MASQ (the target of every SVC and
            # SEP chain) makes the kernel re-validate every jump to it: ~2x the cost of a small sync.
            rewrite.extend(const)

        decl: dict[str, list[str]] = {"filter": [], "nat": []}
        body: dict[str, list[str]] = {"filter": [], "nat": []}
        for table, chains in shared_chain_order(cfg).items():
            for chain in chains:
                if (table, chain) not in rewrite:
                    continue
                decl[table].append(f":{chain} - [0:0]")
                if (table, chain) in const:
                    body[table].extend(const[(table, chain)])
                    continue
                slot = SHARED_SLOTS[(table, chain)]
                for n in order:
                    body[table].extend(getattr(services[n][1], slot))
                if (table, chain) == ("nat", SERVICES):
                    body[table].extend(nodeports_jump(cfg))

        # Per-service chains of the re-rendered service ports.
        active: set[str] = set()
        if not full:
            active = set(self.chains)
            for n in (*todo, *gone):
                if n in old:
                    active.difference_update(old[n][1].chains)
        written: list[str] = []
        for n in sorted(todo, key=str):
            same = not full and n in old and old[n][1].chains == fresh[n].chains  # a change that renders alike
            for chain, lines in fresh[n].chains.items():
                active.add(chain)
                if same:
                    continue
                decl["nat"].append(f":{chain} - [0:0]")
                body["nat"].extend(lines)
                written.append(chain)
        stale_from = set(self.chains) | {c for c in existing if is_service_chain(c)}
        if not full:
            stale_from = {c for n in gone | todo if n in old for c in old[n][1].chains}
        deleted = sorted(stale_from - active)
        for chain in deleted:
            decl["nat"].append(f":{chain} - [0:0]")
            body["nat"].append(f"-X {chain}")

        jl = jump_lines(jumps)
        parts: list[str] = []
        if full:  # the canaries (re)appear with every full sync; their absence means someone flushed
            parts += ["*mangle", f":{CANARY} - [0:0]", "COMMIT"]
            decl["filter"].append(f":{CANARY} - [0:0]")
            decl["nat"].append(f":{CANARY} - [0:0]")
        for table in ("filter", "nat"):
            parts.append(f"*{table}")
            parts.extend(decl[table])
            parts.extend(body[table])
            parts.extend(jl[table])
            parts.append("COMMIT")
        text = "\n".join(parts) + "\n"
        rewritten = rewrite + [("nat", c) for c in written]
        return Plan(text, full, rewritten, deleted, services, order, active, large, len(todo), total)

    def commit(self, plan: Plan) -> None:
        """Remember an applied plan as the installed state."""
        self.services = plan.services
        self.order = plan.order
        self.chains = plan.chains
        self.large = plan.large
        self.total = plan.endpoints

    def reset(self) -> None:
        """Forget everything (after cleanup)."""
        self.__init__(self.cfg)  # type: ignore[misc]


def render(state: ProxyState, cfg: RenderConfig, *, jumps: Iterable[Jump] = ()) -> str:
    """The full-sync restore text of ``state`` (what a freshly started kube-proxy writes)."""
    return Planner(cfg).plan(state, full=True, jumps=jumps).text


def normalise(text: str) -> str:
    """A restore/save text in a comparable form: tables and chains sorted; counters, # lines and
    empty built-in chains dropped, ``-I <chain> N`` applied, rules kept in their order within each chain."""
    tables = _read_tables(text, builtin_decls=False, inserts=True, reset_on_commit=False)
    out: list[str] = []
    for table in sorted(tables):
        out.append(f"*{table}")
        chains = tables[table]
        names = sorted(chains, key=lambda c: (c not in BUILTIN_CHAINS, c))
        out.extend(f":{c}" for c in names)
        for c in names:
            out.extend(chains[c])
        out.append("COMMIT")
    return "\n".join(out) + "\n"
