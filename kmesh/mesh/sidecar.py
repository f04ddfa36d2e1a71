"""The sidecar proxy of one meshed pod (the ``kmesh/proxy`` image): what the redirect rules send to it.

Outbound (``--outbound-port``, 15001 on 127.0.0.1): every TCP connection the
pod's containers open arrives here; its original destination (SO_ORIGINAL_DST)
says where it was going.

- A Service's ClusterIP and port: HTTP (by the port's declaration or the
  first bytes) is adopted by the L7 engine, which balances each request over
  the Service's ready endpoints (round robin, as Envoy's default; per request,
  so one keep-alive connection spreads over every endpoint); other TCP is
  relayed whole to one endpoint, picked per connection.
- Anything else (a pod IP, an address outside the cluster) is relayed to the
  original destination unchanged (Istio's PassthroughCluster).

Inbound (``--inbound-port``, 15006): connections from outside the pod to any
of its ports arrive here and are relayed to the port they were meant for,
so the app sees its own port as the destination.

The sidecar's own sockets carry the mark ``--mark`` (SO_MARK), which the
redirect rules let through; they are opened in the pod's network namespace.
``/healthz/ready`` on the health port answers 200 once the Services and
endpoints are known and both ports listen (the injected startup probe waits
for it, so the app starts after its proxy); ``/metrics`` on the admin port
serves the counters.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from functools import partial

import trio
from prometheus_client import CollectorRegistry, Counter

from kmesh.apiserver.meshinject import ADMIN_PORT, HEALTH_PORT, INBOUND_PORT, MARK, OUTBOUND_PORT
from kmesh.client.api import Client
from kmesh.gateway.dataplane import Feeder
from kmesh.l7.engine import Engine
from kmesh.mesh.origdst import mark_socket, original_dst
from kmesh.mesh.services import ServiceTable
from kmesh.net.http import Request, Response, looks_like_http
from kmesh.net.metrics import serve_metrics, serve_routes
from kmesh.net.pump import pump
from kmesh.net.sockets import OpenSocket, default_open_socket, family_of, tcp_listener

log = logging.getLogger("kmesh.mesh.sidecar")

MESH_KINDS = ("Service", "EndpointSlice")
SNIFF_BYTES = 8
"""Enough of the first bytes to tell an HTTP/1 request line (the longest method is ``OPTIONS ``)."""


@dataclass(frozen=True)
class SidecarPorts:
    """Where the sidecar listens, and the mark of its own sockets (the injected defaults, Istio's numbers)."""

    inbound: int = INBOUND_PORT
    outbound: int = OUTBOUND_PORT
    admin: int = ADMIN_PORT
    health: int = HEALTH_PORT
    mark: int = MARK


class Sidecar:
    """Serves one pod's redirected traffic (see the module docstring) until cancelled."""

    def __init__(self, client: Client, open_socket: OpenSocket = default_open_socket,
                 ports: SidecarPorts = SidecarPorts(), *, detect_timeout: float = 0.1,
                 connect_timeout: float = 5.0) -> None:
        self.client = client
        self.open_socket = open_socket
        self.ports = ports
        self.detect_timeout = detect_timeout
        self.connect_timeout = connect_timeout
        self.engine = Engine("0.0.0.0", self.open_marked, listen=False, connect_timeout=connect_timeout)
        self.table = ServiceTable()
        self.feeder = Feeder(client, kinds=MESH_KINDS, build=self.table.build, engine=self.engine)
        self.ready = False
        self.registry = CollectorRegistry()
        self.tcp_connections = Counter(
            "kmesh_proxy_tcp_connections_opened", "TCP connections the sidecar accepted, by direction and how "
            "they were served (http: the L7 engine; service: relayed to an endpoint; passthrough: to the "
            "original destination).", ["direction", "mode"], registry=self.registry)

    async def open_marked(self, family: int, type: int) -> trio.socket.SocketType:
        """A socket in the pod's network that the redirect rules let through (it carries the mark)."""
        sock = await self.open_socket(family, type)
        try:
            mark_socket(sock, self.ports.mark)
        except BaseException:
            sock.close()
            raise
        return sock

    async def run(self, *, task_status: trio.TaskStatus[Sidecar] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, learn the Services, serve; reports itself started once ready."""
        async with trio.open_nursery() as n:
            await n.start(self.engine.serve)
            await n.start(self.feeder.run)
            outbound = await tcp_listener("127.0.0.1", self.ports.outbound, self.open_socket)
            inbound = await tcp_listener("0.0.0.0", self.ports.inbound, self.open_socket)
            n.start_soon(self._accept, outbound, self._outbound)
            n.start_soon(self._accept, inbound, self._inbound)
            await n.start(partial(serve_metrics, self.registry, "0.0.0.0", self.ports.admin,
                                  open_socket=self.open_socket))
            await n.start(partial(serve_routes, {"/healthz/ready": self._health}, "0.0.0.0", self.ports.health,
                                  open_socket=self.open_socket))
            self.ready = True
            task_status.started(self)

    async def _health(self, req: Request) -> Response:
        if self.ready:
            return Response(body="ready\n")
        return Response(status=503, body="not ready\n")

    async def _accept(self, listener: trio.socket.SocketType, handle: object) -> None:
        async with trio.open_nursery() as conns:
            with listener:
                while True:
                    try:
                        sock, peer = await listener.accept()
                    except OSError as e:
                        log.warning("sidecar: accept failed: %s", e)
                        await trio.sleep(0.05)  # out of descriptors: back off
                        continue
                    conns.start_soon(handle, sock, peer[0] if peer else "")  # type: ignore[operator]

    # --- outbound -----------------------------------------------------------------------------

    async def _outbound(self, sock: trio.socket.SocketType, client: str) -> None:
        try:
            dst = original_dst(sock)
        except OSError:
            sock.close()  # not redirected: someone connected to the port itself
            return
        sp = self.table.by_address.get(dst)
        if sp is None:
            self.tcp_connections.labels("outbound", "passthrough").inc()
            await self._relay(sock, dst)
            return
        protocol = sp.protocol or await self._sniff(sock)
        if protocol == "http" and self.engine.has_listener(sp.listener):
            self.tcp_connections.labels("outbound", "http").inc()
            self.engine.adopt(sp.listener, sock, client)  # the engine owns the socket from here
            return
        eps = self.engine.endpoints.get((sp.namespace, sp.service, sp.port))
        idx = eps.pick() if eps is not None else -1
        if idx < 0:
            _reset(sock)  # no ready endpoint: refuse, as kube-proxy's REJECT does
            return
        ep = eps.endpoints[idx]  # type: ignore[union-attr]
        self.tcp_connections.labels("outbound", "service").inc()
        await self._relay(sock, (ep.ip, ep.port))

    async def _sniff(self, sock: trio.socket.SocketType) -> str:
        """``http`` when the client's first bytes start an HTTP/1 request line, else ``tcp`` (also when it
        says nothing within ``detect_timeout``: server-first protocols must not wait)."""
        first = b""
        with trio.move_on_after(self.detect_timeout):
            while len(first) < SNIFF_BYTES:
                first = await sock.recv(SNIFF_BYTES, socket.MSG_PEEK)
                if not first or b" " in first:
                    break
                if len(first) < SNIFF_BYTES:
                    await trio.sleep(0.005)  # a peek returns at once while bytes wait: let more arrive
        return "http" if looks_like_http(first) else "tcp"

    # --- inbound ------------------------------------------------------------------------------

    async def _inbound(self, sock: trio.socket.SocketType, client: str) -> None:
        try:
            dst = original_dst(sock)
        except OSError:
            sock.close()
            return
        self.tcp_connections.labels("inbound", "passthrough").inc()
        await self._relay(sock, dst)

    # --- relaying -----------------------------------------------------------------------------

    async def _relay(self, sock: trio.socket.SocketType, dst: tuple[str, int]) -> None:
        """Connect to ``dst`` (marked) and move bytes both ways until both sides are done."""
        with sock:
            try:
                upstream = await self.open_marked(family_of(dst[0]), socket.SOCK_STREAM)
            except OSError:
                _reset(sock)
                return
            with upstream:
                try:
                    with trio.fail_after(self.connect_timeout):
                        await upstream.connect(dst)
                except (OSError, trio.TooSlowError):
                    _reset(sock)
                    return
                try:
                    async with trio.open_nursery() as n:
                        n.start_soon(pump, sock, upstream)
                        n.start_soon(pump, upstream, sock)
                except* OSError:
                    pass


def _reset(sock: trio.socket.SocketType) -> None:
    """Close with a reset (SO_LINGER 0), as a refused connection looks to the client."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    sock.close()
