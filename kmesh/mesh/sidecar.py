"""The sidecar proxy of one meshed pod (the ``kmesh/proxy`` image): what the redirect rules send to it.

Outbound (``--outbound-port``, 15001 on 127.0.0.1): every TCP connection the
pod's containers open arrives here; its original destination (SO_ORIGINAL_DST)
says where it was going.

- A Service's ClusterIP and port: HTTP (by the port's declaration or the
  first bytes) is adopted by the L7 engine, which balances each request over
  the Service's ready endpoints (per request, so one keep-alive connection
  spreads over every endpoint) by least request: of two endpoints picked at
  random, the one with fewer requests in flight (Envoy's power of two choices,
  Istio's default). kmesh uses it rather than Linkerd's latency EWMA because
  it needs no latency history (a new or idle pod is judged right away), a slow
  pod shows up at once as requests piling up in it, and it is what Istio
  users see; other TCP is relayed whole to one endpoint, picked per connection.
- Anything else (a pod IP, an address outside the cluster) is relayed to the
  original destination unchanged (Istio's PassthroughCluster).

Inbound (``--inbound-port``, 15006): connections from outside the pod to any
of its ports arrive here and are relayed to the port they were meant for,
so the app sees its own port as the destination.

Mutual TLS (when the sidecar knows its pod): connections to endpoints that
are meshed pods (label ``security.kmesh.io/tlsMode: kmesh``) are TLS 1.3 with
the pod's certificate (``kmesh.mesh.identity``), and inbound connections that
open with a ClientHello offering ALPN ``kmesh-http``/``kmesh-tcp`` are
terminated here, the peer's certificate verified against the mesh root. Inbound plaintext is accepted
(permissive, Istio's default) unless the pod's namespace is annotated
``kmesh.io/mtls: strict``; then it is refused with a reset, except from the
pod's own node (the kubelet's probes come from there; Istio rewrites probes
instead). Pods of a namespace annotated ``kmesh.io/mtls: disable`` are sent
to in plaintext (Istio's PeerAuthentication DISABLE).

The sidecar's own sockets carry the mark ``--mark`` (SO_MARK), which the
redirect rules let through; they are opened in the pod's network namespace.
``/healthz/ready`` on the health port answers 200 once the Services and
endpoints are known and both ports listen (the injected startup probe waits
for it, so the app starts after its proxy); ``/metrics`` on the admin port
serves the counters and the golden metrics, ``/tap`` the requests as they
happen.

Golden metrics: every HTTP request the sidecar serves, outbound (to a
Service, by the client's sidecar) and inbound (to this pod's app, by the
server's sidecar: plaintext HTTP is recognised by its first bytes, mesh HTTP
by its ALPN) is counted in ``kmesh_requests_total`` and timed in
``kmesh_request_duration_seconds``, labelled by direction, source and
destination workload and namespace, Service, route, response code and
whether it crossed the wire in mutual TLS, as Istio's standard metrics.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram

from kmesh.apiserver.meshinject import (ADMIN_PORT, HEALTH_PORT, INBOUND_PORT, MARK, OUTBOUND_PORT, TLS_MODE,
                                       TLS_MODE_LABEL)
from kmesh.client.api import Client
from kmesh.client.informer import Informer
from kmesh.controllers.podutil import pod_ips
from kmesh.gateway.dataplane import Feeder
from kmesh.l7.engine import Engine
from kmesh.l7.metrics import LATENCY_BUCKETS, AccessRecord, Metrics
from kmesh.l7.model import Backend, Config, Endpoint, HostMatch, Listener, Match, RouteEntry, Rule
from kmesh.mesh.identity import ALPN_HTTP, ALPN_TCP, IdentityKeeper
from kmesh.mesh.origdst import mark_socket, original_dst
from kmesh.mesh.services import Obj, ServiceTable
from kmesh.mesh.tlsinspect import Incomplete, client_hello_alpn
from kmesh.mesh.workload import workload_of
from kmesh.net.http import Request, Response, looks_like_http
from kmesh.net.metrics import serve_metrics, serve_routes
from kmesh.net.pump import pump
from kmesh.net.sockets import OpenSocket, close_with_reset, default_open_socket, family_of, tcp_listener

log = logging.getLogger("kmesh.mesh.sidecar")

MESH_KINDS = ("Service", "EndpointSlice", "HTTPRoute", "ReferenceGrant")
MTLS_ANNOTATION = "kmesh.io/mtls"
"""On a namespace: ``strict`` refuses plaintext to its meshed pods; ``disable``: other sidecars send to its
pods in plaintext (Istio's PeerAuthentication DISABLE); default: permissive (mTLS between sidecars, plaintext
accepted)."""
INBOUND = "inbound"
"""The namespace of the inbound engine's backends (this pod's app by port), as Istio's inbound|PORT clusters."""
REQUEST_LABELS = ["direction", "source_workload", "source_namespace", "destination_workload",
                  "destination_namespace", "destination_service", "route", "tls"]
