"""The L7 proxy engine: serves a :class:`~kmesh.l7.model.Config` over HTTP/1.1 (and HTTPS) on trio.

``Engine.apply`` swaps the whole configuration at once: ports that stay keep
their listening sockets and connections, new ports open before anything
changes (a failure leaves the old configuration in place), removed ports stop
accepting and their connections close after the request they are serving.
Each request reads the listener's state once when it starts, so a request in
flight finishes on the table it started with. ``set_endpoints`` changes one
backend's ready endpoints without touching routes.

The exchange itself lives in :mod:`kmesh.l7.exchange`; this module owns
sockets, tasks and state. To use more than one CPU, run one Engine per process
with ``reuse_port=True`` and the same configuration: the kernel spreads new
connections over the processes (SO_REUSEPORT); ``kmesh.l7.workers.EngineWorkers``
does that behind the same apply/set_endpoints/serve API.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from time import perf_counter

import trio

from kmesh.l7.exchange import Connection
from kmesh.l7.metrics import Metrics
from kmesh.l7.model import Config, Endpoint, Listener
from kmesh.l7.plan import Plan
from kmesh.l7.table import RouteTable
from kmesh.l7.tls import server_context
from kmesh.l7.retrybudget import RetryBudget
from kmesh.l7.upstream import POLICIES, EndpointSet, Pool, TLSPolicy
from kmesh.net.sockets import OpenSocket, default_open_socket, family_of


@dataclass(frozen=True)
class ListenerState:
    """One listener's compiled configuration; replaced whole by ``apply``, read once per request."""

    listener: Listener
    table: RouteTable
    plans: dict[int, Plan]
    ssl_context: ssl.SSLContext | None
    scheme: str
    name: str

    @classmethod
    def build(cls, listener: Listener) -> "ListenerState":
        """Compile ``listener`` (raises on a bad regular expression, certificate or key)."""
        table = RouteTable(listener.routes)
        plans = {id(e): Plan(e) for e in table.entries}
        ctx = server_context(listener.certificates) if listener.tls else None
        return cls(listener, table, plans, ctx, "https" if ctx else "http", listener.name or str(listener.port))


@dataclass(eq=False)
class Port:
    """One open listening port: its socket, current state and the connections it accepted."""

    number: int
    sock: trio.socket.SocketType | None  # None: a virtual port (an Engine with listen=False), fed by adopt()
    state: ListenerState
    draining: bool = False
    connections: set[Connection] = field(default_factory=set)
    accept_scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    def stop(self) -> None:
        """Stop accepting; idle connections close now, busy ones after their current request."""
        self.draining = True
        self.accept_scope.cancel()
        for conn in list(self.connections):
            if conn.idle:
                conn.scope.cancel()


PortMap = Callable[[int], int]


