"""Which of a node's addresses accept NodePort traffic: kube-proxy's ``--nodeport-addresses``.

The flag takes CIDRs, or the single word ``primary`` (the node's own
addresses, as the Node object lists them). Left empty, the iptables, IPVS
and userspace modes accept NodePorts on every local address, while the
nftables mode takes ``primary`` — upstream's defaults since 1.29. A CIDR
that covers everything (``0.0.0.0/0``) also means every local address.

``parse`` checks the flag and ``select`` matches addresses; ``select_for``
asks the node namespace which addresses it holds (an ``ip addr`` run, so the
modes call it at each full sync, not on every partial one, and only when
CIDRs need matching). ``contains_ipv4_loopback`` answers the one question
upstream's iptables proxier asks once at start: may NodePorts be reached on
loopback addresses?
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import partial

import trio

from kmesh.net import netns
from kmesh.proxy.model import NodeContext

PRIMARY = "primary"
ALL: None = None  # what ``select`` returns for "every local address"
_LOOPBACK_START = ipaddress.ip_address("127.0.0.0")


def parse(values: Iterable[str]) -> tuple[str, ...]:
    """Check ``--nodeport-addresses`` values (comma-separated lists allowed); ValueError names the bad one."""
    out: list[str] = []
    for raw in values:
        for value in (v.strip() for v in raw.split(",")):
            if not value:
                continue
            if value == PRIMARY:
                out.append(value)
                continue
            try:
                net = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"--nodeport-addresses: {value!r} is neither a CIDR (like 192.168.56.0/24) nor 'primary'") from None
            if "/" not in value:
                raise ValueError(f"--nodeport-addresses: {value!r} needs a prefix length (like {value}/32)")
            out.append(str(net))
    if PRIMARY in out and len(out) > 1:
        raise ValueError("--nodeport-addresses: 'primary' cannot be combined with CIDRs")
    return tuple(out)


def effective(addresses: Sequence[str], mode: str) -> tuple[str, ...]:
    """``addresses`` with the mode's default filled in when empty (nftables: ``primary``)."""
    if not addresses and mode == "nftables":
        return (PRIMARY,)
    return tuple(addresses)


def needs_local(addresses: Sequence[str]) -> bool:
    """True when choosing among ``addresses`` (parsed, defaulted) means matching the node's own addresses
    against CIDRs; not for every address (empty, or a /0) nor for ``primary``."""
    if not addresses or tuple(addresses) == (PRIMARY,):
        return False
    return all(ipaddress.ip_network(a).prefixlen != 0 for a in addresses)


def select(addresses: Sequence[str], node_ips: Sequence[str], local_ips: Iterable[str] = ()) -> list[str] | None:
    """The addresses NodePorts listen on; ``ALL`` (None) for every local address.

    ``addresses`` are parsed (and defaulted) ``--nodeport-addresses`` values,
    ``node_ips`` the node's primary addresses, ``local_ips`` every address
    the node namespace holds (for CIDR matching). Loopback addresses match
    only when a CIDR names them, as upstream.
    """
    if not addresses:
        return ALL
    if tuple(addresses) == (PRIMARY,):
        return list(dict.fromkeys(node_ips))
    nets = [ipaddress.ip_network(a) for a in addresses]
    if any(n.prefixlen == 0 for n in nets):
        return ALL
    chosen: list[str] = []
    for ip in dict.fromkeys([*node_ips, *local_ips]):
        addr = ipaddress.ip_address(ip)
        if any(addr.version == n.version and addr in n for n in nets):
            chosen.append(ip)
    return chosen


async def local_addresses(ctx: NodeContext, except_link: str | None = None) -> list[str]:
    """Every IPv4 address the node namespace holds (``ctx.netns``; None: this process's own), or all but
    those of link ``except_link`` (as upstream's ``GetAllLocalAddressesExcept``)."""
    return await trio.to_thread.run_sync(partial(netns.addresses, ctx.netns, except_link=except_link))


async def local_addresses_for(ctx: NodeContext, mode: str) -> list[str]:
    """The namespace's addresses when ``mode``'s ``--nodeport-addresses`` choice has CIDRs to match
    against them; else [] without asking (every address, or ``primary``)."""
    if needs_local(effective(ctx.nodeport_addresses, mode)):
        return await local_addresses(ctx)
    return []


async def select_for(ctx: NodeContext, mode: str) -> list[str] | None:
    """The NodePort addresses of ``mode`` on this node (``ALL`` for every local address)."""
    local = await local_addresses_for(ctx, mode)
    return select(effective(ctx.nodeport_addresses, mode), ctx.node_ips, local)


def contains_ipv4_loopback(addresses: Sequence[str]) -> bool:
    """True when parsed ``--nodeport-addresses`` reach an IPv4 loopback address, as upstream decides it.

    Empty (every address) does; ``primary`` does not (upstream turns it into
    the node IP's /32 and leaves a loopback node IP out); a CIDR does when it
    starts in or covers 127.0.0.0. Upstream's iptables mode turns
    localhost NodePorts (and so ``route_localnet``) off when this is False.
    """
    if not addresses:
        return True
    for value in addresses:
        if value == PRIMARY:
            continue
        net = ipaddress.ip_network(value, strict=False)
        if net.version == 4 and (net.network_address.is_loopback or _LOOPBACK_START in net):
            return True
    return False


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8 and ::1."""
    return ipaddress.ip_address(ip).is_loopback
