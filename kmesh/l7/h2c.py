"""HTTP/2 over cleartext (prior knowledge) to backends whose appProtocol is ``kubernetes.io/h2c`` (h2 library).

An :class:`H2Conn` looks to the exchange like an HTTP/1.1 upstream connection:
its ``reader`` yields the same events (a :class:`~kmesh.l7.http1.Head`, body
pieces, END), so the client side of the proxy is shared. One stream runs at
a time on a connection and connections are pooled like HTTP/1.1 ones, which
keeps the exchange's logic (timeouts, retries, per-request balancing) the
same; multiplexing many requests onto one connection is left for later.
Request bodies respect HTTP/2 flow control: the sender waits for window
updates, which the response reader (running at the same time) processes.
"""

from __future__ import annotations

from collections import deque

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

from kmesh.l7.http1 import END, Head
from kmesh.l7.rawstream import RawStream

H2C = "kubernetes.io/h2c"
"""The Service port appProtocol that selects HTTP/2 over cleartext."""


class H2Reader:
    """Turns the h2 events of the current stream into the proxy's message events."""

    __slots__ = ("conn", "events", "close_delimited", "expect_no_body", "_reset")

    def __init__(self, conn: "H2Conn") -> None:
        self.conn = conn
        self.events: deque[Head | bytes | None] = deque()
        self.close_delimited = False
        self.expect_no_body = False
        self._reset = False

    async def next(self) -> Head | bytes | None:
        """The next event of the current stream; EOFError when it was reset or the connection ended."""
        conn = self.conn
        while not self.events:
            if self._reset or conn.dead:
                raise EOFError
            data = await conn.stream.receive_some(65536)
            if not data:
                conn.dead = True
                raise EOFError
            try:
                for ev in conn.h2.receive_data(data):
                    self._handle(ev)
            except h2.exceptions.ProtocolError:
                conn.dead = True
                raise EOFError from None
            await conn.flush()
        return self.events.popleft()

    def _handle(self, ev: h2.events.Event) -> None:
        conn = self.conn
        sid = conn.stream_id
        if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
            head = Head()
            head.version = "2"
            for name, value in ev.headers:
                if name == b":status":
                    head.status = int(value)
                elif name[:1] != b":":
                    head.headers.append((name, value))
                    if name == b"content-length":
                        head.content_length = int(value)
            head.has_body = ev.stream_ended is None
            self.events.append(head)
        elif isinstance(ev, h2.events.DataReceived):
            if ev.flow_controlled_length:
                conn.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if ev.stream_id == sid and ev.data:
                self.events.append(ev.data)
        elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
            self.events.append(END)
            conn.stream_id = None
        elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
            self._reset = True
            conn.dead = True
        elif isinstance(ev, h2.events.ConnectionTerminated):
            conn.dead = True
            if ev.last_stream_id is not None and sid is not None and sid > ev.last_stream_id:
                self._reset = True
        if isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            conn.window.set()
            conn.window = trio.Event()


class H2Conn:
    """One h2c connection to an endpoint, carrying one request at a time."""

    __slots__ = ("key", "stream", "h2", "reader", "stream_id", "dead", "window", "_send_lock")

    def __init__(self, key: tuple[str, int, str], sock: trio.socket.SocketType) -> None:
        self.key = key
        self.stream = RawStream(sock)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.h2.initiate_connection()
        self.reader = H2Reader(self)
        self.stream_id: int | None = None
        self.dead = False
        self.window = trio.Event()
        self._send_lock = trio.Lock()

    async def flush(self) -> None:
        """Send what the h2 state machine has queued (one sender at a time keeps frames whole)."""
        async with self._send_lock:
            data = self.h2.data_to_send()
            if data:
                await self.stream.send_all(data)

    async def start(self, method: bytes, scheme: bytes, authority: bytes, path: bytes,
                    headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        """Open a stream with the request head (names lower-cased, HTTP/1-only fields dropped)."""
        sid = self.h2.get_next_available_stream_id()
        self.stream_id = sid
        self.reader = H2Reader(self)
        h = [(b":method", method), (b":scheme", scheme), (b":authority", authority), (b":path", path)]
        for k, v in headers:
            k = k.lower()
            if k not in (b"host", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade", b"te"):
                h.append((k, v))
        self.h2.send_headers(sid, h, end_stream=end_stream)
        await self.flush()

    async def send_body(self, sid: int, data: bytes, end: bool) -> None:
        """Send a piece of the request body, waiting for flow-control window as needed."""
        view = memoryview(data)
        conn = self.h2
        while view:
            size = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(view))
            if size <= 0:
                if self.dead:
                    raise trio.BrokenResourceError("h2c connection ended")
                await self.window.wait()
                continue
            conn.send_data(sid, bytes(view[:size]))
            view = view[size:]
            await self.flush()
        if end:
            conn.end_stream(sid)
            await self.flush()

    def close(self) -> None:
        """Close the socket now."""
        self.dead = True
        self.stream.close()
