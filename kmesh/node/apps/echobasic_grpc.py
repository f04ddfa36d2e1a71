"""echo-basic's gRPC mode (``GRPC_ECHO_SERVER``): the conformance suite's ``GrpcEcho`` service over HTTP/2.

Service ``gateway_api_conformance.echo_basic.grpcecho.GrpcEcho``: ``Echo`` and
``EchoTwo`` answer an ``EchoResponse`` whose ``assertions`` carry the full
method name, the request metadata (``:authority``, ``content-type``,
``user-agent`` and every non-reserved header, as grpc-go hands them over),
the authority, the pod context and, on the TLS port, the TLS details;
``EchoThree`` is unimplemented (status 12), as any other method. Cleartext on
``HTTP_PORT`` (3000), TLS on ``HTTPS_PORT`` (8443) with ``TLS_SERVER_CERT`` and
``TLS_SERVER_PRIV_KEY``. The protobuf messages are small enough to be written
by hand here.
"""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

from kmesh.node.apps import AppContext
from kmesh.node.apps.echobasic_tls import accept_tls, server_tls_context, tls_assertions

SERVICE = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"
METHODS = ("Echo", "EchoTwo")
UNIMPLEMENTED = 12
# grpc-go's reserved headers (kept out of the metadata), less the three it hands on anyway.
_RESERVED = frozenset({":method", ":path", ":scheme", "te", "grpc-message-type", "grpc-encoding", "grpc-message",
                       "grpc-status", "grpc-timeout", "grpc-status-details-bin"})


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_field(number: int, value: bytes | str, *, always: bool = False) -> bytes:
    """One length-delimited protobuf field (a string or an encoded message); proto3 omits empty strings."""
    data = value.encode() if isinstance(value, str) else value
    if not data and not always:
        return b""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def echo_response(method: str, headers: list[tuple[str, str]], authority: str, context: dict[str, str],
                  tls: dict[str, object] | None) -> bytes:
    """The encoded ``EchoResponse`` (its ``assertions``)."""
    hdrs = b"".join(pb_field(2, pb_field(1, k) + pb_field(2, v), always=True) for k, v in headers)
    ctx = (pb_field(1, context["namespace"]) + pb_field(2, context["ingress"]) + pb_field(3, context["service"])
           + pb_field(4, context["pod"]))
    body = pb_field(1, f"/{SERVICE}/{method}") + hdrs + pb_field(3, authority) + pb_field(4, ctx, always=True)
    if tls is not None:
        peers = tls.get("peerCertificates") or []
        t = (pb_field(1, str(tls.get("version", ""))) + pb_field(2, str(tls.get("negotiatedProtocol", "")))
             + pb_field(3, str(tls.get("serverName", ""))) + pb_field(4, str(tls.get("cipherSuite", "")))
             + b"".join(pb_field(5, str(p)) for p in peers))  # type: ignore[union-attr]
        body += pb_field(5, t, always=True)
    return pb_field(1, body, always=True)


class _GrpcConn:
    """One HTTP/2 connection of the gRPC server."""

    def __init__(self, stream: trio.abc.Stream, context: dict[str, str], tls: dict[str, object] | None) -> None:
        self.stream = stream
        self.context = context
        self.tls = tls
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.headers: dict[int, list[tuple[str, str]]] = {}

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    def answer(self, stream_id: int) -> None:
        headers = self.headers.pop(stream_id)
        path = next((v for n, v in headers if n == ":path"), "")
        service, _, method = path.lstrip("/").partition("/")
        ok = [(":status", "200"), ("content-type", "application/grpc")]
        if service != SERVICE or method not in METHODS:
            message = (f"unknown service {service}" if service != SERVICE
                       else f"method {method} not implemented" if method == "EchoThree"
                       else f"unknown method {method} for service {service}")
            self.conn.send_headers(stream_id, [*ok, ("grpc-status", str(UNIMPLEMENTED)), ("grpc-message", message)],
                                   end_stream=True)
            return
        metadata = [(n, v) for n, v in headers if n not in _RESERVED]
        authority = next((v for n, v in headers if n == ":authority"), "")
        msg = echo_response(method, metadata, authority, self.context, self.tls)
        self.conn.send_headers(stream_id, ok)
        self.conn.send_data(stream_id, struct.pack("!BI", 0, len(msg)) + msg)
        self.conn.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)

    async def run(self) -> None:
        self.conn.initiate_connection()
        await self.flush()
        while data := await self.stream.receive_some(65536):
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                await self.flush()
                return
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    self.headers[ev.stream_id] = [(str(n), str(v)) for n, v in ev.headers]
                    if ev.stream_ended is not None:
                        self.answer(ev.stream_id)
                elif isinstance(ev, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in self.headers:
                    self.answer(ev.stream_id)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    await self.flush()
                    return
            await self.flush()


async def serve_grpc_mode(ctx: AppContext) -> int:
    """The gRPC echo on the cleartext and (with a certificate) TLS ports until stopped."""
    env = ctx.env
    context = {"namespace": env.get("NAMESPACE", ""), "ingress": env.get("INGRESS_NAME", ""),
               "service": env.get("SERVICE_NAME", ""), "pod": env.get("POD_NAME", "")}
    cert, key = env.get("TLS_SERVER_CERT", ""), env.get("TLS_SERVER_PRIV_KEY", "")
    try:
        listeners = [(await ctx.listen_tcp(int(env.get("HTTP_PORT") or "3000")), None)]
        if cert and key:
            sctx = server_tls_context(str(ctx.host_path(cert)), str(ctx.host_path(key)), alpn=False)
            sctx.set_alpn_protocols(["h2"])
            listeners.append((await ctx.listen_tcp(int(env.get("HTTPS_PORT") or "8443")), sctx))
    except (OSError, ValueError) as exc:
        ctx.log(f"failed to listen: {exc}")
        return 1

    async def conn(stream: trio.SocketStream, sctx: object) -> None:
        s: trio.abc.Stream = stream
        tls = None
        try:
            if sctx is not None:
                s, server_name = await accept_tls(stream, sctx)  # type: ignore[arg-type]
                tls = tls_assertions(s, server_name)
            await _GrpcConn(s, context, tls).run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(s)

    async with trio.open_nursery() as n:
        for listener, sctx in listeners:
            ctx.log(f"{'secure' if sctx else 'plaintext'} server listening at {listener.socket.getsockname()}")

            async def handler(stream: trio.SocketStream, sctx: object = sctx) -> None:
                await conn(stream, sctx)

            n.start_soon(trio.serve_listeners, handler, [listener])
        await ctx.sigterm.wait()
        n.cancel_scope.cancel()
    return 0
