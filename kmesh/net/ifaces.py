"""Which interface and address a machine uses to reach its cluster: the Vagrant pitfall, handled once.

On a Vagrant VM (VirtualBox) ``eth0`` is the NAT NIC: it holds 10.0.2.15 on
every VM and the default route. flannel and the kubelet pick the default
route's interface unless told otherwise (``--iface``, ``--node-ip``), and every
node then claims the same public IP. kmesh picks, without flags, the interface
whose connected subnet holds the server's advertised address; only when no
subnet holds it (a routed server) does the route towards it decide.

Reads the calling thread's network namespace with pyroute2.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pyroute2 import IPRoute


class InterfaceError(ValueError):
    """The interface or address asked for does not exist here; the message says what does."""


@dataclass(frozen=True)
class Address:
    """One IPv4 address of one interface, with its connected network and the interface's MTU."""

    iface: str
    ip: str
    network: ipaddress.IPv4Network
    mtu: int


def addresses() -> list[Address]:
    """Every global-scope IPv4 address of this namespace (loopback left out), in interface order."""
    out: list[Address] = []
    with IPRoute() as ipr:
        links = {link["index"]: (link.get_attr("IFLA_IFNAME"), int(link.get_attr("IFLA_MTU") or 1500))
                 for link in ipr.get_links()}
        for a in ipr.get_addr(family=2):
            ip = a.get_attr("IFA_ADDRESS")
            name, mtu = links.get(a["index"], ("", 1500))
            if not ip or not name or name == "lo" or a["scope"] != 0:
                continue
            out.append(Address(name, ip, ipaddress.ip_network(f"{ip}/{a['prefixlen']}", strict=False), mtu))
    return out


def _route_iface(dest: str) -> str | None:
    with IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=dest)
        except Exception:  # noqa: BLE001 - unreachable: no route at all
            return None
        if not routes:
            return None
        idx = routes[0].get_attr("RTA_OIF")
        links = ipr.get_links(idx) if idx else []
        return links[0].get_attr("IFLA_IFNAME") if links else None


def choose(*, server: str | None = None, iface: str | None = None, node_ip: str | None = None,
           node_ip_flag: str = "--node-ip") -> Address:
    """The address this machine is known by in the cluster, and its interface.

    ``node_ip`` (``--node-ip``) must be an address of this machine; ``iface``
    (``--iface``) must exist and hold an IPv4 address. Without either, the
    interface whose subnet holds ``server`` (the server's advertised address),
    else the one the route to ``server`` leaves by. Raises ``InterfaceError``, naming ``node_ip``'s flag as
    ``node_ip_flag``."""
    have = addresses()
    listing = ", ".join(f"{a.iface} {a.ip}/{a.network.prefixlen}" for a in have) or "none"
    if node_ip:
        match = [a for a in have if a.ip == node_ip and (iface is None or a.iface == iface)]
        if not match:
            where = f" on {iface}" if iface else ""
            raise InterfaceError(f"{node_ip_flag} {node_ip}: no interface of this machine has that address{where} "
                                 f"(addresses: {listing})")
        return match[0]
    if iface:
        match = [a for a in have if a.iface == iface]
        if not match:
            raise InterfaceError(f"--iface {iface}: no such interface with an IPv4 address (addresses: {listing})")
        if server:
            inside = [a for a in match if ipaddress.ip_address(server) in a.network]
            if inside:
                return inside[0]
        return match[0]
    if not server:
        raise InterfaceError("no --iface or --node-ip, and no server address to pick an interface by")
    dest = ipaddress.ip_address(server)
    inside = [a for a in have if dest in a.network]
    if inside:
        return min(inside, key=lambda a: (-a.network.prefixlen, a.ip != server))
    name = _route_iface(server)
    routed = [a for a in have if a.iface == name]
    if routed:
        return routed[0]
    raise InterfaceError(f"no interface reaches {server} (addresses: {listing}); pass --iface or --node-ip")
