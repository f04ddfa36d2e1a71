"""Config swaps with requests in flight, removed listeners, endpoint churn, and shutdown closing everything."""

from __future__ import annotations

import socket

import httpx
import pytest
import trio
import trio.testing

from kmesh.l7.engine import Engine
from kmesh.l7.model import Config, HostMatch, Listener, Match, RouteEntry, Rule
from tests.l7.support import Backend, ref, set_backends, simple_config, start_engine, url


def _to(backend: Backend, port: int = 80) -> Listener:
    return Listener(port, (RouteEntry(HostMatch(), Match(), Rule((ref(backend),), name=backend.name)),))


async def test_swap_with_requests_in_flight(nursery: trio.Nursery) -> None:
    a = await Backend("a").start(nursery)
    b = await Backend("b").start(nursery)
    engine = await start_engine(nursery, Config((_to(a),)))
    set_backends(engine, a, b)
    n = 8
    clients = [httpx.AsyncClient() for _ in range(n)]
    results: list[tuple[int, str]] = []

    async def call(client: httpx.AsyncClient) -> None:
        r = await client.get(url(engine, path="/wait"))
        results.append((r.status_code, r.json()["backend"]))

    async with trio.open_nursery() as inflight:
        for c in clients:
            inflight.start_soon(call, c)
        for _ in range(n):
            await a.waiters.receive()
        # every request is inside backend a now: swap the table, add a port, then let them finish
        await engine.apply(Config((_to(b), _to(b, 8080))))
        a.release.set()
    assert results == [(200, "a")] * n
    # the same keep-alive connections now follow the new table
    for c in clients:
        assert (await c.get(url(engine))).json()["backend"] == "b"
        await c.aclose()
    async with httpx.AsyncClient() as c:
        assert (await c.get(url(engine, 8080))).json()["backend"] == "b"


async def test_removed_listener_finishes_in_flight_then_closes(nursery: trio.Nursery) -> None:
    a = await Backend("a").start(nursery)
    engine = await start_engine(nursery, Config((_to(a), _to(a, 8080))))
    set_backends(engine, a)
    address = engine.address(80)
    idle = await trio.open_tcp_stream(*address)  # a connection that never sends a request
    await trio.testing.wait_all_tasks_blocked()
    got: list[httpx.Response] = []

    async def call() -> None:
        async with httpx.AsyncClient() as c:
            got.append(await c.get(f"http://{address[0]}:{address[1]}/wait"))

    async with trio.open_nursery() as inflight:
        inflight.start_soon(call)
        await a.waiters.receive()
        await engine.apply(Config((_to(a, 8080),)))
        with trio.fail_after(10):
            assert await idle.receive_some(10) == b""  # idle connections close at once
        with pytest.raises(OSError):
            await trio.open_tcp_stream(*address)
        a.release.set()
    assert got[0].status_code == 200 and got[0].headers["connection"] == "close"
    async with httpx.AsyncClient() as c:
        assert (await c.get(url(engine, 8080))).status_code == 200


async def test_endpoint_churn_is_seen_by_the_next_request(nursery: trio.Nursery) -> None:
    a = await Backend("a").start(nursery)
    b = await Backend("b").start(nursery)
    engine = await start_engine(nursery, simple_config("svc"))  # type: ignore[arg-type]
    async with httpx.AsyncClient() as c:
        assert (await c.get(url(engine))).status_code == 503
        engine.set_endpoints("default", "svc", 80, [a.endpoint()])
        assert (await c.get(url(engine))).json()["backend"] == "a"
        engine.set_endpoints("default", "svc", 80, [b.endpoint()])
        assert (await c.get(url(engine))).json()["backend"] == "b"
    await trio.testing.wait_all_tasks_blocked()
    assert a.closed == a.connections  # the pooled connection to a gone endpoint was closed
    # an endpoint removed while a request to it is in flight: the request finishes, its connection is not kept
    engine.set_endpoints("default", "svc", 80, [a.endpoint()])
    async with httpx.AsyncClient() as c, trio.open_nursery() as inflight:
        async def call() -> None:
            assert (await c.get(url(engine, path="/wait"))).json()["backend"] == "a"
        inflight.start_soon(call)
        await a.waiters.receive()
        engine.set_endpoints("default", "svc", 80, [b.endpoint()])
        a.release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert a.closed == a.connections == 2


async def test_shutdown_closes_listeners_clients_and_upstreams(nursery: trio.Nursery) -> None:
    a = await Backend("a").start(nursery)
    engine = Engine("127.0.0.1", port_map={80: 0})
    await engine.apply(Config((_to(a),)))
    set_backends(engine, a)
    async with trio.open_nursery() as inner:
        scope = inner.cancel_scope
        await inner.start(engine.serve)
        address = engine.address(80)
        async with httpx.AsyncClient() as c:
            assert (await c.get(url(engine))).status_code == 200  # leaves a pooled upstream connection
        hanging = await trio.open_tcp_stream(*address)
        await hanging.send_all(b"GET /hang HTTP/1.1\r\nHost: h\r\n\r\n")
        idle = await trio.open_tcp_stream(*address)
        await a.arrived.wait()
        scope.cancel()
    with trio.fail_after(10):
        assert await hanging.receive_some(10) == b""
        assert await idle.receive_some(10) == b""
    with pytest.raises(OSError):
        await trio.open_tcp_stream(*address)
    await trio.testing.wait_all_tasks_blocked()
    assert a.closed == a.connections == 1  # /hang went over the pooled connection
    with pytest.raises(trio.ClosedResourceError):
        await engine.apply(Config((_to(a),)))
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(address)  # nothing listens there any more
    s.close()


async def test_idle_client_connections_are_closed(nursery: trio.Nursery) -> None:
    a = await Backend("a").start(nursery)
    engine = await start_engine(nursery, Config((_to(a),)), idle_timeout=0.2)
    set_backends(engine, a)
    stream = await trio.open_tcp_stream(*engine.address(80))
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    data = b""
    with trio.fail_after(30):  # a guard against a hang; the reaper closes the connection after the answer
        while part := await stream.receive_some(65536):
            data += part
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"}")


async def test_failed_apply_changes_nothing(nursery: trio.Nursery) -> None:
    a = await Backend("a").start(nursery)
    b = await Backend("b").start(nursery)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    busy = taken.getsockname()[1]
    engine = Engine("127.0.0.1", port_map={80: 0, 81: 0, 82: busy})
    first = Config((_to(a),))
    await engine.apply(first)
    await nursery.start(engine.serve)
    set_backends(engine, a, b)
    with pytest.raises(OSError):  # port 81 opens, then 82 cannot: 81 is closed again and 80 keeps its table
        await engine.apply(Config((_to(b), _to(b, 81), _to(b, 82))))
    with pytest.raises(ValueError):
        await engine.apply(Config((_to(b), _to(b))))
    assert engine.config is first
    with pytest.raises(KeyError):
        engine.address(81)
    async with httpx.AsyncClient() as c:
        assert (await c.get(url(engine))).json()["backend"] == "a"
    taken.close()
