"""Requests through the engine over loopback: routing, forwarded headers, filters, local errors, metrics."""

from __future__ import annotations

import httpx
import trio

from kmesh.l7.metrics import AccessRecord, Metrics
from kmesh.l7.model import (Config, HeaderMatch, HeaderModifier, HostMatch, Listener, Match, PathMatch,
                            PathModifier, RequestMirror, RequestRedirect, RouteEntry, Rule, URLRewrite)
from tests.l7.support import Backend, ref, set_backends, start_engine, url


async def _backends(nursery: trio.Nursery, *names: str) -> list[Backend]:
    return [await Backend(n).start(nursery) for n in names]


async def test_routes_by_host_path_header_and_404(nursery: trio.Nursery) -> None:
    a, b, c = await _backends(nursery, "a", "b", "c")
    cfg = Config((Listener(80, (
        RouteEntry(HostMatch("exact", "foo.example"), Match(PathMatch("PathPrefix", "/v2")), Rule((ref(b),), name="v2")),
        RouteEntry(HostMatch("exact", "foo.example"), Match(headers=(HeaderMatch("env", "canary"),)),
                   Rule((ref(c),), name="canary")),
        RouteEntry(HostMatch("wildcard", "*.example"), Match(), Rule((ref(a),), name="wild")),
    )),))
    engine = await start_engine(nursery, cfg)
    set_backends(engine, a, b, c)
    async with httpx.AsyncClient() as client:
        async def who(host: str, path: str = "/", **headers: str) -> str | int:
            r = await client.get(url(engine, path=path), headers={"Host": host, **headers})
            return r.json()["backend"] if r.status_code == 200 else r.status_code
        assert await who("foo.example", "/v2/x") == "b"
        assert await who("foo.example", "/v2x") == "a"
        assert await who("FOO.example:80", "/", env="canary") == "c"
        assert await who("x.y.example") == "a"
        assert await who("example") == 404
        assert await who("other.test") == 404
    assert engine.metrics.count(route="v2", status=200) == 1
    assert engine.metrics.count(status=404) == 2


