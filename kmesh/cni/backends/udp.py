"""flannel's old udp backend: a TUN device ``flannel0`` and a userspace forwarder.

Packets routed into ``flannel0`` (the whole cluster network) are read from the
TUN fd, the peer owning the destination subnet is looked up, and the raw IP
packet is sent in one UDP datagram to ``<peer PublicIP>:8285``; datagrams
received on that port are written back into the TUN device. Every packet
crosses into Python twice, so it is slow: kept because it shows what the
kernel does for vxlan.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
from typing import Any

import trio
from pyroute2 import IPRoute

from kmesh.cni.backends.nl import (
    RTPROT_BOOT,
    BackendError,
    index_of,
    mtu_of,
    namespace_gone,
    netlink,
    require_index,
    set_only_address,
)
from kmesh.cni.lease import Lease
from kmesh.net import netns as nsmod

UDP_PORT = 8285
OVERHEAD = 28
DEVICE = "flannel0"
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
BATCH = 64
SOCK_BUFFER = 4 << 20


def open_tun(name: str) -> int:
    """Open ``/dev/net/tun`` and attach it to TUN device ``name`` (created in the caller's namespace); non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as e:
        os.close(fd)
        if e.errno == errno.EBUSY:
            raise BackendError(f"TUN device {name} is held by another process") from None
        raise
    return fd


def _udp_socket(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUFFER)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class PeerTable:
    """Destination IPv4 address (as int) → peer public IP, by longest prefix among the peers' subnets."""

    def __init__(self) -> None:
        self._by_len: dict[int, dict[int, str]] = {}
        self._masks: list[tuple[int, int]] = []

    def set(self, subnet: ipaddress.IPv4Network, public_ip: str) -> None:
        self._by_len.setdefault(subnet.prefixlen, {})[int(subnet.network_address)] = public_ip
        self._reindex()

    def discard(self, subnet: ipaddress.IPv4Network) -> None:
        self._by_len.get(subnet.prefixlen, {}).pop(int(subnet.network_address), None)
        self._reindex()

    def _reindex(self) -> None:
        self._by_len = {k: v for k, v in self._by_len.items() if v}
        self._masks = [(k, (0xFFFFFFFF << (32 - k)) & 0xFFFFFFFF) for k in sorted(self._by_len, reverse=True)]

    def lookup(self, dst: int) -> str | None:
        for plen, mask in self._masks:
            hit = self._by_len[plen].get(dst & mask)
            if hit is not None:
                return hit
        return None

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_len.values())


class UdpBackend:
    """Program a node with a TUN device and forward its packets over UDP in a trio task."""

    type = "udp"

    def __init__(self, *, netns: str | None, iface: str, public_ip: str, network: str, port: int | None = None,
                 **_: Any) -> None:
        self.netns = netns
        self.iface = iface
        self.public_ip = public_ip
        self.network = ipaddress.ip_network(network)
        self.port = port or UDP_PORT
        self.local: Lease | None = None
        self.peers = PeerTable()
        self.tun_fd: int | None = None
        self.sock: socket.socket | None = None
        self.sent = self.received = self.dropped = 0

    async def prepare(self) -> dict[str, Any]:
        """Create ``flannel0`` and the UDP socket inside the node namespace (reused when called again)."""
        if self.tun_fd is None:
            self.tun_fd = await nsmod.run_sync_in(self.netns, open_tun, DEVICE)
        if self.sock is None:
            self.sock = await nsmod.run_sync_in(self.netns, _udp_socket, self.public_ip, self.port)
        return {}

    async def configure(self, local: Lease) -> int:
        """Address ``flannel0`` with the subnet's ``.0``, route the cluster network into it; MTU underlay − 28."""
        self.local = local

        def work(ipr: IPRoute) -> int:
            mtu = mtu_of(ipr, require_index(ipr, self.iface)) - OVERHEAD
            idx = require_index(ipr, DEVICE)
            set_only_address(ipr, idx, str(local.subnet.network_address), 32)
            ipr.link("set", index=idx, mtu=mtu, state="up")
            ipr.route("replace", dst=str(self.network), oif=idx, scope=253, proto=RTPROT_BOOT)
            return mtu

        return await netlink(self.netns, work)

    async def add_peer(self, lease: Lease) -> None:
        """Send packets for ``lease.subnet`` to the peer's public IP."""
        if self.local is not None and lease.subnet == self.local.subnet:
            return
        self.peers.set(lease.subnet, lease.public_ip)

    async def remove_peer(self, lease: Lease) -> None:
        """Stop forwarding to the peer's subnet."""
        self.peers.discard(lease.subnet)

    async def run(self) -> None:
        """Forward TUN → UDP and UDP → TUN until cancelled."""
        if self.tun_fd is None or self.sock is None:
            raise BackendError("udp backend: run() before prepare()")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tun_to_udp, self.tun_fd, self.sock)
            nursery.start_soon(self._udp_to_tun, self.sock, self.tun_fd)

    async def _tun_to_udp(self, fd: int, sock: socket.socket) -> None:
        port, lookup = self.port, self.peers.lookup
        while True:
            try:
                await trio.lowlevel.wait_readable(fd)
            except trio.ClosedResourceError:
                return
            if self.tun_fd != fd:  # close() ran between the wake-up and now
                return
            for _ in range(BATCH):
                try:
                    pkt = os.read(fd, 65535)
                except BlockingIOError:
                    break
                if len(pkt) < 20 or pkt[0] >> 4 != 4:
                    continue
                peer = lookup(int.from_bytes(pkt[16:20], "big"))
                if peer is None:
                    self.dropped += 1
                    continue
                try:
                    sock.sendto(pkt, (peer, port))
                    self.sent += 1
                except OSError:
                    self.dropped += 1  # full buffer or unreachable peer: drop, as a router would

    async def _udp_to_tun(self, sock: socket.socket, fd: int) -> None:
        while True:
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                return
            if self.sock is not sock or self.tun_fd != fd:
                return
            for _ in range(BATCH):
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    break
                except OSError:
                    continue  # ICMP error queued on the socket
                try:
                    os.write(fd, data)
                    self.received += 1
                except OSError:
                    self.dropped += 1

    async def close(self) -> None:
        """Close the TUN fd (the device and its route vanish with it) and the socket; a running ``run`` returns."""
        if self.tun_fd is not None:
            fd, self.tun_fd = self.tun_fd, None
            trio.lowlevel.notify_closing(fd)
            os.close(fd)
        if self.sock is not None:
            sock, self.sock = self.sock, None
            trio.lowlevel.notify_closing(sock)
            sock.close()

        def gone(ipr: IPRoute) -> None:
            idx = index_of(ipr, DEVICE)  # a device left by a crashed run is persistent only if someone made it so
            if idx is not None:
                ipr.link("del", index=idx)

        if not namespace_gone(self.netns):
            await netlink(self.netns, gone)
