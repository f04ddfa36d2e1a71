"""flannel's iptables rules: masquerade pod traffic leaving the cluster network, accept forwarding inside it.

Same chains, rules and comments as flanneld (``--ip-masq``): nat
``FLANNEL-POSTRTG`` jumped from ``POSTROUTING``, filter ``FLANNEL-FWD`` jumped
from ``FORWARD``. Applied with ``iptables-restore --noflush`` inside the node
namespace: declaring a chain flushes it, and the jumps are only added when
missing, so applying again leaves the same rules, never duplicates.
"""

from __future__ import annotations

import ipaddress

from kmesh.net import netns as nsmod

KUBE_PROXY_MARK = "0x4000/0x4000"
MASQ = '-m comment --comment "flanneld masq"'
FWD = '-m comment --comment "flanneld forward"'
NAT_JUMP = f"-A POSTROUTING {MASQ} -j FLANNEL-POSTRTG"
FWD_JUMP = f"-A FORWARD {FWD} -j FLANNEL-FWD"


def masq_rules(network: str, subnet: str, random_fully: bool = True) -> list[str]:
    """The ``FLANNEL-POSTRTG`` rules, in flannel's order, as iptables-save prints them."""
    net, sub = str(ipaddress.ip_network(network)), str(ipaddress.ip_network(subnet))
    masq = "MASQUERADE --random-fully" if random_fully else "MASQUERADE"
    return [
        f"-A FLANNEL-POSTRTG -m mark --mark {KUBE_PROXY_MARK} {MASQ} -j RETURN",  # kube-proxy masquerades these
        f"-A FLANNEL-POSTRTG -s {sub} -d {net} {MASQ} -j RETURN",  # pod -> pod: no NAT
        f"-A FLANNEL-POSTRTG -s {net} -d {sub} {MASQ} -j RETURN",
        f"-A FLANNEL-POSTRTG ! -s {net} -d {sub} {MASQ} -j RETURN",  # outside -> our pods: keep the client address
        f"-A FLANNEL-POSTRTG -s {net} ! -d 224.0.0.0/4 {MASQ} -j {masq}",  # pods -> outside world
        f"-A FLANNEL-POSTRTG ! -s {net} -d {net} {MASQ} -j {masq}",  # host -> pods on other nodes
    ]


def forward_rules(network: str) -> list[str]:
    """The ``FLANNEL-FWD`` rules accepting forwarded traffic from and to the cluster network."""
    net = str(ipaddress.ip_network(network))
    return [f"-A FLANNEL-FWD -s {net} {FWD} -j ACCEPT", f"-A FLANNEL-FWD -d {net} {FWD} -j ACCEPT"]


async def _save(netns: str | None, table: str) -> list[str]:
    proc = await nsmod.run(netns, ["iptables-save", "-t", table])
    return proc.stdout.decode().splitlines()


def restore_text(network: str, subnet: str, nat_now: list[str], filter_now: list[str]) -> str:
    """The iptables-restore input that makes the rules right, given the current ``iptables-save`` lines."""
    nat = ["*nat", ":FLANNEL-POSTRTG - [0:0]"]
    if NAT_JUMP not in nat_now:
        nat.append(NAT_JUMP)
    nat += masq_rules(network, subnet)
    filt = ["*filter", ":FLANNEL-FWD - [0:0]"]
    if FWD_JUMP not in filter_now:
        filt.append(FWD_JUMP)
    filt += forward_rules(network)
    return "\n".join([*nat, "COMMIT", *filt, "COMMIT", ""])


async def apply_masq(netns: str | None, network: str, subnet: str) -> None:
    """Install (or refresh) flannel's masquerade and forward rules in ``netns`` (None: here)."""
    text = restore_text(network, subnet, await _save(netns, "nat"), await _save(netns, "filter"))
    await nsmod.run(netns, ["iptables-restore", "--noflush"], input=text.encode())


async def remove_masq(netns: str | None) -> None:
    """Remove the jumps and both chains; nothing happens when they are not there."""
    lines: list[str] = []
    for table, chain, jump in (("nat", "FLANNEL-POSTRTG", NAT_JUMP), ("filter", "FLANNEL-FWD", FWD_JUMP)):
        now = await _save(netns, table)
        if not any(l.startswith(f":{chain} ") for l in now):
            continue
        lines.append(f"*{table}")
        lines += ["-D" + jump[2:]] * now.count(jump)
        lines += [f"-F {chain}", f"-X {chain}", "COMMIT"]
    if lines:
        await nsmod.run(netns, ["iptables-restore", "--noflush"], input=("\n".join(lines) + "\n").encode())
