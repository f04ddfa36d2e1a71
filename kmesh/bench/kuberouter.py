"""The NetworkPolicy benchmark's anchor: the same policies as k3s's embedded agent (kube-router's network policy
controller) writes them, with iptables and ipset, for one node.

k3s, the tool a lab user would otherwise run, enforces policies with kube-router's controller; on a current
distribution its iptables rules go through the nf_tables backend, as here. To compare connect latency in
the same run, the benchmark swaps kmesh's table for these rules on every node. Their shape, from
kube-router's documented design and its sources (facts only, written here from the policy model):

- ``FORWARD``, ``INPUT`` and ``OUTPUT`` jump first to ``KUBE-ROUTER-FORWARD``/``-INPUT``/``-OUTPUT``;
- those hold, per isolated pod of the node, jumps to its ``KUBE-POD-FW-<hash>`` chain, matched by the pod's
  address (``-d`` for ingress, ``-s`` for egress; once more with ``physdev --physdev-is-bridged`` for
  bridged traffic), a linear list;
- a pod chain accepts RELATED/ESTABLISHED, accepts the node's own traffic to the pod (``addrtype
  --src-type LOCAL``), jumps to each selecting policy's ``KUBE-NWPLCY-<hash>`` chain, then logs (NFLOG,
  rate-limited) and REJECTs what no policy marked, and clears the mark;
- a policy chain has, per rule, peer and port, a rule that sets mark 0x10000 when the ipsets of the
  peers (``KUBE-SRC-``) and of the policy's target pods (``KUBE-DST-``) match, and a copy that RETURNs
  once marked; ipBlock peers are ``hash:net`` sets with ``nomatch`` entries for their exceptions.

This renders what the anchor needs (the rules on the path a connection takes); it is not an agent.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from kmesh.policy.model import EGRESS, INGRESS, CompiledRule, Obj, Peer, PodInfo, PolicyWorld

MARK = "0x10000/0x10000"
TOP = {"FORWARD": "KUBE-ROUTER-FORWARD", "INPUT": "KUBE-ROUTER-INPUT", "OUTPUT": "KUBE-ROUTER-OUTPUT"}


def _hash(prefix: str, text: str) -> str:
    return prefix + base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def _policy_name(pol: Obj) -> str:
    md = pol.get("metadata") or {}
    return f"{md.get('namespace')}/{md.get('name')}"


@dataclass
class Rendered:
    """One node's anchor rules: ``ipset restore`` input, the set names, and ``iptables-restore --noflush`` input."""

    ipsets: str
    sets: list[str]
    iptables: str
    rules: int
    chains: list[str]

    def removal(self) -> str:
        """``iptables-restore --noflush`` input that takes the rules out again (the sets go after it)."""
        lines = ["*filter", *(f":{c} - [0:0]" for c in self.chains)]
        lines += [f'-D {base} -m comment --comment "kube-router netpol" -j {chain}' for base, chain in TOP.items()]
        lines += [f"-X {c}" for c in self.chains] + ["COMMIT", ""]
        return "\n".join(lines)


@dataclass
class _Builder:
    sets: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # name → (type, entries)
    chains: dict[str, list[str]] = field(default_factory=dict)

    def ipset(self, prefix: str, kind: str, entries: list[str]) -> str:
        name = _hash(prefix, kind + "|" + "|".join(sorted(entries)))
        self.sets[name] = (kind, sorted(entries))
        return name

    def peer_set(self, peer: Peer) -> str | None:
        if peer.everyone:
            return None
        if peer.cidr:  # hash:net takes no /0: two halves instead, as kube-router writes it
            cidrs = ["0.0.0.0/1", "128.0.0.0/1"] if peer.cidr.endswith("/0") else [peer.cidr]
            return self.ipset("KUBE-SRC-", "hash:net", cidrs + [f"{e} nomatch" for e in peer.excepts])
        return self.ipset("KUBE-SRC-", "hash:ip", list(peer.ips))

    def chain(self, name: str) -> list[str]:
        return self.chains.setdefault(name, [])


def _port_args(rule: CompiledRule) -> list[str]:
    if not rule.ports:
        return [""]
    out = []
    for r in rule.ports:
        proto = r.protocol.lower()
        if r.lo == 0:
            out.append(f"-p {proto}")
        else:
            out.append(f"-p {proto} --dport {r.lo}" + (f":{r.hi}" if r.hi != r.lo else ""))
    return out


def _policy_rules(b: _Builder, chain: str, pol: str, rule: CompiledRule, targets: list[str]) -> None:
    """The mark and return rules of one compiled rule for the target pods ``targets``."""
    if rule.no_ports:
        return
    target = b.ipset("KUBE-DST-" if rule.direction == INGRESS else "KUBE-SRC-", "hash:ip", targets)
    comment = f'-m comment --comment "rule to ACCEPT traffic from source pods to dest pods selected by policy name {pol}"'
    matches: list[str] = []
    for peer in rule.peers:
        peer_set = b.peer_set(peer)
        if rule.direction == INGRESS:
            sets = ([f"-m set --match-set {peer_set} src"] if peer_set else []) + [f"-m set --match-set {target} dst"]
        else:
            sets = [f"-m set --match-set {target} src"] + ([f"-m set --match-set {peer_set} dst"] if peer_set else [])
        if rule.ports or not rule.named:
            matches += [" ".join([*sets, ports]).strip() for ports in _port_args(rule)]
    by_port: dict[tuple[str, int], list[str]] = {}
    for ip, proto, port in rule.named:  # egress named ports: a set of the destinations per resolved port
        by_port.setdefault((proto.lower(), port), []).append(ip)
    for (proto, port), ips in sorted(by_port.items()):
        named = b.ipset("KUBE-DST-", "hash:ip", ips)
        matches.append(f"-m set --match-set {target} src -m set --match-set {named} dst -p {proto} --dport {port}")
    for m in matches:
        b.chain(chain).append(f"-A {chain} {comment} {m} -j MARK --set-xmark {MARK}")
        b.chain(chain).append(f"-A {chain} {comment} {m} -m mark --mark {MARK} -j RETURN")


