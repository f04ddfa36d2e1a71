"""The API server's listeners: hypercorn's HTTP/1.1 and HTTP/2 protocols on kmesh's own connection loop.

hypercorn's ``serve`` and connection loop are replaced (its protocols and
ASGI glue are kept) for five failures seen in a running lab:

- A connection the client closed stayed open (CLOSE-WAIT, or an fd held after
  a reset) for the whole keep-alive timeout: after reading EOF, hypercorn's
  connection waited for its keep-alive timer (120 s) before closing. Here EOF
  stops the timer, an open stream (a watch) gets ``http.disconnect``, and the
  socket is closed as soon as the connection's last task ends.
- A connection whose app answered without reading the whole body (401, 413)
  could hang for good: hypercorn queued the rest of the body, and then the
  disconnect, for an app that had returned. Here an app's input is closed
  when it returns, and whatever arrives for it later is dropped.
- One exception in one connection (hypercorn's HTTP/2 code raised KeyError
  on DATA for a stream whose response was already complete, e.g. after a
  413; fixed below too) escaped into the listener's nursery and stopped the
  listener for everyone (the lab process lived on). Here a connection's
  errors end that connection only; only the accept loop itself can end the
  server, and then ``run_server`` raises (the process exits rather than
  serving half).
- A peer that stops reading kept its connection, its watch and every byte
  queued for it. Here a write that makes no progress for ``write_stall``
  seconds aborts the connection, as kube-apiserver's cacher terminates a
  watcher whose buffer stays full; the client watches again from its last
  resourceVersion (or re-lists on 410).
- When the server answers before reading the whole body (401, 413, 504),
  closing at once resets the connection and the client may never see the
  answer. Here the server sends its FIN after the answer and reads (and
  drops) what the client still sends, for at most ``LINGER`` seconds, as Go's
  ``closeWriteAndWait`` does.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from math import inf
from typing import Any

import h2.errors
import h2.events
import h2.exceptions
import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import Body
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ASGIReceiveEvent, ASGISendEvent, ConnectionState
from hypercorn.utils import parse_socket_addr, repr_socket_addr

log = logging.getLogger("kmesh.apiserver.listener")

MAX_RECV = 2**16
SEND_SLICE = 2**14  # a write notes the time per slice: a stall is no progress, not a long total
LINGER = 1.0  # seconds a closing connection keeps reading (and dropping) what the client still sends


@dataclass
class ConnectionLimits:
    """Per-connection bounds the listener enforces."""

    write_stall: float = 30.0  # a write with no progress for this long aborts the connection


class StallWatch:
    """One task for all connections: aborts each whose current write made no progress for ``write_stall`` s.

    A timer per write (a cancel scope around every send) cost the watch
    benchmark ~10 % of the server's CPU; a write only notes when it began.
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.connections: set[Connection] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check every quarter of ``write_stall`` until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(self.limits.write_stall / 4)
            now = trio.current_time()
            for conn in [c for c in self.connections if c.stalled_since(now) > self.limits.write_stall]:
                conn.drop_stalled(self.limits.write_stall)


class _H2Protocol(H2Protocol):
    """hypercorn's HTTP/2 protocol, tolerating DATA for a stream it already answered.

    The server may answer before the body is complete (401, 413); RFC 9113
    8.1 then lets it ask the client to stop with RST_STREAM(NO_ERROR).
    hypercorn looked the stream up and raised KeyError instead.
    """

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        batch: list[h2.events.Event] = []
        for event in events:
            if not isinstance(event, h2.events.DataReceived):
                batch.append(event)
                continue
            if batch:
                await super()._handle_events(batch)
                batch = []
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                await stream.handle(Body(stream_id=event.stream_id, data=event.data))
            try:
                self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if stream is None:
                    self.connection.reset_stream(event.stream_id, h2.errors.ErrorCodes.NO_ERROR)
            except h2.exceptions.H2Error:
                pass  # the stream is already closed or reset
        await super()._handle_events(batch)


