"""nfnetlink_queue spoken directly: bind queues, receive queued packets' ids, send verdicts.

Why our own: pyroute2 (kmesh's netlink library) speaks nfnetlink for
conntrack, ipset and nf_tables but not for queues; the PyPI
``NetfilterQueue`` binds the C library libnetfilter_queue (a system package
and a compiler to build it, blocking callbacks that do not fit trio, and
verdicts only inside the callback in its usual use); scapy has no NFQUEUE at
all. What the delayer needs is three message types — NFQNL_MSG_CONFIG
(bind, copy mode, queue length, flags), NFQNL_MSG_PACKET (the packet id) and
NFQNL_MSG_VERDICT — so it is written here, on a plain ``AF_NETLINK`` socket,
with the kernel's structs from ``linux/netfilter/nfnetlink_queue.h``.

The socket is a stdlib one, non-blocking: the delayer receives with trio's
``wait_readable`` and sends verdicts synchronously (a netlink message to the
kernel is handled in the ``send`` call itself), several per ``send``.

Queues live in a network namespace: a socket opened inside one (the delayer
runs there, or ``kmesh.net.netns.socket_in``) sees that namespace's queues.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_IFINDEX_INDEV = 5
NFQA_IFINDEX_OUTDEV = 6
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_COPY_NONE = 0
NFQNL_COPY_META = 1
NFQNL_COPY_PACKET = 2
NFQA_CFG_F_FAIL_OPEN = 0x1
NFQA_CFG_F_GSO = 0x4

NF_DROP = 0
NF_ACCEPT = 1

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NFGENMSG = struct.Struct("!BBH")  # family, version, res_id (the queue number, big endian)
_NLATTR = struct.Struct("=HH")
_PACKET_HDR = struct.Struct("!IHB")  # packet_id, hw_protocol, hook
_VERDICT_HDR = struct.Struct("!II")  # verdict, id


class NfQueueError(OSError):
    """The kernel refused a queue configuration (e.g. EPERM: another process has bound that queue)."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    size = _NLATTR.size + len(payload)
    return _NLATTR.pack(size, kind) + payload + b"\0" * (_align(size) - size)


def message(msg_type: int, queue: int, attrs: bytes, *, seq: int = 0, ack: bool = False,
            family: int = socket.AF_UNSPEC) -> bytes:
    """One nfnetlink_queue message (``msg_type`` = NFQNL_MSG_*) for ``queue``."""
    body = _NFGENMSG.pack(family, 0, queue) + attrs
    flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, seq, 0) + body


def verdict(queue: int, packet_id: int, verdict: int = NF_ACCEPT) -> bytes:
    """The NFQNL_MSG_VERDICT message for one packet (several can go in one ``send``)."""
    return message(NFQNL_MSG_VERDICT, queue, _attr(NFQA_VERDICT_HDR, _VERDICT_HDR.pack(verdict, packet_id)))


def bind_messages(queue: int, seq: int, *, maxlen: int, gso: bool = True) -> list[bytes]:
    """The NFQNL_MSG_CONFIG messages that bind ``queue`` to the socket, in metadata-only copy mode (the
    delayer never reads a payload), with room for ``maxlen`` packets; GSO packets are taken whole (else the
    kernel segments them for us first). Each asks for an ack (sequence ``seq``, ``seq+1``...)."""
    msgs = [
        message(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)),
                seq=seq, ack=True),
        message(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)),
                seq=seq + 1, ack=True),
        message(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen)),
                seq=seq + 2, ack=True),
    ]
    if gso:
        flags = struct.pack("!I", NFQA_CFG_F_GSO)
        msgs.append(message(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_FLAGS, flags) + _attr(NFQA_CFG_MASK, flags),
                            seq=seq + 3, ack=True))
    return msgs


def unbind_message(queue: int, seq: int) -> bytes:
    """Unbind ``queue`` (packets the kernel still holds for it are dropped: verdict them first)."""
    return message(NFQNL_MSG_CONFIG, queue,
                   _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_UNBIND, socket.AF_INET)), seq=seq, ack=True)


@dataclass(frozen=True)
class Packet:
    """A queued packet as the metadata copy mode reports it."""

    queue: int
    packet_id: int
    hook: int  # NF_INET_PRE_ROUTING 0 ... POST_ROUTING 4
    indev: int = 0
    outdev: int = 0


@dataclass(frozen=True)
class Ack:
    """The kernel's answer to a request that asked for one: errno 0 is success."""

    seq: int
    error: int


def parse(data: bytes) -> Iterator[Packet | Ack]:
    """The packets and acks in one datagram from the kernel (anything else is skipped)."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, mtype, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > len(data):
            return
        body = off + _NLMSGHDR.size
        if mtype == NLMSG_ERROR and length >= _NLMSGHDR.size + 4:
            (err,) = struct.unpack_from("=i", data, body)
            yield Ack(seq, -err)
        elif mtype == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET and length >= _NLMSGHDR.size + _NFGENMSG.size:
            _fam, _ver, queue = _NFGENMSG.unpack_from(data, body)
            pkt_id, hook, indev, outdev = None, 0, 0, 0
            a = body + _NFGENMSG.size
            end = off + length
            while a + _NLATTR.size <= end:
                alen, atype = _NLATTR.unpack_from(data, a)
                if alen < _NLATTR.size:
                    break
                payload = a + _NLATTR.size
                kind = atype & NLA_TYPE_MASK
                if kind == NFQA_PACKET_HDR and alen >= _NLATTR.size + _PACKET_HDR.size:
                    pkt_id, _proto, hook = _PACKET_HDR.unpack_from(data, payload)
                elif kind == NFQA_IFINDEX_INDEV and alen >= _NLATTR.size + 4:
                    (indev,) = struct.unpack_from("!I", data, payload)
                elif kind == NFQA_IFINDEX_OUTDEV and alen >= _NLATTR.size + 4:
                    (outdev,) = struct.unpack_from("!I", data, payload)
                a += _align(alen)
            if pkt_id is not None:
                yield Packet(queue, pkt_id, hook, indev, outdev)
        off += _align(length)


def open_socket(rcvbuf: int = 8 << 20) -> socket.socket:
    """A non-blocking NETLINK_NETFILTER socket in this thread's namespace, bound, with a large receive
    buffer and no ENOBUFS errors (a packet the kernel cannot deliver is dropped, as a full queue drops)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root): past rmem_max
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def check_ack(ack: Ack, what: str) -> None:
    """Raise ``NfQueueError`` for a failed ack."""
    if ack.error:
        hint = " (another process has bound this queue)" if ack.error == errno.EPERM else ""
        raise NfQueueError(ack.error, f"{what}: {os.strerror(ack.error)}{hint}")
