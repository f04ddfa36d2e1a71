"""flannel's vxlan backend: a kernel VXLAN device ``flannel.<VNI>`` and, per peer, neighbour + FDB + route.

Per remote node, in flannel's order: a permanent ARP entry ``<subnet>.0 lladdr
<VtepMAC>``, an FDB entry ``<VtepMAC> dst <PublicIP> self permanent`` and the
route ``<subnet> via <subnet>.0 dev flannel.<VNI> onlink``. The kernel does the
encapsulation; nothing here touches packets. With DirectRouting, peers on the
same L2 segment get a host-gw route instead (no encapsulation).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import trio
from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.ndmsg import NTF_SELF, NUD_PERMANENT

from kmesh.cni.backends.nl import (
    RTNH_F_ONLINK,
    RTPROT_BOOT,
    BackendError,
    ignore_gone,
    index_of,
    mtu_of,
    namespace_gone,
    netlink,
    on_link,
    require_index,
    set_only_address,
)
from kmesh.cni.lease import Lease

VXLAN_PORT = 8472
OVERHEAD = 50


class VxlanBackend:
    """Program a node for VXLAN encapsulation between pod subnets."""

    type = "vxlan"

    def __init__(self, *, netns: str | None, iface: str, public_ip: str, network: str, vni: int = 1,
                 port: int | None = None, direct_routing: bool = False) -> None:
        self.netns = netns
        self.iface = iface
        self.public_ip = public_ip
        self.network = ipaddress.ip_network(network)
        self.vni = vni
        self.port = port or VXLAN_PORT
        self.direct_routing = direct_routing
        self.device = f"flannel.{vni}"
        self.mac = ""
        self.local: Lease | None = None
        self.direct: set[str] = set()  # subnets routed host-gw style (DirectRouting)

    def _wanted(self, data: dict[str, Any], link_idx: int) -> bool:
        return (data.get("IFLA_VXLAN_ID") == self.vni and data.get("IFLA_VXLAN_LOCAL") == self.public_ip
                and data.get("IFLA_VXLAN_PORT") == self.port and data.get("IFLA_VXLAN_LINK") == link_idx
                and not data.get("IFLA_VXLAN_LEARNING"))

    def _prepare(self, ipr: IPRoute) -> str:
        link_idx = require_index(ipr, self.iface)
        mtu = mtu_of(ipr, link_idx) - OVERHEAD
        mac = None
        idx = index_of(ipr, self.device)
        if idx is not None:
            link = ipr.get_links(idx)[0]
            mac = link.get_attr("IFLA_ADDRESS")
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            data = dict(info.get_attr("IFLA_INFO_DATA")["attrs"]) if kind == "vxlan" else {}
            if kind != "vxlan" or not self._wanted(data, link_idx):
                ipr.link("del", index=idx)  # wrong parameters: recreate, keeping the MAC peers know
                idx = None
        if idx is None:
            # An explicit MAC (kept, else one derived from the node's address): a device created with a kernel-
            # chosen one gets it rewritten by udev's MACAddressPolicy=persistent on systemd machines a moment
            # later, after peers learnt the first one (flannel's stale-VtepMAC trouble).
            extra = {"address": mac or stable_mac(self.public_ip, self.vni)}
            ipr.link("add", ifname=self.device, kind="vxlan", vxlan_id=self.vni, vxlan_local=self.public_ip,
                     vxlan_link=link_idx, vxlan_port=self.port, vxlan_learning=0, mtu=mtu, **extra)
            idx = require_index(ipr, self.device)
        ipr.link("set", index=idx, mtu=mtu, state="up")
        return str(ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS"))

    async def prepare(self) -> dict[str, Any]:
        """Create (or reuse) ``flannel.<VNI>``; return the backend data peers need."""
        self.mac = await netlink(self.netns, self._prepare)
        return {"VNI": self.vni, "VtepMAC": self.mac}

    async def configure(self, local: Lease) -> int:
        """Put the local subnet's ``.0/32`` on the device; the pod MTU is the underlay's minus 50."""
        self.local = local

        def work(ipr: IPRoute) -> int:
            idx = require_index(ipr, self.device)
            set_only_address(ipr, idx, str(local.subnet.network_address), 32)
            ipr.link("set", index=idx, state="up")
            return mtu_of(ipr, idx)

        return await netlink(self.netns, work)

    def _add(self, ipr: IPRoute, lease: Lease) -> None:
        subnet = str(lease.subnet)
        gw = str(lease.subnet.network_address)
        if self.direct_routing:
            link_idx = require_index(ipr, self.iface)
            if on_link(ipr, lease.public_ip, link_idx):
                ipr.route("replace", dst=subnet, gateway=lease.public_ip, oif=link_idx, proto=RTPROT_BOOT)
                self.direct.add(subnet)
                return
        if not lease.vtep_mac:
            raise BackendError(f"peer {lease.public_ip} ({subnet}) publishes no VtepMAC")
        idx = require_index(ipr, self.device)
        ipr.neigh("replace", dst=gw, lladdr=lease.vtep_mac, ifindex=idx, state=NUD_PERMANENT)
        ipr.fdb("replace", ifindex=idx, lladdr=lease.vtep_mac, dst=lease.public_ip, flags=NTF_SELF, state=NUD_PERMANENT)
        ipr.route("replace", dst=subnet, gateway=gw, oif=idx, flags=RTNH_F_ONLINK, proto=RTPROT_BOOT)
        self.direct.discard(subnet)

    async def add_peer(self, lease: Lease) -> None:
        """Make ``lease.subnet`` reachable through the peer's VTEP (or directly, with DirectRouting)."""
        if self.local is not None and lease.subnet == self.local.subnet:
            return
        await netlink(self.netns, lambda ipr: self._add(ipr, lease))

    def _remove(self, ipr: IPRoute, lease: Lease) -> None:
        subnet = str(lease.subnet)
        gw = str(lease.subnet.network_address)
        if subnet in self.direct:
            link_idx = require_index(ipr, self.iface)
            ignore_gone(lambda: ipr.route("del", dst=subnet, gateway=lease.public_ip, oif=link_idx))
            self.direct.discard(subnet)
            return
        idx = index_of(ipr, self.device)
        if idx is None:
            return
        ignore_gone(lambda: ipr.route("del", dst=subnet, gateway=gw, oif=idx))
        if lease.vtep_mac:
            ignore_gone(lambda: ipr.fdb("del", ifindex=idx, lladdr=lease.vtep_mac, dst=lease.public_ip, flags=NTF_SELF))
            ignore_gone(lambda: ipr.neigh("del", dst=gw, lladdr=lease.vtep_mac, ifindex=idx))

    async def remove_peer(self, lease: Lease) -> None:
        """Remove exactly the route, FDB and neighbour entries ``add_peer`` made."""
        await netlink(self.netns, lambda ipr: self._remove(ipr, lease))

    async def run(self) -> None:
        """Nothing to do: the kernel encapsulates."""
        await trio.sleep_forever()

    async def close(self) -> None:
        """Delete the VXLAN device (its routes, neighbours and FDB entries go with it) and direct routes."""

        def work(ipr: IPRoute) -> None:
            idx = index_of(ipr, self.device)
            if idx is not None:
                ignore_gone(lambda: ipr.link("del", index=idx))
            link_idx = index_of(ipr, self.iface)
            for subnet in list(self.direct):
                if link_idx is not None:
                    ignore_gone(lambda s=subnet: ipr.route("del", dst=s, oif=link_idx))
            self.direct.clear()

        if not namespace_gone(self.netns):
            await netlink(self.netns, work)


def stable_mac(public_ip: str, vni: int) -> str:
    """A locally administered unicast MAC for the VXLAN device of the node at ``public_ip``, the same every time."""
    import hashlib

    digest = hashlib.sha256(f"{public_ip}/{vni}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))
