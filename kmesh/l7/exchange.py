"""One client connection of the proxy: read requests, route them, forward them, relay the answers.

Per request: parse the head (httptools), route on the listener state read
once at the start, apply the rule's filters, pick a backend by weight and an
endpoint by the balancing policy, send the head (with as much of the body as
already arrived, in one write) on a pooled keep-alive connection, and relay
the response as it arrives. Bodies stream both ways; a request body that is
still arriving is pumped by a second task so a backend that answers while it
reads (an echo) cannot deadlock against the proxy.

Header handling (RFC 9110 §7.6): hop-by-hop fields (``Connection`` and the
fields it names, ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``,
``Transfer-Encoding``, ``Upgrade``) are not forwarded (except that an upgrade
request, a WebSocket handshake, asks the backend for the same upgrade, and a
101 from it turns the connection into a byte tunnel); framing is redone per
side (chunked when the length is unknown and the client speaks HTTP/1.1,
close-delimited for HTTP/1.0). ``X-Forwarded-For`` gets the client address
appended, ``X-Forwarded-Proto`` is set to the listener's scheme, ``Via: 1.1
kmesh`` is appended on requests (a gateway must add it on requests; like
Envoy and nginx, none is added to responses) and ``X-Forwarded-Host`` gets
the original host appended when a URLRewrite changes ``Host``. ``Expect:
100-continue`` is answered by the proxy itself once the request has a backend
connection (as Envoy does) and not forwarded.

Reading after a yield: before it reads a client's next request, and after it
sent a request to a backend, a connection yields to the other connections
(``trio.lowlevel.checkpoint``) and only then tries to read. On a busy proxy
the answer has arrived by then, so the read needs no readiness wait (one
``epoll_ctl`` and one scheduler pass fewer per read: about a third more
requests per second in ``benchmarks/l7.py``); on an idle one the read fails
at once and the connection waits as before. The hot path also awaits as
little as it can: routing is a plain function, sends go straight to the
socket, and one request is served inline in the connection's loop.
"""

from __future__ import annotations

import logging
import math
import random
import socket
import ssl
from time import perf_counter
from typing import TYPE_CHECKING

import h2.exceptions
import trio

from kmesh.l7.h2c import H2Conn
from kmesh.l7.http1 import (END, LAST_CHUNK, REASONS, RECV_SIZE, Head, ProtocolError, RequestReader, chunk,
                            serialize_request_head, serialize_response_head)
from kmesh.l7.metrics import AccessRecord
from kmesh.l7.model import Backend, HeaderModifier, RequestMirror, Rule, URLRewrite
from kmesh.l7.plan import BackendPlan, Plan
from kmesh.l7.rawstream import RawStream
from kmesh.l7.rewrite import modify_headers, redirect_location, rewrite_path
from kmesh.l7.table import Request, normalize_host
from kmesh.l7.tls import peer_uri
from kmesh.l7.upstream import EndpointSet, UpstreamConn

if TYPE_CHECKING:
    from kmesh.l7.engine import Engine, ListenerState, Port

log = logging.getLogger("kmesh.l7")

HOP_REQUEST = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                         b"transfer-encoding", b"upgrade", b"expect", b"x-forwarded-for", b"x-forwarded-proto",
                         b"via", b"host"})
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
VIA = b"1.1 kmesh"
VIA_HEADER = (b"Via", VIA)
XFP_HTTP = (b"X-Forwarded-Proto", b"http")
XFP_HTTPS = (b"X-Forwarded-Proto", b"https")
LINGER_TIMEOUT = 2.0
LINGER_MAX_BYTES = 1 << 20
"""A lingering close reads away at most this much, for at most LINGER_TIMEOUT seconds."""
MIRROR_TIMEOUT = 10.0
MIRROR_MAX_BODY = 1 << 20
"""Requests with a larger body are not mirrored (a mirror copy is kept in memory until the body ends)."""
INF = math.inf
RETRY_BUFFER = 64 * 1024
"""A request under a retry policy whose body is at most this long is read whole before it is sent, to send
it again if it must be retried."""


