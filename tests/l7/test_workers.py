"""Engine worker processes sharing a port: configured like one engine, stopped with their parent's scope."""

from __future__ import annotations

import httpx
import pytest
import trio

from kmesh.l7.model import Config, HostMatch, Listener, Match, PathMatch, RouteEntry, Rule
from kmesh.l7.workers import EngineWorkers
from tests.l7.support import Backend, ref
from tests.l7.test_failures import dead_port


async def test_two_workers_serve_and_stop(nursery: trio.Nursery) -> None:
    a = await Backend("a").start(nursery)
    b = await Backend("b").start(nursery)
    port = dead_port()
    workers = EngineWorkers(2, "127.0.0.1", port_map={80: port})
    workers.set_endpoints("default", "a", 80, [a.endpoint()])
    await workers.apply(Config((Listener(80, (RouteEntry(HostMatch(), Match(), Rule((ref(a),))),)),)))
    async with trio.open_nursery() as inner:
        await inner.start(workers.serve)
        procs = [w.proc for w in workers._workers]
        for _ in range(20):  # fresh connections: the kernel spreads them over both workers
            async with httpx.AsyncClient() as c:
                assert (await c.get(f"http://127.0.0.1:{port}/")).json()["backend"] == "a"
        workers.set_endpoints("default", "b", 80, [b.endpoint()])
        await workers.apply(Config((Listener(80, (RouteEntry(HostMatch(), Match(), Rule((ref(b),))),)),)))
        async with httpx.AsyncClient() as c:
            for _ in range(10):
                assert (await c.get(f"http://127.0.0.1:{port}/")).json()["backend"] == "b"
        with pytest.raises(RuntimeError, match="error"):
            await workers.apply(Config((Listener(80, (RouteEntry(
                HostMatch(), Match(PathMatch("RegularExpression", "(")), Rule()),)),)))
        inner.cancel_scope.cancel()
    assert all(p.returncode is not None for p in procs)
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)