TAP_BUFFER = 1024
PEEK_BYTES = 4096
"""Enough for any ClientHello the sidecars send (one TLS record)."""
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
    """Serves one pod's redirected traffic (see the module docstring) until cancelled.

    ``pod`` (the pod object) turns mutual TLS on: the sidecar then gets its certificate before it reports
    ready. Without it the sidecar speaks plaintext everywhere."""

    def __init__(self, client: Client, open_socket: OpenSocket = default_open_socket,
                 ports: SidecarPorts = SidecarPorts(), *, pod: Obj | None = None, detect_timeout: float = 0.1,
                 connect_timeout: float = 5.0, cert_seconds: int = 86400) -> None:
        self.client = client
        self.open_socket = open_socket
        self.ports = ports
        self.pod = pod
        self.detect_timeout = detect_timeout
        self.connect_timeout = connect_timeout
        self.engine = Engine("0.0.0.0", self.open_marked, listen=False, connect_timeout=connect_timeout,
                             policy="least_request", upstream_tls=self.tls_for, proxy_headers=False,
                             metrics=Metrics(access_log=self._outbound_done))
        self.inbound_engine = Engine("0.0.0.0", self.open_marked, listen=False, connect_timeout=connect_timeout,
                                     proxy_headers=False, metrics=Metrics(access_log=self._inbound_done))
        """Serves inbound HTTP to this pod's app: one virtual listener per port seen, for the metrics."""
        self._inbound_ports: set[int] = set()
        self._inbound_lock = trio.Lock()
        md = (pod or {}).get("metadata") or {}
        self.namespace = md.get("namespace") or ""
        self.pod_name = md.get("name") or ""
        self.workload = workload_of(pod)[1] if pod is not None else ""
        self.taps: set[trio.MemorySendChannel[dict[str, Any]]] = set()
        self.table = ServiceTable(self.namespace)
        self.feeder = Feeder(client, kinds=MESH_KINDS, build=self.table.build, engine=self.engine)
        self.registry = CollectorRegistry()
        self.renewals = Counter("kmesh_proxy_certificate_renewals", "Certificates the sidecar got to replace "
                                "its current one before it expired.", registry=self.registry)
        self.identity: IdentityKeeper | None = None
        if pod is not None:
            self.identity = IdentityKeeper(client, self.namespace or "default", self.pod_name,
                                           (pod.get("spec") or {}).get("serviceAccountName") or "default",
                                           expiration_seconds=cert_seconds, on_renew=self.renewals.inc)
        self.meshed: dict[str, Obj] = {}
        """Meshed pods by pod IP: connections to them are mutual TLS; metrics name their workloads."""
        self.mtls_modes: dict[str, str] = {}
        """Each namespace's MTLS_ANNOTATION, lower case ("" when it has none)."""
        self.node_ips: set[str] = set()
        """Where the pod's node reaches it from (its addresses and its bridge's): strict mode lets those in."""
        self.ready = False
        self.tcp_connections = Counter(
            "kmesh_proxy_tcp_connections_opened", "TCP connections the sidecar accepted, by direction, how "
            "they were served (http: the L7 engine; service: relayed to an endpoint; passthrough: to the "
            "original destination) and whether the mesh side was mutual TLS.", ["direction", "mode", "tls"],
            registry=self.registry)
        self.refused = Counter("kmesh_proxy_plaintext_refused", "Inbound plaintext connections refused in "
                               "strict mode.", registry=self.registry)
        self.requests = Counter("kmesh_requests", "HTTP requests served, as Istio's istio_requests_total.",
                                [*REQUEST_LABELS, "response_code"], registry=self.registry)
        self.latency = Histogram("kmesh_request_duration_seconds", "How long HTTP requests took, from the head "
                                 "arriving at the sidecar to the answer's end.", REQUEST_LABELS,
                                 buckets=LATENCY_BUCKETS, registry=self.registry)

    async def _node_gateways(self) -> set[str]:
        """The node's address on the pod network (the first of its pod CIDRs, the bridge's, as kmesh's CNI
        and flannel's set it): the kubelet's probes come from there."""
        node = ((self.pod or {}).get("spec") or {}).get("nodeName")
        if not node:
            return set()
        try:
            obj = await self.client.get("Node", node)
        except Exception as exc:  # noqa: BLE001 - only strict mode's probe exception depends on it
            log.warning("sidecar: cannot read node %s: %s", node, exc)
            return set()
        spec = obj.get("spec") or {}
        cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
        out: set[str] = set()
        for cidr in cidrs:
            try:
                out.add(str(next(ipaddress.ip_network(cidr, strict=False).hosts())))
            except (ValueError, StopIteration):
                continue
        return out

    @property
    def strict(self) -> bool:
        """Whether this pod's namespace refuses plaintext."""
        return self.mtls_modes.get(self.namespace) == "strict"

    def _mtls_to(self, ip: str) -> bool:
        """Whether connections to ``ip`` are mutual TLS: a meshed pod whose namespace does not disable it."""
        pod = self.meshed.get(ip)
        meta = (pod or {}).get("metadata") or {}
        if pod is None or (meta.get("namespace"), meta.get("name")) == (self.namespace, self.pod_name):
            return False  # its own pod: the connection goes over lo straight to the app (no inbound sidecar there)
        return self.mtls_modes.get(meta.get("namespace") or "") != "disable"

    def tls_for(self, ip: str, port: int) -> ssl.SSLContext | None:
        """The client context for an endpoint that is a meshed pod (None: plaintext)."""
        ident = self.identity.current if self.identity is not None else None
        if ident is None or not self._mtls_to(ip):
            return None
        return ident.client_http

    async def _watch_pods(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        inf = Informer(self.client, "Pod", label_selector=f"{TLS_MODE_LABEL}={TLS_MODE}")

        async def changed(_: object) -> None:
            self.meshed = {ip: p for p in inf.list() for ip in pod_ips(p)}  # IPv4: the redirect rules are

        inf.add_handler(changed)
        await inf.run(task_status=task_status)

    async def _watch_namespaces(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        inf = Informer(self.client, "Namespace")

        async def changed(_: object) -> None:
            self.mtls_modes = {(ns.get("metadata") or {}).get("name") or "":
                               str(((ns.get("metadata") or {}).get("annotations") or {}).get(MTLS_ANNOTATION, "")).lower()
                               for ns in inf.list()}

        inf.add_handler(changed)
        await inf.run(task_status=task_status)

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
            if self.identity is not None:
                self.node_ips = _host_ips(self.pod) | await self._node_gateways()
                await n.start(self._watch_pods)
                await n.start(self._watch_namespaces)
                await n.start(self.identity.run)
            outbound = await tcp_listener("127.0.0.1", self.ports.outbound, self.open_socket)
            inbound = await tcp_listener("0.0.0.0", self.ports.inbound, self.open_socket)
            n.start_soon(self._accept, outbound, self._outbound)
            n.start_soon(self._accept, inbound, self._inbound)
            await n.start(self.inbound_engine.serve)
            await n.start(partial(serve_metrics, self.registry, "0.0.0.0", self.ports.admin,
                                  routes={"/tap": self._tap}, open_socket=self.open_socket))
            await n.start(partial(serve_routes, {"/healthz/ready": self._health}, "0.0.0.0", self.ports.health,
                                  open_socket=self.open_socket))
            self.ready = True
            task_status.started(self)

    async def _health(self, req: Request) -> Response:
        if self.ready and (self.identity is None or self.identity.current is not None):
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
            self.tcp_connections.labels("outbound", "passthrough", "false").inc()
            await self._relay(sock, dst)
            return
        protocol = sp.protocol or await self._sniff(sock)
        if protocol == "http" and self.engine.has_listener(sp.listener):
            self.tcp_connections.labels("outbound", "http", _tls(self.identity)).inc()
            self.engine.adopt(sp.listener, sock, client)  # the engine owns the socket from here
            return
        eps = self.engine.endpoints.get((sp.namespace, sp.service, sp.port))
        idx = eps.pick() if eps is not None else -1
        if idx < 0:
            close_with_reset(sock)  # no ready endpoint: refuse, as kube-proxy's REJECT does
            return
        ep = eps.endpoints[idx]  # type: ignore[union-attr]
        ident = self.identity.current if self.identity is not None else None
        ctx = ident.client_tcp if ident is not None and self._mtls_to(ep.ip) else None
        self.tcp_connections.labels("outbound", "service", str(ctx is not None).lower()).inc()
        await self._relay(sock, (ep.ip, ep.port), ctx)

    async def _peek(self, sock: trio.socket.SocketType, size: int, enough: Callable[[bytes], bool]) -> bytes:
        """The client's first bytes, peeked (not consumed): once ``enough`` says so, ``size`` arrived or the
        stream ended; else what there is after ``detect_timeout`` (server-first protocols must not wait)."""
        data = b""
        with trio.move_on_after(self.detect_timeout):
            while True:
                data = await sock.recv(size, socket.MSG_PEEK)
                if not data or len(data) >= size or enough(data):
                    break
                await trio.sleep(0.005)  # a peek returns at once while bytes wait: let more arrive
        return data

    async def _sniff(self, sock: trio.socket.SocketType) -> str:
        """``http`` when the client's first bytes start an HTTP/1 request line, else ``tcp``."""
        first = await self._peek(sock, SNIFF_BYTES, lambda data: b" " in data)
        return "http" if looks_like_http(first) else "tcp"

    # --- inbound ------------------------------------------------------------------------------

    async def _inbound(self, sock: trio.socket.SocketType, client: str) -> None:
        try:
            dst = original_dst(sock)
        except OSError:
            sock.close()
            return
        ident = self.identity.current if self.identity is not None else None
        alpn = await self._client_alpn(sock) if ident is not None else None
        if ident is not None and alpn and ALPN_HTTP.encode() in alpn:
            self.tcp_connections.labels("inbound", "http", "true").inc()
            await self._inbound_http(sock, client, dst, ident.server)
            return
        if ident is not None and alpn and ALPN_TCP.encode() in alpn:
            tls = trio.SSLStream(trio.SocketStream(sock), ident.server, server_side=True)
            try:
                with trio.fail_after(self.connect_timeout):
                    await tls.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError):
                close_with_reset(sock)  # not a peer of this mesh (no certificate from its root)
                return
            self.tcp_connections.labels("inbound", "passthrough", "true").inc()
            await self._relay(sock, dst, client=tls)
            return
        if self.strict and client not in self.node_ips:
            self.refused.inc()
            close_with_reset(sock)  # strict mode: plaintext is refused (the node's own probes excepted)
            return
        if alpn is None and await self._sniff(sock) == "http":
            self.tcp_connections.labels("inbound", "http", "false").inc()
            await self._inbound_http(sock, client, dst, None)
            return
        self.tcp_connections.labels("inbound", "passthrough", "false").inc()
        await self._relay(sock, dst)

    async def _inbound_http(self, sock: trio.socket.SocketType, client: str, dst: tuple[str, int],
                            ctx: ssl.SSLContext | None) -> None:
        """Hand an inbound HTTP connection to the inbound engine, which sends it on to the app at ``dst``."""
        port = dst[1]
        async with self._inbound_lock:
            if port not in self._inbound_ports:
                ports = sorted(self._inbound_ports | {port})
                await self.inbound_engine.apply(Config(tuple(
                    Listener(p, (RouteEntry(HostMatch(), Match(), Rule((Backend(INBOUND, self.pod_name, p),),
                                                                       name=f"inbound|{p}")),), name=f"inbound|{p}")
                    for p in ports)))
                self._inbound_ports.add(port)
            self.inbound_engine.set_endpoints(INBOUND, self.pod_name, port, [Endpoint(dst[0], port)])
        self.inbound_engine.adopt(port, sock, client, ctx)

    async def _client_alpn(self, sock: trio.socket.SocketType) -> list[bytes] | None:
        """The ALPN protocols of the client's ClientHello (peeked, not consumed); None when the client does not
        open with one (plaintext) or says nothing within ``detect_timeout`` (its server speaks first)."""
        try:
            return client_hello_alpn(await self._peek(sock, PEEK_BYTES, _hello_read))
        except Incomplete:
            return None

    # --- golden metrics and tap -----------------------------------------------------------------

    def _outbound_done(self, rec: AccessRecord) -> None:
        ns = rec.listener.split("/", 1)[0] if "/" in rec.listener else ""
        dst_pod = self.meshed.get(rec.endpoint.rsplit(":", 1)[0])
        dst_workload = workload_of(dst_pod)[1] if dst_pod is not None else ""
        self._record("outbound", self.workload, self.namespace, dst_workload, ns, rec.listener, rec,
                     rec.upstream_tls)

    def _inbound_done(self, rec: AccessRecord) -> None:
        src_pod = self.meshed.get(rec.client)
        src_workload, src_ns = ("", "")
        if src_pod is not None:
            src_workload, src_ns = workload_of(src_pod)[1], (src_pod.get("metadata") or {}).get("namespace", "")
        elif rec.peer.startswith("spiffe://"):
            src_ns = rec.peer.split("/ns/", 1)[-1].split("/", 1)[0]
        self._record("inbound", src_workload, src_ns, self.workload, self.namespace, "", rec, bool(rec.peer))

    def _record(self, direction: str, src_workload: str, src_ns: str, dst_workload: str, dst_ns: str,
                service: str, rec: AccessRecord, tls: bool) -> None:
        route = "" if direction == "inbound" else rec.route
        labels = (direction, src_workload, src_ns, dst_workload, dst_ns, service, route, "true" if tls else "false")
        self.requests.labels(*labels, str(rec.status)).inc()
        self.latency.labels(*labels).observe(rec.duration)
        if self.taps:
            host, _, port = rec.endpoint.rpartition(":")
            event = {
                "ts": time.time(), "direction": direction, "method": rec.method, "authority": rec.host,
                "path": rec.target, "status": rec.status, "latency_ms": round(rec.duration * 1000, 3), "tls": tls,
                "route": route,
                "source": {"workload": src_workload, "namespace": src_ns, "ip": rec.client,
                           "principal": rec.peer},
                "destination": {"workload": dst_workload, "namespace": dst_ns, "service": service, "ip": host,
                                "port": int(port) if port.isdigit() else None},
            }
            for send in list(self.taps):
                try:
                    send.send_nowait(event)
                except trio.WouldBlock:
                    pass  # a reader that does not keep up loses events, not the proxy's time

    async def _tap(self, req: Request) -> Response:
        send, recv = trio.open_memory_channel[dict[str, Any]](TAP_BUFFER)
        self.taps.add(send)

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for event in recv:
                    yield (json.dumps(event) + "\n").encode()
            finally:
                self.taps.discard(send)

        return Response(stream=lines(), content_type="application/x-ndjson")

    # --- relaying -----------------------------------------------------------------------------

    async def _connect(self, dst: tuple[str, int]) -> trio.socket.SocketType | None:
        """A marked socket connected to ``dst``, or None when it cannot be reached."""
        try:
            upstream = await self.open_marked(family_of(dst[0]), socket.SOCK_STREAM)
        except OSError:
            return None
        try:
            with trio.fail_after(self.connect_timeout):
                await upstream.connect(dst)
        except (OSError, trio.TooSlowError):
            upstream.close()
            return None
        return upstream

    async def _relay(self, sock: trio.socket.SocketType, dst: tuple[str, int],
                     tls: ssl.SSLContext | None = None, client: trio.abc.Stream | None = None) -> None:
        """Connect to ``dst`` (marked; mesh TLS when ``tls``) and move bytes both ways until both are done.
        ``client`` is the stream to read the client from instead of ``sock`` itself (a terminated mesh TLS)."""
        with sock:
            upstream = await self._connect(dst)
            if upstream is None:
                close_with_reset(sock)
                return
            with upstream:
                if tls is None and client is None:
                    try:
                        async with trio.open_nursery() as n:
                            n.start_soon(pump, sock, upstream)
                            n.start_soon(pump, upstream, sock)
                    except* OSError:
                        pass
                    return
                server: trio.abc.Stream = trio.SocketStream(upstream)
                if tls is not None:
                    server = trio.SSLStream(server, tls)
                    try:
                        with trio.fail_after(self.connect_timeout):
                            await server.do_handshake()
                    except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError):
                        close_with_reset(sock)
                        return
                await _streams(client or trio.SocketStream(sock), server)


