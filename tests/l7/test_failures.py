"""When backends fail: timeouts (504), refused connections (retry on another endpoint, else 502), stale pooled
connections (retried), a backend that dies mid-answer (the client connection is dropped)."""

from __future__ import annotations

import functools
import socket

import httpx
import pytest
import trio

from kmesh.l7.model import Config, Endpoint, HostMatch, Listener, Match, PathMatch, RouteEntry, Rule
from tests.l7.support import Backend, ref, set_backends, simple_config, start_engine, url


def dead_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("kind", ["request_timeout", "backend_timeout"])
async def test_timeouts_give_504(nursery: trio.Nursery, kind: str) -> None:
    b = await Backend("a").start(nursery)
    cfg = Config((Listener(80, (
        RouteEntry(HostMatch(), Match(PathMatch("Exact", "/hang")), Rule((ref(b),), **{kind: 0.2})),  # type: ignore
        RouteEntry(HostMatch(), Match(), Rule((ref(b),))),
    )),))
    engine = await start_engine(nursery, cfg)
    set_backends(engine, b)
    async with httpx.AsyncClient() as client:
        r = await client.get(url(engine, path="/hang"))
        assert r.status_code == 504
        assert (await client.get(url(engine, path="/after"))).status_code == 200
    assert engine.metrics.count(status=504) == 1


async def test_refused_endpoint_is_retried_on_another(nursery: trio.Nursery) -> None:
    b = await Backend("a").start(nursery)
    engine = await start_engine(nursery, simple_config("svc"))  # type: ignore[arg-type]
    engine.set_endpoints("default", "svc", 80, [Endpoint("127.0.0.1", dead_port()), b.endpoint()])
    async with httpx.AsyncClient() as client:
        codes = [(await client.get(url(engine))).status_code for _ in range(10)]
    assert codes == [200] * 10
    engine.set_endpoints("default", "svc", 80, [Endpoint("127.0.0.1", dead_port())])
    async with httpx.AsyncClient() as client:
        assert (await client.get(url(engine))).status_code == 502
    engine.set_endpoints("default", "svc", 80, [Endpoint("127.0.0.1", dead_port()),
                                                Endpoint("127.0.0.1", dead_port())])
    async with httpx.AsyncClient() as client:
        assert (await client.get(url(engine))).status_code == 502


async def _close_after_each(stream: trio.SocketStream, served: list[int]) -> None:
    """Answer one request with a keep-alive response, then close without saying so."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = await stream.receive_some(65536)
        if not part:
            return
        data += part
    served.append(1)
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await stream.aclose()


async def test_stale_pooled_connection_is_retried(nursery: trio.Nursery) -> None:
    served: list[int] = []
    listeners = await nursery.start(functools.partial(
        trio.serve_tcp, functools.partial(_close_after_each, served=served), 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    engine = await start_engine(nursery, simple_config("svc"))  # type: ignore[arg-type]
    engine.set_endpoints("default", "svc", 80, [Endpoint("127.0.0.1", port)])
    async with httpx.AsyncClient() as client:
        for _ in range(5):
            r = await client.get(url(engine))
            assert (r.status_code, r.text) == (200, "ok")
    assert len(served) == 5


async def _die_mid_body(stream: trio.SocketStream) -> None:
    while b"\r\n\r\n" not in await stream.receive_some(65536):
        pass
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
    await stream.aclose()


async def test_backend_dying_mid_answer_drops_the_client(nursery: trio.Nursery) -> None:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, _die_mid_body, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    good = await Backend("good").start(nursery)
    cfg = Config((Listener(80, (
        RouteEntry(HostMatch(), Match(PathMatch("Exact", "/die")), Rule((ref("dies"),))),
        RouteEntry(HostMatch(), Match(), Rule((ref(good),))),
    )),))
    engine = await start_engine(nursery, cfg)
    set_backends(engine, good)
    engine.set_endpoints("default", "dies", 80, [Endpoint("127.0.0.1", port)])
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url(engine, path="/die"))
        assert (await client.get(url(engine, path="/fine"))).status_code == 200


async def _garbage(stream: trio.SocketStream) -> None:
    while b"\r\n\r\n" not in await stream.receive_some(65536):
        pass
    await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\nSURPRISE this is not HTTP\r\n\r\n")
    await stream.receive_some(10)  # until the proxy hangs up


async def test_backend_answering_garbage_gives_502(nursery: trio.Nursery) -> None:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, _garbage, 0, host="127.0.0.1"))
    engine = await start_engine(nursery, simple_config("svc"))  # type: ignore[arg-type]
    engine.set_endpoints("default", "svc", 80, [Endpoint("127.0.0.1", listeners[0].socket.getsockname()[1])])
    async with httpx.AsyncClient() as client:
        assert (await client.get(url(engine))).status_code == 502


async def _hop_fields(stream: trio.SocketStream) -> None:
    """Answer every request with hop-by-hop fields, an odd reason phrase and a chunked body."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            part = await stream.receive_some(65536)
            if not part:
                return
            buf += part
        buf = buf.split(b"\r\n\r\n", 1)[1]
        await stream.send_all(b"HTTP/1.1 200 Fine Thanks\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                              b"Upgrade: h2c\r\nProxy-Connection: x\r\nTrailer: X-T\r\nX-End: yes\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")


async def test_hop_by_hop_response_fields_are_not_relayed(nursery: trio.Nursery) -> None:
    """RFC 9110 §7.6.1: a proxy drops the hop-by-hop fields of an answer and frames the body itself;
    the status line carries the standard reason phrase (as Envoy's)."""
    listeners = await nursery.start(functools.partial(trio.serve_tcp, _hop_fields, 0, host="127.0.0.1"))
    engine = await start_engine(nursery, simple_config("svc"))  # type: ignore[arg-type]
    engine.set_endpoints("default", "svc", 80, [Endpoint("127.0.0.1", listeners[0].socket.getsockname()[1])])
    stream = await trio.open_tcp_stream(*engine.address(80))
    for _ in range(2):  # the same pooled upstream connection serves both
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        buf = b""
        while not buf.endswith(b"0\r\n\r\n"):
            buf += await stream.receive_some(65536)
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 200 OK"
        names = {line.split(b":")[0].lower() for line in lines[1:]}
        assert b"x-end" in names and b"transfer-encoding" in names  # its own framing
        assert not names & {b"connection", b"keep-alive", b"upgrade", b"proxy-connection", b"trailer"}
        assert body == b"3\r\nabc\r\n0\r\n\r\n"
    await stream.aclose()
