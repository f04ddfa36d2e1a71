"""What NetworkPolicies allow, as the API documents it: the one model the node agents enforce and ``explain`` reads.

Semantics (``networking.k8s.io/v1``):

- A policy selects the pods of its own namespace that match ``spec.podSelector``
  (``{}``: all of them), for the directions in ``policyTypes`` (when absent:
  Ingress, plus Egress if the policy has egress rules).
- A pod is isolated for a direction only when some policy selects it for that
  direction; then a connection in that direction is allowed when any rule of
  any of those policies allows it (the union). A connection needs both ends:
  the source's egress and the destination's ingress.
- A rule's peers (``from``/``to``): absent or empty means every address; a
  ``podSelector`` alone means pods of the policy's namespace, a
  ``namespaceSelector`` alone every pod of the matching namespaces, both
  together pods matching the first in namespaces matching the second; an
  ``ipBlock`` is its CIDR minus its ``except`` CIDRs, and it matches pod
  addresses too (as Calico and kube-router do).
- A rule's ports: absent or empty means every port and protocol; a port
  without ``port`` is every port of its protocol (TCP by default); ``endPort``
  makes a range; a named port is the destination pod's container port of that
  name and protocol (so one egress rule can mean different numbers for
  different pods).
- ``hostNetwork`` pods are neither isolated nor selected by peers (they share
  their node's address; upstream leaves them undefined).

:class:`PolicyWorld` holds the objects; :meth:`PolicyWorld.evaluate` answers
for one connection and says which policies and rules decided;
:meth:`PolicyWorld.rules` compiles a
pod's rules into address and port sets for the node agents.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from kmesh.api.selectors import LabelSelector, from_selector_object
from kmesh.controllers.podutil import pod_ips

Obj = dict[str, Any]
INGRESS, EGRESS = "Ingress", "Egress"
PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True)
class PodInfo:
    """A pod as policies see it: where it is, its labels, its addresses and its named ports."""

    namespace: str
    name: str
    labels: dict[str, str]
    ips: tuple[str, ...]
    node: str = ""
    ports: dict[tuple[str, str], int] = field(default_factory=dict)
    """(port name, protocol) → container port number."""
    host_network: bool = False

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @classmethod
    def of(cls, pod: Obj) -> PodInfo:
        """From a Pod object."""
        md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        ports: dict[tuple[str, str], int] = {}
        for c in spec.get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("name") and p.get("containerPort"):
                    ports[(p["name"], p.get("protocol") or "TCP")] = int(p["containerPort"])
        return cls(md.get("namespace") or "", md.get("name") or "", dict(md.get("labels") or {}),
                   tuple(pod_ips(pod)), spec.get("nodeName") or "", ports, bool(spec.get("hostNetwork")))


@dataclass(frozen=True)
class PortRange:
    """Ports ``lo``–``hi`` of one protocol (``lo`` 0: every port of it)."""

    protocol: str
    lo: int = 0
    hi: int = 0

    def matches(self, protocol: str, port: int) -> bool:
        """Whether a connection to ``port`` over ``protocol`` is in range."""
        return protocol == self.protocol and (self.lo == 0 or self.lo <= port <= self.hi)


@dataclass(frozen=True)
class Peer:
    """One compiled peer: a set of pod addresses, or a CIDR minus exceptions; ``everyone`` for an empty list."""

    ips: frozenset[str] = frozenset()
    cidr: str = ""
    excepts: tuple[str, ...] = ()
    everyone: bool = False

    def matches(self, ip: str) -> bool:
        """Whether the address is in this peer."""
        if self.everyone:
            return True
        if self.cidr:
            addr = ipaddress.ip_address(ip)
            return addr in ipaddress.ip_network(self.cidr, strict=False) and not any(
                addr in ipaddress.ip_network(e, strict=False) for e in self.excepts)
        return ip in self.ips


@dataclass(frozen=True)
class CompiledRule:
    """One rule of one policy for one pod: any peer, and any port (empty ``ports`` and no ``named``: all).
    ``named``: (address, protocol, port) the rule allows through named ports that resolved on peer pods
    (egress); ``no_ports`` marks a rule whose ports all failed to resolve (it allows nothing)."""

    policy: str
    index: int
    direction: str
    peers: tuple[Peer, ...]
    ports: tuple[PortRange, ...] = ()
    named: frozenset[tuple[str, str, int]] = frozenset()
    no_ports: bool = False

    @property
    def label(self) -> str:
        """``ns/policy ingress rule N``: what ``explain`` and the rule comments print."""
        return f"{self.policy} {self.direction.lower()} rule {self.index}"

    def matches(self, peer_ip: str, protocol: str, port: int, dst_ip: str) -> bool:
        """Whether this rule allows a connection whose other end is ``peer_ip`` (``dst_ip`` is the
        destination, for named egress ports)."""
        if self.no_ports or not any(p.matches(peer_ip) for p in self.peers):
            return False
        if not self.ports and not self.named:
            return True
        return any(r.matches(protocol, port) for r in self.ports) or (dst_ip, protocol, port) in self.named


@dataclass(frozen=True)
class Side:
    """One end's verdict: whether it is isolated, by which policies, and which rule allowed (None: none did)."""

    isolated: bool
    policies: tuple[str, ...] = ()
    allowed_by: str | None = None

    @property
    def allowed(self) -> bool:
        """Not isolated, or some rule allowed."""
        return not self.isolated or self.allowed_by is not None