class _TaskGroup(TaskGroup):
    """hypercorn's per-connection task group, except that an app's input closes when the app returns."""

    async def spawn_app(self, app: Any, config: Config, scope: Any,
                        send: Callable[[ASGISendEvent | None], Awaitable[None]]) -> Callable[[ASGIReceiveEvent],
                                                                                            Awaitable[None]]:
        """Start ``app`` for one request; return how the protocol hands it input (never blocking once it returned)."""
        to_app, app_input = trio.open_memory_channel[ASGIReceiveEvent](config.max_app_queue_size)

        async def put(message: ASGIReceiveEvent) -> None:
            try:
                await to_app.send(message)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the app has returned: nobody will read it

        assert self._nursery is not None
        self._nursery.start_soon(self._run_app, app, scope, app_input, send)
        return put

    @staticmethod
    async def _run_app(app: Any, scope: Any, app_input: trio.MemoryReceiveChannel[ASGIReceiveEvent],
                       send: Callable[[ASGISendEvent | None], Awaitable[None]]) -> None:
        try:
            await app(scope, app_input.receive, send, trio.to_thread.run_sync, trio.from_thread.run)
        except Exception:
            log.exception("error in the API app")  # hypercorn answers 500 if nothing was sent
        finally:
            app_input.close()
            await send(None)


