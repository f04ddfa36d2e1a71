"""The address a redirected connection was meant for, and the mark that keeps the sidecar's own sockets out.

A connection that netfilter REDIRECTed (``kmesh.mesh.redirect``) arrives at
the sidecar's port; conntrack still knows where it was going, and
``getsockopt(SOL_IP, SO_ORIGINAL_DST)`` (``SOL_IPV6, IP6T_SO_ORIGINAL_DST``
for IPv6, both option 80 as in linux/netfilter_ipv4.h and
netfilter_ipv6/ip6_tables.h) returns it as a ``sockaddr_in``/``sockaddr_in6``.
The kernel answers from conntrack: ENOENT only when conntrack has no entry
for the connection. Where nat rules are loaded conntrack tracks every
connection, and for one that was not NATed the kernel returns its own local
address; ``original_dst`` takes that for "not redirected" too (a connection
made straight to the sidecar's port, which a proxy must not forward to itself).

Works on stdlib and trio sockets alike (both have ``getsockopt``/``setsockopt``).
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80
_SOCKADDR_IN = struct.Struct("!2xH4s8x")  # family (host order, skipped), port, address, zero padding
_SOCKADDR_IN6 = struct.Struct("!2xHI16sI")  # family, port, flowinfo, address, scope id


def conntrack_dst(sock: Any) -> tuple[str, int]:
    """(address, port) of the connection's original direction as conntrack has it (OSError ENOENT: untracked)."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.SOL_IPV6, IP6T_SO_ORIGINAL_DST, _SOCKADDR_IN6.size)
        port, _flow, addr, _scope = _SOCKADDR_IN6.unpack(raw[:_SOCKADDR_IN6.size])
        return socket.inet_ntop(socket.AF_INET6, addr), port
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, _SOCKADDR_IN.size)
    port, addr = _SOCKADDR_IN.unpack(raw[:_SOCKADDR_IN.size])
    return socket.inet_ntop(socket.AF_INET, addr), port


def original_dst(sock: Any) -> tuple[str, int]:
    """(address, port) the connection on ``sock`` was sent to before it was redirected; OSError when it was not."""
    dst = conntrack_dst(sock)
    local = sock.getsockname()
    if dst == (local[0], local[1]):
        raise OSError(errno.ENOENT, f"connection to {local[0]}:{local[1]} was not redirected")
    return dst


def mark_socket(sock: Any, mark: int) -> None:
    """Set ``SO_MARK`` on ``sock`` (needs CAP_NET_ADMIN): the redirect rules let such packets through."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