def render(world: PolicyWorld, local: list[PodInfo]) -> Rendered:
    """The anchor's rules for the pods in ``local`` (one node)."""
    b = _Builder()
    top: dict[str, list[str]] = {name: [] for name in TOP.values()}
    policy_chains: dict[tuple[str, str], str] = {}
    # the compiled rules of each (policy, direction) for each local target pod, grouped by what they compile to
    groups: dict[tuple[str, str], dict[CompiledRule, list[str]]] = {}
    pods = [p for p in sorted(local, key=lambda p: p.key) if p.ips and not p.host_network]
    selecting = {(pod.key, d): world.selecting(pod, d) for pod in pods for d in (INGRESS, EGRESS)}
    for pod in pods:
        for direction in (INGRESS, EGRESS):
            for pol in selecting[(pod.key, direction)]:
                name = _policy_name(pol)
                policy_chains.setdefault((name, direction), _hash("KUBE-NWPLCY-", name))
                b.chain(policy_chains[(name, direction)])  # declared even when it has no rule (a deny)
                for rule in world.compile(pol, pod, direction):
                    groups.setdefault((name, direction), {}).setdefault(rule, []).extend(pod.ips)
    for (name, direction), rules in groups.items():
        chain = policy_chains[(name, direction)]
        for rule, targets in rules.items():
            _policy_rules(b, chain, name, rule, targets)

    for pod in pods:
        ingress, egress = selecting[(pod.key, INGRESS)], selecting[(pod.key, EGRESS)]
        if not ingress and not egress:
            continue
        fw = _hash("KUBE-POD-FW-", pod.key)
        body = [f'-A {fw} -m comment --comment "rule for stateful firewall for pod" '
                "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
        for ip in pod.ips if ingress else ():
            body.append(f'-A {fw} -m comment --comment "rule to permit the traffic traffic to pods when source is the '
                        f'pod\'s local node" -m addrtype --src-type LOCAL -d {ip} -j ACCEPT')
        for direction, pols in ((INGRESS, ingress), (EGRESS, egress)):
            for pol in reversed(pols):
                name = _policy_name(pol)
                body.append(f'-A {fw} -m comment --comment "run through nw policy {name}" '
                            f"-j {policy_chains[(name, direction)]}")
        body += [f'-A {fw} -m comment --comment "rule to log dropped traffic POD name:{pod.name} namespace: '
                 f'{pod.namespace}" -m mark ! --mark {MARK} -j NFLOG --nflog-group 100 -m limit --limit 10/minute '
                 "--limit-burst 10",
                 f'-A {fw} -m comment --comment "rule to REJECT traffic destined for POD name:{pod.name} namespace: '
                 f'{pod.namespace}" -m mark ! --mark {MARK} -j REJECT',
                 f"-A {fw} -j MARK --set-mark 0/0x10000"]
        b.chains[fw] = body
        for ip in pod.ips:
            if ingress:
                comment = f'-m comment --comment "rule to jump traffic destined to POD name:{pod.name} namespace: ' \
                          f'{pod.namespace} to chain {fw}"'
                top["KUBE-ROUTER-FORWARD"][:0] = [f"-A KUBE-ROUTER-FORWARD -m physdev --physdev-is-bridged "
                                                  f"{comment} -d {ip} -j {fw}",
                                                  f"-A KUBE-ROUTER-FORWARD {comment} -d {ip} -j {fw}"]
                top["KUBE-ROUTER-OUTPUT"].insert(0, f"-A KUBE-ROUTER-OUTPUT {comment} -d {ip} -j {fw}")
            if egress:
                comment = f'-m comment --comment "rule to jump traffic from POD name:{pod.name} namespace: ' \
                          f'{pod.namespace} to chain {fw}"'
                for chain in TOP.values():
                    top[chain].append(f"-A {chain} {comment} -s {ip} -j {fw}")
                top["KUBE-ROUTER-FORWARD"].insert(0, f"-A KUBE-ROUTER-FORWARD -m physdev --physdev-is-bridged "
                                                     f"{comment} -s {ip} -j {fw}")

    names = [*TOP.values(), *b.chains]
    lines = ["*filter", *(f":{n} - [0:0]" for n in names)]
    lines += [f'-I {base} 1 -m comment --comment "kube-router netpol" -j {chain}' for base, chain in TOP.items()]
    body = [r for chain in TOP.values() for r in top[chain]] + [r for rules in b.chains.values() for r in rules]
    lines += body + ["COMMIT", ""]
    sets = [f"create {name} {kind} family inet\n" + "".join(f"add {name} {e}\n" for e in entries)
            for name, (kind, entries) in b.sets.items()]
    return Rendered("".join(sets), list(b.sets), "\n".join(lines), len(body) + len(TOP), names)
