"""A node's subnet lease: what the subnet manager hands out and the backends program."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Lease:
    """One node's share of the cluster network, as flannel records it.

    ``subnet`` is the node's pod subnet (e.g. 10.244.3.0/24); ``public_ip`` the
    node's underlay address that peers send encapsulated traffic to;
    ``backend_type`` ``vxlan`` | ``host-gw`` | ``udp``; ``backend_data`` what
    the backend publishes for its peers (vxlan: ``{"VNI": 1, "VtepMAC": ...}``).
    ``node`` is the Node name when known (kube subnet manager).
    """

    subnet: ipaddress.IPv4Network
    public_ip: str
    backend_type: str = "vxlan"
    backend_data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    node: str = ""

    @property
    def key(self) -> str:
        """flannel's name for the lease: ``10.244.3.0-24``."""
        return f"{self.subnet.network_address}-{self.subnet.prefixlen}"

    @property
    def vtep_mac(self) -> str:
        """The peer's VXLAN device MAC ("" when it has none)."""
        return str(self.backend_data.get("VtepMAC") or "")
