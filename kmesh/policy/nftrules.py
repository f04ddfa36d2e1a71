"""One node's NetworkPolicy rules as an nftables table (``inet kmesh-netpol``), written whole in one transaction.

The table has two base chains in the node's namespace, ahead of everything
else at their hooks (priority ``filter - 5``), that only ever drop:

- ``forward`` sees every packet to or from the node's pods, routed or bridged
  (``br_netfilter``), after kube-proxy's DNAT: its first rule lets packets of
  established connections through (replies of allowed connections; a policy
  change never cuts one), then a verdict map jumps to the source pod's egress
  chain and another to the destination pod's ingress chain;
- ``input`` does the egress check for packets from the node's pods to the
  node itself.

Traffic the node sends to its own pods (the kubelet's probes) leaves through
``output`` and is never checked, as upstream requires. Each pod that some
policy isolates has a chain per direction: one ``return`` rule per (peer,
port) of each allowing rule, with a counter and a comment naming the policy
and rule, and a counted ``drop`` at the end (denied packets are dropped, not
rejected). Each distinct set of peer pod addresses is one named set
(``peers-N``) that every rule needing it refers to. nftables is used in every proxy mode: its tables sit beside
kube-proxy's iptables or nftables rules without ordering between them, and
sets and ranges are native.
"""

from __future__ import annotations

from kmesh.policy.model import EGRESS, INGRESS, CompiledRule, Peer, PodInfo, PolicyWorld, PortRange

FAMILY = "inet"
TABLE = "kmesh-netpol"
PRIORITY = "filter - 5"


def _q(text: str) -> str:
    """An nft comment: quoted, at most 128 bytes."""
    return '"' + text.replace('"', "'")[:120] + '"'


class _Sets:
    """The named sets of one table: each distinct set of pod addresses (or of address . protocol . port
    tuples) is declared once and referred to as ``@name`` by every rule that needs it (nft parses a big
    table several times faster than the same elements repeated in anonymous sets)."""

    def __init__(self) -> None:
        self.names: dict[tuple[str, frozenset[str]], str] = {}

    def ref(self, kind: str, elements: frozenset[str]) -> str:
        key = (kind, elements)
        name = self.names.get(key)
        if name is None:
            name = self.names[key] = f"{'peers' if kind == 'ip' else 'ports'}-{len(self.names)}"
        return "@" + name

    def declarations(self) -> str:
        out = []
        for (kind, elements), name in self.names.items():
            typ = "ipv4_addr" if kind == "ip" else "ipv4_addr . inet_proto . inet_service"
            out.append(f"  set {name} {{\n    type {typ}\n    elements = {{ {', '.join(sorted(elements))} }}\n  }}\n")
        return "".join(out)


def _peer_expr(peer: Peer, field: str, sets: _Sets) -> str | None:
    """The match for one peer on ``field`` (``ip saddr``/``ip daddr``); "" for anyone, None for no one."""
    if peer.everyone:
        return ""
    if peer.cidr:
        expr = f"{field} {peer.cidr}"
        if peer.excepts:
            expr += f" {field} != {{ {', '.join(peer.excepts)} }}"
        return expr
    if not peer.ips:
        return None
    return f"{field} {sets.ref('ip', peer.ips)}"


def _port_expr(r: PortRange) -> str:
    proto = r.protocol.lower()
    if r.lo == 0:
        return f"meta l4proto {proto}"
    ports = str(r.lo) if r.lo == r.hi else f"{r.lo}-{r.hi}"
    return f"meta l4proto {proto} th dport {ports}"


def rule_lines(rule: CompiledRule, sets: _Sets) -> list[str]:
    """The ``return`` rules (allow) of one compiled rule in its pod's chain."""
    if rule.no_ports:
        return []
    field = "ip saddr" if rule.direction == "Ingress" else "ip daddr"
    comment = f"counter return comment {_q(rule.label)}"
    out = []
    peers = [e for e in (_peer_expr(p, field, sets) for p in rule.peers) if e is not None]
    ports = [_port_expr(r) for r in rule.ports]
    if not rule.ports and not rule.named:
        ports = [""]
    for peer in peers:
        for port in ports:
            out.append(" ".join(x for x in (port, peer, comment) if x))  # ports first: a cheaper miss
    if rule.named:
        tuples = frozenset(f"{ip} . {proto.lower()} . {port}" for ip, proto, port in rule.named)
        out.append(f"ip daddr . meta l4proto . th dport {sets.ref('tuple', tuples)} {comment}")
    return out


def render(world: PolicyWorld, local: list[PodInfo]) -> tuple[str, int]:
    """The transaction that replaces the table with the rules for the pods in ``local``, and its rule count."""
    chains: list[str] = []
    sets = _Sets()
    ingress_map: list[str] = []
    egress_map: list[str] = []
    count = 0
    for n, pod in enumerate(sorted(local, key=lambda p: p.key)):
        if pod.host_network or not pod.ips:
            continue
        for direction, rules, vmap, prefix in (("ingress", world.rules(pod, INGRESS), ingress_map, "ing"),
                                                ("egress", world.rules(pod, EGRESS), egress_map, "egr")):
            if rules is None:
                continue
            name = f"{prefix}-{n}"
            body = [f"comment {_q(f'{pod.key} {direction}')}"]
            for rule in rules:
                body += rule_lines(rule, sets)
            body.append(f"counter drop comment {_q(f'{pod.key} {direction}: no policy allows it')}")
            count += len(body) - 1
            chains.append(f"  chain {name} {{\n" + "".join(f"    {line}\n" for line in body) + "  }\n")
            vmap += [f"{ip} : jump {name}" for ip in pod.ips]
    forward = [f"type filter hook forward priority {PRIORITY}; policy accept;",
               "ct state established,related accept"]
    inp = [f"type filter hook input priority {PRIORITY}; policy accept;",
           "ct state established,related accept"]
    if egress_map:
        forward.append(f"ip saddr vmap {{ {', '.join(egress_map)} }}")
        inp.append(f"ip saddr vmap {{ {', '.join(egress_map)} }}")
    if ingress_map:
        forward.append(f"ip daddr vmap {{ {', '.join(ingress_map)} }}")
    text = (f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\ntable {FAMILY} {TABLE} {{\n"
            + "  chain forward {\n" + "".join(f"    {line}\n" for line in forward) + "  }\n"
            + "  chain input {\n" + "".join(f"    {line}\n" for line in inp) + "  }\n"
            + sets.declarations() + "".join(chains) + "}\n")
    return text, count + len(forward) + len(inp) - 4
