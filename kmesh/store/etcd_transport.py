"""A lean HTTP/1.1 transport for httpx, for the many small requests to etcd.

httpx's default pool (httpcore) costs about 1 ms of CPU per request under
trio, which made the etcd store CPU-bound at ~600 writes/s on a small
machine. This transport keeps what the gateway needs — HTTP/1.1 over
keep-alive TCP connections, TLS (``https://``, with the client certificate
an etcd started with ``--client-cert-auth`` asks for), streamed response
bodies — and nothing else (no proxies, no HTTP/2), in about a quarter of the
CPU. It plugs into ``httpx.AsyncClient(transport=...)``, so requests,
responses, errors and timeouts stay httpx's.
"""

from __future__ import annotations

import ssl

import h11
import httpx
import trio

_READ_SIZE = 65536


class _Connection:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.reused = False

    async def next_event(self, timeout: float | None) -> object:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            with trio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
                data = await self.stream.receive_some(_READ_SIZE)
            if scope.cancelled_caught:
                raise httpx.ReadTimeout("timed out reading from etcd")
            self.h11.receive_data(data)

    async def aclose(self) -> None:
        # Forcefully: no TLS close_notify sent to a peer that may not be reading (a stopped etcd).
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self.stream)


_Key = tuple[str, str, int]  # scheme, host, port


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive transport for ``http://`` and ``https://`` URLs.

    ``ssl_context``: the client context for https (the CA that verifies the
    server, our client certificate); default: the system's CAs, no certificate.
    """

    def __init__(self, max_idle: int = 32, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[_Key, list[_Connection]] = {}
        self._max_idle = max_idle
        self._ssl_context = ssl_context
        self._closed = False

    async def _connect(self, key: _Key, timeout: float | None, reuse: bool = True) -> _Connection:
        idle = self._idle.get(key)
        if idle and reuse:
            conn = idle.pop()
            conn.reused = True
            return conn
        scheme, host, port = key
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(timeout if timeout is not None else float("inf")):
                stream = await trio.open_tcp_stream(host, port)
                if scheme == "https":
                    if self._ssl_context is None:
                        self._ssl_context = ssl.create_default_context()
                    stream = trio.SSLStream(stream, self._ssl_context, server_hostname=host, https_compatible=True)
                    await stream.do_handshake()
        except BaseException as e:  # cancelled or failed: the socket (and its TLS) go too
            if stream is not None:
                await trio.aclose_forcefully(stream)
            if not isinstance(e, (OSError, trio.TooSlowError, trio.BrokenResourceError)):
                raise
            why = e.__cause__ if isinstance(e, trio.BrokenResourceError) and e.__cause__ else e
            raise httpx.ConnectError(f"cannot connect to {scheme}://{host}:{port}: {why!r}") from e
        assert stream is not None
        return _Connection(stream)

    def _release(self, key: _Key, conn: _Connection) -> bool:
        """Keep ``conn`` for reuse if it can take another request."""
        if self._closed or conn.h11.our_state is not h11.DONE or conn.h11.their_state is not h11.DONE:
            return False
        conn.h11.start_next_cycle()
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self._max_idle:
            return False
        idle.append(conn)
        return True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return a response whose body streams from the socket."""
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"the etcd transport speaks http and https only, not {url.scheme}")
        timeouts = request.extensions.get("timeout", {})
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        body = await request.aread()
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in (b"transfer-encoding", b"content-length")]
        headers.append((b"content-length", str(len(body)).encode()))
        h11_request = h11.Request(method=request.method, target=url.raw_path, headers=headers)
        reuse = True
        while True:
            conn = await self._connect(key, timeouts.get("connect"), reuse)
            try:
                event = await self._exchange(conn, h11_request, body, timeouts.get("read"))
                break
            except _StaleConnection:
                reuse = False  # an idle connection the server had closed: once more, on a new one
        return httpx.Response(
            event.status_code,
            headers=event.headers,
            stream=_Body(self, key, conn, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def _exchange(
        self, conn: _Connection, request: h11.Request, body: bytes, timeout: float | None
    ) -> h11.Response:
        try:
            out = conn.h11.send(request)
            out += conn.h11.send(h11.Data(data=body)) if body else b""
            out += conn.h11.send(h11.EndOfMessage())
            await conn.stream.send_all(out)
            event = await conn.next_event(timeout)
            while isinstance(event, h11.InformationalResponse):
                event = await conn.next_event(timeout)
            if isinstance(event, h11.ConnectionClosed) and conn.reused:
                raise _StaleConnection()
            if not isinstance(event, h11.Response):
                raise httpx.RemoteProtocolError(f"unexpected {event!r} from etcd")
            return event
        except BaseException as e:
            await conn.aclose()
            broken = isinstance(e, (OSError, trio.BrokenResourceError, trio.ClosedResourceError))
            if broken and conn.reused and conn.h11.their_state is h11.SEND_RESPONSE:
                raise _StaleConnection() from e
            if broken:
                raise httpx.ReadError(f"connection to etcd broke: {_reason(e)}") from e
            if isinstance(e, h11.RemoteProtocolError):
                raise httpx.RemoteProtocolError(str(e)) from e
            raise

    async def aclose(self) -> None:
        """Close every idle connection."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await conn.aclose()


def _reason(e: BaseException) -> str:
    """What broke a connection; for TLS, the SSL error under trio's (e.g. etcd refused our certificate)."""
    cause = e.__cause__
    if isinstance(e, trio.BrokenResourceError) and isinstance(cause, ssl.SSLError):
        return f"TLS: {cause.reason or cause!r}"
    return repr(e)


class _StaleConnection(Exception):
    """A reused connection failed before any answer: the request never got there."""


class _Body(httpx.AsyncByteStream):
    """A response body read from its connection, which is then reused or closed.

    A plain iterator class, not an async generator: a watch stream that is
    dropped half-way leaves no generator for the garbage collector.
    """

    def __init__(self, transport: LeanTransport, key: _Key, conn: _Connection, timeout: float | None) -> None:
        self._transport = transport
        self._key = key
        self._conn: _Connection | None = conn
        self._timeout = timeout

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        while True:
            conn = self._conn
            if conn is None:
                raise StopAsyncIteration
            try:
                event = await conn.next_event(self._timeout)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as e:
                raise httpx.ReadError(f"connection to etcd broke: {_reason(e)}") from e
            except h11.RemoteProtocolError as e:
                raise httpx.RemoteProtocolError(str(e)) from e
            if isinstance(event, h11.Data):
                return bytes(event.data)
            if isinstance(event, h11.EndOfMessage):
                self._conn = None
                if not self._transport._release(self._key, conn):
                    await conn.aclose()
                raise StopAsyncIteration
            if isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("etcd closed the connection mid-response")

    async def aclose(self) -> None:
        """Close the connection unless the body was read to its end (then it is reused)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()
