"""Moving a service's bytes in userspace: TCP and UDP relays from a listening socket to endpoints.

Shared by the userspace mode and the IPVS mode's userspace data path. A
``TcpRelay`` accepts on a listening socket, asks a ``Picker`` for an
endpoint, connects with upstream's retry schedule (250 ms, 500 ms, 1 s, 2 s,
each attempt to the next endpoint) and moves bytes both ways with
``kmesh.net.pump`` (``splice()`` through a pipe, no copy through Python) —
that keeps the relay near a direct connection's speed. A half-close (EOF one
way) becomes ``shutdown(SHUT_WR)`` the other way while the other direction
goes on.

A ``UdpRelay`` keeps one socket towards the chosen endpoint per client
address; replies go back to the client from the service socket (so they come
from the service address), and a session ends after ``idle_timeout`` seconds
without traffic either way (upstream: 250 ms).

Per-endpoint counters follow ``ipvsadm -Ln``: ``active`` are TCP connections
with both directions open, ``inactive`` are half-closed TCP connections and
UDP sessions; ``ipvsadm --stats`` style totals ride along.

Sockets towards endpoints (and listeners) come from an ``open_socket``
callable so they can be created inside a network namespace.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from kmesh.net.pump import pump
from kmesh.net.sockets import OpenSocket, close_with_reset, default_open_socket, family_of
from kmesh.proxy.balancer import Picker
from kmesh.proxy.model import Endpoint

log = logging.getLogger(__name__)

CONNECT_TIMEOUTS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)  # upstream EndpointDialTimeouts
UDP_IDLE_TIMEOUT = 0.25  # upstream --udp-timeout default
UDP_BUFFER = 65535


@dataclass
class EndpointStats:
    """Counters of one endpoint behind one relay, as ``ipvsadm -Ln [--stats]`` shows them."""

    active: int = 0  # TCP, both directions open
    inactive: int = 0  # TCP half-closed, UDP sessions
    conns: int = 0  # connections / sessions made so far
    bytes_in: int = 0  # client → endpoint
    bytes_out: int = 0  # endpoint → client
    failed: int = 0  # connect attempts that failed


class Stats(dict[str, EndpointStats]):
    """``EndpointStats`` by endpoint ``ip:port``, made on first use."""

    def of(self, endpoint: Endpoint) -> EndpointStats:
        """The counters of ``endpoint``."""
        st = self.get(endpoint.addr)
        if st is None:
            st = self[endpoint.addr] = EndpointStats()
        return st


# ---------------------------------------------------------------------------------------------- byte movers


async def relay(
    client: trio.socket.SocketType,
    upstream: trio.socket.SocketType,
    *,
    stats: EndpointStats | None = None,
    splice: bool = True,
) -> bool:
    """Move bytes both ways until both directions reached EOF or one side failed (then stop both).

    True when both directions ended with EOF; False after an error (a reset,
    a broken pipe) — the caller should then close with a reset so the failure
    reaches the other peer too. ``stats`` (if given) must already count this
    connection as active; it moves to inactive at the first EOF and is
    dropped at the end. The caller closes the sockets.
    """
    st = stats or EndpointStats()
    half = False
    ended = 0

    def cin(n: int) -> None:
        st.bytes_in += n

    def cout(n: int) -> None:
        st.bytes_out += n

    async def one_way(src: trio.socket.SocketType, dst: trio.socket.SocketType, count: Callable[[int], None], scope: trio.CancelScope) -> None:
        nonlocal half, ended
        try:
            await pump(src, dst, count, splice=splice)
        except (OSError, trio.ClosedResourceError):
            scope.cancel()
            return
        ended += 1
        if not half:
            half = True
            st.active -= 1
            st.inactive += 1

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one_way, client, upstream, cin, nursery.cancel_scope)
            nursery.start_soon(one_way, upstream, client, cout, nursery.cancel_scope)
    finally:
        if half:
            st.inactive -= 1
        else:
            st.active -= 1
    return ended == 2


async def connect(
    picker: Picker,
    client_ip: str,
    *,
    type: int = socket.SOCK_STREAM,
    open_socket: OpenSocket = default_open_socket,
    timeouts: Sequence[float] = CONNECT_TIMEOUTS,
    stats: Stats | None = None,
) -> tuple[trio.socket.SocketType, Endpoint] | None:
    """A socket connected to an endpoint ``picker`` chose, trying the next endpoint after each failure.

    One attempt per entry of ``timeouts`` (each bounded by it); the first
    attempt honours affinity, the later ones ask with ``retry=True``. A
    failed endpoint is ``release``d at once; the returned one stays picked
    until the caller releases it. None when the picker has nothing or every
    attempt failed.
    """
    for i, timeout in enumerate(timeouts):
        ep = picker.pick(client_ip, retry=i > 0)
        if ep is None:
            return None
        sock = await open_socket(family_of(ep.ip), type)
        ok = False
        try:
            with trio.move_on_after(timeout):
                await sock.connect((ep.ip, ep.port))
                ok = True
        except OSError:
            pass
        finally:
            if not ok:
                sock.close()
                picker.release(ep)
                if stats is not None:
                    stats.of(ep).failed += 1
        if ok:
            return sock, ep
    return None


# ---------------------------------------------------------------------------------------------- TCP


class TcpRelay:
    """Accept on ``listener`` and relay each connection to an endpoint ``picker`` chooses.

    A connection for which no endpoint can be reached is closed with a reset
    at once (upstream's userspace proxy accepted and then closed; the RST
    makes the client fail fast instead of reading an empty reply).
    ``close()`` stops accepting and lets established connections finish;
    ``abort()`` also drops them. ``serve`` returns when both are done.
    """

    def __init__(
        self,
        listener: trio.socket.SocketType,
        picker: Picker,
        *,
        open_socket: OpenSocket = default_open_socket,
        timeouts: Sequence[float] = CONNECT_TIMEOUTS,
        splice: bool = True,
    ) -> None:
        self.listener = listener
        self.picker = picker
        self.open_socket = open_socket
        self.timeouts = tuple(timeouts)
        self.splice = splice
        self.stats = Stats()
        self.refused = 0  # connections closed because no endpoint could be reached
        self._accepting = trio.CancelScope()
        self._all = trio.CancelScope()
        self.closed = trio.Event()  # set when serve() returned

    @property
    def port(self) -> int:
        """The port the listener is bound to."""
        return int(self.listener.getsockname()[1])

    @property
    def connections(self) -> int:
        """Connections being relayed now (active + inactive)."""
        return sum(s.active + s.inactive for s in self.stats.values())

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept until ``close``; return when every connection ended (or ``abort``)."""
        try:
            with self._all:
                async with trio.open_nursery() as conns:
                    task_status.started()
                    with self._accepting:
                        while True:
                            try:
                                sock, addr = await self.listener.accept()
                            except trio.ClosedResourceError:
                                break  # close() closed the listener under us
                            except OSError as e:
                                if self._accepting.cancel_called:
                                    break
                                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                                    await trio.sleep(0.05)  # out of descriptors: back off, as upstream did
                                    continue
                                if e.errno in (errno.ECONNABORTED, errno.EPROTO):
                                    continue
                                raise
                            conns.start_soon(self._handle, sock, str(addr[0]))
                    self.listener.close()  # refuse new connections while the established ones finish
        finally:
            self.listener.close()
            self.closed.set()

    async def _handle(self, client: trio.socket.SocketType, client_ip: str) -> None:
        try:
            got = await connect(self.picker, client_ip, open_socket=self.open_socket, timeouts=self.timeouts, stats=self.stats)
        except Exception:  # one connection's trouble (e.g. a namespace gone) must not stop the listener
            log.exception("relay on port %s: connecting for %s failed", self.port, client_ip)
            got = None
        except BaseException:
            close_with_reset(client)
            raise
        if got is None:
            self.refused += 1
            close_with_reset(client)
            return
        upstream, ep = got
        st = self.stats.of(ep)
        st.conns += 1
        st.active += 1
        clean = False
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            clean = await relay(client, upstream, stats=st, splice=self.splice)
        finally:
            if clean:
                client.close()
                upstream.close()
            else:  # pass a reset on (and drop on abort) rather than a polite EOF
                close_with_reset(client)
                close_with_reset(upstream)
            self.picker.release(ep)

    def close(self) -> None:
        """Stop accepting and close the listener now (new connections are refused); established ones go on."""
        self._accepting.cancel()
        self.listener.close()

    def abort(self) -> None:
        """Stop accepting and drop every established connection."""
        self.close()
        self._all.cancel()