class Fail(Exception):
    """The exchange ends with a local error status (nothing of the response was sent yet)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Answer(Exception):
    """The proxy answers the request itself, as its route says (a redirect, a listener's fence): empty body."""

    def __init__(self, status: int, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.extra = extra


class Abort(Exception):
    """The exchange cannot be finished (the response was already under way): drop the client connection."""


def take_queued(reader: RequestReader | object, out: list[bytes], chunked: bool) -> bool:
    """Move the body pieces already parsed from ``reader`` to ``out`` (framed); True when the body ended."""
    events = reader.events  # type: ignore[attr-defined]
    while events:
        ev = events.popleft()
        if ev is END:
            if chunked:
                out.append(LAST_CHUNK)
            return True
        out.append(chunk(ev) if chunked else ev)
    return False


class Exchange:
    """What one request did, for error handling, metrics and the access log."""

    __slots__ = ("status", "route", "backend", "endpoint", "response_started", "req_done", "bytes_sent",
                 "conn", "upstream_tls")

    def __init__(self) -> None:
        self.status = 0
        self.route = ""
        self.backend = ""
        self.endpoint = ""
        self.response_started = False
        self.req_done = False
        self.bytes_sent = 0
        self.conn: UpstreamConn | None = None
        self.upstream_tls = False


class Connection:
    """A client connection: a keep-alive loop of exchanges.

    While it waits for a request it is ``idle``: the engine's reaper cancels
    ``scope`` when it stays idle too long, and a removed listener cancels it
    at once (a per-request deadline would cost two heap updates per request).
    """

    __slots__ = ("engine", "port", "raw", "client", "client_b", "stream", "reader", "scope", "idle", "idle_since",
                 "ssl_context", "peer", "linger")

    def __init__(self, engine: "Engine", port: "Port", sock: trio.socket.SocketType, client: str,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.engine = engine
        self.port = port
        self.ssl_context = ssl_context
        """TLS for this connection instead of the listener's (the mesh's inbound mutual TLS)."""
        self.peer = ""
        """The client certificate's first URI SAN (a SPIFFE ID in the mesh), once TLS is up; "" else."""
        self.linger = False
        self.raw = RawStream(sock)
        self.client = client
        self.client_b = client.encode()
        self.scope = trio.CancelScope()
        self.idle = True
        self.idle_since = perf_counter()
        self.stream: trio.abc.Stream = self.raw
        self.reader = RequestReader(self.stream)

    async def run(self) -> None:
        """Serve requests until the client or the proxy ends the connection."""
        port = self.port
        port.connections.add(self)
        try:
            with self.scope:
                ctx = self.ssl_context or port.state.ssl_context
                if ctx is not None:
                    tls = trio.SSLStream(self.stream, ctx, server_side=True, https_compatible=True)
                    self.stream = tls
                    self.reader = RequestReader(self.stream)
                    if ctx.verify_mode == ssl.CERT_REQUIRED:  # a client certificate: learn whose it is first
                        await tls.do_handshake()
                        self.peer = peer_uri(tls.getpeercert(binary_form=True))
                await self._loop()
                if self.linger and self.stream is self.raw:
                    await self._linger()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, EOFError, OSError, Abort, ProtocolError):
            pass
        except* Exception as group:  # a bug must cost one connection, not the listener
            log.error("l7: connection from %s failed", self.client, exc_info=group)
        finally:
            port.connections.discard(self)
            self.raw.close()

    async def _loop(self) -> None:
        reader = self.reader
        port = self.port
        while not port.draining:
            await trio.lowlevel.checkpoint()  # see "Reading after a yield" in the module docstring
            if reader.events:
                ev = reader.events.popleft()
            else:
                self.idle = True  # since the last request ended (idle_since), or since the connection opened
                events = reader.events
                stream = self.stream
                try:
                    while not events:  # reader.next() inlined: one coroutine less per request
                        reader.feed(await stream.receive_some(RECV_SIZE))
                    ev = events.popleft()
                except EOFError:
                    return
                except ProtocolError as e:
                    await self._send_local(e.status, False, b"GET", "1.1")
                    return
                self.idle = False
            if not isinstance(ev, Head):
                return
            # One request (inlined here, not a method: a coroutine less per request).
            head = ev
            t0 = perf_counter()
            state = self.port.state
            ex = Exchange()
            keep = head.keep_alive and not head.upgrade
            method = head.method
            try:
                try:
                    bp, eps, req, expect, mirrors, resp_mods, rule = self._prepare(head, state, ex)
                except Answer as a:
                    ex.status = a.status
                    keep = await self._send_local(a.status, keep, method, head.version, a.extra, b"")
                else:
                    if rule.retry is not None and not bp.h2c and not head.upgrade and (
                            END in reader.events or (head.content_length or 0) <= RETRY_BUFFER and not head.chunked):
                        keep = await self._forward_retrying(rule, head, ex, bp, eps, req, expect, mirrors,
                                                            resp_mods, keep)
                    elif rule.request_timeout is None and rule.backend_timeout is None:
                        keep = await self._forward(head, ex, bp, eps, req, expect, mirrors, resp_mods, keep)
                    else:
                        keep = await self._forward_within(rule, head, ex, bp, eps, req, expect, mirrors,
                                                          resp_mods, keep)
            except Fail as f:
                ex.status = f.status
                if ex.conn is not None:
                    ex.conn.close()
                if f.status in (400, 417, 505):
                    keep = False  # the request was malformed: do not trust the framing of what follows
                keep = await self._send_local(f.status, keep, method, head.version, body_done=ex.req_done)
            except BaseException:
                if ex.conn is not None:
                    ex.conn.close()
                raise
            engine = self.engine
            now = self.idle_since = perf_counter()
            duration = now - t0
            engine.metrics.observe(state.name, ex.route, ex.backend, ex.status, duration)
            if engine.metrics.access_log is not None:
                engine.metrics.access_log(AccessRecord(
                    self.client, method.decode("latin-1"), head.target.decode("latin-1"), _host_of(head),
                    ex.status, state.name, ex.route, ex.backend, ex.endpoint, ex.bytes_sent, duration,
                    self.peer, ex.upstream_tls))
            if not keep:
                return

    # --- one request -----------------------------------------------------------------------------

    def _prepare(self, head: Head, state: "ListenerState", ex: Exchange) -> tuple:
        """Route ``head`` and build the request for its backend: (backend plan, endpoints, (target, headers),
        expect 100-continue, mirrors, response header modifiers, rule). Raises Answer for a redirect or a
        listener fence, Fail for an error status. Not a coroutine: the hot path awaits as little as it can."""
        if head.version not in ("1.1", "1.0"):
            raise Fail(505)
        fwd: list[tuple[bytes, bytes]] = []
        host: bytes | None = None
        xff = via = conn_tokens = upgrade = None
        expect = False
        for name, value in head.headers:
            n = name.lower()
            if n in HOP_REQUEST:
                if n == b"host":
                    if host is not None:
                        raise Fail(400)
                    host = value
                elif n == b"x-forwarded-for":
                    xff = value if xff is None else xff + b", " + value
                elif n == b"via":
                    via = value if via is None else via + b", " + value
                elif n == b"connection":
                    conn_tokens = value if conn_tokens is None else conn_tokens + b"," + value
                elif n == b"upgrade":
                    upgrade = value
                elif n == b"expect":
                    if value.lower() != b"100-continue":
                        raise Fail(417)
                    expect = head.version == "1.1"
                continue
            fwd.append((name, value))
        if conn_tokens:
            named = {t.strip().lower() for t in conn_tokens.split(b",")}
            fwd = [(k, v) for k, v in fwd if k.lower() not in named]
        target = head.target
        if target[:1] != b"/":
            lowered = target[:8].lower()
            if not (lowered.startswith(b"http://") or lowered.startswith(b"https://")):
                raise Fail(400)
            rest = target.split(b"://", 1)[1]
            slash = rest.find(b"/")
            host, target = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
        if host is None:
            if head.version == "1.1":
                raise Fail(400)
            host = b""
        path_b, sep, query_b = target.partition(b"?")
        path = path_b.decode("latin-1")
        query = query_b.decode("latin-1")
        hostname = normalize_host(host)
        method = head.method.decode("latin-1")
        entry = state.table.lookup(hostname, Request(method, path, query, head.headers))
        if entry is None:
            raise Fail(404)
        plan: Plan = state.plans[id(entry)]
        ex.route = plan.name
        if entry.rule.direct is not None:  # a listener's fence (model.Rule.direct): that status, empty body
            raise Answer(entry.rule.direct)
        fs = plan.filters
        if fs.redirect is not None:
            location = redirect_location(fs.redirect, state.scheme, hostname, path, query, state.listener.port,
                                         entry.match.path)
            raise Answer(fs.redirect.status_code, [(b"Location", location.encode("latin-1"))])
        new_host: bytes | None = None
        new_path: str | None = None
        for f in fs.request:
            if isinstance(f, HeaderModifier):
                fwd = modify_headers(fwd, f)
            else:
                new_host, new_path = _rewrite(f, path, entry.match.path, new_host, new_path)
        bp = plan.pick()
        if bp is None:
            raise Fail(500)
        ex.backend = bp.name
        if bp.backend.invalid is not None:
            raise Fail(500)
        mirrors = fs.mirrors
        resp_mods = fs.response
        bfs = bp.filters
        if bfs.request or bfs.response or bfs.mirrors:
            for f in bfs.request:
                if isinstance(f, HeaderModifier):
                    fwd = modify_headers(fwd, f)
                else:
                    new_host, new_path = _rewrite(f, new_path or path, entry.match.path, new_host, new_path)
            mirrors += bfs.mirrors
            resp_mods += bfs.response
        eps = self.engine.endpoints.get(bp.key)
        if eps is None or not eps.endpoints:
            raise Fail(503)
        # The request head for the backend.
        if new_host is not None:
            fwd.append((b"Host", new_host))
            fwd.append((b"X-Forwarded-Host", host))
        else:
            fwd.append((b"Host", host))  # empty for an HTTP/1.0 request without one (RFC 9112 §3.2)
        if self.engine.proxy_headers:
            fwd.append((b"X-Forwarded-For", xff + b", " + self.client_b if xff else self.client_b))
            fwd.append(XFP_HTTPS if state.ssl_context is not None else XFP_HTTP)
            fwd.append((b"Via", via + b", " + VIA) if via else VIA_HEADER)
        else:  # a sidecar: the request goes on as the app sent it (as Istio's sidecars do)
            if xff:
                fwd.append((b"X-Forwarded-For", xff))
            if via:
                fwd.append((b"Via", via))
        if head.chunked:
            fwd.append((b"Transfer-Encoding", b"chunked"))
        if head.upgrade and upgrade:  # a WebSocket (or other upgrade) handshake: ask the backend for it too
            fwd.append((b"Connection", b"upgrade"))
            fwd.append((b"Upgrade", upgrade))
        if new_path is not None:
            target = new_path.encode("latin-1") + (b"?" + query_b if sep else b"")
        return bp, eps, (target, fwd), expect, mirrors, resp_mods, plan.rule

    async def _forward_within(self, rule: Rule, head: Head, ex: Exchange, bp: BackendPlan, eps: EndpointSet,
                              req: tuple[bytes, list[tuple[bytes, bytes]]], expect: bool,
                              mirrors: tuple[RequestMirror, ...], resp_mods: tuple[HeaderModifier, ...],
                              keep: bool) -> bool:
        """``_forward`` under the rule's request and backend timeouts (504 if nothing was answered yet)."""
        now = trio.current_time()
        deadline = INF
        if rule.request_timeout:
            deadline = now + rule.request_timeout
        if rule.backend_timeout:
            deadline = min(deadline, now + rule.backend_timeout)
        with trio.CancelScope(deadline=deadline) as cs:
            keep = await self._forward(head, ex, bp, eps, req, expect, mirrors, resp_mods, keep)
        if cs.cancelled_caught:
            if ex.response_started:
                raise Abort()
            raise Fail(504)
        return keep

    async def _forward_retrying(self, rule: Rule, head: Head, ex: Exchange, bp: BackendPlan, eps: EndpointSet,
                                req: tuple[bytes, list[tuple[bytes, bytes]]], expect: bool,
                                mirrors: tuple[RequestMirror, ...], resp_mods: tuple[HeaderModifier, ...],
                                keep: bool) -> bool:
        """Forward a request whose body has all arrived under the rule's retry policy (``model.Retry``).

        Each attempt goes to another endpoint when there is one (as Istio's default ``previous_hosts``
        predicate does) and is bounded by the backend timeout; the request timeout bounds them all, with
        the backoffs. A failed attempt is retried while attempts and the Service's budget last; the last
        attempt's answer goes to the client, or 503 when it could not reach the endpoint or was reset before
        an answer (as Envoy answers then), 504 when it timed out. Requests whose body is still arriving when
        the backend is chosen are read whole first, up to RETRY_BUFFER bytes (as Envoy buffers a request it
        may retry); a larger or chunked body still arriving is sent once, without retries."""
        retry = rule.retry
        assert retry is not None
        reader = self.reader
        if END not in reader.events:
            if expect:
                await self.stream.send_all(CONTINUE)
            while END not in reader.events:
                reader.feed(await self.stream.receive_some(RECV_SIZE))
        budget = self.engine.retry_budget(bp.key)
        out = [serialize_request_head(head.method, req[0], req[1])]
        ex.req_done = take_queued(reader, out, head.chunked)
        payload = b"".join(out)
        if mirrors:
            self._mirror(_sampled(mirrors), [payload])
        is_head = head.method == b"HEAD"
        whole = trio.CancelScope(deadline=trio.current_time() + rule.request_timeout if rule.request_timeout
                                 else INF)
        holding = False  # whether the budget let this request retry (it holds a retry until it ends)
        budget.start()
        try:
            with whole:
                attempt = 0
                idx = -1
                while True:
                    idx = eps.pick(exclude=idx) if len(eps.endpoints) > 1 else eps.pick()
                    if idx < 0:
                        raise Fail(503)
                    failed = 0
                    rh: Head | None = None
                    eps.active[idx] += 1
                    try:
                        with trio.CancelScope(deadline=trio.current_time() + rule.backend_timeout
                                              if rule.backend_timeout else INF) as one:
                            try:
                                rh = await self._attempt(ex, eps, idx, payload, is_head)
                            except Fail as f:
                                failed = f.status
                        if one.cancelled_caught:
                            failed = 504
                        if not failed and rh is not None and rh.status not in retry.codes:
                            return await self._relay(head, ex, ex.conn, rh, resp_mods, keep, is_head)
                        if attempt >= retry.attempts or not budget.try_retry(holding):
                            if failed:
                                raise Fail(failed)
                            return await self._relay(head, ex, ex.conn, rh, resp_mods, keep, is_head)
                        holding = True
                    finally:
                        eps.active[idx] -= 1
                    if ex.conn is not None:  # the failed answer is dropped with its connection
                        ex.conn.close()
                        ex.conn = None
                    attempt += 1
                    await trio.sleep(min(retry.backoff * 2 ** (attempt - 1), retry.backoff * 10))
        finally:
            budget.end(holding)
        if ex.response_started:
            raise Abort()
        raise Fail(504)

    async def _attempt(self, ex: Exchange, eps: EndpointSet, idx: int, payload: bytes, is_head: bool) -> Head:
        """Send a whole request to endpoint ``idx`` and read its final response head (interim ones skipped),
        leaving the connection in ``ex.conn``; Fail(503) when the endpoint cannot be reached or resets, Fail(502)
        when it does not answer in HTTP. A pooled connection the backend had closed is not re-sent on quietly
        here, as the plain path does: under a retry policy that is one failed attempt, counted and budgeted."""
        pool = self.engine.pool
        key = eps.keys[idx]
        ex.endpoint = eps.names[idx]
        conn = pool.take(key)
        if conn is None:
            try:
                conn = await pool.connect(key)
            except (OSError, trio.TooSlowError):
                raise Fail(503) from None
        ex.conn = conn  # type: ignore[assignment]
        ex.upstream_tls = conn.stream is not conn.raw  # type: ignore[union-attr]
        up = conn.reader  # type: ignore[union-attr]
        up.expect_no_body = is_head
        try:
            await conn.stream.send_all(payload)  # type: ignore[union-attr]
            rh = await up.next()
            while isinstance(rh, Head) and 100 <= rh.status < 200 and rh.status != 101:
                await up.next()  # the interim response's end
                rh = await up.next()
        except ProtocolError:
            raise Fail(502) from None
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            raise Fail(503) from None
        if not isinstance(rh, Head) or rh.status == 101:
            raise Fail(502)
        return rh

    async def _forward(self, head: Head, ex: Exchange, bp: BackendPlan, eps: EndpointSet,
                       req: tuple[bytes, list[tuple[bytes, bytes]]],
                       expect: bool, mirrors: tuple[RequestMirror, ...],
                       resp_mods: tuple[HeaderModifier, ...], keep: bool) -> bool:
        engine = self.engine
        pool = engine.pool
        idx = eps.pick()
        h2c = bp.h2c
        keys = eps.h2c_keys if h2c else eps.keys
        key: tuple = keys[idx]
        conn = pool.take(key)
        reused = conn is not None
        if conn is None:
            try:
                conn = await pool.connect(key)
            except (OSError, trio.TooSlowError):
                idx = eps.pick(exclude=idx)  # retry once on another endpoint: nothing was sent yet
                if idx < 0:
                    raise Fail(502) from None
                key = keys[idx]
                conn = pool.take(key)
                reused = conn is not None
                if conn is None:
                    try:
                        conn = await pool.connect(key)
                    except (OSError, trio.TooSlowError):
                        raise Fail(502) from None
        ex.conn = conn
        ex.endpoint = eps.names[idx]
        ex.upstream_tls = not h2c and conn.stream is not conn.raw  # type: ignore[union-attr]
        if h2c:
            return await self._forward_h2(head, ex, eps, idx, conn, reused, req, expect, resp_mods, keep)  # type: ignore
        reader = self.reader
        is_head = head.method == b"HEAD"
        out = [serialize_request_head(head.method, req[0], req[1])]
        if expect and not reader.events:
            await self.stream.send_all(CONTINUE)
        events = reader.events
        if events and events[0] is END and not head.chunked:  # no body: the common case, without a call
            events.popleft()
            ex.req_done = True
            payload = out[0]
        else:
            ex.req_done = take_queued(reader, out, head.chunked)
            payload = b"".join(out)
        copy: list[bytes] | None = None
        if mirrors:
            mirrors = _sampled(mirrors)
            if ex.req_done:
                self._mirror(mirrors, [payload])
            elif mirrors:
                copy = [payload]
        active = eps.active
        active[idx] += 1
        try:
            while True:
                up = conn.reader
                up.expect_no_body = is_head
                try:
                    stream = conn.stream
                    if stream is conn.raw:
                        sent = stream.send_now(payload)
                        if sent != len(payload):
                            await stream.send_all(memoryview(payload)[sent:])
                    else:
                        await stream.send_all(payload)  # TLS to the endpoint (mesh)
                    if not ex.req_done:
                        break
                    await trio.lowlevel.checkpoint()
                    events = up.events
                    while not events:  # up.next() inlined
                        up.feed(await stream.receive_some(RECV_SIZE))
                    rh = events.popleft()
                    break
                except ProtocolError:
                    raise Fail(502) from None  # not HTTP: the connection is closed by the caller
                except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
                    conn.close()
                    if not (reused and ex.req_done):
                        raise Fail(502) from None
                    # A pooled connection the backend had closed: one more try on a fresh one.
                    reused = False
                    try:
                        conn = ex.conn = await pool.connect(key)
                    except (OSError, trio.TooSlowError):
                        raise Fail(502) from None
            if ex.req_done:
                return await self._relay(head, ex, conn, rh, resp_mods, keep, is_head)
            failure: Fail | None = None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, head, ex, conn, mirrors, copy)
                try:
                    try:
                        rh = await conn.reader.next()
                    except (EOFError, ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                        raise Fail(502) from None
                    keep = await self._relay(head, ex, conn, rh, resp_mods, keep, is_head)
                except Fail as f:
                    failure = f
                    keep = False
                if not ex.req_done:  # answered before the body was all sent: stop sending, drop both sides
                    nursery.cancel_scope.cancel()
                    conn.close()
                    keep = False
            if failure is not None:
                raise failure
            return keep
        finally:
            active[idx] -= 1

    async def _forward_h2(self, head: Head, ex: Exchange, eps: EndpointSet, idx: int, conn: H2Conn, reused: bool,
                          req: tuple[bytes, list[tuple[bytes, bytes]]], expect: bool,
                          resp_mods: tuple[HeaderModifier, ...], keep: bool) -> bool:
        """The exchange with an h2c backend: one stream on a pooled connection."""
        reader = self.reader
        target, fwd = req
        authority = next((v for k, v in reversed(fwd) if k == b"Host"), b"")
        scheme = b"https" if self.port.state.ssl_context is not None else b"http"
        is_head = head.method == b"HEAD"
        if expect and not reader.events:
            await self.stream.send_all(CONTINUE)
        pieces: list[bytes] = []
        done = take_queued(reader, pieces, False)
        active = eps.active
        active[idx] += 1
        try:
            while True:
                try:
                    await conn.start(head.method, scheme, authority, target, fwd, end_stream=done and not pieces)
                    break
                except (trio.BrokenResourceError, trio.ClosedResourceError, h2.exceptions.ProtocolError):
                    conn.close()
                    if not reused:
                        raise Fail(502) from None
                    reused = False  # a pooled connection the backend had closed: one more try
                    try:
                        conn = ex.conn = await self.engine.pool.connect(conn.key)  # type: ignore[assignment]
                    except (OSError, trio.TooSlowError):
                        raise Fail(502) from None
            sid = conn.stream_id
            assert sid is not None
            failure: Fail | None = None

            async def pump() -> None:
                nonlocal pieces, done
                try:
                    while True:
                        for i, data in enumerate(pieces):
                            await conn.send_body(sid, data, done and i == len(pieces) - 1)
                        if done:
                            if not pieces:
                                conn.h2.end_stream(sid)
                                await conn.flush()
                            ex.req_done = True
                            return
                        try:
                            ev = await reader.next()
                        except (EOFError, ProtocolError):
                            raise Abort() from None
                        if ev is END:
                            pieces, done = [], True
                        else:
                            pieces = [ev]  # type: ignore[list-item]
                            done = take_queued(reader, pieces, False)
                except (trio.BrokenResourceError, trio.ClosedResourceError, h2.exceptions.ProtocolError):
                    conn.dead = True

            if done and not pieces:
                ex.req_done = True
            async with trio.open_nursery() as nursery:
                if not ex.req_done:
                    nursery.start_soon(pump)
                try:
                    try:
                        rh = await conn.reader.next()
                    except EOFError:
                        raise Fail(502) from None
                    keep = await self._relay(head, ex, conn, rh, resp_mods, keep, is_head)  # type: ignore[arg-type]
                except Fail as f:
                    failure = f
                    keep = False
                if not ex.req_done:
                    nursery.cancel_scope.cancel()
                    conn.close()
                    keep = False
            if failure is not None:
                raise failure
            return keep
        finally:
            active[idx] -= 1

    def _mirror(self, mirrors: tuple[RequestMirror, ...], copy: list[bytes]) -> None:
        payload = b"".join(copy)
        for m in mirrors:
            self.engine.spawn(_mirror, self.engine, m.backend, payload)

    async def _pump(self, head: Head, ex: Exchange, conn: UpstreamConn,
                    mirrors: tuple[RequestMirror, ...], copy: list[bytes] | None) -> None:
        """Stream the rest of the request body to the backend (keeping a copy for mirrors, up to a bound)."""
        kept = len(copy[0]) if copy else 0
        reader = self.reader
        chunked = head.chunked
        send = conn.stream.send_all
        while True:
            try:
                ev = await reader.next()
            except (EOFError, ProtocolError):
                raise Abort() from None
            out: list[bytes] = []
            if ev is END:
                ex.req_done = True
                if chunked:
                    out.append(LAST_CHUNK)
            else:
                out.append(chunk(ev) if chunked else ev)  # type: ignore[arg-type]
                ex.req_done = take_queued(reader, out, chunked)
            data = b"".join(out) if len(out) > 1 else out[0]
            if copy is not None:
                kept += len(data)
                if kept > MIRROR_MAX_BODY:
                    copy = None  # too large to keep: this request is not mirrored
                else:
                    copy.append(data)
                    if ex.req_done:
                        self._mirror(mirrors, copy)
            try:
                await send(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the backend stopped reading; its answer (or its absence) decides
            if ex.req_done:
                return

    async def _relay(self, head: Head, ex: Exchange, conn: UpstreamConn, rh: object,
                     resp_mods: tuple[HeaderModifier, ...], keep: bool, is_head: bool) -> bool:
        """Send the backend's response to the client as it arrives; True when the client connection stays."""
        up = conn.reader
        while isinstance(rh, Head) and rh.status < 200:
            if rh.status == 101:
                if head.upgrade and rh.upgrade and ex.req_done:
                    return await self._tunnel(ex, conn, rh, resp_mods)
                raise Fail(502)
            try:
                await up.next()  # the interim response's end
                rh = await up.next()
            except (EOFError, ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                raise Fail(502) from None
        if not isinstance(rh, Head):
            raise Fail(502)
        hdrs = rh.headers  # end-to-end fields only (the readers drop hop-by-hop ones); this head is used once
        for m in resp_mods:
            hdrs = modify_headers(hdrs, m)
        chunked = False
        if rh.has_body and not is_head and rh.content_length is None:
            if head.version == "1.1":
                chunked = True
                hdrs.append((b"Transfer-Encoding", b"chunked"))
            else:
                keep = False
        if self.port.draining:
            keep = False
        if not keep:
            hdrs.append((b"Connection", b"close"))
        elif head.version == "1.0":
            hdrs.append((b"Connection", b"keep-alive"))
        ex.status = rh.status
        out = [serialize_response_head(rh.status, REASONS.get(rh.status, b""), hdrs)]
        ex.response_started = True
        done = take_queued(up, out, chunked)
        stream = self.stream
        raw = self.raw if stream is self.raw else None
        sent = 0
        try:
            while True:
                data = b"".join(out) if len(out) > 1 else out[0]
                sent += len(data)
                if raw is not None:
                    n = raw.send_now(data)
                    if n != len(data):
                        await raw.send_all(memoryview(data)[n:])
                else:
                    await stream.send_all(data)
                if done:
                    break
                ev = await up.next()
                if ev is END:
                    done = True
                    out = [LAST_CHUNK] if chunked else [b""]
                else:
                    out = [chunk(ev) if chunked else ev]  # type: ignore[arg-type]
                    done = take_queued(up, out, chunked)
        except (EOFError, ProtocolError):
            raise Abort() from None  # the backend died or garbled its answer mid-body
        finally:
            ex.bytes_sent = sent
        if rh.keep_alive and ex.req_done and not up.events and not up.close_delimited and not conn.dead:
            ex.conn = None
            self.engine.pool.put(conn)
        else:
            conn.close()
            ex.conn = None
        return keep and ex.req_done

    async def _tunnel(self, ex: Exchange, conn: UpstreamConn, rh: Head,
                      resp_mods: tuple[HeaderModifier, ...]) -> bool:
        """The backend granted an upgrade (101): pass the 101 on, then relay bytes both ways until either side
        ends (a WebSocket through the proxy, as Envoy's upgrade support does). The connection ends with it."""
        hdrs = rh.headers
        for m in resp_mods:
            hdrs = modify_headers(hdrs, m)
        hdrs = [*hdrs, (b"Connection", b"Upgrade"), (b"Upgrade", rh.upgrade_to)]
        ex.status = 101
        ex.response_started = True
        client, backend = self.stream, conn.stream
        await client.send_all(serialize_response_head(101, REASONS[101], hdrs) + conn.reader.rest)
        sent = 0

        async def pipe(src: trio.abc.Stream, dst: trio.abc.Stream, first: bytes, done: trio.CancelScope) -> None:
            nonlocal sent
            try:
                if first:
                    await dst.send_all(first)
                while data := await src.receive_some(RECV_SIZE):
                    await dst.send_all(data)
                    if dst is client:
                        sent += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            done.cancel()  # one side ended: the tunnel ends (WebSocket closes in-band before the TCP close)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pipe, client, backend, self.reader.rest, nursery.cancel_scope)
                nursery.start_soon(pipe, backend, client, b"", nursery.cancel_scope)
        finally:
            ex.bytes_sent = sent
            conn.close()
            ex.conn = None
        return False

    # --- local answers ----------------------------------------------------------------------------

    async def _send_local(self, status: int, keep: bool, method: bytes, version: str,
                          extra: list[tuple[bytes, bytes]] | None = None, body: bytes | None = None,
                          body_done: bool = False) -> bool:
        """Answer from the proxy itself; True when the connection can serve another request.

        A request body not read yet is dropped if it already arrived, else the connection closes after this."""
        if keep:
            keep = (body_done or take_queued(self.reader, [], False)) and not self.port.draining  # a body still arriving: close instead of reading it
        if body is None:
            body = REASONS.get(status, b"Error") + b"\n"
        hdrs = [(b"Content-Length", b"%d" % len(body))]
        if body:
            hdrs.append((b"Content-Type", b"text/plain"))
        if extra:
            hdrs += extra
        if not keep:
            hdrs.append((b"Connection", b"close"))
        elif version == "1.0":
            hdrs.append((b"Connection", b"keep-alive"))
        data = serialize_response_head(status, REASONS.get(status, b"Status"), hdrs)
        if method != b"HEAD":
            data += body
        await self.stream.send_all(data)
        if not keep:
            self.linger = True
        return keep

    async def _linger(self) -> None:
        """After the proxy ended a connection with its own answer: stop sending and read away what the client
        still sends, for a while, before closing (nginx's lingering close). Closing with unread input makes
        the kernel send a reset, which can destroy the answer before the client has read it."""
        raw = self.raw
        try:
            raw.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        with trio.move_on_after(LINGER_TIMEOUT):
            drained = 0
            while drained < LINGER_MAX_BYTES:
                data = await raw.receive_some(RECV_SIZE)
                if not data:
                    return
                drained += len(data)


def _rewrite(f: URLRewrite, path: str, matched: object, host: bytes | None,
             new_path: str | None) -> tuple[bytes | None, str | None]:
    if f.hostname:
        host = f.hostname.encode("latin-1")
    if f.path is not None:
        new_path = rewrite_path(path, f.path, matched)  # type: ignore[arg-type]
    return host, new_path


def _sampled(mirrors: tuple[RequestMirror, ...]) -> tuple[RequestMirror, ...]:
    """The mirrors this request goes to: each with its ``percent`` chance."""
    return tuple(m for m in mirrors if m.percent >= 100 or random.random() * 100 < m.percent)


def _host_of(head: Head) -> str:
    for k, v in head.headers:
        if k.lower() == b"host":
            return v.decode("latin-1")
    return ""


async def _mirror(engine: "Engine", backend: Backend, payload: bytes) -> None:
    """Send a copy of a request to one endpoint of ``backend`` and read the answer away; errors are ignored."""
    eps = engine.endpoints.get((backend.namespace, backend.service, backend.port))
    if eps is None or backend.invalid is not None:
        return
    idx = eps.pick()
    if idx < 0:
        return
    ep = eps.endpoints[idx]
    with trio.move_on_after(MIRROR_TIMEOUT):
        try:
            conn = await engine.pool.connect((ep.ip, ep.port))
        except (OSError, trio.TooSlowError):
            return
        try:
            await conn.stream.send_all(payload)
            while await conn.reader.next() is not END:
                pass
        except (EOFError, ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            conn.close()
