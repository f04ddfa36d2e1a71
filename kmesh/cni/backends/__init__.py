"""flannel-like backends: how a node reaches the other nodes' pod subnets.

``make_backend(type, ...)`` returns one of ``vxlan`` (kernel VXLAN, flannel's
default), ``host-gw`` (plain routes, one L2 underlay) or ``udp`` (flannel's old
userspace TUN/UDP forwarder; educational, slow). The overlay loop calls, in
order: ``prepare`` (devices, returns the backend data to publish in the
lease), ``configure`` (local subnet, returns the pod MTU), then ``add_peer`` /
``remove_peer`` as leases come and go, ``run`` in a task, ``close`` at the end.
``apply_masq`` / ``remove_masq`` are flannel's ``--ip-masq`` iptables rules.
"""

from __future__ import annotations

from typing import Any, Protocol

from kmesh.cni.backends.masq import apply_masq, remove_masq
from kmesh.cni.backends.nl import BackendError
from kmesh.cni.lease import Lease

BACKEND_TYPES = ("vxlan", "host-gw", "udp")

__all__ = ["BACKEND_TYPES", "Backend", "BackendError", "apply_masq", "make_backend", "remove_masq"]


class Backend(Protocol):
    """What the overlay loop drives; one instance per node."""

    type: str

    async def prepare(self) -> dict[str, Any]: ...

    async def configure(self, local: Lease) -> int: ...

    async def add_peer(self, lease: Lease) -> None: ...

    async def remove_peer(self, lease: Lease) -> None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


def make_backend(type: str, *, netns: str | None, iface: str, public_ip: str, network: str, vni: int = 1,
                 port: int | None = None, direct_routing: bool = False) -> Backend:
    """The backend named ``type`` for the node in namespace ``netns`` (None: this process's own)."""
    kw: dict[str, Any] = {"netns": netns, "iface": iface, "public_ip": public_ip, "network": network}
    if type == "vxlan":
        from kmesh.cni.backends.vxlan import VxlanBackend

        return VxlanBackend(vni=vni, port=port, direct_routing=direct_routing, **kw)
    if type == "host-gw":
        from kmesh.cni.backends.hostgw import HostGwBackend

        return HostGwBackend(**kw)
    if type == "udp":
        from kmesh.cni.backends.udp import UdpBackend

        return UdpBackend(port=port, **kw)
    raise ValueError(f"unknown backend type {type!r} (expected one of {', '.join(BACKEND_TYPES)})")
