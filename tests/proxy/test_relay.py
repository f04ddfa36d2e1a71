"""The byte mover and the TCP/UDP relays, on loopback: bytes both ways, half-close, counters, retries, UDP sessions."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio.testing

from kmesh.proxy import relay as relay_mod
from kmesh.proxy.balancer import RoundRobin
from kmesh.net.sockets import tcp_listener, udp_socket
from kmesh.proxy.relay import TcpRelay, UdpRelay
from kmesh.proxy.model import Endpoint

LO = "127.0.0.1"
Handler = Callable[[trio.socket.SocketType], Awaitable[None]]


async def recv_all(sock: trio.socket.SocketType) -> bytes:
    """Everything until EOF."""
    chunks = []
    while True:
        data = await sock.recv(1 << 16)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


async def send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = await sock.send(view)
        view = view[n:]


async def start_server(nursery: trio.Nursery, handler: Handler, host: str = LO) -> int:
    """A TCP server on ``host`` running ``handler`` per connection; its port."""
    lsock = await tcp_listener(host, 0)

    async def accept_loop() -> None:
        async with trio.open_nursery() as inner:
            while True:
                sock, _ = await lsock.accept()

                async def one(s: trio.socket.SocketType = sock) -> None:
                    with s:
                        try:
                            await handler(s)
                        except ConnectionResetError:
                            pass  # the tests that drop connections make these

                inner.start_soon(one)

    nursery.start_soon(accept_loop)
    return int(lsock.getsockname()[1])


async def digest_then_reply(sock: trio.socket.SocketType) -> None:
    """Read until EOF, then send back the sha256 of what came and 1 MiB of pattern, then close."""
    h = hashlib.sha256()
    while True:
        data = await sock.recv(1 << 16)
        if not data:
            break
        h.update(data)
    await send_all(sock, h.hexdigest().encode() + b"\n" + bytes(range(256)) * 4096)


async def echo(sock: trio.socket.SocketType) -> None:
    while True:
        data = await sock.recv(1 << 16)
        if not data:
            sock.shutdown(socket.SHUT_WR)
            return
        await send_all(sock, data)


async def connect_to(port: int, host: str = LO) -> trio.socket.SocketType:
    sock = trio.socket.socket()
    await sock.connect((host, port))
    return sock


@pytest.fixture
async def relay_to(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Awaitable[TcpRelay]]]:
    """Start a TcpRelay on loopback in front of the given endpoints."""

    async def make(endpoints: list[Endpoint], **kw: object) -> TcpRelay:
        picker = kw.pop("picker", None) or RoundRobin(endpoints)
        relay = TcpRelay(await tcp_listener(LO, 0), picker, **kw)  # type: ignore[arg-type]
        await nursery.start(relay.serve)
        return relay

    yield make


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
async def test_large_transfer_both_ways_with_half_close(nursery: trio.Nursery, relay_to, splice: bool) -> None:
    port = await start_server(nursery, digest_then_reply)
    relay = await relay_to([Endpoint(LO, port)], splice=splice)
    payload = os.urandom(32 << 20)
    sock = await connect_to(relay.port)
    with sock, trio.fail_after(30):
        await send_all(sock, payload)
        sock.shutdown(socket.SHUT_WR)  # half-close: the server only answers after EOF
        reply = await recv_all(sock)
    digest, _, body = reply.partition(b"\n")
    assert digest.decode() == hashlib.sha256(payload).hexdigest()
    assert body == bytes(range(256)) * 4096
    await trio.testing.wait_all_tasks_blocked()
    st = relay.stats[f"{LO}:{port}"]
    assert (st.conns, st.active, st.inactive) == (1, 0, 0)
    assert (st.bytes_in, st.bytes_out) == (len(payload), len(reply))


async def test_counters_active_then_inactive(nursery: trio.Nursery, relay_to) -> None:
    port = await start_server(nursery, echo)
    relay = await relay_to([Endpoint(LO, port)])
    st_key = f"{LO}:{port}"
    a, b = await connect_to(relay.port), await connect_to(relay.port)
    with a, b:
        await send_all(a, b"ping")
        assert await a.recv(4) == b"ping"
        await send_all(b, b"pong")
        assert await b.recv(4) == b"pong"
        st = relay.stats[st_key]
        assert (st.conns, st.active, st.inactive) == (2, 2, 0)
        b.shutdown(socket.SHUT_WR)  # the echo server closes its side too: b ends, both ways
        assert await recv_all(b) == b""
        a.shutdown(socket.SHUT_WR)
        await trio.testing.wait_all_tasks_blocked()
    await trio.testing.wait_all_tasks_blocked()
    assert (st.active, st.inactive) == (0, 0)
    assert relay.connections == 0


async def test_half_closed_connection_counts_inactive(nursery: trio.Nursery, relay_to) -> None:
    release = trio.Event()

    async def reply_late(sock: trio.socket.SocketType) -> None:
        assert await recv_all(sock) == b"question"
        await release.wait()
        await send_all(sock, b"answer")

    port = await start_server(nursery, reply_late)
    relay = await relay_to([Endpoint(LO, port)])
    sock = await connect_to(relay.port)
    with sock:
        await send_all(sock, b"question")
        sock.shutdown(socket.SHUT_WR)
        await trio.testing.wait_all_tasks_blocked()
        st = relay.stats[f"{LO}:{port}"]
        assert (st.active, st.inactive) == (0, 1)
        release.set()
        assert await recv_all(sock) == b"answer"
    await trio.testing.wait_all_tasks_blocked()
    assert (st.active, st.inactive) == (0, 0)


async def test_connect_fails_over_to_next_endpoint(nursery: trio.Nursery, relay_to) -> None:
    port = await start_server(nursery, echo)
    dead = trio.socket.socket()  # bound, not listening: connect is refused
    await dead.bind((LO, 0))
    dead_ep = Endpoint(LO, dead.getsockname()[1])
    good = Endpoint(LO, port)
    rr = RoundRobin([dead_ep, good])
    rr._endpoints = [dead_ep, good]  # deterministic order: the dead one first
    relay = await relay_to([], picker=rr)
    sock = await connect_to(relay.port)
    with sock, dead:
        await send_all(sock, b"hi")
        assert await sock.recv(2) == b"hi"
    assert relay.stats[dead_ep.addr].failed == 1
    assert relay.stats[good.addr].conns == 1


async def test_no_endpoint_resets_the_connection(relay_to) -> None:
    relay = await relay_to([])
    sock = await connect_to(relay.port)
    with sock, trio.fail_after(5):
        with pytest.raises(ConnectionResetError):
            await sock.recv(10)
    assert relay.refused == 1


async def test_all_attempts_fail_resets(nursery: trio.Nursery, relay_to) -> None:
    dead = trio.socket.socket()
    await dead.bind((LO, 0))
    dead_port = dead.getsockname()[1]
    relay = await relay_to([Endpoint(LO, dead_port)])
    sock = await connect_to(relay.port)
    with sock, dead, trio.fail_after(10):
        with pytest.raises(ConnectionResetError):
            await sock.recv(10)
    assert relay.stats[f"{LO}:{dead_port}"].failed == len(relay_mod.CONNECT_TIMEOUTS)


async def test_close_keeps_established_and_abort_drops(nursery: trio.Nursery, relay_to) -> None:
    port = await start_server(nursery, echo)
    relay = await relay_to([Endpoint(LO, port)])
    sock = await connect_to(relay.port)
    listen_port = relay.port
    with sock:
        await send_all(sock, b"up")  # accepted and relayed (not just queued in the backlog)
        assert await sock.recv(2) == b"up"
        relay.close()
        with pytest.raises(ConnectionRefusedError):
            await connect_to(listen_port)
        await send_all(sock, b"still")
        assert await sock.recv(5) == b"still"
        relay.abort()
        with trio.fail_after(5):
            await relay.closed.wait()
            with pytest.raises(ConnectionResetError):  # dropped, not finished
                await recv_all(sock)


async def test_endpoint_reset_reaches_the_client(nursery: trio.Nursery, relay_to) -> None:
    async def reset_after_hello(sock: trio.socket.SocketType) -> None:
        assert await sock.recv(5) == b"hello"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    port = await start_server(nursery, reset_after_hello)
    relay = await relay_to([Endpoint(LO, port)])
    sock = await connect_to(relay.port)
    with sock, trio.fail_after(5):
        await send_all(sock, b"hello")
        with pytest.raises(ConnectionResetError):
            await recv_all(sock)
    await trio.testing.wait_all_tasks_blocked()
    assert relay.connections == 0


async def test_connect_timeout_then_next(nursery: trio.Nursery) -> None:
    """An attempt that does not complete within its timeout moves on to the next endpoint."""
    port = await start_server(nursery, echo)
    calls: list[bool] = []

    class Slow:
        def __init__(self) -> None:
            self.first = True

        def pick(self, client_ip: str, retry: bool = False) -> Endpoint | None:
            calls.append(retry)
            return Endpoint(LO, port)

        def release(self, endpoint: Endpoint) -> None:
            pass

    async def slow_open(family: int, type: int) -> trio.socket.SocketType:
        sock = trio.socket.socket(family, type)
        if len(calls) == 1:
            async def never(addr: object) -> None:
                await trio.sleep_forever()
            sock.connect = never  # type: ignore[method-assign]
        return sock

    with trio.fail_after(5):
        got = await relay_mod.connect(Slow(), "10.0.0.1", open_socket=slow_open, timeouts=(0.05, 1.0))
    assert got is not None and calls == [False, True]
    got[0].close()


async def udp_echo(nursery: trio.Nursery, name: bytes) -> int:
    sock = await udp_socket(LO, 0)

    async def loop() -> None:
        with sock:
            while True:
                data, addr = await sock.recvfrom(65535)
                await sock.sendto(name + b":" + data, addr)

    nursery.start_soon(loop)
    return int(sock.getsockname()[1])


async def test_udp_relay_sessions_and_idle_timeout(nursery: trio.Nursery) -> None:
    ports = [await udp_echo(nursery, b"a"), await udp_echo(nursery, b"b")]
    svc = await udp_socket("127.0.0.2", 0)
    rr = RoundRobin([Endpoint(LO, p) for p in ports])
    relay = UdpRelay(svc, rr, idle_timeout=0.2)
    await nursery.start(relay.serve)
    service = ("127.0.0.2", relay.port)
    c1, c2 = trio.socket.socket(type=socket.SOCK_DGRAM), trio.socket.socket(type=socket.SOCK_DGRAM)
    with c1, c2, trio.fail_after(5):
        await c1.sendto(b"x", service)
        data1, src = await c1.recvfrom(100)
        assert src == service  # replies come from the service address
        await c1.sendto(b"y", service)
        again, _ = await c1.recvfrom(100)
        assert again[:1] == data1[:1]  # same session, same endpoint
        await c2.sendto(b"x", service)
        data2, _ = await c2.recvfrom(100)
        assert {data1, data2} == {b"a:x", b"b:x"}  # round robin across sessions
        assert len(relay.sessions) == 2
        assert sum(s.inactive for s in relay.stats.values()) == 2
        while relay.sessions:  # the idle timeout ends both sessions
            await trio.sleep(0.02)
    assert sum(s.inactive for s in relay.stats.values()) == 0
    relay.close()
    with trio.fail_after(5):
        await relay.closed.wait()


async def test_udp_no_endpoint_drops(nursery: trio.Nursery) -> None:
    relay = UdpRelay(await udp_socket(LO, 0), RoundRobin([]))
    await nursery.start(relay.serve)
    c = trio.socket.socket(type=socket.SOCK_DGRAM)
    with c:
        await c.sendto(b"x", (LO, relay.port))
        with trio.fail_after(5):
            while relay.dropped == 0:
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(0.01)
    relay.close()


async def test_open_socket_failure_refuses_one_connection_only(nursery: trio.Nursery, relay_to) -> None:
    port = await start_server(nursery, echo)
    fail = [True]

    async def flaky_open(family: int, type: int) -> trio.socket.SocketType:
        if fail.pop(0) if fail else False:
            raise RuntimeError("namespace went away")
        return trio.socket.socket(family, type)

    relay = await relay_to([Endpoint(LO, port)], open_socket=flaky_open)
    first = await connect_to(relay.port)
    with first, trio.fail_after(5):
        with pytest.raises(ConnectionResetError):
            await first.recv(1)
    second = await connect_to(relay.port)
    with second, trio.fail_after(5):
        await send_all(second, b"ok")
        assert await second.recv(2) == b"ok"
