"""``registry.k8s.io/gateway-api/conformance/echo-advanced``: Istio's echo app, the Gateway API mesh suite's backend.

Flags as Istio's ``server`` (pflag: ``--port=8080``, ``--port 8080``, repeatable;
a comma-separated list works too):

- ``--port=N``: HTTP on N — HTTP/1.1, and HTTP/2 cleartext with prior knowledge
  (h2c) on the same port; default ``8080`` when no ``--port`` is given;
- ``--grpc=N``: gRPC (``proto.EchoTestService/Echo``: ``Host``, the metadata
  as ``RequestHeader`` lines, ``StatusCode=200``, ..., ``Proto=GRPC``, ``Echo=<the
  request's message>``, ``Hostname``, in its ``message``); default ``7070``;
- ``--tcp=N``: TCP echo; default ``9090``;
- ``--tls=N``: port N (given again as ``--port``/``--grpc``/``--tcp``) speaks
  TLS, with the certificate and key files of ``--crt``/``--key`` (container
  paths, read through the pod's volume mounts). Istio's image carries
  ``/cert.crt`` and ``/cert.key``; kmesh has no image files, so when they do
  not exist a self-signed certificate (EC P-256, CN ``echo``) is made in
  memory at start and the log says so;
- ``--version=V`` (``ServiceVersion``, default empty as Istio's flag; the
  conformance manifests do not pass it), ``--cluster=C`` (``Cluster``).

Every HTTP answer is Istio's text body (``Content-Type: application/text``),
one ``Key=Value`` line each, in Istio's order::

    ServiceVersion=   ServicePort=8080   Host=echo   URL=/path?query   Cluster=
    IstioVersion=     Method=GET         Proto=HTTP/1.1                IP=<peer>
    Alpn=             RequestHeader=Name:value (sorted by name, one per value)
    Hostname=<the pod's hostname>

The query parameters Istio's echo honours: ``?delay=<Go duration>`` waits,
``?headers=name:value[,name:value]`` sets response headers, ``?codes=code[:slices][,...]``
answers one of those codes, drawn by weight (``500:1,200:1``: half and half).
The TCP echo answers ``StatusCode``, ``ServiceVersion``, ``ServicePort``,
``Cluster``, ``IP`` and ``Hostname`` lines once the client has sent its first
bytes, then echoes every byte until the client closes. The client that the
suite runs with ``kubectl exec POD -c echo -- client URL`` is
``kmesh.node.apps.echoadvanced_client``.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import ssl
import struct
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

from kmesh.node.apps import AppContext
from kmesh.node.apps.echobasic_h1 import serve_h1
from kmesh.node.apps.echobasic_h2 import PREFACE, peek_preface, serve_h2
from kmesh.node.apps.echobasic_handler import DurationError, EchoRequest, EchoResponse, canonical_header, parse_go_duration
from kmesh.node.apps.echobasic_tls import accept_tls

DEFAULT_HTTP, DEFAULT_GRPC, DEFAULT_TCP = 8080, 7070, 9090
GRPC_SERVICE = "proto.EchoTestService"


class FlagError(ValueError):
    """A bad command line (exit 1, as cobra does)."""


@dataclass
class Options:
    """The server's flags."""

    http: list[int]
    grpc: list[int]
    tcp: list[int]
    tls: list[int]
    crt: str = ""
    key: str = ""
    version: str = ""
    cluster: str = ""


_LISTS = ("port", "grpc", "tcp", "tls")
_STRINGS = ("crt", "key", "version", "cluster", "istio-version")
_IGNORED_LISTS = ("udp", "hbone", "double-hbone", "server-first", "xds-grpc-server", "bind-ip", "bind-localhost")