# ---------------------------------------------------------------------------------------------- UDP


@dataclass
class UdpSession:
    """One client's flow: the socket towards its endpoint and the scope that ends it when idle."""

    client: tuple[str, int]
    endpoint: Endpoint
    sock: trio.socket.SocketType
    scope: trio.CancelScope


class UdpRelay:
    """Relay datagrams arriving on ``sock`` to endpoints, one session per client address.

    A session's endpoint is picked at its first datagram; replies are sent
    back from ``sock`` so the client sees them come from the service address.
    Sessions end after ``idle_timeout`` seconds without a datagram either way,
    or when the endpoint answers with ICMP unreachable.
    """

    def __init__(
        self,
        sock: trio.socket.SocketType,
        picker: Picker,
        *,
        open_socket: OpenSocket = default_open_socket,
        idle_timeout: float = UDP_IDLE_TIMEOUT,
        timeouts: Sequence[float] = CONNECT_TIMEOUTS,
    ) -> None:
        self.sock = sock
        self.picker = picker
        self.open_socket = open_socket
        self.idle_timeout = idle_timeout
        self.timeouts = tuple(timeouts)
        self.stats = Stats()
        self.sessions: dict[tuple[str, int], UdpSession] = {}
        self.dropped = 0  # datagrams with no endpoint to go to
        self._all = trio.CancelScope()
        self.closed = trio.Event()

    @property
    def port(self) -> int:
        """The port the service socket is bound to."""
        return int(self.sock.getsockname()[1])

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Relay until ``close``/``abort``."""
        try:
            with self._all:
                async with trio.open_nursery() as nursery:
                    task_status.started()
                    while True:
                        try:
                            data, addr = await self.sock.recvfrom(UDP_BUFFER)
                        except trio.ClosedResourceError:
                            break
                        except (ConnectionRefusedError, ConnectionResetError):
                            continue
                        client = (str(addr[0]), int(addr[1]))
                        session = self.sessions.get(client)
                        if session is None:
                            try:
                                session = await self._open(client, nursery)
                            except Exception:  # keep relaying for the other clients
                                log.exception("udp relay on port %s: no session for %s", self.port, client)
                                session = None
                            if session is None:
                                self.dropped += 1
                                continue
                        session.scope.deadline = trio.current_time() + self.idle_timeout
                        st = self.stats.of(session.endpoint)
                        try:
                            await session.sock.send(data)
                            st.bytes_in += len(data)
                        except OSError:
                            session.scope.cancel()
        finally:
            self.sock.close()
            self.closed.set()

    async def _open(self, client: tuple[str, int], nursery: trio.Nursery) -> UdpSession | None:
        got = await connect(self.picker, client[0], type=socket.SOCK_DGRAM, open_socket=self.open_socket,
                            timeouts=self.timeouts, stats=self.stats)
        if got is None:
            return None
        sock, ep = got
        session = UdpSession(client, ep, sock, trio.CancelScope(deadline=trio.current_time() + self.idle_timeout))
        self.sessions[client] = session
        st = self.stats.of(ep)
        st.conns += 1
        st.inactive += 1
        nursery.start_soon(self._replies, session)
        return session

    async def _replies(self, session: UdpSession) -> None:
        st = self.stats.of(session.endpoint)
        try:
            with session.scope:
                while True:
                    data = await session.sock.recv(UDP_BUFFER)
                    session.scope.deadline = trio.current_time() + self.idle_timeout
                    await self.sock.sendto(data, session.client)
                    st.bytes_out += len(data)
        except OSError:
            pass
        finally:
            if self.sessions.get(session.client) is session:
                del self.sessions[session.client]
            session.sock.close()
            st.inactive -= 1
            self.picker.release(session.endpoint)

    def close(self) -> None:
        """Stop relaying and end every session; the service socket closes now."""
        self._all.cancel()
        self.sock.close()

    abort = close
