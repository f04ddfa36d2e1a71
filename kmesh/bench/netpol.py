"""NetworkPolicy speed: from a policy change to its enforcement, the agents' syncs, and connect latency.

One run, one machine (root): N node namespaces (a bridge each, routed to one
another over an underlay bridge, host-gw style), a client pod and a server
pod per node as real namespaces, and the rest of the pods as API objects only
(with addresses in their node's /24, labels and named container ports), in
about ten labelled namespaces; an in-process API server (memory store) holds
them and ~100 NetworkPolicies of realistic variety; one ``PolicyAgent`` per
node runs in-process and programs its node namespace with ``nft``.

Measured:

- enforcement: over ~30 policy changes (create/delete a policy that isolates
  the probe client's egress, change/restore the port of the rule that lets it
  into the probe server), from the API write returning to the first probe
  showing the new behaviour. The probes are a new non-blocking TCP connect
  every millisecond from the client's namespace, each with a 100 ms timeout
  (``kmesh.bench.netpolprobe``, its own process): the resolution is the probe
  interval (the rule came into force between the last probe showing the old
  behaviour and the first showing the new one; both bounds are kept);
- the agents' syncs during the changes (model + render vs ``nft``) and their
  rule counts per node;
- connect latency client→server (same node and across nodes), 2 000 connects
  per round, in 8 rounds, each with three conditions in rotating order: no
  policy (the agents' empty table), kmesh's table with every policy, and the
  anchor: the same policies as k3s's embedded agent (kube-router) writes them
  with iptables and ipset (``kmesh.bench.kuberouter``), in place of kmesh's
  table. Interleaving keeps the machine's drift out of the differences. The
  prober and the servers share one CPU (else the times jump between modes as
  the scheduler places them). A condition's added latency is the median of
  its per-round p50 differences to "no policy"; "measurable" means a
  two-sided sign test on those differences gives p < 0.05.

``plan_world``, ``change_plan``, ``transition``, ``latency_verdict``,
``rule_position`` and ``summary`` are pure (tests); ``run_bench`` runs it.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from kmesh.bench.kuberouter import Rendered
from kmesh.bench.stats import percentile
from kmesh.net import netns
from kmesh.policy.model import PolicyWorld

Obj = dict[str, Any]
PORT = 8080
GOAL_ENFORCE_P99 = 1.0
CIDR = "10.244.{}.0/24"
UNDERLAY = "192.168.56.{}"
IMAGE = "registry.k8s.io/pause:3.9"

# ------------------------------------------------------------------------------------------- the world (pure)

HTTP, METRICS, GRPC = ("http", PORT, "TCP"), ("metrics", 9090, "TCP"), ("grpc", 50051, "TCP")

# namespace → (labels, {app: ports}); the probe client is a shop frontend, the probe server a payments api.
NAMESPACES: dict[str, tuple[dict[str, str], dict[str, list[tuple[str, int, str]]]]] = {
    "kube-system": ({"tier": "system"}, {"coredns": [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]}),
    "monitoring": ({"tier": "system", "team": "sre"}, {"prometheus": [("web", 9090, "TCP")],
                                                        "grafana": [("http", 3000, "TCP")],
                                                        "alertmanager": [("web", 9093, "TCP")]}),
    "ingress": ({"tier": "edge", "team": "sre"}, {"gateway": [HTTP, ("https", 8443, "TCP"), METRICS]}),
    "shop": ({"team": "commerce", "env": "prod"}, {"frontend": [HTTP, METRICS], "cart": [HTTP, GRPC, METRICS],
                                                   "catalog": [HTTP, METRICS]}),
    "payments": ({"team": "commerce", "env": "prod", "pci": "true"},
                 {"api": [HTTP, GRPC, METRICS], "ledger": [GRPC, METRICS], "fraud": [GRPC, METRICS]}),
    "search": ({"team": "discovery", "env": "prod"}, {"query": [HTTP, METRICS], "indexer": [GRPC, METRICS]}),
    "media": ({"team": "discovery", "env": "prod"}, {"thumbnailer": [HTTP, METRICS],
                                                     "origin": [HTTP, ("rtp", 10000, "UDP"), METRICS]}),
    "accounts": ({"team": "identity", "env": "prod"}, {"auth": [HTTP, GRPC, METRICS], "profile": [HTTP, METRICS]}),
    "staging": ({"team": "commerce", "env": "staging"}, {"frontend": [HTTP], "api": [HTTP, GRPC], "cart": [HTTP]}),
    "batch": ({"team": "data", "env": "prod"}, {"driver": [("ui", 4040, "TCP"), ("rpc", 7077, "TCP")],
                                                "worker": [("shuffle", 7337, "TCP"), METRICS]}),
}
CLIENT_NS, CLIENT_APP, SERVER_NS, SERVER_APP = "shop", "frontend", "payments", "api"
ALLOW_POLICY = "api-from-frontend"  # payments: lets shop frontends into the api on "http"
LOCK_POLICY = "probe-egress-lock"  # shop: isolates the probe client's egress (created and deleted by the changes)


@dataclass(frozen=True)
class PodPlan:
    """One pod: where it runs, its address, labels and named ports; ``real`` names its role when it is a
    real namespace (``client``/``server``)."""

    namespace: str
    name: str
    node: str
    ip: str
    labels: dict[str, str]
    ports: tuple[tuple[str, int, str], ...]
    real: str = ""

    def object(self) -> Obj:
        """The Pod as created through the API (status comes after, as a kubelet writes it)."""
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": self.name, "namespace": self.namespace, "labels": dict(self.labels)},
                "spec": {"nodeName": self.node, "containers": [{
                    "name": "app", "image": IMAGE,
                    "ports": [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in self.ports]}]}}


@dataclass
class WorldPlan:
    """Everything the benchmark creates through the API, and the probe pods."""

    nodes: list[str]
    namespaces: list[Obj]
    pods: list[PodPlan]
    policies: list[Obj]

    def real(self, role: str, node: str) -> PodPlan:
        """The real ``client``/``server`` pod of ``node``."""
        return next(p for p in self.pods if p.real == role and p.node == node)

    def model(self, policies: Sequence[Obj] | None = None) -> PolicyWorld:
        """The policy model of this world (with ``policies`` instead of the planned ones if given)."""
        pods = [{**p.object(), "status": {"phase": "Running", "podIP": p.ip, "podIPs": [{"ip": p.ip}]}}
                for p in self.pods]
        return PolicyWorld(pods, self.namespaces, list(self.policies if policies is None else policies))


def node_names(count: int) -> list[str]:
    """``node-1`` … ``node-N``."""
    return [f"node-{i + 1}" for i in range(count)]


def plan_pods(nodes: list[str], total: int) -> list[PodPlan]:
    """A client and a server per node (real), then the rest spread over the apps and nodes round-robin;
    node ``i`` has ``10.244.i.0/24`` (.2 client, .3 server, .10 on the others)."""
    pods: list[PodPlan] = []
    for i, node in enumerate(nodes):
        net = i + 1
        c_ports = tuple(NAMESPACES[CLIENT_NS][1][CLIENT_APP])
        s_ports = tuple(NAMESPACES[SERVER_NS][1][SERVER_APP])
        pods.append(PodPlan(CLIENT_NS, f"probe-client-{net}", node, f"10.244.{net}.2",
                            {"app": CLIENT_APP, "probe": f"client-{net}"}, c_ports, "client"))
        pods.append(PodPlan(SERVER_NS, f"probe-server-{net}", node, f"10.244.{net}.3",
                            {"app": SERVER_APP, "probe": f"server-{net}"}, s_ports, "server"))
    apps = [(ns, app, ports) for ns, (_, by_app) in NAMESPACES.items() for app, ports in by_app.items()]
    next_host = {node: 10 for node in nodes}
    for k in range(max(0, total - len(pods))):
        ns, app, ports = apps[k % len(apps)]
        node = nodes[k % len(nodes)]
        host = next_host[node]
        if host > 254:
            raise ValueError(f"more than 245 pods on {node}: use more nodes")
        next_host[node] += 1
        labels = {"k8s-app": "kube-dns"} if app == "coredns" else {"app": app}
        labels["version"] = "v2" if k % 4 == 3 else "v1"
        pods.append(PodPlan(ns, f"{app}-{k // len(apps)}", node, f"10.244.{nodes.index(node) + 1}.{host}",
                            labels, tuple(ports)))
    return pods


def _np(ns: str, name: str, selector: Obj, *, ingress: list[Obj] | None = None, egress: list[Obj] | None = None,
        types: Sequence[str] = ()) -> Obj:
    spec: Obj = {"podSelector": selector}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    spec["policyTypes"] = list(types) or (["Ingress"] + (["Egress"] if egress is not None else []))
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def _app(app: str) -> Obj:
    return {"matchLabels": {"app": app}}


def _ns(**labels: str) -> Obj:
    return {"matchLabels": dict(labels)}


DNS_PEER = {"namespaceSelector": _ns(**{"kubernetes.io/metadata.name": "kube-system"}),
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
DNS_PORTS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
SCRAPE = {"namespaceSelector": _ns(team="sre"), "podSelector": _app("prometheus")}


def allow_policy(port: str = "http") -> Obj:
    """The policy that lets the probe client into the probe server (on ``port``; "grpc" shuts it out)."""
    return _np(SERVER_NS, ALLOW_POLICY, _app(SERVER_APP), ingress=[{
        "from": [{"namespaceSelector": _ns(team="commerce"), "podSelector": _app(CLIENT_APP)}],
        "ports": [{"port": port}]}])


def lock_policy() -> Obj:
    """Isolates the probe client's egress to DNS only (so it loses the probe server)."""
    return _np(CLIENT_NS, LOCK_POLICY, {"matchLabels": {"probe": "client-1"}},
               egress=[{"to": [DNS_PEER], "ports": DNS_PORTS}], types=["Egress"])


def plan_policies(count: int) -> list[Obj]:
    """``count`` policies: the probe server's (isolating it, the allowing rule among others and not first)
    first, then per namespace and per app, in a fixed order: default denies, scrapes by named port,
    DNS egress, same-namespace and cross-namespace peers (pod, namespace, both), ipBlocks with
    ``except``, port ranges, UDP."""
    out: list[Obj] = [
        _np(SERVER_NS, "default-deny-ingress", {}, ingress=[]),
        _np(SERVER_NS, "allow-metrics-scrape", {}, ingress=[{"from": [SCRAPE], "ports": [{"port": "metrics"}]}]),
        _np(SERVER_NS, "api-from-gateway", _app(SERVER_APP), ingress=[{
            "from": [{"namespaceSelector": _ns(tier="edge"), "podSelector": _app("gateway")}],
            "ports": [{"port": "http"}, {"port": 8443}]}]),
        _np(SERVER_NS, "api-from-accounts", _app(SERVER_APP), ingress=[{
            "from": [{"namespaceSelector": _ns(team="identity")}], "ports": [{"port": "grpc"}]}]),
        allow_policy(),
        _np(SERVER_NS, "api-from-nodes", _app(SERVER_APP), ingress=[{
            "from": [{"ipBlock": {"cidr": "192.168.56.0/24", "except": ["192.168.56.1/32"]}}],
            "ports": [{"port": 9090}]}]),
    ]
    per_ns: list[list[Obj]] = []
    for ns, (labels, apps) in NAMESPACES.items():
        if ns == "kube-system":
            continue
        mine: list[Obj] = []
        if ns != SERVER_NS:
            mine += [_np(ns, "default-deny-ingress", {}, ingress=[]),
                     _np(ns, "allow-metrics-scrape", {}, ingress=[{"from": [SCRAPE], "ports": [{"port": "metrics"}]}])]
        if ns not in (CLIENT_NS, "monitoring"):  # the client's egress stays open: the changes close it
            mine.append(_np(ns, "egress-dns", {}, egress=[{"to": [DNS_PEER], "ports": DNS_PORTS}], types=["Egress"]))
            mine.append(_np(ns, "egress-same-team", {}, egress=[{
                "to": [{"namespaceSelector": _ns(team=labels.get("team", "sre"))}]}], types=["Egress"]))
            mine.append(_np(ns, "egress-internet-https", {}, egress=[{
                "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "169.254.169.254/32"]}}],
                "ports": [{"port": 443}]}], types=["Egress"]))
        names = list(apps)
        for i, app in enumerate(names):
            if ns == SERVER_NS and app == SERVER_APP:
                continue
            peer = names[i - 1]
            mine.append(_np(ns, f"{app}-from-{peer}", _app(app), ingress=[{
                "from": [{"podSelector": _app(peer)}], "ports": [{"port": PORT}, {"port": "grpc"}]}]))
            mine.append(_np(ns, f"{app}-from-team", _app(app), ingress=[{
                "from": [{"namespaceSelector": _ns(team=labels.get("team", "sre"), env="prod"),
                          "podSelector": {"matchExpressions": [{"key": "version", "operator": "In",
                                                                "values": ["v1", "v2"]}]}}],
                "ports": [{"port": "http"}]}]))
            mine.append(_np(ns, f"{app}-from-corp", _app(app), ingress=[{
                "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16", "10.96.0.0/12"]}},
                         {"namespaceSelector": _ns(tier="edge")}],
                "ports": [{"port": 8000, "endPort": 8100}, {"port": 10000, "endPort": 20000, "protocol": "UDP"}]}]))
        if ns == "batch":
            mine.append(_np(ns, "worker-shuffle-range", _app("worker"), ingress=[{
                "from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "In",
                                                                "values": ["driver", "worker"]}]}}],
                "ports": [{"port": 30000, "endPort": 32767}, {"port": "shuffle"}]}],
                egress=[{"to": [{"podSelector": {}}], "ports": [{"port": 30000, "endPort": 32767}]}]))
        per_ns.append(mine)
    k = 0
    while len(out) < count and any(per_ns):  # round-robin over the namespaces: every kind appears early
        bucket = per_ns[k % len(per_ns)]
        if bucket:
            out.append(bucket.pop(0))
        k += 1
    return out[:count]


def namespace_objects() -> list[Obj]:
    """The namespaces with their labels."""
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": dict(labels)}}
            for ns, (labels, _) in NAMESPACES.items()]


def plan_world(nodes: int = 3, pods: int = 300, policies: int = 100) -> WorldPlan:
    """The whole world: namespaces, pods (2 real per node), policies."""
    names = node_names(nodes)
    return WorldPlan(names, namespace_objects(), plan_pods(names, pods), plan_policies(policies))


# ---------------------------------------------------------------------------------------- the changes (pure)


@dataclass(frozen=True)
class Change:
    """One policy write and what it does to the probe client's connection to the probe server."""

    kind: str  # "lock" (create the egress lock), "unlock" (delete it), "close" (allow rule to grpc), "open"
    allowed_after: bool
    enforcer: str  # "client" or "server": whose node's agent has to act

    @property
    def label(self) -> str:
        """What the change is, in words."""
        return {"lock": "create egress lock (deny)", "unlock": "delete egress lock (allow)",
                "close": "allow rule → other port (deny)", "open": "allow rule → http (allow)"}[self.kind]


CYCLE = (Change("lock", False, "client"), Change("unlock", True, "client"),
         Change("close", False, "server"), Change("open", True, "server"))


def change_plan(count: int) -> list[Change]:
    """``count`` changes (rounded up to whole cycles of four, so the world ends as it began)."""
    cycles = max(1, math.ceil(count / len(CYCLE)))
    return [c for _ in range(cycles) for c in CYCLE]