def parse_args(args: list[str]) -> Options:
    """pflag's rules: ``--name=v`` or ``--name v``; int slices repeat and accept ``a,b``."""
    lists: dict[str, list[int] | None] = {n: None for n in _LISTS}
    strings: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-"):
            raise FlagError(f"unexpected argument {arg!r}")
        name, eq, value = arg.lstrip("-").partition("=")
        known = name in _LISTS or name in _STRINGS or name in _IGNORED_LISTS
        if not known:
            if name in ("disable-alpn", "proxy-protocol") and not eq:
                continue
            raise FlagError(f"unknown flag: --{name}")
        if not eq:
            if i >= len(args):
                raise FlagError(f"flag needs an argument: --{name}")
            value = args[i]
            i += 1
        if name in _LISTS:
            try:
                ports = [int(p) for p in value.split(",") if p.strip()]
            except ValueError:
                raise FlagError(f'invalid argument "{value}" for "--{name}" flag') from None
            if any(not 0 < p < 65536 for p in ports):
                raise FlagError(f'invalid argument "{value}" for "--{name}" flag: not a port')
            lists[name] = (lists[name] or []) + ports
        elif name in _STRINGS:
            strings[name] = value
    return Options(
        http=lists["port"] if lists["port"] is not None else [DEFAULT_HTTP],
        grpc=lists["grpc"] if lists["grpc"] is not None else [DEFAULT_GRPC],
        tcp=lists["tcp"] if lists["tcp"] is not None else [DEFAULT_TCP],
        tls=lists["tls"] or [],
        crt=strings.get("crt", ""), key=strings.get("key", ""),
        version=strings.get("version", ""), cluster=strings.get("cluster", ""),
    )


# ------------------------------------------------------------ certificates

_SELF_SIGNED: tuple[bytes, bytes] | None = None


def self_signed_pem() -> tuple[bytes, bytes]:
    """A self-signed certificate and key (PEM) for ``echo``, made once per process."""
    global _SELF_SIGNED
    if _SELF_SIGNED is None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "echo")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("echo"), x509.DNSName("*")]), critical=False)
            .sign(key, hashes.SHA256())
        )
        _SELF_SIGNED = (
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
        )
    return _SELF_SIGNED


def tls_context(crt: str | None, key: str | None, alpn: list[str] | None) -> ssl.SSLContext:
    """A server context from the files, or (None) from the in-memory self-signed pair."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if crt and key:
        sctx.load_cert_chain(crt, key)
    else:
        cert_pem, key_pem = self_signed_pem()
        # ssl loads chains from files only: a private temporary file, removed at once.
        with tempfile.NamedTemporaryFile("wb", suffix=".pem") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(cert_pem + key_pem)
            f.flush()
            sctx.load_cert_chain(f.name)
    if alpn:
        sctx.set_alpn_protocols(alpn)
    return sctx


# ------------------------------------------------------------ the answer


def _field(key: str, value: str) -> str:
    return f"{key}={value}\n"


class Echo:
    """What one echo-advanced process answers: its version, cluster and hostname."""

    def __init__(self, opts: Options, hostname: str) -> None:
        self.opts = opts
        self.hostname = hostname

    def payload(self, port: int, req: EchoRequest, peer: str, alpn: str) -> str:
        """Istio's addResponsePayload."""
        out = [
            _field("ServiceVersion", self.opts.version), _field("ServicePort", str(port)),
            _field("Host", req.host), _field("URL", req.target), _field("Cluster", self.opts.cluster),
            _field("IstioVersion", ""), _field("Method", req.method), _field("Proto", req.proto),
            _field("IP", peer), _field("Alpn", alpn),
        ]
        headers: dict[str, list[str]] = {}
        for name, value in req.headers:
            key = canonical_header(name)
            if key == "Host" or name.startswith(":"):
                continue
            headers.setdefault(key, []).append(value)
        for key in sorted(headers):
            out.extend(_field("RequestHeader", f"{key}:{v}") for v in headers[key])
        out.append(_field("Hostname", self.hostname))
        return "".join(out)

    async def http(self, port: int, req: EchoRequest, peer: str, alpn: str) -> EchoResponse:
        """Istio's httpHandler.echo: delay, response headers, codes, then the payload."""
        query = parse_qs(urlsplit(req.target).query, keep_blank_values=True)
        errors: list[str] = []
        delay = (query.get("delay") or [""])[0]
        if delay:
            try:
                await trio.sleep(max(parse_go_duration(delay), 0.0))
            except DurationError as exc:
                errors.append(f"error delaying response error: {exc}")
        headers: list[tuple[str, str]] = []
        for item in filter(None, (query.get("headers") or [""])[0].split(",")):
            parts = item.split(":")
            if len(parts) != 2:
                errors.append(f'response headers error: invalid "{item}" (want name:value)')
                break
            headers = [h for h in headers if h[0] != parts[0]] + [(parts[0], parts[1])]
        code, err = pick_code((query.get("codes") or [""])[0])
        if err:
            errors.append(f"codes error: {err}")
        body = "".join(e + "\n" for e in errors) + self.payload(port, req, peer, alpn)
        return EchoResponse(code, [*headers, ("Content-Type", "application/text")], body.encode())

    def grpc_payload(self, port: int, metadata: list[tuple[str, str]], peer: str, message: str) -> str:
        """Istio's EchoGrpcHandler.Echo: Host and the metadata (lower-case keys, ``:authority`` among them),
        then the fixed fields, the request's message and the hostname."""
        out = [_field("Host", v) for n, v in metadata if n == ":authority"]
        out += [_field("RequestHeader", f"{n}:{v}") for n, v in metadata if not n.endswith("-bin")]
        out += [
            _field("StatusCode", "200"), _field("ServiceVersion", self.opts.version),
            _field("ServicePort", str(port)), _field("Cluster", self.opts.cluster), _field("IP", peer),
            _field("IstioVersion", ""), _field("Proto", "GRPC"), _field("Echo", message),
            _field("Hostname", self.hostname),
        ]
        return "".join(out)

    def tcp_greeting(self, port: int, peer: str) -> bytes:
        """The lines the TCP echo writes before echoing."""
        return "".join([
            _field("StatusCode", "200"), _field("ServiceVersion", self.opts.version),
            _field("ServicePort", str(port)), _field("Cluster", self.opts.cluster), _field("IP", peer),
            _field("Hostname", self.hostname),
        ]).encode()