async def _streams(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
    """Copy both ways between two streams until both directions ended (or one side broke).

    An end of stream is passed on as a half-close where the other side can do one (TCP); TLS cannot
    half-close, so there the other direction simply runs on until it ends too."""

    async def copy(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
        while data := await src.receive_some(65536):
            await dst.send_all(data)
        if isinstance(dst, trio.abc.HalfCloseableStream):
            await dst.send_eof()

    try:
        async with trio.open_nursery() as n:
            n.start_soon(copy, a, b)
            n.start_soon(copy, b, a)
    except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


def _hello_read(data: bytes) -> bool:
    """Whether ``data`` holds a whole ClientHello, or shows it is not one."""
    try:
        client_hello_alpn(data)
    except Incomplete:
        return False
    return True


def _tls(identity: IdentityKeeper | None) -> str:
    """The ``tls`` label of HTTP served by the engine: true when the sidecar has an identity (meshed
    endpoints are then reached over mutual TLS)."""
    return "true" if identity is not None and identity.current is not None else "false"


def _host_ips(pod: Obj | None) -> set[str]:
    status = (pod or {}).get("status") or {}
    return {p["ip"] for p in status.get("hostIPs") or [] if p.get("ip")} | \
        ({status["hostIP"]} if status.get("hostIP") else set())

