"""echo-basic's HTTP/2 front end on the h2 library: cleartext with prior knowledge (h2c) and TLS with ALPN h2."""

from __future__ import annotations

from email.utils import formatdate

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

from kmesh.node.apps.echobasic_handler import EchoRequest, EchoResponse
from kmesh.node.apps.echobasic_h1 import Handler, log

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})


class _H2Conn:
    """One HTTP/2 connection: the h2 state machine, a send lock and flow-control wake-ups."""

    def __init__(self, stream: trio.abc.Stream, handler: Handler, tls: dict[str, object] | None) -> None:
        self.stream = stream
        self.handler = handler
        self.tls = tls
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.lock = trio.Lock()
        self.window = trio.Event()
        self.requests: dict[int, list[tuple[bytes, bytes]]] = {}

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            async with self.lock:
                await self.stream.send_all(data)

    async def respond(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        pseudo = {n.decode("latin-1"): v.decode("utf-8", "replace") for n, v in headers if n.startswith(b":")}
        regular = [(n.decode("latin-1"), v.decode("utf-8", "replace")) for n, v in headers if not n.startswith(b":")]
        cookies = [v for n, v in regular if n == "cookie"]
        if len(cookies) > 1:  # Go's HTTP/2 server joins the cookie crumbs
            regular = [(n, v) for n, v in regular if n != "cookie"] + [("cookie", "; ".join(cookies))]
        host = pseudo.get(":authority") or next((v for n, v in regular if n == "host"), "")
        method = pseudo.get(":method", "GET")
        req = EchoRequest(method=method, target=pseudo.get(":path", ""), host=host, proto="HTTP/2.0",
                          headers=regular, tls=self.tls, can_reset=False)
        resp: EchoResponse = await self.handler(req)
        status = resp.status if resp.status >= 200 else 200
        out = [(b":status", str(status).encode())]
        for name, value in resp.headers:
            if name.lower() not in _HOP_BY_HOP:
                out.append((name.lower().encode(), value.encode()))
        if status not in (204, 304):
            out.append((b"content-length", str(len(resp.body)).encode()))
        if not any(n == b"date" for n, _ in out):
            out.append((b"date", formatdate(usegmt=True).encode()))
        body = resp.body if method != "HEAD" and status not in (204, 304) else b""
        try:
            self.conn.send_headers(stream_id, out, end_stream=not body)
            await self.flush()
            while body:
                window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
                if window <= 0:
                    await self.window.wait()
                    continue
                chunk, body = body[:window], body[window:]
                self.conn.send_data(stream_id, chunk, end_stream=not body)
                await self.flush()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass

    async def run(self, prefix: bytes) -> None:
        self.conn.initiate_connection()
        await self.flush()
        data = prefix
        async with trio.open_nursery() as n:
            while True:
                if data:
                    try:
                        events = self.conn.receive_data(data)
                    except h2.exceptions.ProtocolError:
                        await self.flush()
                        break
                    if not self._dispatch(events, n):
                        await self.flush()
                        break
                    await self.flush()
                data = await self.stream.receive_some(65536)
                if not data:
                    break
            n.cancel_scope.cancel()

    def _dispatch(self, events: list[h2.events.Event], nursery: trio.Nursery) -> bool:
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.requests[ev.stream_id] = list(ev.headers)
                if ev.stream_ended is not None:
                    nursery.start_soon(self.respond, ev.stream_id, self.requests.pop(ev.stream_id))
            elif isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in self.requests:
                nursery.start_soon(self.respond, ev.stream_id, self.requests.pop(ev.stream_id))
            elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                self.window.set()
                self.window = trio.Event()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                return False
        return True


async def serve_h2(stream: trio.abc.Stream, handler: Handler, *, tls: dict[str, object] | None = None,
                   prefix: bytes = b"") -> None:
    """Serve HTTP/2 on ``stream`` (whose first bytes, already read, are ``prefix``) until it closes."""
    try:
        await _H2Conn(stream, handler, tls).run(prefix)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    except Exception:  # noqa: BLE001 - like Go's per-connection recover
        log.exception("echo-basic: HTTP/2 connection failed")
    finally:
        await trio.aclose_forcefully(stream)


async def peek_preface(stream: trio.abc.Stream) -> bytes:
    """The first bytes of a connection: enough to tell an HTTP/2 preface from HTTP/1."""
    data = b""
    while len(data) < len(PREFACE) and PREFACE.startswith(data):
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return data