def policies_after(base: Sequence[Obj], changes: Sequence[Change]) -> list[Obj]:
    """The policy set after applying ``changes`` to ``base`` (for checking the plan against the model)."""
    pols = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in base}
    for c in changes:
        if c.kind == "lock":
            pols[(CLIENT_NS, LOCK_POLICY)] = lock_policy()
        elif c.kind == "unlock":
            pols.pop((CLIENT_NS, LOCK_POLICY), None)
        else:
            pols[(SERVER_NS, ALLOW_POLICY)] = allow_policy("grpc" if c.kind == "close" else "http")
    return list(pols.values())


# -------------------------------------------------------------------------------------------- analysis (pure)


@dataclass(frozen=True)
class Transition:
    """When a change showed in the probes, relative to the write: ``seconds`` is the send time of the first
    probe with the new behaviour (after the last with the old one), ``lower`` that of the last probe with the
    old behaviour (the rule came into force in between); ``flaps``: probes with the new behaviour before the
    last with the old one (0 when the switch was clean)."""

    seconds: float | None
    lower: float | None
    flaps: int
    probes: int

    @property
    def resolution(self) -> float | None:
        """The gap between the two bounds."""
        return None if self.seconds is None or self.lower is None else self.seconds - self.lower


def transition(runs: Sequence[Sequence[Any]], want: bool, written: float) -> Transition:
    """Read a prober's runs (``[first_sent, last_sent, ok, count]`` by send time) for a switch to ``want``."""
    probes = sum(int(r[3]) for r in runs)
    last_old = max((i for i, r in enumerate(runs) if bool(r[2]) != want), default=None)
    flaps = sum(int(r[3]) for i, r in enumerate(runs) if bool(r[2]) == want and (last_old is None or i < last_old))
    start = 0 if last_old is None else last_old + 1
    first_new = next((r for r in runs[start:] if bool(r[2]) == want), None)
    lower = None if last_old is None else float(runs[last_old][1]) - written
    return Transition(None if first_new is None else float(first_new[0]) - written, lower, flaps, probes)


@dataclass(frozen=True)
class Summary:
    """Percentiles of a sample (seconds)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    def json(self) -> dict[str, float]:
        return {"count": self.count, "p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max}


def summary(values: Sequence[float]) -> Summary:
    """p50/p90/p99/max of ``values`` (NaN when empty)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return Summary(len(vals), percentile(vals, 50), percentile(vals, 90), percentile(vals, 99),
                   max(vals) if vals else math.nan)


@dataclass(frozen=True)
class LatencyVerdict:
    """Connect latency without vs with rules, over interleaved rounds: pooled p50/p99 of each, the per-round
    p50 differences (with − without, paired by round), and whether they differ from zero by a two-sided sign
    test (``p_value`` < 0.05: measurable; 6 rounds all one way give 0.031)."""

    base_p50: float
    base_p99: float
    pol_p50: float
    pol_p99: float
    diffs: tuple[float, ...]

    @property
    def diff(self) -> float:
        """The median of the per-round p50 differences."""
        return percentile(list(self.diffs), 50) if self.diffs else math.nan

    @property
    def ratio_p50(self) -> float:
        return self.pol_p50 / self.base_p50 if self.base_p50 else math.nan

    @property
    def ratio_p99(self) -> float:
        return self.pol_p99 / self.base_p99 if self.base_p99 else math.nan

    @property
    def p_value(self) -> float:
        return sign_test(self.diffs)

    @property
    def measurable(self) -> bool:
        return self.p_value < 0.05

    def json(self) -> dict[str, Any]:
        return {"baseline_p50": self.base_p50, "baseline_p99": self.base_p99, "policies_p50": self.pol_p50,
                "policies_p99": self.pol_p99, "ratio_p50": self.ratio_p50, "ratio_p99": self.ratio_p99,
                "p50_diff": self.diff, "round_diffs": list(self.diffs), "p_value": self.p_value,
                "measurable": self.measurable}


