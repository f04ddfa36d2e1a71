"""A trio stream over a plain non-blocking socket that tries the system call before waiting.

Why not ``trio.SocketStream``: every send and receive through trio's socket
wrapper ends with a scheduler round-trip (a checkpoint), even when the kernel
had the data ready, and the proxy makes four such calls per request. Here a
call that succeeds at once returns at once; only a call that would block
waits (``wait_readable``/``wait_writable``), which is also where the task
yields. The proxy adds explicit checkpoints where a loop could otherwise run
without waiting (pipelined requests answered locally).
"""

from __future__ import annotations

import socket

import trio


class RawStream(trio.abc.HalfCloseableStream):
    """A ``trio.abc.Stream`` owning a connected stdlib socket (taken over from a trio socket)."""

    __slots__ = ("sock",)

    def __init__(self, tsock: trio.socket.SocketType) -> None:
        self.sock = socket.socket(tsock.family, tsock.type, tsock.proto, fileno=tsock.detach())
        self.sock.setblocking(False)
        if self.sock.family in (socket.AF_INET, socket.AF_INET6):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Bytes from the peer; b"" at end of stream."""
        sock = self.sock
        while True:
            try:
                return sock.recv(max_bytes or 65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
            except OSError as e:
                if sock.fileno() < 0:
                    raise trio.ClosedResourceError("stream closed") from e
                raise trio.BrokenResourceError(e) from e

    def send_now(self, data: bytes | bytearray | memoryview) -> int:
        """Send what the socket takes without waiting; how many bytes that was (``send_all`` the rest).

        Not a checkpoint: the hot path calls it instead of awaiting ``send_all`` when a send is expected
        to go through at once (an answer of a few kilobytes), saving a coroutine per send."""
        sock = self.sock
        try:
            return sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as e:
            if sock.fileno() < 0:
                raise trio.ClosedResourceError("stream closed") from e
            raise trio.BrokenResourceError(e) from e

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``."""
        sent = self.send_now(data)
        if sent == len(data):
            return
        sock = self.sock
        view = memoryview(data)[sent:]
        while view:
            await trio.lowlevel.wait_writable(sock)
            try:
                view = view[sock.send(view):]
            except BlockingIOError:
                continue
            except OSError as e:
                if sock.fileno() < 0:
                    raise trio.ClosedResourceError("stream closed") from e
                raise trio.BrokenResourceError(e) from e

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the socket is writable."""
        await trio.lowlevel.wait_writable(self.sock)

    async def send_eof(self) -> None:
        """Half-close: no more data from this side."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            raise trio.BrokenResourceError(e) from e
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Close now; tasks waiting on the socket get ClosedResourceError."""
        if self.sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()

    async def aclose(self) -> None:
        """Close (the ``trio.abc.AsyncResource`` way)."""
        self.close()
        await trio.lowlevel.checkpoint()
