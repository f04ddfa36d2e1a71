"""TCP deadlines: a client dribbling a message a byte at a time is disconnected, before and between queries."""

from __future__ import annotations

import dns.message
import trio

from tests.dns.conftest import DNSLab, service

Z = "cluster.local"
BYTE_EVERY = 0.25  # far below the old per-read idle timer (10 s), so only a whole-message deadline closes it


def query(name: str) -> bytes:
    """A length-prefixed A query for ``name``."""
    wire = dns.message.make_query(name, "A").to_wire()
    return len(wire).to_bytes(2, "big") + wire


async def read_answer(stream: trio.SocketStream) -> dns.message.Message:
    """One length-prefixed answer."""
    buf = b""
    while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
        chunk = await stream.receive_some(65536)
        assert chunk, "closed before the answer"
        buf += chunk
    return dns.message.from_wire(buf[2:2 + int.from_bytes(buf[:2], "big")])


async def dribble_until_closed(stream: trio.SocketStream, data: bytes) -> bytes:
    """Send ``data`` one byte every BYTE_EVERY seconds until the server closes; what it sent meanwhile."""
    got = b""

    async def send() -> None:
        try:
            for i in range(len(data)):
                await stream.send_all(data[i:i + 1])
                await trio.sleep(BYTE_EVERY)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as n:
        n.start_soon(send)
        try:
            while chunk := await stream.receive_some(65536):
                got += chunk
        except trio.BrokenResourceError:
            pass  # reset rather than closed: closed all the same
        n.cancel_scope.cancel()
    return got


async def test_a_client_dribbling_bytes_is_disconnected(lab: DNSLab) -> None:
    await lab.client.create(service("web"))
    await lab.settle(lambda s: s.service("default", "web") is not None)
    # Long enough that sending it all would outlast every deadline several times over.
    slow = query(f"{'a' * 60}.{'b' * 60}.web.default.svc.{Z}")
    assert len(slow) * BYTE_EVERY > 4 * 8.0  # 8 s: the idle deadline

    async def first_message() -> None:
        stream = await trio.open_tcp_stream(lab.host, lab.port)
        async with stream:
            assert await dribble_until_closed(stream, slow) == b""

    async def after_an_answer() -> None:
        stream = await trio.open_tcp_stream(lab.host, lab.port)
        async with stream:
            await stream.send_all(query(f"web.default.svc.{Z}"))
            assert len((await read_answer(stream)).answer) == 1
            assert await dribble_until_closed(stream, slow) == b""

    with trio.fail_after(60):  # hang guard; the assertions are on the server closing, not on when
        async with trio.open_nursery() as n:
            n.start_soon(first_message)
            n.start_soon(after_an_answer)
    # The server still answers new clients over TCP.
    msg = await lab.query(f"web.default.svc.{Z}", "A", tcp=True)
    assert len(msg.answer) == 1