class Engine:
    """Serves HTTP for a Config: listeners on ``host``, routes, per-request balancing, TLS, metrics.

    ``open_socket`` makes every socket (listening and upstream), so the engine
    can run inside a pod's namespace. ``port_map`` turns a listener's port
    into the port actually bound (0: any free port; see ``address``).
    ``policy`` is ``round_robin`` or ``least_request``. Timeouts are in
    seconds: ``idle_timeout`` for a client keep-alive connection between
    requests, ``drain_timeout`` for connections of a removed listener.

    ``upstream_tls`` says which endpoints get TLS (the mesh's sidecars);
    ``proxy_headers`` False leaves X-Forwarded-For/-Proto and Via alone (a sidecar).
    ``listen=False`` makes every listener virtual: nothing is bound, and the
    owner hands accepted connections over with ``adopt`` (the mesh sidecar
    accepts on one port and picks the listener by each connection's
    original destination).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        open_socket: OpenSocket = default_open_socket,
        *,
        reuse_port: bool = False,
        port_map: PortMap | Mapping[int, int] | None = None,
        policy: str = "round_robin",
        metrics: Metrics | None = None,
        backlog: int = 1024,
        idle_timeout: float = 75.0,
        drain_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_idle_upstream: int = 256,
        listen: bool = True,
        upstream_tls: TLSPolicy | None = None,
        proxy_headers: bool = True,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown balancing policy {policy!r}")
        self.host = host
        self.open_socket = open_socket
        self.reuse_port = reuse_port
        if port_map is None:
            self._port_map: PortMap = lambda p: p
        elif callable(port_map):
            self._port_map = port_map
        else:
            mapping = dict(port_map)
            self._port_map = lambda p: mapping.get(p, p)
        self.policy = policy
        self.metrics = metrics if metrics is not None else Metrics()
        self.backlog = backlog
        self.listen = listen
        self.proxy_headers = proxy_headers
        """Add X-Forwarded-For/-Proto and Via to requests (a gateway's duty; a sidecar leaves them as they were)."""
        self.idle_timeout = idle_timeout
        self.drain_timeout = drain_timeout
        self.pool = Pool(open_socket, max_idle=max_idle_upstream, connect_timeout=connect_timeout,
                         tls_for=upstream_tls)
        self.config = Config()
        self.endpoints: dict[tuple[str, str, int], EndpointSet] = {}
        self.retry_budgets: dict[tuple[str, str, int], RetryBudget] = {}
        """Per backend Service port, made at its first request under a retry policy."""
        self._ports: dict[int, Port] = {}
        self._nursery: trio.Nursery | None = None
        self._lock = trio.Lock()
        self._closed = False

    # --- configuration -------------------------------------------------------------------------

    async def apply(self, config: Config) -> None:
        """Serve ``config`` from now on, as a whole; on error (bad config, a port that cannot open) nothing changes."""
        async with self._lock:
            if self._closed:
                raise trio.ClosedResourceError("engine is closed")
            ports = [lst.port for lst in config.listeners]
            if len(set(ports)) != len(ports):
                raise ValueError("two listeners on one port: merge them into one Listener")
            states = {lst.port: ListenerState.build(lst) for lst in config.listeners}
            opened: dict[int, trio.socket.SocketType] = {}
            try:
                for number in states:
                    if number not in self._ports and self.listen:
                        opened[number] = await self._listen(self._port_map(number))
            except BaseException:
                for sock in opened.values():
                    sock.close()
                raise
            # From here on no checkpoint: the swap is atomic for every task.
            for number, state in states.items():
                if number in self._ports:
                    self._ports[number].state = state
            for number, state in states.items():
                if number not in self._ports:
                    port = self._ports[number] = Port(number, opened.get(number), state)
                    if self._nursery is not None and port.sock is not None:
                        self._nursery.start_soon(self._run_port, port)
            for number in [n for n in self._ports if n not in states]:
                self._remove(number)
            self.config = config

    def set_endpoints(self, namespace: str, service: str, port: int, endpoints: Iterable[Endpoint]) -> None:
        """Set the ready endpoints of one backend (a Service port); an empty list means 503 for it."""
        key = (namespace, service, port)
        eps = tuple(endpoints)
        old = self.endpoints.get(key)
        if old is not None and old.endpoints == eps:
            return
        self.endpoints[key] = EndpointSet(eps, self.policy)
        live = {(e.ip, e.port) for s in self.endpoints.values() for e in s.endpoints}
        self.pool.forget(live)

    def retry_budget(self, key: tuple[str, str, int]) -> RetryBudget:
        """The retry budget of one backend (namespace, Service, port)."""
        budget = self.retry_budgets.get(key)
        if budget is None:
            budget = self.retry_budgets[key] = RetryBudget()
        return budget

    def listener_state(self, port: int) -> ListenerState:
        """The compiled state the listener for ``port`` serves now."""
        return self._ports[port].state

    def port_connections(self, port: int) -> set[Connection]:
        """The client connections open on the listener for ``port``."""
        return set(self._ports[port].connections)

    def address(self, port: int) -> tuple[str, int]:
        """Where the listener for ``port`` is bound (host, actual port)."""
        sock = self._ports[port].sock
        if sock is None:
            raise ValueError(f"listener {port} is virtual (listen=False): it is bound nowhere")
        name = sock.getsockname()
        return name[0], name[1]

    def has_listener(self, port: int) -> bool:
        """Whether a listener for ``port`` is configured now."""
        return port in self._ports

    def adopt(self, port: int, sock: trio.socket.SocketType, client: str,
              ssl_context: ssl.SSLContext | None = None) -> None:
        """Serve an accepted connection as if the listener for ``port`` had accepted it.

        Bytes already in the socket (peeked, not read) are the start of the first request; ``ssl_context``
        terminates TLS on it (with client certificates when the context requires them).
        Raises KeyError when no such listener is configured, RuntimeError when not serving."""
        if self._nursery is None:
            raise RuntimeError("the engine is not serving")
        p = self._ports[port]
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.metrics.connections[p.state.name] += 1
        conn = Connection(self, p, sock, client, ssl_context)
        self._nursery.start_soon(conn.run)

    # --- running -------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and serve until cancelled; then close every socket. Reports itself as started."""
        if self._nursery is not None or self._closed:
            raise RuntimeError("an Engine serves once")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for port in self._ports.values():
                    if port.sock is not None:
                        nursery.start_soon(self._run_port, port)
                nursery.start_soon(self._reap_idle)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._closed = True
            self._nursery = None
            for port in self._ports.values():
                if port.sock is not None:
                    port.sock.close()
            self._ports.clear()
            self.pool.close()

    def spawn(self, fn: Callable[..., object], *args: object) -> None:
        """Run a fire-and-forget task (a mirrored request) in the engine's nursery; dropped when not serving."""
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    async def _reap_idle(self) -> None:
        """Close client connections idle longer than ``idle_timeout`` (checked a few times per timeout)."""
        while True:
            await trio.sleep(self.idle_timeout / 4)
            limit = perf_counter() - self.idle_timeout
            for port in list(self._ports.values()):
                for conn in list(port.connections):
                    if conn.idle and conn.idle_since < limit:
                        conn.scope.cancel()

    async def _listen(self, port: int) -> trio.socket.SocketType:
        sock = await self.open_socket(family_of(self.host), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            await sock.bind((self.host, port))
            sock.listen(self.backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    def _remove(self, number: int) -> None:
        port = self._ports.pop(number)
        port.stop()
        if self._nursery is None and port.sock is not None:
            port.sock.close()

    async def _run_port(self, port: Port) -> None:
        try:
            async with trio.open_nursery() as conns:
                with port.accept_scope:
                    await self._accept_loop(port, conns)
                port.sock.close()
                conns.cancel_scope.deadline = trio.current_time() + self.drain_timeout
        finally:
            port.sock.close()

    async def _accept_loop(self, port: Port, conns: trio.Nursery) -> None:
        while True:
            try:
                sock, addr = await port.sock.accept()
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                    await trio.sleep(0.05)  # out of descriptors: back off, as trio.serve_listeners does
                    continue
                raise
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            self.metrics.connections[port.state.name] += 1
            conn = Connection(self, port, sock, addr[0] if addr else "")
            conns.start_soon(conn.run)

