"""Backends whose appProtocol is kubernetes.io/h2c get HTTP/2 over cleartext (hypercorn as the backend)."""

from __future__ import annotations

import functools
import hashlib
import json

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from kmesh.l7.model import Config, Endpoint, HostMatch, Listener, Match, RouteEntry, Rule
from tests.l7.support import ref, start_engine, url


async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    """An ASGI app: /echo streams the body back; anything else answers what it saw, as JSON."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    if scope["path"] == "/echo":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            msg = await receive()
            if msg.get("body"):
                await send({"type": "http.response.body", "body": msg["body"], "more_body": True})
            if not msg.get("more_body"):
                break
        await send({"type": "http.response.body", "body": b""})
        return
    digest = hashlib.sha256()
    size = 0
    while True:
        msg = await receive()
        digest.update(msg.get("body", b""))
        size += len(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    body = json.dumps({
        "http_version": scope["http_version"], "path": scope["path"], "method": scope["method"],
        "headers": {k.decode(): v.decode() for k, v in scope["headers"]}, "size": size,
        "sha256": digest.hexdigest()}).encode()
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def test_h2c_backend(nursery: trio.Nursery) -> None:
    hc = HypercornConfig()
    hc.bind = ["127.0.0.1:0"]
    binds = await nursery.start(functools.partial(serve, app, hc))
    port = int(binds[0].rsplit(":", 1)[1])
    cfg = Config((Listener(80, (RouteEntry(HostMatch(), Match(), Rule((ref("grpcish", app_protocol="kubernetes.io/h2c"),))),)),))
    engine = await start_engine(nursery, cfg)
    engine.set_endpoints("default", "grpcish", 80, [Endpoint("127.0.0.1", port)])
    body = bytes(range(256)) * 4096 * 2  # 2 MiB: more than HTTP/2's initial flow-control window
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for _ in range(3):  # one pooled h2c connection serves them in turn
            r = await client.get(url(engine, path="/info?x=1"), headers={"Host": "svc.example", "X-Custom": "v"})
            assert r.status_code == 201
            got = r.json()
            assert (got["http_version"], got["method"], got["headers"][":authority"] if ":authority" in
                    got["headers"] else got["headers"].get("host")) == ("2", "GET", "svc.example")
            assert got["headers"]["x-custom"] == "v" and got["headers"]["x-forwarded-for"] == "127.0.0.1"
        r = await client.post(url(engine, path="/upload"), content=body)
        assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()

        async def gen():
            for i in range(0, len(body), 100_000):
                yield body[i:i + 100_000]
        r = await client.post(url(engine, path="/echo"), content=gen())
        assert r.status_code == 200 and r.content == body
        r = await client.head(url(engine, path="/info"))
        assert r.status_code == 201 and r.content == b""