def sign_test(diffs: Sequence[float]) -> float:
    """Two-sided sign test of ``diffs`` against zero (zeros dropped); 1.0 when there is nothing to test."""
    signs = [d for d in diffs if d != 0]
    n = len(signs)
    if not n:
        return 1.0
    k = min(sum(1 for d in signs if d > 0), sum(1 for d in signs if d < 0))
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def latency_verdict(baseline_rounds: Sequence[Sequence[float]], policy_rounds: Sequence[Sequence[float]]) -> LatencyVerdict:
    """Compare interleaved rounds of connect times, round i of one with round i of the other."""
    base = [x for r in baseline_rounds for x in r]
    pol = [x for r in policy_rounds for x in r]
    diffs = tuple(percentile(p, 50) - percentile(b, 50) for b, p in zip(baseline_rounds, policy_rounds) if b and p)
    return LatencyVerdict(percentile(base, 50), percentile(base, 99), percentile(pol, 50), percentile(pol, 99), diffs)


def latency_report(rounds: dict[str, list[list[float]]]) -> dict[str, Any]:
    """One pair's interleaved rounds (``none``, ``kmesh``, ``anchor``) summarised: kmesh's rules and the
    anchor's each against no rules, and kmesh's added p50 over the anchor's (below 1: kmesh adds less)."""
    ours, theirs = latency_verdict(rounds["none"], rounds["kmesh"]), latency_verdict(rounds["none"], rounds["anchor"])
    return {"rounds": {k: [summary(x).json() for x in v] for k, v in rounds.items()},
            "verdict": ours.json(), "anchor": theirs.json(),
            "added_vs_anchor": ours.diff / theirs.diff if theirs.diff > 0 else math.nan}


def rule_position(installed: str, pod_key: str, direction: str, label: str) -> tuple[int, int] | None:
    """(1-based position of the first rule whose comment is ``label``, rules in the chain) in the
    ``direction`` chain of ``pod_key`` in an agent's nft text; None when there is no such rule."""
    lines = installed.splitlines()
    head = f'comment "{pod_key} {direction}"'
    for i, line in enumerate(lines):
        if line.strip() == head:
            body = []
            for rule in lines[i + 1:]:
                if rule.strip() == "}":
                    break
                body.append(rule)
            pos = next((n + 1 for n, rule in enumerate(body) if f'comment "{label}"' in rule), None)
            return None if pos is None else (pos, len(body))
    return None


# ----------------------------------------------------------------------------------------------- the testbed


@dataclass
class Bed:
    """The namespaces: an underlay, one per node, one per real pod (all prefixed ``kmesh-np<tag>-``)."""

    prefix: str
    underlay: str = ""
    nodes: dict[str, str] = field(default_factory=dict)
    pods: dict[str, str] = field(default_factory=dict)  # pod name → namespace
    made: list[str] = field(default_factory=list)

    def add(self, what: str) -> str:
        name = f"{self.prefix}-{what}"
        self.made.append(name)
        netns.add(name)
        return name


