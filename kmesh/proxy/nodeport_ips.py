"""Where a proxy mode opens NodePorts: ``--nodeport-addresses`` applied to the node namespace's addresses.

``kmesh.proxy.nodeports`` parses the flag and matches addresses; this module
asks the node namespace which addresses it holds (an ``ip addr`` run, so the
modes call it at each full sync, not on every partial one, and only when
CIDRs need matching) and answers the
one question upstream's iptables proxier asks once at start: may NodePorts
be reached on loopback addresses (``ContainsIPv4Loopback``)?
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import partial

import trio

from kmesh.net import netns
from kmesh.proxy import nodeports
from kmesh.proxy.model import NodeContext

_LOOPBACK_START = ipaddress.ip_address("127.0.0.0")


async def local_addresses(ctx: NodeContext, except_link: str | None = None) -> list[str]:
    """Every IPv4 address the node namespace holds (``ctx.netns``; None: this process's own), or all but
    those of link ``except_link`` (as upstream's ``GetAllLocalAddressesExcept``)."""
    return await trio.to_thread.run_sync(partial(netns.addresses, ctx.netns, except_link=except_link))


async def local_addresses_for(ctx: NodeContext, mode: str) -> list[str]:
    """The namespace's addresses when ``mode``'s ``--nodeport-addresses`` choice has CIDRs to match
    against them; else [] without asking (every address, or ``primary``)."""
    if nodeports.needs_local(nodeports.effective(ctx.nodeport_addresses, mode)):
        return await local_addresses(ctx)
    return []


async def select_for(ctx: NodeContext, mode: str) -> list[str] | None:
    """The NodePort addresses of ``mode`` on this node (``nodeports.ALL`` for every local address)."""
    local = await local_addresses_for(ctx, mode)
    return nodeports.select(nodeports.effective(ctx.nodeport_addresses, mode), ctx.node_ips, local)


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
        if value == nodeports.PRIMARY:
            continue
        net = ipaddress.ip_network(value, strict=False)
        if net.version == 4 and (net.network_address.is_loopback or _LOOPBACK_START in net):
            return True
    return False


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8 and ::1."""
    return ipaddress.ip_address(ip).is_loopback
