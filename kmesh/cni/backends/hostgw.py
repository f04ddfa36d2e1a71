"""flannel's host-gw backend: one route per peer, ``<subnet> via <PublicIP> dev <iface>``.

No encapsulation: the underlay must be one L2 segment. flannel re-checks its
routes every 10 s and puts back any that were deleted; ``run`` does the same.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import trio
from pyroute2 import IPRoute

from kmesh.cni.backends.nl import (
    RTPROT_BOOT,
    BackendError,
    ignore_gone,
    index_of,
    mtu_of,
    namespace_gone,
    netlink,
    require_index,
)
from kmesh.cni.lease import Lease

RECHECK_SECONDS = 10.0


class HostGwBackend:
    """Program a node with plain routes to its peers' pod subnets."""

    type = "host-gw"

    def __init__(self, *, netns: str | None, iface: str, public_ip: str, network: str,
                 recheck: float = RECHECK_SECONDS, **_: Any) -> None:
        self.netns = netns
        self.iface = iface
        self.public_ip = public_ip
        self.network = ipaddress.ip_network(network)
        self.recheck = recheck
        self.local: Lease | None = None
        self.routes: dict[str, str] = {}  # subnet -> gateway (peer public IP)

    async def prepare(self) -> dict[str, Any]:
        """Check the underlay interface exists; host-gw publishes no backend data."""
        await netlink(self.netns, lambda ipr: require_index(ipr, self.iface))
        return {}

    async def configure(self, local: Lease) -> int:
        """Nothing to address; the pod MTU is the underlay's."""
        self.local = local
        return await netlink(self.netns, lambda ipr: mtu_of(ipr, require_index(ipr, self.iface)))

    def _put(self, ipr: IPRoute, subnet: str, gateway: str) -> None:
        idx = require_index(ipr, self.iface)
        ipr.route("replace", dst=subnet, gateway=gateway, oif=idx, proto=RTPROT_BOOT)

    async def add_peer(self, lease: Lease) -> None:
        """Route the peer's subnet via its public IP."""
        if self.local is not None and lease.subnet == self.local.subnet:
            return
        subnet = str(lease.subnet)
        self.routes[subnet] = lease.public_ip
        await netlink(self.netns, lambda ipr: self._put(ipr, subnet, lease.public_ip))

    async def remove_peer(self, lease: Lease) -> None:
        """Delete the peer's route."""
        subnet = str(lease.subnet)
        gateway = self.routes.pop(subnet, lease.public_ip)

        def work(ipr: IPRoute) -> None:
            idx = index_of(ipr, self.iface)
            if idx is not None:
                ignore_gone(lambda: ipr.route("del", dst=subnet, gateway=gateway, oif=idx))

        await netlink(self.netns, work)

    def _missing(self, ipr: IPRoute) -> list[str]:
        idx = require_index(ipr, self.iface)
        have = {
            (f"{r.get_attr('RTA_DST')}/{r['dst_len']}", r.get_attr("RTA_GATEWAY"))
            for r in ipr.get_routes(family=2, table=254)
            if r.get_attr("RTA_OIF") == idx
        }
        wanted = dict(self.routes)
        put: list[str] = []
        for subnet, gw in wanted.items():
            if (subnet, gw) not in have:
                self._put(ipr, subnet, gw)
                put.append(subnet)
        return put

    async def recheck_once(self) -> list[str]:
        """Put back any peer route that went missing; return the subnets restored."""
        return await netlink(self.netns, self._missing)

    async def run(self) -> None:
        """Every ``recheck`` seconds, restore deleted routes (as flannel does)."""
        while True:
            await trio.sleep(self.recheck)
            try:
                await self.recheck_once()
            except BackendError:
                pass  # interface gone for now; try again next round

    async def close(self) -> None:
        """Delete every route this backend added."""
        routes, self.routes = dict(self.routes), {}

        def work(ipr: IPRoute) -> None:
            idx = index_of(ipr, self.iface)
            if idx is None:
                return
            for subnet, gw in routes.items():
                ignore_gone(lambda s=subnet, g=gw: ipr.route("del", dst=s, gateway=g, oif=idx))

        if not namespace_gone(self.netns):
            await netlink(self.netns, work)
