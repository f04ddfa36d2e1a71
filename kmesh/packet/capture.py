"""Capture on many points at once: frames in the order they crossed, a pcapng file, one line per packet.

``Capture`` reads a ``Sniffer`` until it is stopped (``stop``, ``--duration``,
``--count``), holds each frame for a moment so that frames of different
points come out in the order of their kernel time stamps (one packet
crossing pod ``eth0`` → ``cni0`` → ``flannel.1`` → ``eth0`` reads top to
bottom), and hands them on: to a ``PcapngWriter``, to ``describe`` for a
summary line, or both.

The pcapng blocks are written here rather than with scapy's
``PcapNgWriter``: scapy's writer has a fixed microsecond resolution with no
``if_tsresol`` option, takes time stamps as floats (a float of seconds
since the epoch cannot hold nanoseconds, so the kernel's time stamps would
lose their order), and always writes a nameless interface 0 with the
first packet's link type. kmesh needs one named interface per capture point,
each with its own link type (Ethernet, or raw IP on a tun device), written
before the first packet so that a quiet interface is still in the file.
Four block kinds are all it takes (SHB, IDB, EPB and their options). scapy
decodes the packets for the summary lines.

This module knows namespaces and devices (``Point``), not labs: the caller
names the points and opens the file.
"""

from __future__ import annotations

import heapq
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import trio

from kmesh.packet.decode import describe
from kmesh.packet.sniff import LINKTYPE_ETHERNET, LINKTYPE_RAW, SNAPLEN, Frame, Point, Sniffer

HOLD_NS = 50_000_000  # how long a frame waits for earlier ones from other points before it is handed on
TICK = 0.02

# pcapng block types and options
_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END, _OPT_COMMENT = 0, 1
_SHB_USERAPPL = 4
_IF_NAME, _IF_DESCRIPTION, _IF_TSRESOL = 2, 3, 9
_EPB_FLAGS = 2
_EPB_DIRECTION = {"in": 1, "out": 2}


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(kind: int, body: bytes, options: list[bytes] | None = None) -> bytes:
    body += b"\0" * (-len(body) % 4)
    if options:
        body += b"".join(options) + _option(_OPT_END, b"")
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


