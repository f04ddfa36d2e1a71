"""Netlink plumbing shared by the backends: pyroute2 calls run in a worker thread inside the node namespace.

Every call opens its own ``IPRoute`` inside the namespace (the socket stays in
the namespace it was created in), so the trio loop never blocks on netlink and
no long-lived netlink socket has to be shared between threads.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from kmesh.net import netns as nsmod

T = TypeVar("T")

RTNH_F_ONLINK = 4
RTPROT_BOOT = 3  # what `ip route add` and flannel (vishvananda/netlink) use: `ip route` does not print it
GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL)


class BackendError(Exception):
    """A backend could not program the node (the message says what and where)."""


def _with_ipr(fn: Callable[[IPRoute], T]) -> T:
    with IPRoute() as ipr:
        return fn(ipr)


async def netlink(netns: str | None, fn: Callable[[IPRoute], T]) -> T:
    """Run ``fn(ipr)`` with a fresh ``IPRoute`` inside ``netns`` (None: here), off the trio loop.

    Kernel refusals come back as ``BackendError`` naming the namespace."""
    try:
        return await nsmod.run_sync_in(netns, _with_ipr, fn)
    except NetlinkError as e:
        raise BackendError(f"netlink in {netns or 'this namespace'}: {e}") from e


def namespace_gone(netns: str | None) -> bool:
    """True when ``netns`` was deleted (close() then has nothing left to remove)."""
    return netns is not None and not nsmod.exists(netns)


def index_of(ipr: IPRoute, ifname: str) -> int | None:
    """Interface index of ``ifname``, None when it does not exist."""
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def require_index(ipr: IPRoute, ifname: str) -> int:
    """Interface index of ``ifname``; ``BackendError`` when missing."""
    idx = index_of(ipr, ifname)
    if idx is None:
        raise BackendError(f"interface {ifname!r} not found")
    return idx


def mtu_of(ipr: IPRoute, idx: int) -> int:
    """The MTU of interface ``idx``."""
    return int(ipr.get_links(idx)[0].get_attr("IFLA_MTU"))


def ignore_gone(call: Callable[[], Any]) -> bool:
    """Run a netlink delete; True when it removed something, False when it was already gone."""
    try:
        call()
        return True
    except NetlinkError as e:
        if e.code in GONE:
            return False
        raise


def set_only_address(ipr: IPRoute, idx: int, address: str, prefixlen: int) -> None:
    """Make ``address/prefixlen`` the only IPv4 address on ``idx`` (flannel removes stale ones)."""
    for a in ipr.get_addr(index=idx, family=2):
        if a.get_attr("IFA_ADDRESS") != address or a["prefixlen"] != prefixlen:
            ignore_gone(lambda a=a: ipr.addr("del", index=idx, address=a.get_attr("IFA_ADDRESS"), prefixlen=a["prefixlen"]))
    ipr.addr("replace", index=idx, address=address, prefixlen=prefixlen)


def on_link(ipr: IPRoute, dst: str, idx: int) -> bool:
    """True when ``dst`` is reached directly on interface ``idx`` (same L2, no gateway)."""
    try:
        routes = ipr.route("get", dst=dst)
    except NetlinkError:
        return False
    return bool(routes) and routes[0].get_attr("RTA_GATEWAY") is None and routes[0].get_attr("RTA_OIF") == idx