@contextmanager
def testbed(world: WorldPlan) -> Iterator[Bed]:
    """The nodes (bridge ``kbr0`` at .1 of their /24, ``eth0`` on the underlay, a route to every other node's
    /24 through it, forwarding and br_netfilter on) and their real pods; every namespace removed on the way out."""
    bed = Bed(f"kmesh-np{secrets.token_hex(3)}")
    try:
        bed.underlay = bed.add("underlay")
        netns.ip(bed.underlay, "link", "add", "ubr0", "type", "bridge")
        netns.ip(bed.underlay, "link", "set", "ubr0", "up")
        for i, node in enumerate(world.nodes):
            ns = bed.nodes[node] = bed.add(f"n{i + 1}")
            netns.ip(ns, "link", "add", "kbr0", "type", "bridge")
            netns.ip(ns, "addr", "add", f"10.244.{i + 1}.1/24", "dev", "kbr0")
            netns.ip(ns, "link", "set", "kbr0", "up")
            netns.add_veth(ns, "eth0", bed.underlay, f"n{i + 1}")
            netns.ip(bed.underlay, "link", "set", f"n{i + 1}", "master", "ubr0")
            netns.ip(ns, "addr", "add", f"{UNDERLAY.format(11 + i)}/24", "dev", "eth0")
            for j, _ in enumerate(world.nodes):
                if j != i:
                    netns.ip(ns, "route", "add", CIDR.format(j + 1), "via", UNDERLAY.format(11 + j))
            subprocess.run(netns.nsenter_argv(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1",
                                                   "net.bridge.bridge-nf-call-iptables=1"]), check=True)
            for k, pod in enumerate(p for p in world.pods if p.node == node and p.real):
                pns = bed.pods[pod.name] = bed.add(f"n{i + 1}-{pod.real}")
                netns.add_veth(ns, f"veth{k}", pns, "eth0")
                netns.ip(ns, "link", "set", f"veth{k}", "master", "kbr0")
                netns.ip(pns, "addr", "add", f"{pod.ip}/24", "dev", "eth0")
                netns.ip(pns, "route", "add", "default", "via", f"10.244.{i + 1}.1")
        yield bed
    finally:
        for name in reversed(bed.made):
            try:
                netns.delete(name)
            except netns.NetnsError as exc:  # keep removing the others
                print(f"warning: {exc}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- the traffic


class Prober:
    """``kmesh.bench.netpolprobe probe`` in the client's namespace, one JSON line per command."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self._buf = b""

    @classmethod
    async def start(cls, nursery: trio.Nursery, ns: str) -> Prober:
        argv = netns.nsenter_argv(ns, [sys.executable, "-m", "kmesh.bench.netpolprobe", *_pin(), "probe"])
        proc: trio.Process = await nursery.start(_process, argv)
        self = cls(proc)
        assert (await self.line()) == "probing"
        return self

    async def line(self) -> str:
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            chunk = await self.proc.stdout.receive_some(1 << 16)
            if not chunk:
                raise RuntimeError("the prober exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    async def send(self, cmd: Obj) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(json.dumps(cmd).encode() + b"\n")

    async def latency(self, ip: str, count: int) -> list[float]:
        """``count`` connect times to ip:PORT."""
        await self.send({"op": "latency", "dst": [ip, PORT], "count": count})
        return [float(x) for x in json.loads(await self.line())["samples"]]


async def _process(argv: list[str], *, task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED) -> None:
    """Run ``argv`` with pipes until cancelled; then it is killed by its own handle (no one else's)."""
    proc = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        task_status.started(proc)
        await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def _pin() -> list[str]:
    """The prober and the servers share the last CPU (with more than one): without it the connect times
    jump between two or three modes run to run as the scheduler places client, server and softirq."""
    cpus = sorted(os.sched_getaffinity(0))
    return ["--cpu", str(cpus[-1])] if len(cpus) > 1 else []


async def start_server(nursery: trio.Nursery, ns: str) -> trio.Process:
    """``netpolprobe serve PORT`` in ``ns``; returns once it listens."""
    argv = netns.nsenter_argv(ns, [sys.executable, "-m", "kmesh.bench.netpolprobe", *_pin(), "serve", str(PORT)])
    proc: trio.Process = await nursery.start(_process, argv)
    assert proc.stdout is not None
    buf = b""
    with trio.fail_after(10):
        while b"serving" not in buf:
            chunk = await proc.stdout.receive_some(100)
            if not chunk:
                raise RuntimeError(f"the server in {ns} exited")
            buf += chunk
    return proc


# ------------------------------------------------------------------------------------------------ the run


@dataclass
class Options:
    nodes: int = 3
    pods: int = 300
    policies: int = 100
    changes: int = 32
    connects: int = 2000
    rounds: int = 8
    interval: float = 0.001
    timeout: float = 0.1


Progress = Callable[[str, int, int], None]  # (step, done, total)


def _quiet(_step: str, _done: int, _total: int) -> None:
    pass


async def _fan_out(items: Sequence[Any], worker: Callable[[Any], Any], step: str, progress: Progress,
                   concurrency: int = 8) -> None:
    it = iter(items)
    done = 0

    async def run() -> None:
        nonlocal done
        for x in it:
            await worker(x)
            done += 1
            progress(step, done, len(items))

    async with trio.open_nursery() as n:
        for _ in range(concurrency):
            n.start_soon(run)


async def _until_enforced(client: Any, agents: dict[str, Any], nodes: Sequence[str]) -> PolicyWorld:
    """Return, once every node's agent has installed what the API's objects say now (polling its text), the
    policy model of those objects."""
    from kmesh.policy.agent import local_pods
    from kmesh.policy.nftrules import render

    items = {k: (await client.list_all(k))[0] for k in ("Pod", "Namespace", "NetworkPolicy")}
    truth = PolicyWorld(items["Pod"], items["Namespace"], items["NetworkPolicy"])
    want = {node: render(truth, local_pods(truth, node))[0] for node in nodes}
    with trio.fail_after(120):
        while any(agents[n].installed != want[n] for n in nodes):
            await trio.sleep(0.005)
    return truth


async def _anchor_in(ns: str, rendered: Rendered) -> None:
    """Swap kmesh's table on node namespace ``ns`` for the anchor's rules (kube-router's)."""
    from kmesh.policy.nftrules import FAMILY, TABLE

    await netns.run(ns, ["nft", "delete", "table", FAMILY, TABLE])
    await netns.run(ns, ["ipset", "restore"], input=rendered.ipsets.encode())
    await netns.run(ns, ["iptables-restore", "--noflush"], input=rendered.iptables.encode())


async def _anchor_out(ns: str, rendered: Rendered, installed: str) -> None:
    """Take the anchor's rules out of ``ns`` and put kmesh's table (the agent's ``installed`` text) back."""
    await netns.run(ns, ["iptables-restore", "--noflush"], input=rendered.removal().encode(), check=False)
    for name in rendered.sets:
        await netns.run(ns, ["ipset", "destroy", name], check=False)
    await netns.run(ns, ["nft", "-f", "-"], input=installed.encode())


CONDITIONS = ("none", "kmesh", "anchor")


async def _latency_rounds(bed: Bed, agents: dict[str, Any], no_rules: dict[str, str], truth: PolicyWorld,
                          prober: Prober, pairs: dict[str, str], opts: Options, progress: Progress,
                          report: dict[str, Any]) -> dict[str, dict[str, list[list[float]]]]:
    """Rounds of connects to each pair under each condition, interleaved (the order rotating each round, so
    neither drift nor position favours one): no policy (the agents' empty table), kmesh's table with every
    policy, and the anchor's rules for the same policies. kmesh's table is back in place on return."""
    from kmesh.bench import kuberouter
    from kmesh.policy.agent import local_pods

    anchor = {node: kuberouter.render(truth, local_pods(truth, node)) for node in bed.nodes}
    report["anchor_rules"] = {node: r.rules for node, r in anchor.items()}
    lat: dict[str, dict[str, list[list[float]]]] = {k: {c: [] for c in CONDITIONS} for k in pairs}
    total, done = opts.rounds * len(CONDITIONS) * len(pairs), 0
    for node, ns in bed.nodes.items():  # a round to warm up (not counted): the first is slow whatever it runs
        await netns.run(ns, ["nft", "-f", "-"], input=no_rules[node].encode())
    for ip in pairs.values():
        await prober.latency(ip, opts.connects)
    for r in range(opts.rounds):
        for cond in CONDITIONS[r % 3:] + CONDITIONS[: r % 3]:
            swapped = []  # the nodes with the anchor's rules in place of kmesh's table
            try:
                for node, ns in bed.nodes.items():
                    if cond == "anchor":
                        swapped.append(node)
                        await _anchor_in(ns, anchor[node])
                    else:
                        text = no_rules[node] if cond == "none" else agents[node].installed
                        await netns.run(ns, ["nft", "-f", "-"], input=text.encode())
                for name, ip in pairs.items():
                    got = await prober.latency(ip, opts.connects)
                    if not got:
                        raise RuntimeError(f"{name}: the client does not reach the server under '{cond}'")
                    lat[name][cond].append(got)
                    done += 1
                    progress("connect latency (no policy, kmesh, kube-router's rules)", done, total)
            finally:
                with trio.CancelScope(shield=True):
                    for node in swapped:
                        await _anchor_out(bed.nodes[node], anchor[node], agents[node].installed)
    for node, ns in bed.nodes.items():
        await netns.run(ns, ["nft", "-f", "-"], input=agents[node].installed.encode())
    return lat


async def run_bench(opts: Options, progress: Progress = _quiet) -> dict[str, Any]:
    """The whole benchmark; returns the report (see ``benchmarks/netpol.py`` for how it is printed)."""
    from kmesh.api.errors import APIError
    from kmesh.apiserver.server import ServerConfig, run_server
    from kmesh.client.api import Client
    from kmesh.client.kubeconfig import Credentials
    from kmesh.policy.agent import PolicyAgent

    world = plan_world(opts.nodes, opts.pods, opts.policies)
    changes = change_plan(opts.changes)
    client_pod, near, far = world.real("client", world.nodes[0]), world.real("server", world.nodes[0]), \
        world.real("server", world.nodes[1 % len(world.nodes)])
    _check_plan(world, changes, client_pod, far)
    report: dict[str, Any] = {"setup": {"nodes": opts.nodes, "pods": len(world.pods), "namespaces": len(world.namespaces),
                                        "policies": len(world.policies), "real_pods": sum(1 for p in world.pods if p.real),
                                        "probe_interval": opts.interval, "probe_timeout": opts.timeout,
                                        "connects_per_round": opts.connects}}
    with tempfile.TemporaryDirectory(prefix="kmesh-netpol-bench-") as tmp, testbed(world) as bed:
        async with trio.open_nursery() as nursery:
            srv = await nursery.start(run_server, ServerConfig(data_dir=Path(tmp), store_url="memory://", port=0))
            client = Client(Credentials(srv.url, srv.pki.ca_pem(), srv.pki.token))
            for pod in world.pods:
                if pod.real == "server":
                    await start_server(nursery, bed.pods[pod.name])
            prober = await Prober.start(nursery, bed.pods[client_pod.name])

            async def make_namespace(obj: Obj) -> None:
                try:
                    await client.create(obj)
                except APIError as exc:  # kube-system is there already: give it the labels
                    if exc.code != 409:
                        raise
                    await client.patch("Namespace", obj["metadata"]["name"],
                                       {"metadata": {"labels": obj["metadata"]["labels"]}})

            await _fan_out(world.namespaces, make_namespace, "namespaces", progress)

            async def make_pod(p: PodPlan) -> None:
                obj = await client.create(p.object())
                obj["status"] = {**(obj.get("status") or {}), "phase": "Running", "podIP": p.ip,
                                 "podIPs": [{"ip": p.ip}]}
                await client.update_status(obj)

            await _fan_out(world.pods, make_pod, "pods", progress)

            agents: dict[str, PolicyAgent] = {}
            async with trio.open_nursery() as agent_nursery:
                for i, node in enumerate(world.nodes):
                    agents[node] = await agent_nursery.start(PolicyAgent(client, node, netns=bed.nodes[node]).run)
                    progress("agents", i + 1, len(world.nodes))

                pairs = {"same node": near.ip, "across nodes": far.ip}
                if not all([await prober.latency(ip, 100) for ip in pairs.values()]):
                    raise RuntimeError("the probe client does not reach the servers without policies")
                no_rules = {node: agents[node].installed for node in world.nodes}  # the table with no policy

                # All policies at once (as `kubectl apply -f dir/` would), then until every agent enforces them.
                t0 = time.monotonic()
                await _fan_out(world.policies, client.create, "policies", progress)
                written = time.monotonic()
                truth = await _until_enforced(client, agents, world.nodes)
                report["bulk"] = {"create_seconds": written - t0, "enforced_seconds": time.monotonic() - t0}
                report["rules"] = {node: agents[node].rules for node in world.nodes}
                server_node = agents[far.node].installed
                report["allow_rule_position"] = rule_position(
                    server_node, f"{SERVER_NS}/{far.name}", "ingress", f"{SERVER_NS}/{ALLOW_POLICY} ingress rule 0")

                lat = await _latency_rounds(bed, agents, no_rules, truth, prober, pairs, opts, progress, report)
                samples = []
                for i, change in enumerate(changes):
                    samples.append(await _one_change(client, prober, agents, world, change, far, opts))
                    progress("policy changes", i + 1, len(changes))
                report["changes"] = samples
                report["enforcement"] = summary([s["seconds"] for s in samples if s["seconds"] is not None]).json()
                report["enforcement"]["missed"] = sum(1 for s in samples if s["seconds"] is None)
                report["enforcement"]["goal_p99"] = GOAL_ENFORCE_P99
                syncs: dict[str, Any] = {}
                first = min(s["written"] for s in samples)
                for node, agent in agents.items():
                    ts = [t for t in agent.timings if t.started >= first]
                    applied = [t for t in ts if t.apply > 0.001]
                    syncs[node] = {"syncs": len(ts), "render": summary([t.render for t in ts]).json(),
                                   "apply": summary([t.apply for t in applied]).json(),
                                   "total": summary([t.render + t.apply for t in ts]).json(),
                                   "rules": agent.rules, "applied": len(applied)}
                report["syncs"] = syncs

                report["latency"] = {name: latency_report(d) for name, d in lat.items()}
                report["latency_samples"] = {name: {k: [x for rr in v for x in rr] for k, v in d.items()}
                                             for name, d in lat.items()}
                agent_nursery.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    return report


def _check_plan(world: WorldPlan, changes: Sequence[Change], client: PodPlan, server: PodPlan) -> None:
    """The plan must do what it says: the server is isolated and the client allowed in (by the allow policy,
    not first), and each change flips the connection as it claims (per the policy model)."""
    v = world.model().evaluate(client.ip, server.ip, PORT)
    if not (v.allowed and v.ingress.isolated and v.ingress.allowed_by == f"{SERVER_NS}/{ALLOW_POLICY} ingress rule 0"):
        raise RuntimeError(f"bad plan: {v}")
    for i in range(len(changes)):
        pols = policies_after(world.policies, changes[: i + 1])
        if world.model(pols).evaluate(client.ip, server.ip, PORT).allowed != changes[i].allowed_after:
            raise RuntimeError(f"bad plan: change {i} ({changes[i].label}) does not do what it says")


async def _one_change(client: Any, prober: Prober, agents: dict[str, Any], world: WorldPlan, change: Change,
                      server: PodPlan, opts: Options) -> dict[str, Any]:
    """Start probing, write the change, read when the probes saw it and what the agents did."""
    await prober.send({"op": "flip", "dst": [server.ip, PORT], "want": change.allowed_after,
                       "interval": opts.interval, "timeout": opts.timeout, "max": 15.0})
    with trio.fail_after(20):
        ready = json.loads(await prober.line())
    if ready.get("late"):
        raise RuntimeError(f"before '{change.label}': the connection did not behave as expected")
    if change.kind == "lock":
        await client.create(lock_policy())
    elif change.kind == "unlock":
        await client.delete("NetworkPolicy", LOCK_POLICY, CLIENT_NS)
    else:
        port = "grpc" if change.kind == "close" else "http"
        await client.patch("NetworkPolicy", ALLOW_POLICY, {"spec": {"ingress": allow_policy(port)["spec"]["ingress"]}},
                           SERVER_NS)
    written = time.monotonic()
    with trio.fail_after(30):
        answer = json.loads(await prober.line())
    t = transition(answer["runs"], change.allowed_after, written)
    node = world.real("client", world.nodes[0]).node if change.enforcer == "client" else server.node
    with trio.move_on_after(5):  # the agents sync after the write (they coalesce for 20 ms first)
        while not all(any(x.started >= written for x in a.timings) for a in agents.values()):
            await trio.sleep(0.005)
    mine = [x for x in agents[node].timings if x.started >= written]
    first = mine[0] if mine else None
    return {"change": change.label, "kind": change.kind, "enforcer": node, "written": written,
            "seconds": t.seconds, "lower": t.lower, "flaps": t.flaps, "probes": t.probes,
            "gave_up": bool(answer.get("gave_up")),
            "sync_start": None if first is None else first.started - written,
            "sync_render": None if first is None else first.render,
            "sync_apply": None if first is None else first.apply}
