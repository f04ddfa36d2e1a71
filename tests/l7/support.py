"""Test parts for the L7 engine: small h11 backends on loopback, a started engine, server certificates."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import h11
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kmesh.l7.engine import Engine
from kmesh.l7.model import Backend as BackendRef, Config, Endpoint, HostMatch, Listener, Match, RouteEntry, Rule


@dataclass
class Backend:
    """An HTTP/1.1 server on 127.0.0.1 that answers with JSON naming itself and echoing what it got.

    Paths: ``/echo`` streams the request body back as it reads it; ``/big?n=N``
    sends N bytes; ``/upload`` reads the body and answers its size and sha256;
    ``/hang`` never answers (and ends when the peer closes); ``/wait`` answers once ``release`` is set;
    anything else answers ``{"backend", "method", "path", "host", "headers"}``.
    """

    name: str
    port: int = 0
    requests: list[dict] = field(default_factory=list)
    connections: int = 0
    release: trio.Event = field(default_factory=trio.Event)
    arrived: trio.Event = field(default_factory=trio.Event)
    answered: trio.Event = field(default_factory=trio.Event)
    closed: int = 0
    waiting: trio.MemorySendChannel = field(init=False)
    waiters: trio.MemoryReceiveChannel = field(init=False)

    seen_send: trio.MemorySendChannel = field(init=False)
    seen: trio.MemoryReceiveChannel = field(init=False)

    def __post_init__(self) -> None:
        self.waiting, self.waiters = trio.open_memory_channel(1000)
        self.seen_send, self.seen = trio.open_memory_channel(100000)

    async def start(self, nursery: trio.Nursery) -> "Backend":
        listeners = await nursery.start(functools.partial(trio.serve_tcp, self._serve, 0, host="127.0.0.1"))
        self.port = listeners[0].socket.getsockname()[1]
        return self

    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port, pod=self.name)

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                req = await _next(conn, stream)
                if isinstance(req, h11.ConnectionClosed) or req is None:
                    return
                assert isinstance(req, h11.Request), req
                await self._answer(conn, stream, req)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return
        finally:
            self.closed += 1
            await trio.aclose_forcefully(stream)

    async def _answer(self, conn: h11.Connection, stream: trio.SocketStream, req: h11.Request) -> None:
        target = req.target.decode()
        path, _, query = target.partition("?")
        headers: dict[str, str] = {}
        for k, v in req.headers:
            key = k.decode().lower()
            headers[key] = headers[key] + "," + v.decode() if key in headers else v.decode()
        info = {"backend": self.name, "method": req.method.decode(), "path": target, "host": headers.get("host"),
                "headers": headers}
        self.requests.append(info)
        self.answered.set()

        async def send(event: object) -> None:
            await stream.send_all(conn.send(event))  # type: ignore[arg-type]

        if path == "/echo":
            await send(h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]))
            while True:
                ev = await _next(conn, stream)
                if isinstance(ev, h11.EndOfMessage):
                    break
                assert isinstance(ev, h11.Data)
                await send(h11.Data(data=bytes(ev.data)))
            await send(h11.EndOfMessage())
            return
        body = b""
        digest = hashlib.sha256()
        size = 0
        while True:
            ev = await _next(conn, stream)
            if isinstance(ev, h11.EndOfMessage):
                break
            assert isinstance(ev, h11.Data), ev
            size += len(ev.data)
            digest.update(ev.data)
        info["size"] = size
        self.seen_send.send_nowait(info)
        if path == "/hang":  # never answer; end when the peer closes
            self.arrived.set()
            while await stream.receive_some(65536):
                pass
            raise trio.BrokenResourceError("peer went away")
        if path == "/wait":
            self.arrived.set()
            self.waiting.send_nowait(target)
            await self.release.wait()
        if path == "/big":
            n = int(query.split("=")[1])
            await send(h11.Response(status_code=200, headers=[("Content-Length", str(n))]))
            piece = b"x" * 65536
            while n > 0:
                await send(h11.Data(data=piece[:n]))
                n -= len(piece)
            await send(h11.EndOfMessage())
            return
        if path == "/upload":
            body = json.dumps({"size": size, "sha256": digest.hexdigest(), "backend": self.name}).encode()
        else:
            body = json.dumps(info).encode()
        await send(h11.Response(status_code=200, headers=[("Content-Type", "application/json"),
                                                          ("Content-Length", str(len(body))),
                                                          ("X-Backend", self.name)]))
        if req.method != b"HEAD":
            await send(h11.Data(data=body))
        await send(h11.EndOfMessage())


async def _next(conn: h11.Connection, stream: trio.SocketStream) -> object:
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            continue
        return ev


def ref(b: Backend | str, weight: int = 1, **kw: object) -> BackendRef:
    """A Backend reference to test backend ``b`` (the service is named after it)."""
    name = b if isinstance(b, str) else b.name
    return BackendRef("default", name, 80, weight=weight, **kw)  # type: ignore[arg-type]


def simple_config(*backends: Backend, port: int = 80, rule_kw: dict | None = None, **listener_kw: object) -> Config:
    """One listener with one catch-all entry over ``backends`` (equal weights)."""
    rule = Rule(backends=tuple(ref(b) for b in backends), name="all", **(rule_kw or {}))
    return Config((Listener(port, (RouteEntry(HostMatch(), Match(), rule),), **listener_kw),))  # type: ignore[arg-type]


def set_backends(engine: Engine, *backends: Backend) -> None:
    """Give the engine each backend's endpoint under its own service name."""
    for b in backends:
        engine.set_endpoints("default", b.name, 80, [b.endpoint()])


async def start_engine(nursery: trio.Nursery, config: Config, ports: tuple[int, ...] = (80, 443, 8080),
                       **kw: object) -> Engine:
    """An engine on 127.0.0.1 serving ``config``, its listener ports mapped to free ones."""
    engine = Engine("127.0.0.1", port_map={p: 0 for p in ports}, **kw)  # type: ignore[arg-type]
    await engine.apply(config)
    await nursery.start(engine.serve)
    return engine


def url(engine: Engine, port: int = 80, path: str = "/", scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{engine.address(port)[1]}{path}"


def server_cert(*names: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
                ) -> tuple[bytes, bytes]:
    """A self-signed server certificate for ``names`` (SANs; the first is the CN) and its key, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def count_by(items: list[dict], key: Callable[[dict], str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items:
        out[key(it)] = out.get(key(it), 0) + 1
    return out