async def test_forwarded_headers_hop_by_hop_and_host(nursery: trio.Nursery) -> None:
    (a,) = await _backends(nursery, "a")
    engine = await start_engine(nursery, Config((Listener(80, (RouteEntry(HostMatch(), Match(),
                                                                         Rule((ref(a),))),)),)))
    set_backends(engine, a)
    async with httpx.AsyncClient() as client:
        r = await client.get(url(engine, path="/p"), headers={
            "Host": "app.example:8080", "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
            "Connection": "keep-alive, X-Secret", "X-Secret": "s", "Keep-Alive": "timeout=5", "TE": "trailers",
            "Via": "1.0 edge", "X-Other": "kept"})
    h = r.json()["headers"]
    assert h["host"] == "app.example:8080"
    assert h["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["via"] == "1.0 edge, 1.1 kmesh"
    assert h["x-other"] == "kept"
    for gone in ("x-secret", "keep-alive", "te", "connection"):
        assert gone not in h
    assert "via" not in r.headers  # none added to responses


async def test_header_modifiers_rewrite_and_redirect(nursery: trio.Nursery) -> None:
    (a,) = await _backends(nursery, "a")
    cfg = Config((Listener(80, (
        RouteEntry(HostMatch(), Match(PathMatch("PathPrefix", "/mod")), Rule((ref(a),), filters=(
            HeaderModifier(set=(("X-Set", "set"),), add=(("X-Add", "added"),), remove=("X-Remove",)),
            HeaderModifier(set=(("X-Resp", "r"),), remove=("X-Backend",), response=True),
        ))),
        RouteEntry(HostMatch(), Match(PathMatch("PathPrefix", "/prefix/one")), Rule((ref(a),), filters=(
            URLRewrite(hostname="rewritten.example", path=PathModifier("ReplacePrefixMatch", "/one")),))),
        RouteEntry(HostMatch(), Match(PathMatch("Exact", "/full")), Rule((ref(a),), filters=(
            URLRewrite(path=PathModifier("ReplaceFullPath", "/elsewhere")),))),
        RouteEntry(HostMatch(), Match(PathMatch("PathPrefix", "/old")), Rule(filters=(
            RequestRedirect(scheme="https", hostname="new.example",
                            path=PathModifier("ReplacePrefixMatch", "/new"), status_code=301),))),
        RouteEntry(HostMatch(), Match(PathMatch("PathPrefix", "/port")), Rule(filters=(RequestRedirect(),))),
    )),))
    engine = await start_engine(nursery, cfg)
    set_backends(engine, a)
    async with httpx.AsyncClient() as client:
        r = await client.get(url(engine, path="/mod"), headers={"Host": "h", "X-Add": "orig", "X-Remove": "x",
                                                                 "X-Set": "orig"})
        h = r.json()["headers"]
        assert (h["x-set"], h["x-add"], "x-remove" in h) == ("set", "orig,added", False)
        assert r.headers["x-resp"] == "r" and "x-backend" not in r.headers
        r = await client.get(url(engine, path="/prefix/one/two?q=1"), headers={"Host": "h.example"})
        got = r.json()
        assert (got["path"], got["host"], got["headers"]["x-forwarded-host"]) == \
            ("/one/two?q=1", "rewritten.example", "h.example")
        r = await client.get(url(engine, path="/full?x=y"), headers={"Host": "h"})
        assert r.json()["path"] == "/elsewhere?x=y"
        r = await client.get(url(engine, path="/old/page?a=b"), headers={"Host": "h.example"})
        assert r.status_code == 301
        assert r.headers["location"] == "https://new.example/new/page?a=b"
        r = await client.get(url(engine, path="/port"), headers={"Host": "h.example"})
        assert r.status_code == 302
        assert r.headers["location"] == "http://h.example/port"  # listener port 80 is left out
    assert len(a.requests) == 3  # redirects never reach a backend


async def test_mirror_gets_a_copy(nursery: trio.Nursery) -> None:
    a, m = await _backends(nursery, "a", "mirror")
    cfg = Config((Listener(80, (RouteEntry(HostMatch(), Match(), Rule((ref(a),), filters=(
        RequestMirror(ref(m)),))),)),))
    engine = await start_engine(nursery, cfg)
    set_backends(engine, a, m)
    async with httpx.AsyncClient() as client:
        async def body():
            yield b"pay"
            await trio.sleep(0)
            yield b"load"
        r = await client.post(url(engine, path="/upload"), content=b"payload")
        assert r.json()["backend"] == "a"
        r = await client.post(url(engine, path="/upload"), content=body())
    assert r.json()["backend"] == "a"
    with trio.fail_after(10):
        copies = [await m.seen.receive(), await m.seen.receive()]
    assert [(c["method"], c["path"], c["size"]) for c in copies] == [("POST", "/upload", 7)] * 2


async def test_local_errors_and_access_log(nursery: trio.Nursery) -> None:
    (a,) = await _backends(nursery, "a")
    records: list[AccessRecord] = []
    cfg = Config((Listener(80, (
        RouteEntry(HostMatch(), Match(PathMatch("Exact", "/invalid")),
                   Rule((ref("gone", invalid="no such Service"),), name="inv")),
        RouteEntry(HostMatch(), Match(PathMatch("Exact", "/nobackends")), Rule(name="none")),
        RouteEntry(HostMatch(), Match(PathMatch("Exact", "/zero")), Rule((ref(a, weight=0),), name="zero")),
        RouteEntry(HostMatch(), Match(PathMatch("Exact", "/noendpoints")), Rule((ref("empty"),), name="empty")),
        RouteEntry(HostMatch(), Match(PathMatch("Exact", "/unknown")), Rule((ref("unknown"),), name="unknown")),
        RouteEntry(HostMatch(), Match(PathMatch("Exact", "/fenced")), Rule((ref(a),), name="fence", direct=404)),
        RouteEntry(HostMatch(), Match(), Rule((ref(a),), name="ok")),
    )),))
    engine = await start_engine(nursery, cfg, metrics=Metrics(access_log=records.append))
    set_backends(engine, a)
    engine.set_endpoints("default", "empty", 80, [])
    async with httpx.AsyncClient() as client:
        codes = [(await client.get(url(engine, path=p))).status_code
                 for p in ("/invalid", "/nobackends", "/zero", "/noendpoints", "/unknown", "/fenced", "/fine")]
        assert (await client.get(url(engine, path="/fenced"))).content == b""
    assert codes == [500, 500, 500, 503, 503, 404, 200]
    assert not a.requests[:-1]
    assert [r.status for r in records] == codes + [404]
    ok = records[-2]
    assert ok.route == "ok" and ok.backend == "default/a:80"
    assert ok.endpoint == f"127.0.0.1:{a.port}"
    assert "GET /fine" in ok.line()