class PcapngWriter:
    """A pcapng stream (little-endian, one section): an interface per point, then enhanced packet blocks.

    Every interface is declared at once, before the first packet; each has its
    link type, its name (``if_name``: the point's label), where it is
    (``if_description``: namespace and device) and nanosecond time stamps
    (``if_tsresol`` 9). Each packet records its direction in the EPB flags.
    Blocks are written whole, so the stream is readable after any ``flush``.

    pcapng lets each interface have its own link type, and Wireshark reads
    such files; libpcap (``tcpdump -r``, up to 1.10 at least) refuses a file
    whose interfaces differ ("an interface has a type 1 different from the
    type of the first interface"). So when raw-IP points (a tun device: the
    udp backend's ``flannel0``) are captured together with Ethernet ones,
    their packets get a made-up Ethernet header (zero addresses, the
    EtherType of their IP version) and the interface says so in its
    description, unless ``mixed=True`` keeps every interface's own type.
    """

    def __init__(self, out: BinaryIO, linktypes: dict[Point, int], *, mixed: bool = False,
                 snaplen: int = SNAPLEN, application: str = "kmesh capture") -> None:
        self.out = out
        self.ids: dict[Point, int] = {}
        self.wrapped: set[Point] = set()  # raw-IP points written as Ethernet
        body = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
        out.write(_block(_SHB, body, [_option(_SHB_USERAPPL, application.encode())]))
        wrap = not mixed and LINKTYPE_ETHERNET in linktypes.values()
        for point, linktype in linktypes.items():
            where = f"{point.device} in namespace {point.netns}" if point.netns else point.device
            if wrap and linktype == LINKTYPE_RAW:
                self.wrapped.add(point)
                linktype = LINKTYPE_ETHERNET
                where += " (a raw IP device: its packets have a made-up Ethernet header)"
            opts = [_option(_IF_NAME, point.label.encode()), _option(_IF_DESCRIPTION, where.encode()),
                    _option(_IF_TSRESOL, bytes([9]))]
            out.write(_block(_IDB, struct.pack("<HHI", linktype, 0, snaplen), opts))
            self.ids[point] = len(self.ids)

    def write(self, frame: Frame) -> None:
        """One frame, on its point's interface."""
        ifid = self.ids[frame.point]
        ts = frame.ts_ns
        data, wire_len = frame.data, max(frame.wire_len, len(frame.data))
        if frame.point in self.wrapped:
            version = data[0] >> 4 if data else 4
            header = b"\0" * 12 + (b"\x86\xdd" if version == 6 else b"\x08\x00")
            data, wire_len = header + data, wire_len + len(header)
        body = struct.pack("<IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(data), wire_len) + data
        flags = _EPB_DIRECTION.get(frame.direction, 0)
        self.out.write(_block(_EPB, body, [_option(_EPB_FLAGS, struct.pack("<I", flags))]))

    def flush(self) -> None:
        """Push what was written to the file."""
        self.out.flush()


def format_time(ts_ns: int) -> str:
    """Wall-clock time of a time stamp as tcpdump prints it (local time, microseconds)."""
    return time.strftime("%H:%M:%S", time.localtime(ts_ns // 1_000_000_000)) + f".{ts_ns % 1_000_000_000 // 1000:06d}"


def summary(frame: Frame) -> tuple[str, str, str, str]:
    """(time, interface label, direction, decoded packet) of a frame: the cells of a live line."""
    return format_time(frame.ts_ns), frame.point.label, frame.direction, describe(frame.data, frame.linktype)


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Capture:
    """Frames of every point of ``sniffer`` handed to ``emit`` in time stamp order until ``stop``, the
    duration or the count; ``counts`` says how many each point gave."""

    sniffer: Sniffer
    emit: Callable[[Frame], None]
    count: int | None = None
    duration: float | None = None
    flush: Callable[[], None] | None = None  # called after each batch (a file written as it goes)
    hold_ns: int = HOLD_NS
    counts: dict[Point, int] = field(default_factory=dict)
    started_ns: int = 0
    ended_ns: int = 0
    reason: str = ""  # "stopped" | "duration" | "count"
    _heap: list[tuple[int, int, Frame]] = field(default_factory=list)
    _seq: int = 0
    _stop: trio.Event | None = None

    @property
    def total(self) -> int:
        """Frames handed on."""
        return sum(self.counts.values())

    def stop(self) -> None:
        """End the capture (from a task of the same trio run, e.g. on a signal); what was seen is kept."""
        self.reason = self.reason or "stopped"
        if self._stop is not None:
            self._stop.set()

    def _take(self, frame: Frame) -> None:
        if frame.ts_ns == 0:  # no kernel time stamp: now is the best guess
            frame = Frame(frame.point, time.time_ns(), frame.direction, frame.linktype, frame.data, frame.wire_len)
        self._seq += 1
        heapq.heappush(self._heap, (frame.ts_ns, self._seq, frame))

    def _release(self, until_ns: int | None) -> None:
        handed = False
        while self._heap and (until_ns is None or self._heap[0][0] <= until_ns):
            if self.count is not None and self.total >= self.count:
                self._heap.clear()
                break
            frame = heapq.heappop(self._heap)[2]
            self.counts[frame.point] = self.counts.get(frame.point, 0) + 1
            self.emit(frame)
            handed = True
        if handed and self.flush is not None:
            self.flush()
        if self.count is not None and self.total >= self.count:
            self.reason = self.reason or "count"
            if self._stop is not None:
                self._stop.set()

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(TICK)
            self._release(time.time_ns() - self.hold_ns)

    async def run(self) -> None:
        """Capture until stopped; the frames still queued in the kernel at the end are handed on too."""
        self._stop = trio.Event()
        self.counts = {p: 0 for p in self.sniffer.points}
        self.started_ns = time.time_ns()
        if self.reason:  # stopped before it began
            self._stop.set()
        with trio.move_on_after(self.duration if self.duration is not None else float("inf")) as timer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.sniffer.run, self._take)
                nursery.start_soon(self._ticker)
                await self._stop.wait()
                nursery.cancel_scope.cancel()
        if timer.cancelled_caught:
            self.reason = self.reason or "duration"
        for frame in self.sniffer.poll():
            self._take(frame)
        self._release(None)
        self.ended_ns = time.time_ns()
