"""Read the frames crossing many interfaces in many namespaces at once, with the kernel's time stamps.

One ``AF_PACKET`` socket per capture point (a device in a namespace), made
inside that namespace, bound to the device, seeing both directions (outgoing
frames come back as ``PACKET_OUTGOING``), each frame stamped by the kernel
(``SO_TIMESTAMPNS``) so that frames from different points can be put in the
order they crossed. ``kmesh trace`` and ``kmesh capture`` both read through
it. A kernel BPF filter (``--filter``) is compiled by ``tcpdump -ddd``, as
libpcap's users do, and attached with ``SO_ATTACH_FILTER``.

Written here rather than with scapy's ``sniff``: scapy's sockets open in the
namespace of the calling thread and select over them from one thread; kmesh
needs sockets in many namespaces read by trio tasks, with the kernel's time
stamps and direction, which the plain socket API gives directly.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from kmesh.net import netns

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35
SO_ATTACH_FILTER = 26
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
SNAPLEN = 262144
SO_RCVBUFFORCE = 33
RCVBUF = 4 << 20

# ARPHRD_* → pcap link type: Ethernet devices (veth, bridge, vxlan), raw IP (tun, the udp backend's flannel0)
ARPHRD_ETHER = 1
ARPHRD_NONE = 0xFFFE
ARPHRD_LOOPBACK = 772
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101

DIRECTIONS = {0: "in", 1: "in", 2: "in", 3: "in", PACKET_OUTGOING: "out"}  # host/broadcast/multicast/otherhost


class SniffError(RuntimeError):
    """A capture point could not be opened (no such namespace or device, no permission, a bad filter)."""


@dataclass(frozen=True)
class Point:
    """Where to capture: device ``device`` in namespace ``netns`` (None: this one), shown as ``label``."""

    label: str
    netns: str | None
    device: str


@dataclass(frozen=True)
class Frame:
    """One frame as the kernel handed it to a capture point."""

    point: Point
    ts_ns: int  # kernel time stamp, ns since the epoch
    direction: str  # "in" (received by the device) | "out" (sent by it)
    linktype: int  # LINKTYPE_ETHERNET | LINKTYPE_RAW
    data: bytes
    wire_len: int  # the frame's length on the wire (data may be cut at the snap length)


def interfaces(ns: str | None) -> list[str]:
    """The devices of namespace ``ns`` that are up, loopback excepted, in index order."""
    out = []
    for link in json.loads(netns.ip(ns, "-j", "link", "show") or "[]"):
        if link.get("link_type") == "loopback" or "UP" not in (link.get("flags") or []):
            continue
        out.append(str(link["ifname"]))
    return out


def compile_filter(expression: str, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    """A classic BPF program (``struct sock_fprog`` body) for a tcpdump filter expression."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        raise SniffError("--filter needs tcpdump to compile the expression (apt package tcpdump)")
    dlt = "EN10MB" if linktype == LINKTYPE_ETHERNET else "RAW"
    proc = subprocess.run([tcpdump, "-y", dlt, "-ddd", expression], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        msg = proc.stderr.strip().splitlines()
        raise SniffError(f"--filter {expression!r}: {msg[-1] if msg else 'tcpdump refused it'}")
    lines = proc.stdout.split("\n")
    count = int(lines[0])
    return b"".join(struct.pack("HBBI", *map(int, line.split())) for line in lines[1:1 + count])


def _attach(sock: socket.socket, program: bytes) -> None:
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _linktype(hatype: int) -> int:
    return LINKTYPE_ETHERNET if hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK) else LINKTYPE_RAW


def open_point(point: Point, bpf: str | None = None) -> tuple[socket.socket, int]:
    """The socket of one capture point and its pcap link type; ``SniffError`` when it cannot be opened."""

    def make() -> socket.socket:
        return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))

    try:
        sock = netns.call_in(point.netns, make)
    except (OSError, netns.NetnsError) as exc:
        raise SniffError(f"{point.label}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:  # past net.core.rmem_max (about 208 KiB on a stock machine) as root, so a burst is not dropped
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((point.device, ETH_P_ALL))
        hatype = sock.getsockname()[3]
        linktype = _linktype(hatype)
        if bpf:
            _attach(sock, compile_filter(bpf, linktype))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise SniffError(f"{point.label}: cannot capture on {point.device}: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock, linktype


def _drain(sock: socket.socket) -> None:
    """Drop what arrived between ``socket()`` and ``bind()``/the filter (frames of any device, unfiltered)."""
    while True:
        try:
            sock.recv(SNAPLEN)
        except BlockingIOError:
            return


def _read(sock: socket.socket, point: Point, linktype: int) -> Frame | None:
    try:
        data, anc, flags, addr = sock.recvmsg(SNAPLEN, 64, socket.MSG_TRUNC)
    except BlockingIOError:
        return None
    ts = 0
    for level, kind, value in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = struct.unpack("qq", value[:16])
            ts = sec * 1_000_000_000 + nsec
    wire_len = len(data)
    if flags & socket.MSG_TRUNC:
        wire_len = max(wire_len, SNAPLEN)
    direction = DIRECTIONS.get(addr[2], "in")
    return Frame(point, ts, direction, linktype, data, wire_len)


class Sniffer:
    """Capture points open together; ``run`` hands each frame to a callback until cancelled."""

    def __init__(self, points: Iterable[Point], bpf: str | None = None) -> None:
        self.points = list(points)
        self.linktypes: dict[Point, int] = {}
        self._socks: list[tuple[Point, socket.socket, int]] = []
        try:
            for p in self.points:
                sock, linktype = open_point(p, bpf)
                self._socks.append((p, sock, linktype))
                self.linktypes[p] = linktype
        except BaseException:
            self.close()
            raise
        for _, sock, _ in self._socks:
            _drain(sock)

    def close(self) -> None:
        """Close every socket."""
        for _, sock, _ in self._socks:
            sock.close()
        self._socks = []

    def __enter__(self) -> Sniffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self) -> list[Frame]:
        """Every frame queued right now on every point, without waiting."""
        out = []
        for p, sock, linktype in self._socks:
            while (f := _read(sock, p, linktype)) is not None:
                out.append(f)
        return out

    async def run(self, on_frame: Callable[[Frame], None]) -> None:
        """Read every point until cancelled, calling ``on_frame`` for each frame as it comes."""
        async with trio.open_nursery() as nursery:
            for p, sock, linktype in self._socks:
                nursery.start_soon(self._one, p, sock, linktype, on_frame)

    @staticmethod
    async def _one(p: Point, sock: socket.socket, linktype: int, on_frame: Callable[[Frame], None]) -> None:
        while True:
            await trio.lowlevel.wait_readable(sock)
            while (f := _read(sock, p, linktype)) is not None:
                on_frame(f)