@dataclass(frozen=True)
class Verdict:
    """A connection's verdict: its source's egress and its destination's ingress. ``loopback``: a pod's
    connection to itself, which never leaves the pod, so no policy applies (upstream's e2e AllowLoopback)."""

    egress: Side
    ingress: Side
    loopback: bool = False

    @property
    def allowed(self) -> bool:
        """Both ends allow it (or it is a pod's traffic to itself)."""
        return self.loopback or self.egress.allowed and self.ingress.allowed


def policy_types(policy: Obj) -> tuple[str, ...]:
    """The directions a policy isolates (``policyTypes``, or the API's default when it is absent)."""
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if types:
        return tuple(types)
    return (INGRESS, EGRESS) if spec.get("egress") else (INGRESS,)


class PolicyWorld:
    """Pods, namespaces and policies at one moment, with the questions the agents and ``explain`` ask."""

    def __init__(self, pods: list[Obj], namespaces: list[Obj], policies: list[Obj]) -> None:
        self.pods = [info for info in map(PodInfo.of, pods) if info.ips or info.host_network]
        self.by_ip = {ip: p for p in self.pods if not p.host_network for ip in p.ips}
        self.by_key = {p.key: p for p in self.pods}
        self.namespaces = {(n.get("metadata") or {}).get("name") or "": dict((n.get("metadata") or {}).get("labels")
                                                                             or {}) for n in namespaces}
        for p in self.pods:  # a namespace the informer has not delivered yet still has its name label
            self.namespaces.setdefault(p.namespace, {})
        for ns, labels in self.namespaces.items():
            labels.setdefault("kubernetes.io/metadata.name", ns)
        self.policies = sorted(policies, key=lambda p: ((p.get("metadata") or {}).get("namespace") or "",
                                                        (p.get("metadata") or {}).get("name") or ""))
        self._peers: dict[tuple[str, str], Peer] = {}
        """Compiled peers by (policy namespace, peer): one scan of the pods per distinct peer."""
        self._by_ns: dict[str, list[tuple[Obj, tuple[str, ...], LabelSelector]]] = {}
        """Each namespace's policies with their directions and parsed pod selectors (parsed once)."""
        for pol in self.policies:
            self._by_ns.setdefault((pol.get("metadata") or {}).get("namespace") or "", []).append(
                (pol, policy_types(pol), from_selector_object((pol.get("spec") or {}).get("podSelector") or {})))

    # --- selection -----------------------------------------------------------------------------------

    def selecting(self, pod: PodInfo, direction: str) -> list[Obj]:
        """The policies that select ``pod`` for ``direction``."""
        if pod.host_network:
            return []
        return [pol for pol, types, sel in self._by_ns.get(pod.namespace, ())
                if direction in types and sel.matches(pod.labels)]

    def _peer(self, peer: Obj, policy_ns: str) -> Peer:
        key = (policy_ns, json.dumps(peer, sort_keys=True))
        found = self._peers.get(key)
        if found is None:
            found = self._peers[key] = self._compile_peer(peer, policy_ns)
        return found

    def _compile_peer(self, peer: Obj, policy_ns: str) -> Peer:
        block = peer.get("ipBlock")
        if block:
            return Peer(cidr=block.get("cidr") or "", excepts=tuple(block.get("except") or ()))
        pod_sel: LabelSelector | None = (from_selector_object(peer["podSelector"])
                                         if peer.get("podSelector") is not None else None)
        ns_sel: LabelSelector | None = (from_selector_object(peer["namespaceSelector"])
                                        if peer.get("namespaceSelector") is not None else None)
        ips = set()
        for p in self.pods:
            if p.host_network:
                continue
            if ns_sel is None:
                if p.namespace != policy_ns:
                    continue
            elif not ns_sel.matches(self.namespaces.get(p.namespace, {})):
                continue
            if pod_sel is not None and not pod_sel.matches(p.labels):
                continue
            ips.update(p.ips)
        return Peer(ips=frozenset(ips))

    def compile(self, pol: Obj, pod: PodInfo, direction: str) -> list[CompiledRule]:
        """The rules of policy ``pol`` for ``direction`` as they apply to ``pod`` (named ports resolved)."""
        md, spec = pol.get("metadata") or {}, pol.get("spec") or {}
        ns = md.get("namespace") or ""
        name = f"{ns}/{md.get('name') or ''}"
        key, peers_key = ("ingress", "from") if direction == INGRESS else ("egress", "to")
        out = []
        for i, rule in enumerate(spec.get(key) or []):
            peers = tuple(self._peer(p, ns) for p in rule.get(peers_key) or []) or (Peer(everyone=True),)
            ranges: list[PortRange] = []
            named: set[tuple[str, str, int]] = set()
            listed = rule.get("ports") or []
            for port in listed:
                proto = port.get("protocol") or "TCP"
                value = port.get("port")
                if value is None:
                    ranges.append(PortRange(proto))
                elif isinstance(value, int) or str(value).isdigit():
                    lo = int(value)
                    ranges.append(PortRange(proto, lo, int(port.get("endPort") or lo)))
                elif direction == INGRESS:  # a named port: this pod's
                    number = pod.ports.get((str(value), proto))
                    if number is not None:
                        ranges.append(PortRange(proto, number, number))
                else:  # a named port on the egress side: each destination pod's own
                    for dst in self.pods:
                        number = dst.ports.get((str(value), proto))
                        if number is None or dst.host_network:
                            continue
                        for ip in dst.ips:
                            if any(p.matches(ip) for p in peers):
                                named.add((ip, proto, number))
            out.append(CompiledRule(name, i, direction, peers, tuple(ranges), frozenset(named),
                                    no_ports=bool(listed) and not ranges and not named))
        return out

    def rules(self, pod: PodInfo, direction: str) -> list[CompiledRule] | None:
        """The compiled rules for ``direction`` of every policy selecting ``pod``; None when it is not isolated."""
        pols = self.selecting(pod, direction)
        return [r for pol in pols for r in self.compile(pol, pod, direction)] if pols else None

    # --- one connection -------------------------------------------------------------------------------

    def evaluate(self, src_ip: str, dst_ip: str, port: int, protocol: str = "TCP") -> Verdict:
        """Whether a connection from ``src_ip`` to ``dst_ip``:``port`` is allowed, and why."""
        src, dst = self.by_ip.get(src_ip), self.by_ip.get(dst_ip)
        return Verdict(self._side(src, EGRESS, dst_ip, protocol, port, dst_ip),
                       self._side(dst, INGRESS, src_ip, protocol, port, dst_ip),
                       loopback=src is not None and src is dst)

    def _side(self, pod: PodInfo | None, direction: str, other_ip: str, protocol: str, port: int,
              dst_ip: str) -> Side:
        if pod is None:
            return Side(False)
        pols = self.selecting(pod, direction)
        if not pols:
            return Side(False)
        names = tuple(f"{(p.get('metadata') or {}).get('namespace')}/{(p.get('metadata') or {}).get('name')}"
                      for p in pols)
        for pol in pols:
            for rule in self.compile(pol, pod, direction):
                if rule.matches(other_ip, protocol, port, dst_ip):
                    return Side(True, names, rule.label)
        return Side(True, names, None)
