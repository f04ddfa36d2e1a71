"""The small TCP forwarder: bytes both ways, half-close, and a dead peer costs only its own connection."""

from __future__ import annotations

import functools

import trio

from kmesh.net.portforward import forward
from kmesh.net.sockets import tcp_listener


async def _echo_upper(stream: trio.SocketStream) -> None:
    """Answer with the upper-cased request once the client has half-closed."""
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    await stream.send_all(data.upper())
    await stream.aclose()


async def _roundtrip(port: int, payload: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(payload)
        await stream.send_eof()
        out = b""
        while chunk := await stream.receive_some(65536):
            out += chunk
    return out


async def test_forwards_both_ways_and_survives_a_dead_peer(nursery: trio.Nursery) -> None:
    target = (await nursery.start(functools.partial(trio.serve_tcp, _echo_upper, 0, host="127.0.0.1")))[0]
    target_port = target.socket.getsockname()[1]
    front = await tcp_listener("127.0.0.1", 0)
    port = front.getsockname()[1]
    await nursery.start(forward, front, "127.0.0.1", target_port)
    big = b"metrics " * 100_000
    assert await _roundtrip(port, big) == big.upper()

    closed = await tcp_listener("127.0.0.1", 0)  # a port nobody accepts on
    dead = closed.getsockname()[1]
    closed.close()
    front2 = await tcp_listener("127.0.0.1", 0)
    await nursery.start(forward, front2, "127.0.0.1", dead)
    stream = await trio.open_tcp_stream("127.0.0.1", front2.getsockname()[1])
    async with stream:
        with trio.fail_after(30):  # closed at once (EOF or a reset), never an answer
            try:
                assert await stream.receive_some(100) == b""
            except trio.BrokenResourceError:
                pass
    assert await _roundtrip(port, b"still here") == b"STILL HERE"
