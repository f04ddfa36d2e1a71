"""A small flannel lab in namespaces: an underlay bridge, N nodes on it, one pod behind each node.

Everything lives in namespaces named ``<prefix>...`` (prefix unique per
topology), so ``destroy`` — and ``destroy_prefix`` after a crash — removes it
all; nothing is created in the root namespace. Used by the backend tests and
``benchmarks/overlay.py``.

    underlay ns  <p>ul : br0 (no address), veths n1..nN enslaved
    node ns      <p>n1 : eth0 192.168.56.11/24, cni0 10.244.1.1/24, veth0 -> pod
    pod ns       <p>n1-pod : eth0 10.244.1.2/24, default via 10.244.1.1
"""

from __future__ import annotations

import ipaddress
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Self

import trio

from kmesh.cni.lease import Lease
from kmesh.net import netns

NETWORK = "10.244.0.0/16"


@dataclass
class Node:
    """One lab node: its namespace, underlay address, pod subnet and the pod behind it."""

    index: int
    ns: str
    ip: str
    subnet: ipaddress.IPv4Network
    pod_ns: str
    pod_ip: str
    name: str = ""

    def lease(self, backend_type: str, backend_data: dict[str, Any] | None = None) -> Lease:
        """This node's lease as its peers would see it."""
        return Lease(subnet=self.subnet, public_ip=self.ip, backend_type=backend_type,
                     backend_data=dict(backend_data or {}), node=self.name)


@dataclass
class Topo:
    """Build with ``build()`` (or ``with Topo(...) as t``); ``destroy()`` always removes every namespace."""

    nodes_count: int = 3
    prefix: str = field(default_factory=lambda: f"kmb-{uuid.uuid4().hex[:6]}-")
    underlay_mtu: int = 1500
    nodes: list[Node] = field(default_factory=list)

    @property
    def underlay(self) -> str:
        """Namespace holding the underlay bridge."""
        return f"{self.prefix}ul"

    def build(self) -> Self:
        """Create underlay, nodes and pods; on any failure remove what was made and re-raise."""
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise
        return self

    def _build(self) -> None:
        ul = self.underlay
        netns.add(ul)
        netns.ip(ul, "link", "add", "br0", "mtu", str(self.underlay_mtu), "type", "bridge")
        netns.ip(ul, "link", "set", "br0", "up")
        for i in range(1, self.nodes_count + 1):
            node = Node(index=i, ns=f"{self.prefix}n{i}", ip=f"192.168.56.{10 + i}",
                        subnet=ipaddress.ip_network(f"10.244.{i}.0/24"), pod_ns=f"{self.prefix}n{i}-pod",
                        pod_ip=f"10.244.{i}.2", name=f"node{i}")
            self.nodes.append(node)
            netns.add(node.ns)
            netns.add_veth(ul, f"n{i}", node.ns, "eth0", mtu=self.underlay_mtu)
            netns.ip(ul, "link", "set", f"n{i}", "master", "br0")
            netns.ip(node.ns, "addr", "add", f"{node.ip}/24", "dev", "eth0")
            sysctl(node.ns, "net.ipv4.ip_forward=1")
            netns.ip(node.ns, "link", "add", "cni0", "type", "bridge")
            netns.ip(node.ns, "addr", "add", f"{node.subnet.network_address + 1}/24", "dev", "cni0")
            netns.ip(node.ns, "link", "set", "cni0", "up")
            netns.add(node.pod_ns)
            netns.add_veth(node.ns, "veth0", node.pod_ns, "eth0")
            netns.ip(node.ns, "link", "set", "veth0", "master", "cni0")
            netns.ip(node.pod_ns, "addr", "add", f"{node.pod_ip}/24", "dev", "eth0")
            netns.ip(node.pod_ns, "route", "add", "default", "via", str(node.subnet.network_address + 1))

    def set_pod_mtu(self, mtu: int) -> None:
        """Give every pod link the MTU the backend asked for (what the CNI plugin would do)."""
        for n in self.nodes:
            netns.ip(n.pod_ns, "link", "set", "eth0", "mtu", str(mtu))
            netns.ip(n.ns, "link", "set", "veth0", "mtu", str(mtu))

    def destroy(self) -> None:
        """Remove every namespace of this topology (safe to call twice)."""
        destroy_prefix(self.prefix)
        self.nodes.clear()

    def __enter__(self) -> Self:
        return self.build()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def sysctl(ns: str, setting: str) -> None:
    """``sysctl -w`` inside namespace ``ns``."""
    subprocess.run(netns.exec_argv(ns, ["sysctl", "-q", "-w", setting]), check=True, capture_output=True)


def destroy_prefix(prefix: str) -> None:
    """Delete every namespace whose name starts with ``prefix`` (which must look like ``kmb-<tag>-``)."""
    assert prefix.startswith("kmb-") and prefix.endswith("-") and len(prefix) > 5, prefix
    for name in reversed(netns.names(prefix)):
        netns.delete(name)


@asynccontextmanager
async def tcp_connection(
    client_ns: str, server_ns: str, server_ip: str
) -> AsyncIterator[tuple[trio.socket.SocketType, trio.socket.SocketType, str]]:
    """A TCP connection from ``client_ns`` to a fresh listener on ``server_ip`` in ``server_ns``:
    (client socket, accepted socket, the client address the server saw). Everything is closed after."""
    server = await netns.open_socket(server_ns)
    client = await netns.open_socket(client_ns)
    try:
        await server.bind((server_ip, 0))
        server.listen()
        await client.connect((server_ip, server.getsockname()[1]))
        conn, peer = await server.accept()
        with conn:
            yield client, conn, str(peer[0])
    finally:
        server.close()
        client.close()
