"""echo-basic's HTTP/1.x front end on h11: keep-alive, raw header names, connection resets, WebSocket echo."""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus

import h11
import trio

from kmesh.node.apps.echobasic_handler import EchoRequest, EchoResponse

log = logging.getLogger("kmesh.node.apps.echobasic")
Handler = Callable[[EchoRequest], Awaitable[EchoResponse]]
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_NO_BODY = (204, 304)


def raw_socket(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The TCP socket under a (possibly TLS) stream."""
    while stream is not None:
        if isinstance(stream, trio.SocketStream):
            return stream.socket
        stream = getattr(stream, "transport_stream", None)  # type: ignore[assignment]
    return None


def reset(stream: trio.abc.Stream) -> None:
    """Abort the connection with a TCP RST (Go: SetLinger(0) then Close)."""
    sock = raw_socket(stream)
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()


def request_host(target: str, headers: list[tuple[str, str]]) -> str:
    """Go's ``r.Host``: the host of an absolute-form target, else the Host header."""
    if target.lower().startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        return rest.split("/", 1)[0].split("?", 1)[0]
    for name, value in headers:
        if name.lower() == "host":
            return value
    return ""


async def serve_h1(
    stream: trio.abc.Stream, handler: Handler, *, tls: dict[str, object] | None = None, prefix: bytes = b"",
) -> None:
    """Serve HTTP/1.x requests on ``stream`` until the client or the protocol ends the connection."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)  # Go: 1 MB of request headers
    if prefix:
        conn.receive_data(prefix)
    try:
        while True:
            event = await _next(conn, stream)
            if isinstance(event, (h11.ConnectionClosed, type(None))):
                break
            if not isinstance(event, h11.Request):
                break
            while not isinstance(await _next(conn, stream), (h11.EndOfMessage, h11.ConnectionClosed, type(None))):
                pass
            headers = [(n.decode("latin-1"), v.decode("utf-8", "replace")) for n, v in event.headers.raw_items()]
            target = event.target.decode("utf-8", "replace")
            req = EchoRequest(
                method=event.method.decode(), target=target, host=request_host(target, headers),
                proto="HTTP/" + event.http_version.decode(), headers=headers, tls=tls,
            )
            resp = await handler(req)
            if resp.reset:
                reset(stream)
                return
            if resp.websocket:
                await _websocket(conn, stream, req)
                return
            await _send(conn, stream, req.method, resp)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                break
            conn.start_next_cycle()
    except h11.RemoteProtocolError:
        try:
            await _send(conn, stream, "GET", EchoResponse(400, [("Content-Type", "text/plain; charset=utf-8"),
                                                                ("Connection", "close")], b"400 Bad Request"))
        except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, h11.LocalProtocolError):
        pass
    except Exception:  # noqa: BLE001 - like Go's per-connection recover: one bad request does not stop the server
        log.exception("echo-basic: connection failed")
    finally:
        await trio.aclose_forcefully(stream)


async def _next(conn: h11.Connection, stream: trio.abc.Stream) -> h11.Event | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            continue
        if event is h11.PAUSED:
            return None
        return event  # type: ignore[no-any-return]


def reason(status: int) -> bytes:
    """Go's reason phrase: the standard text, or ``status code N`` for a code it does not know."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return f"status code {status}".encode()


async def _send(conn: h11.Connection, stream: trio.abc.Stream, method: str, resp: EchoResponse) -> None:
    status = resp.status
    if 100 <= status < 200:  # Go sends the informational response, then the handler's implicit 200
        await stream.send_all(conn.send(h11.InformationalResponse(status_code=status, headers=[])))
        status = 200
        resp = EchoResponse(200, [h for h in resp.headers if h[0] == "Date"])
    headers = [(n.encode(), v.encode()) for n, v in resp.headers]
    if status not in _NO_BODY:
        headers.append((b"Content-Length", str(len(resp.body)).encode()))
    if not any(n.lower() == b"date" for n, _ in headers):
        headers.append((b"Date", formatdate(usegmt=True).encode()))
    head = h11.Response(status_code=status, headers=sorted(headers, key=lambda h: h[0]), reason=reason(status))
    out = conn.send(head)
    if resp.body and method != "HEAD" and status not in _NO_BODY:
        out += conn.send(h11.Data(data=resp.body))
    out += conn.send(h11.EndOfMessage())
    await stream.send_all(out)


# ------------------------------------------------------------ WebSocket


async def _websocket(conn: h11.Connection, stream: trio.abc.Stream, req: EchoRequest) -> None:
    """Accept the handshake and echo every message back as a text frame until the client closes (like
    golang.org/x/net/websocket's ``io.Copy(ws, ws)``)."""
    key = next(v for n, v in req.headers if n.lower() == "sec-websocket-key").strip()
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest())
    out = conn.send(h11.InformationalResponse(status_code=101, headers=[
        (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Accept", accept),
    ], reason=b"Switching Protocols"))
    await stream.send_all(out)
    buf, _ = conn.trailing_data
    buf = bytearray(buf)
    while True:
        frame = await _read_frame(stream, buf)
        if frame is None:
            return
        opcode, payload = frame
        if opcode == 8:
            await stream.send_all(_frame(8, payload[:2]))
            return
        if opcode == 9:
            await stream.send_all(_frame(10, payload))
        elif opcode in (0, 1, 2):
            await stream.send_all(_frame(1, payload))


async def _fill(stream: trio.abc.Stream, buf: bytearray, n: int) -> bool:
    while len(buf) < n:
        data = await stream.receive_some(65536)
        if not data:
            return False
        buf += data
    return True


async def _read_frame(stream: trio.abc.Stream, buf: bytearray) -> tuple[int, bytes] | None:
    if not await _fill(stream, buf, 2):
        return None
    opcode = buf[0] & 0x0F
    masked = buf[1] & 0x80
    length = buf[1] & 0x7F
    pos = 2
    if length == 126:
        if not await _fill(stream, buf, 4):
            return None
        length = struct.unpack("!H", buf[2:4])[0]
        pos = 4
    elif length == 127:
        if not await _fill(stream, buf, 10):
            return None
        length = struct.unpack("!Q", buf[2:10])[0]
        pos = 10
    mask = b""
    if masked:
        if not await _fill(stream, buf, pos + 4):
            return None
        mask = bytes(buf[pos:pos + 4])
        pos += 4
    if not await _fill(stream, buf, pos + length):
        return None
    payload = bytes(buf[pos:pos + length])
    del buf[:pos + length]
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def _frame(opcode: int, payload: bytes) -> bytes:
    """A final, unmasked server frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload
