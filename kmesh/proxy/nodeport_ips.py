"""Where a proxy mode opens NodePorts: ``--nodeport-addresses`` applied to the node namespace's addresses.

``kmesh.proxy.nodeports`` parses the flag and matches addresses; this module
asks the node namespace which addresses it holds (an ``ip addr`` run, so the
modes call it at each full sync, not on every partial one) and answers the
one question upstream's iptables proxier asks once at start: may NodePorts
be reached on loopback addresses (``ContainsIPv4Loopback``)?
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence

import trio

from kmesh.lab import netns
from kmesh.proxy import nodeports
from kmesh.proxy.model import NodeContext

_LOOPBACK_START = ipaddress.ip_address("127.0.0.0")


async def local_addresses(ctx: NodeContext) -> list[str]:
    """Every IPv4 address the node namespace holds (``ctx.netns``; None: this process's own)."""
    return await trio.to_thread.run_sync(netns.addresses, ctx.netns)


async def addresses_except(ctx: NodeContext, device: str) -> list[str]:
    """Every IPv4 address the node namespace holds on links other than ``device`` (an address that
    ``device`` shares with another link stays in, as upstream's ``GetAllLocalAddressesExcept``)."""
    text = await trio.to_thread.run_sync(netns.ip, ctx.netns, "-j", "-4", "addr", "show")
    return [a["local"] for link in json.loads(text or "[]") if link.get("ifname") != device
            for a in link.get("addr_info", []) if "local" in a]


async def select_for(ctx: NodeContext, mode: str) -> tuple[list[str] | None, list[str]]:
    """(the NodePort addresses of ``mode`` on this node — ``nodeports.ALL`` for every local address —,
    the namespace's local addresses they were chosen from)."""
    local = await local_addresses(ctx)
    chosen = nodeports.select(nodeports.effective(ctx.nodeport_addresses, mode), ctx.node_ips, local)
    return chosen, local


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
