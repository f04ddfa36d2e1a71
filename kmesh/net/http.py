"""A small HTTP/1.1 server for built-in apps (h11 over trio streams, keep-alive, one request at a time)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import h11
import trio

MAX_BODY = 1 << 20


@dataclass
class Request:
    """One HTTP request as an app sees it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    client: tuple[str, int]

    @property
    def path(self) -> str:
        """The path without the query."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        """Query parameters."""
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    def arg(self, name: str, default: str = "") -> str:
        """The first value of a query parameter."""
        return (self.query.get(name) or [default])[0]


@dataclass
class Response:
    """What a handler returns."""

    status: int = 200
    body: bytes | str = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False
    stream: AsyncIterator[bytes] | None = None
    """A body sent piece by piece as it comes (chunked; ``body`` is ignored); the connection closes after it."""


class CloseConnection(Exception):
    """Raised by a handler to drop the connection without answering (like a process exiting)."""


Handler = Callable[[Request], Awaitable[Response]]


def _peer(stream: trio.SocketStream) -> tuple[str, int]:
    try:
        host, port = stream.socket.getpeername()[:2]
        return str(host), int(port)
    except OSError:
        return ("", 0)


async def serve_connection(stream: trio.SocketStream, handler: Handler, *, prefix: bytes = b"", close_each: bool = False) -> None:
    """Answer requests on one connection until the client closes it (``prefix``: bytes already read)."""
    conn = h11.Connection(h11.SERVER)
    if prefix:
        conn.receive_data(prefix)
    client = _peer(stream)
    try:
        while True:
            req = await _read_request(conn, stream, client)
            if req is None:
                return
            try:
                resp = await handler(req)
            except CloseConnection:
                return
            if resp.stream is not None:
                await _send_stream(conn, stream, resp)
                return
            body = resp.body.encode() if isinstance(resp.body, str) else resp.body
            close = resp.close or close_each or conn.our_state is h11.MUST_CLOSE
            headers = [("Content-Type", resp.content_type), ("Content-Length", str(len(body)))] + resp.headers
            if close:
                headers.append(("Connection", "close"))
            await stream.send_all(conn.send(h11.Response(status_code=resp.status, headers=headers)))
            if req.method != "HEAD" and body:
                await stream.send_all(conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            if close or conn.our_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (h11.RemoteProtocolError, h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return
    finally:
        await trio.aclose_forcefully(stream)


async def _send_stream(conn: h11.Connection, stream: trio.SocketStream, resp: Response) -> None:
    """Send a streamed answer (chunked) until its pieces end or the client goes away."""
    assert resp.stream is not None
    headers = [("Content-Type", resp.content_type), ("Connection", "close"), *resp.headers]
    try:
        await stream.send_all(conn.send(h11.Response(status_code=resp.status, headers=headers)))
        async for piece in resp.stream:
            if piece:
                await stream.send_all(conn.send(h11.Data(data=piece)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
    finally:
        aclose = getattr(resp.stream, "aclose", None)
        if aclose is not None:
            with trio.CancelScope(shield=True):
                await aclose()


async def _read_request(conn: h11.Connection, stream: trio.SocketStream, client: tuple[str, int]) -> Request | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data and head is None and conn.their_state is h11.IDLE:
                return None
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                return None
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            headers = {k.decode().lower(): v.decode("latin-1") for k, v in head.headers}
            return Request(head.method.decode(), head.target.decode("latin-1"), headers, bytes(body), client)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


def looks_like_http(first: bytes) -> bool:
    """Whether the first bytes of a TCP stream start an HTTP/1.x request."""
    methods = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"PATCH ", b"OPTIONS ", b"CONNECT ", b"TRACE ")
    return any(first.startswith(m) for m in methods)


async def serve_http(listener: trio.SocketListener, handler: Handler, *, close_each: bool = False) -> None:
    """Serve ``handler`` on every connection of ``listener`` until cancelled."""
    async with listener:
        await trio.serve_listeners(
            lambda s: serve_connection(s, handler, close_each=close_each), [listener]  # type: ignore[arg-type]
        )


class BodyTooLarge(Exception):
    """An answer's body was larger than the caller accepts."""


async def http_get(sock: trio.socket.SocketType, host: str, port: int, target: str,
                   max_body: int | None = None) -> tuple[int, bytes]:
    """One GET over an unconnected TCP socket (already bound where the caller wants its source address);
    BodyTooLarge as soon as the body passes ``max_body`` bytes."""
    await sock.connect((host, port))
    stream = trio.SocketStream(sock)
    conn = h11.Connection(h11.CLIENT)
    async with stream:
        req = h11.Request(method="GET", target=target or "/", headers=[("Host", f"{host}:{port}"), ("Connection", "close")])
        await stream.send_all(conn.send(req) + conn.send(h11.EndOfMessage()))
        status = 0
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if max_body is not None and len(body) > max_body:
                    raise BodyTooLarge(f"GET {target}: the answer is larger than {max_body} bytes")
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return status, bytes(body)
