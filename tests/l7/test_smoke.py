"""First light: one request through the engine to one backend."""

from __future__ import annotations

import httpx
import trio

from tests.l7.support import Backend, set_backends, simple_config, start_engine, url


async def test_one_request(nursery: trio.Nursery) -> None:
    b = await Backend("a").start(nursery)
    engine = await start_engine(nursery, simple_config(b))
    set_backends(engine, b)
    async with httpx.AsyncClient() as client:
        r = await client.get(url(engine, path="/x?y=1"), headers={"X-Forwarded-For": "10.0.0.9"})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["path"] == "/x?y=1"
        assert got["headers"]["x-forwarded-for"] == "10.0.0.9, 127.0.0.1"
        assert got["headers"]["x-forwarded-proto"] == "http"
        r2 = await client.get(url(engine, path="/big?n=300000"))
        assert len(r2.content) == 300000