class _ProtocolWrapper(ProtocolWrapper):
    """hypercorn's protocol switch, with the HTTP/2 fix above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._patch()

    def _patch(self) -> None:
        if type(self.protocol) is H2Protocol:  # also after an h2c upgrade or prior knowledge
            self.protocol.__class__ = _H2Protocol

    async def handle(self, event: Event) -> None:
        """Pass ``event`` to the protocol in use."""
        self._patch()
        await super().handle(event)
        self._patch()


class Connection(TCPServer):
    """One client connection: TLS handshake, the protocol, EOF noticed at once, a lingering close."""

    def __init__(self, app: Any, config: Config, context: WorkerContext, watch: StallWatch,
                 stream: trio.SSLStream[trio.SocketStream] | trio.SocketStream) -> None:
        super().__init__(app, config, context, {}, stream)  # type: ignore[arg-type]
        self.watch = watch
        self._writing_since: float | None = None  # when the write in progress began (or last made progress)
        self._peer_gone = False  # the reader saw EOF or an error: no idle timer, no more input
        self._closing = False  # the server ended the connection: drop input until the peer's FIN or LINGER
        self._read_scope: trio.CancelScope | None = None

    def _socket(self) -> trio.socket.SocketType:
        stream = self.stream
        transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        return transport.socket  # type: ignore[union-attr,no-any-return]

    async def run(self) -> None:
        """Serve the connection until either side ends it; never raises (but Cancelled)."""
        ssl = isinstance(self.stream, trio.SSLStream)
        try:
            if ssl:
                try:
                    with trio.fail_after(self.config.ssl_handshake_timeout):
                        await self.stream.do_handshake()  # type: ignore[union-attr]
                except (trio.BrokenResourceError, trio.TooSlowError):
                    return
                alpn = self.stream.selected_alpn_protocol() or "http/1.1"  # type: ignore[union-attr]
            else:
                alpn = "http/1.1"
            sock = self._socket()
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
            self.watch.connections.add(self)
            async with _TaskGroup() as task_group:
                self._task_group = task_group
                self.protocol = _ProtocolWrapper(
                    self.app, self.config, self.context, task_group, ConnectionState({}), ssl, client, server,
                    self.protocol_send, alpn,
                )
                await self.protocol.initiate()
                await self.idle_task.restart(task_group, self._idle_timeout)
                await self._read_data()
        except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away
        except* Exception:
            log.warning("connection error (connection closed, the listener serves on)", exc_info=True)
        finally:
            self.watch.connections.discard(self)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)

    async def _read_data(self) -> None:
        """Read and handle input until EOF, an error, or the end of a lingering close; then stop the idle timer."""
        with trio.CancelScope() as self._read_scope:
            if self._closing:
                self._read_scope.deadline = trio.current_time() + LINGER
            while True:
                try:
                    with trio.fail_after(self.config.read_timeout or inf):
                        data = await self.stream.receive_some(MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                    break
                if self._closing:  # lingering: drop what still comes
                    if not data:
                        break
                    continue
                await self.protocol.handle(RawData(bytes(data)))
                if not data:
                    break
        self._peer_gone = True
        await self.idle_task.stop()  # hypercorn waited for it: the whole keep-alive timeout in CLOSE-WAIT
        await self.protocol.handle(Closed())

    async def protocol_send(self, event: Event) -> None:
        """hypercorn's output path: bytes (with the stall timer), close, idle or busy."""
        if isinstance(event, RawData):
            async with self.send_lock:
                try:
                    with trio.CancelScope(shield=True):
                        data = memoryview(event.data)
                        for start in range(0, len(data), SEND_SLICE):
                            self._writing_since = trio.current_time()
                            await self.stream.send_all(data[start:start + SEND_SLICE])
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.protocol.handle(Closed())
                finally:
                    self._writing_since = None
        elif isinstance(event, Closed):
            await self._close()
            await self.protocol.handle(Closed())
        elif isinstance(event, Updated):
            if event.idle and not self._peer_gone and not self._closing:
                await self.idle_task.restart(self._task_group, self._idle_timeout)
            else:
                await self.idle_task.stop()

    def _peer(self) -> str:
        try:
            sock = self._socket()
            return repr_socket_addr(sock.family, sock.getpeername())
        except OSError:
            return "?"

    def stalled_since(self, now: float) -> float:
        """Seconds the write in progress has gone without progress (0 if none is)."""
        since = self._writing_since
        return 0.0 if since is None else now - since

    def drop_stalled(self, limit: float) -> None:
        """The peer read nothing for ``limit`` seconds: abort, the blocked write fails and the streams end."""
        log.info("dropping connection from %s: it read nothing for %.0f s", self._peer(), limit)
        self._abort()

    def _abort(self) -> None:
        """Close the socket now: every task blocked on it wakes with ClosedResourceError."""
        self._closing = True
        self._socket().close()

    async def _close(self) -> None:
        """The server ends the connection: FIN after what was sent, then the reader lingers."""
        if self._closing:
            await trio.lowlevel.checkpoint()
            return
        self._closing = True
        try:
            self._socket().shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if self._read_scope is not None:
            self._read_scope.deadline = min(self._read_scope.deadline, trio.current_time() + LINGER)
        await self.idle_task.stop()


async def serve(app: Any, config: Config, limits: ConnectionLimits,
                *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the ASGI ``app`` on ``config``'s binds until cancelled; ``task_status`` gets the bound URLs.

    Raises only if accepting fails for a reason other than load (EMFILE and
    the like pause the accept loop, as trio's ``serve_listeners`` does).
    """
    wrapped = ASGIWrapper(app)
    context = WorkerContext(None)
    sockets = config.create_sockets()
    for sock in sockets.secure_sockets + sockets.insecure_sockets:
        sock.listen(config.backlog)
    ssl_context = config.create_ssl_context()
    listeners: list[trio.abc.Listener[Any]] = []
    binds: list[str] = []
    for sock in sockets.secure_sockets:
        listeners.append(trio.SSLListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)), ssl_context,
                                          https_compatible=True))
        binds.append(f"https://{repr_socket_addr(sock.family, sock.getsockname())}")
    for sock in sockets.insecure_sockets:
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
    watch = StallWatch(limits)
    async with trio.open_nursery() as connections:
        await connections.start(watch.run)
        await connections.start(partial(
            trio.serve_listeners, partial(Connection, wrapped, config, context, watch), listeners,
            handler_nursery=connections))
        task_status.started(binds)
