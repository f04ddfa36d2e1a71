"""``Failover`` with ``forward``: connections go to the first target that answers, and one that did not answer
is tried last from then on (the API balancer of a joined node relies on both)."""

from __future__ import annotations

import functools
import socket
from collections.abc import Iterator

import pytest
import trio

from kmesh.net.portforward import Failover, forward
from kmesh.net.sockets import tcp_listener
from tests.net.test_portforward import _echo_upper, _roundtrip



@pytest.fixture
def dead() -> Iterator[tuple[str, int]]:
    """A loopback port that is bound but never listens: connecting is refused, and nobody else can take it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()
    finally:
        s.close()


async def test_connections_go_through_the_live_target_and_the_dead_one_moves_back(
        nursery: trio.Nursery, dead: tuple[str, int]) -> None:
    live_listener = (await nursery.start(functools.partial(trio.serve_tcp, _echo_upper, 0, host="127.0.0.1")))[0]
    live = ("127.0.0.1", live_listener.socket.getsockname()[1])
    targets = Failover([dead, live])
    assert targets.order() == [dead, live]
    front = await tcp_listener("127.0.0.1", 0)
    port = front.getsockname()[1]
    await nursery.start(forward, front, targets)

    with trio.fail_after(30):
        assert await _roundtrip(port, b"first") == b"FIRST"  # the dead one refused, the live one answered
    assert targets.order() == [live, dead]
    with trio.fail_after(30):
        for i in range(5):
            assert await _roundtrip(port, b"again %d" % i) == b"AGAIN %d" % i
    assert targets.order() == [live, dead]  # the live one answers: nothing moves


async def test_with_no_live_target_the_connection_is_closed(nursery: trio.Nursery, dead: tuple[str, int]) -> None:
    targets = Failover([dead])
    front = await tcp_listener("127.0.0.1", 0)
    await nursery.start(forward, front, targets)
    stream = await trio.open_tcp_stream("127.0.0.1", front.getsockname()[1])
    async with stream:
        with trio.fail_after(30):
            try:
                assert await stream.receive_some(100) == b""
            except trio.BrokenResourceError:
                pass  # a reset is as good as an EOF here
    assert targets.order() == [dead]  # a single target stays where it is


def test_failed_and_replace_keep_the_order_they_promise() -> None:
    a, b, c, d = (("10.0.0.1", 6443), ("10.0.0.2", 6443), ("10.0.0.3", 6443), ("10.0.0.4", 6443))
    f = Failover([a, b, a, c])
    assert f.order() == [a, b, c]  # duplicates once, first place kept
    f.failed(a)
    assert f.order() == [b, c, a]
    f.failed(d)  # unknown: ignored
    assert f.order() == [b, c, a]
    f.replace([c, d, a])  # known keep their order, new at the back, gone (b) leave
    assert f.order() == [c, a, d]
    f.replace([])  # nothing known: keep what there is rather than have nowhere to go
    assert f.order() == [c, a, d]
    snapshot = f.order()
    snapshot.append(b)
    assert f.order() == [c, a, d]  # order() is a copy
