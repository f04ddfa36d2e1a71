"""Moving a TCP connection's bytes from one socket to another, at close to the kernel's speed.

The proxy's relays and the lab's port forwarders both need it. ``pump``
splices socket → pipe → socket (``os.splice``, no copy through Python) on
non-blocking sockets, waiting with trio only when the kernel says EAGAIN;
where splice is missing it falls back to ``recv_into``/``send``. At EOF it
half-closes the other side (``shutdown(SHUT_WR)``) so the other direction
can go on.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Callable

import trio

PIPE_SIZE = 1 << 20
COPY_BUFFER = 256 * 1024
YIELD_EVERY = 8  # splice rounds between trio checkpoints when data keeps flowing

_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_NO_SPLICE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


def splice_available() -> bool:
    """True when this Python and kernel offer ``os.splice``."""
    return hasattr(os, "splice")


def _close_quietly(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _shutdown_write(sock: trio.socket.SocketType) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


async def _splice_pump(src: trio.socket.SocketType, dst: trio.socket.SocketType, count: Callable[[int], None]) -> bool:
    """Splice ``src`` → pipe → ``dst`` until EOF; False (nothing moved) when splice does not work here."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass
        sfd, dfd = src.fileno(), dst.fileno()
        first = True
        rounds = 0
        while True:
            try:
                n = os.splice(sfd, w, PIPE_SIZE, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                first = False
                rounds = 0
                await trio.lowlevel.wait_readable(sfd)
                continue
            except OSError as e:
                if first and e.errno in _NO_SPLICE:
                    return False
                raise
            first = False
            if n == 0:
                return True
            left = n
            while left:
                try:
                    m = os.splice(r, dfd, left, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(dfd)
                    continue
                if m == 0:  # cannot happen while the pipe holds data; never spin on it
                    raise BrokenPipeError(errno.EPIPE, "splice to socket moved nothing")
                left -= m
            count(n)
            rounds += 1
            if rounds >= YIELD_EVERY:
                rounds = 0
                await trio.lowlevel.checkpoint()
    finally:
        _close_quietly(r, w)


async def _copy_pump(src: trio.socket.SocketType, dst: trio.socket.SocketType, count: Callable[[int], None]) -> None:
    """recv → send until EOF (where splice is missing)."""
    buf = bytearray(COPY_BUFFER)
    view = memoryview(buf)
    while True:
        n = await src.recv_into(buf)
        if n == 0:
            return
        sent = 0
        while sent < n:
            sent += await dst.send(view[sent:n])
        count(n)


async def pump(src: trio.socket.SocketType, dst: trio.socket.SocketType, count: Callable[[int], None] = lambda n: None, *, splice: bool = True) -> None:
    """Move bytes ``src`` → ``dst`` until ``src`` says EOF, then ``shutdown(SHUT_WR)`` ``dst``."""
    if not (splice and splice_available() and await _splice_pump(src, dst, count)):
        await _copy_pump(src, dst, count)
    _shutdown_write(dst)
