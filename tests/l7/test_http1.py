"""HTTP/1.x on the wire: streaming both ways without buffering, HTTP/1.0, 100-continue, HEAD, bad requests."""

from __future__ import annotations

import hashlib

import httpx
import trio

from kmesh.l7.engine import Engine
from tests.l7.support import Backend, set_backends, simple_config, start_engine, url


async def _engine(nursery: trio.Nursery) -> tuple[Engine, Backend]:
    b = await Backend("a").start(nursery)
    engine = await start_engine(nursery, simple_config(b))
    set_backends(engine, b)
    return engine, b


async def _connect(engine: Engine) -> trio.SocketStream:
    return await trio.open_tcp_stream(*engine.address(80))


async def _read_until(stream: trio.SocketStream, buf: bytearray, marker: bytes) -> bytes:
    while marker not in buf:
        data = await stream.receive_some(65536)
        assert data, f"closed before {marker!r}; got {bytes(buf)!r}"
        buf += data
    i = buf.index(marker) + len(marker)
    out = bytes(buf[:i])
    del buf[:i]
    return out


async def test_request_and_response_bodies_stream(nursery: trio.Nursery) -> None:
    """Each piece sent comes back before the next is sent: neither direction waits for the whole body."""
    engine, _ = await _engine(nursery)
    stream = await _connect(engine)
    await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    buf = bytearray()
    head = await _read_until(stream, buf, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    piece = b"0123456789abcdef" * 4096  # 64 KiB
    got = 0
    echoed = bytearray()
    with trio.fail_after(30):  # a guard against a hang, not a speed assertion
        for i in range(64):  # 4 MiB in all, one piece in flight at a time
            await stream.send_all(b"%x\r\n%b\r\n" % (len(piece), piece))
            target = (i + 1) * len(piece)
            while got < target:
                size_line = await _read_until(stream, buf, b"\r\n")
                size = int(size_line.strip(), 16)
                while len(buf) < size + 2:
                    data = await stream.receive_some(65536)
                    assert data
                    buf += data
                echoed += buf[:size]
                del buf[:size + 2]
                got += size
        await stream.send_all(b"0\r\n\r\n")
        assert await _read_until(stream, buf, b"0\r\n\r\n") == b"0\r\n\r\n"
    assert echoed == piece * 64
    await stream.aclose()


async def test_large_upload_and_download(nursery: trio.Nursery) -> None:
    engine, _ = await _engine(nursery)
    body = bytes(range(256)) * (32 * 1024 * 4)  # 32 MiB

    async def gen():
        for i in range(0, len(body), 1 << 20):
            yield body[i:i + (1 << 20)]
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(url(engine, path="/upload"), content=body)  # Content-Length
        assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()
        r = await client.post(url(engine, path="/upload"), content=gen())  # chunked
        assert r.json()["size"] == len(body)
        async with client.stream("GET", url(engine, path="/big?n=50000000")) as r:
            assert r.headers["content-length"] == "50000000"
            n = 0
            async for part in r.aiter_raw():
                n += len(part)
        assert n == 50_000_000


async def test_http10_client(nursery: trio.Nursery) -> None:
    engine, _ = await _engine(nursery)
    stream = await _connect(engine)
    await stream.send_all(b"GET /echo-free HTTP/1.0\r\n\r\n")
    data = b""
    while part := await stream.receive_some(65536):
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
    assert b'"path": "/echo-free"' in body
    # keep-alive requested by an HTTP/1.0 client; a chunked upstream answer becomes close-delimited
    stream = await _connect(engine)
    await stream.send_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nHost: h\r\n\r\n")
    buf = bytearray()
    head = await _read_until(stream, buf, b"\r\n\r\n")
    assert b"connection: keep-alive" in head.lower()
    await stream.send_all(b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
    data = bytes(buf)
    while part := await stream.receive_some(65536):
        data += part
    resp = data[data.index(b"HTTP/1.1", 1):]
    assert b"transfer-encoding" not in resp.lower() and b"connection: close" in resp.lower()
    assert resp.endswith(b"\r\n\r\nhello")


async def test_expect_100_continue(nursery: trio.Nursery) -> None:
    engine, _ = await _engine(nursery)
    stream = await _connect(engine)
    await stream.send_all(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    buf = bytearray()
    assert await _read_until(stream, buf, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    await stream.send_all(b"data")
    head = await _read_until(stream, buf, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    # curl sends Expect: 100-continue on its own for a large upload
    result = await trio.run_process(
        ["curl", "-sS", "--fail", "--data-binary", "@-", "-H", "Content-Type: application/octet-stream",
         url(engine, path="/upload")], stdin=b"z" * 2_000_000, capture_stdout=True)
    assert b'"size": 2000000' in result.stdout


async def test_head_pipelining_and_bad_requests(nursery: trio.Nursery) -> None:
    engine, b = await _engine(nursery)
    stream = await _connect(engine)
    await stream.send_all(b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\nGET /two HTTP/1.1\r\nHost: h\r\n\r\n"
                          b"GET /three HTTP/1.1\r\nHost: h\r\n\r\n")
    buf = bytearray()
    first = await _read_until(stream, buf, b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"content-length:" in first.lower()
    for path in (b"/two", b"/three"):
        head = await _read_until(stream, buf, b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(buf) < length:
            buf += await stream.receive_some(65536)
        assert b'"path": "%b"' % path in bytes(buf[:length])
        del buf[:length]
    assert [r["method"] for r in b.requests] == ["HEAD", "GET", "GET"]
    for bad in (b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n",  # no Host
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"):
        stream = await _connect(engine)
        await stream.send_all(bad)
        data = b""
        while part := await stream.receive_some(65536):
            data += part
        assert data.startswith(b"HTTP/1.1 400"), (bad, data)
    stream = await _connect(engine)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 200_000 + b"\r\n\r\n")
    data = b""
    try:
        while part := await stream.receive_some(65536):
            data += part
    except trio.BrokenResourceError:
        pass  # the proxy may close while we still send
    assert data.startswith(b"HTTP/1.1 431")