def pick_code(spec: str) -> tuple[int, str]:
    """Istio's ``?codes=``: one of the codes, drawn by slices; (400, error) for a bad list."""
    flavors: list[tuple[int, int]] = []
    for item in (spec or "200:1").split(","):
        parts = item.split(":")
        try:
            if len(parts) > 2:
                raise ValueError(f'invalid "{item}" (want code or code:count)')
            code = int(parts[0])
            if not 200 <= code < 600:
                raise ValueError(f"invalid HTTP response code {code}")
            slices = int(parts[1]) if len(parts) > 1 else 1
            if slices < 0:
                raise ValueError(f"invalid count {slices}")
        except ValueError as exc:
            return 400, str(exc)
        flavors.append((code, slices))
    total = sum(s for _, s in flavors)
    if total <= 0:
        return flavors[-1][0], ""
    slot = random.randrange(total)
    for code, slices in flavors:
        if slot < slices:
            return code, ""
        slot -= slices
    return flavors[-1][0], ""


def _peer(stream: trio.abc.Stream) -> str:
    while not isinstance(stream, trio.SocketStream):
        stream = getattr(stream, "transport_stream", None)  # type: ignore[assignment]
        if stream is None:
            return ""
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return ""


# ------------------------------------------------------------ servers


async def serve_http_conn(echo: Echo, port: int, stream: trio.abc.Stream, alpn: str = "") -> None:
    """HTTP/1.1 or (prior knowledge, or ALPN h2) HTTP/2 on one connection."""
    peer = _peer(stream)

    async def handle(req: EchoRequest) -> EchoResponse:
        return await echo.http(port, req, peer, alpn)

    if alpn == "h2":
        await serve_h2(stream, handle)
        return
    try:
        first = await peek_preface(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await trio.aclose_forcefully(stream)
        return
    if first.startswith(PREFACE):
        await serve_h2(stream, handle, prefix=first)
    else:
        await serve_h1(stream, handle, prefix=first)


async def serve_tcp_conn(echo: Echo, port: int, stream: trio.abc.Stream) -> None:
    """Istio's TCP echo: the greeting lines after the first read, then every byte back."""
    peer = _peer(stream)
    first = True
    try:
        while True:
            data = await stream.receive_some(65536)
            if first:
                await stream.send_all(echo.tcp_greeting(port, peer))
                first = False
            if not data:
                break
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


def _pb_string(number: int, value: str) -> bytes:
    data = value.encode()
    out = bytearray([number << 3 | 2])
    n = len(data)
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + data


def _pb_first_string(msg: bytes, number: int) -> str:
    """Field ``number`` (a string) of a protobuf message, "" when absent."""
    i = 0
    while i < len(msg):
        key, i = _varint(msg, i)
        wire = key & 7
        if wire == 0:
            _, i = _varint(msg, i)
        elif wire == 2:
            n, i = _varint(msg, i)
            if key >> 3 == number:
                return msg[i:i + n].decode("utf-8", "replace")
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            break
    return ""


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while i < len(buf):
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return n, i


async def serve_grpc_conn(echo: Echo, port: int, stream: trio.abc.Stream) -> None:
    """``proto.EchoTestService/Echo`` over HTTP/2 (TLS on a ``--tls`` port): the answer's ``message`` is
    ``grpc_payload``; other methods get UNIMPLEMENTED."""
    peer = _peer(stream)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    heads: dict[int, list[tuple[str, str]]] = {}
    bodies: dict[int, bytes] = {}

    def answer(sid: int) -> None:
        headers = heads.pop(sid, [])
        body = bodies.pop(sid, b"")
        path = next((v for n, v in headers if n == ":path"), "")
        ok = [(":status", "200"), ("content-type", "application/grpc")]
        if path != f"/{GRPC_SERVICE}/Echo":
            conn.send_headers(sid, [*ok, ("grpc-status", "12"), ("grpc-message", f"unknown method {path}")],
                              end_stream=True)
            return
        message = _pb_first_string(body[5:], 1) if len(body) >= 5 else ""
        metadata = [(n, v) for n, v in headers if n == ":authority" or not n.startswith(":") and n != "te"]
        msg = _pb_string(1, echo.grpc_payload(port, metadata, peer, message))
        conn.send_headers(sid, ok)
        conn.send_data(sid, struct.pack("!BI", 0, len(msg)) + msg)
        conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)

    try:
        conn.initiate_connection()
        await stream.send_all(conn.data_to_send())
        while data := await stream.receive_some(65536):
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                break
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    heads[ev.stream_id] = [(str(n), str(v)) for n, v in ev.headers]
                elif isinstance(ev, h2.events.DataReceived):
                    bodies[ev.stream_id] = bodies.get(ev.stream_id, b"") + ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in heads:
                    answer(ev.stream_id)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    break
            out = conn.data_to_send()
            if out:
                await stream.send_all(out)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def main(ctx: AppContext) -> int | None:
    """Serve every port until stopped."""
    try:
        opts = parse_args(ctx.args)
    except FlagError as exc:
        ctx.log(f"Error: {exc}")
        return 1
    echo = Echo(opts, ctx.hostname)
    contexts: dict[str, ssl.SSLContext] = {}
    if opts.tls:
        crt = str(ctx.host_path(opts.crt)) if opts.crt else ""
        key = str(ctx.host_path(opts.key)) if opts.key else ""
        if not (crt and key and os.path.isfile(crt) and os.path.isfile(key)):
            ctx.log(f"certificate {opts.crt or '(none)'} / key {opts.key or '(none)'} not found: "
                    "serving TLS with a self-signed certificate made in memory (CN echo)")
            crt = key = ""
        try:
            contexts = {"http": tls_context(crt, key, ["h2", "http/1.1", "http/1.0"]),
                        "grpc": tls_context(crt, key, ["h2"]), "tcp": tls_context(crt, key, None)}
        except (OSError, ssl.SSLError) as exc:
            ctx.log(f"could not load TLS keys: {exc}")
            return 1
    plan: list[tuple[str, int]] = [("http", p) for p in opts.http] + [("grpc", p) for p in opts.grpc]
    plan += [("tcp", p) for p in opts.tcp]
    listeners: list[tuple[str, int, trio.SocketListener]] = []
    try:
        for kind, port in plan:
            listeners.append((kind, port, await ctx.listen_tcp(port)))
    except OSError as exc:
        ctx.log(f"failed to listen: {exc}")
        for _, _, lst in listeners:
            await lst.aclose()
        return 1

    def handler(kind: str, port: int) -> Callable[[trio.SocketStream], Awaitable[None]]:
        sctx = contexts.get(kind) if port in opts.tls else None

        async def serve(stream: trio.SocketStream) -> None:
            s: trio.abc.Stream = stream
            alpn = ""
            if sctx is not None:
                try:
                    s, _ = await accept_tls(stream, sctx)
                except (trio.BrokenResourceError, OSError):
                    return
                alpn = s.selected_alpn_protocol() or ""
            if kind == "http":
                await serve_http_conn(echo, port, s, alpn)
            elif kind == "grpc":
                await serve_grpc_conn(echo, port, s)
            else:
                await serve_tcp_conn(echo, port, s)

        return serve

    async with trio.open_nursery() as n:
        for kind, port, lst in listeners:
            label = {"http": "HTTP/1.1", "grpc": "GRPC", "tcp": "TCP"}[kind]
            ctx.log(f"Listening {label}{' (over TLS)' if port in opts.tls else ''} on {port}")
            n.start_soon(trio.serve_listeners, handler(kind, port), [lst])
        await ctx.sigterm.wait()
        n.cancel_scope.cancel()
    return 0
