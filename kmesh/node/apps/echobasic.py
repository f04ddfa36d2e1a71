"""``gcr.io/k8s-staging-gateway-api/echo-basic`` (now ``registry.k8s.io/gateway-api/conformance/echo-basic``):
the Gateway API conformance backend.

Ports, from the container's env as upstream reads them: HTTP on ``HTTP_PORT``
(3000); HTTP/2 cleartext on ``H2C_PORT`` (3001: prior-knowledge HTTP/2 is
echoed, an HTTP/1 request only with ``Upgrade: h2c``, else 400 "Expected h2c
request"); HTTPS on ``HTTPS_PORT`` (8443) when ``TLS_SERVER_CERT`` and
``TLS_SERVER_PRIVKEY`` name a certificate and key (ALPN h2 and http/1.1;
``TLS_CLIENT_CACERTS`` asks for, and verifies, client certificates). The file
names are container paths: they are read through the pod's volume mounts
(``AppContext.host_path``), so a Secret volume at ``/etc/secret-volume`` works
as in the conformance manifests. The answers are in ``echobasic_handler``.
``TCP_ECHO_SERVER``/``UDP_ECHO_SERVER`` switch to the L4 echoes of
``echobasic_l4``, ``GRPC_ECHO_SERVER`` to the gRPC echo of ``echobasic_grpc``.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import trio

from kmesh.node.apps import AppContext
from kmesh.node.apps.echobasic_grpc import serve_grpc_mode
from kmesh.node.apps.echobasic_h1 import Handler, serve_h1
from kmesh.node.apps.echobasic_h2 import PREFACE, peek_preface, serve_h2
from kmesh.node.apps.echobasic_handler import EchoRequest, EchoResponse, EchoServer
from kmesh.node.apps.echobasic_l4 import serve_tcp_mode, serve_udp_mode
from kmesh.node.apps.echobasic_tls import accept_tls, server_tls_context, tls_assertions

def h2c_handler(server: EchoServer) -> Handler:
    """The H2C port's handler: the echo for HTTP/2 or an ``Upgrade: h2c`` request, else 400."""

    async def handle(req: EchoRequest) -> EchoResponse:
        upgrade = next((v for n, v in req.headers if n.lower() == "upgrade"), "")
        if req.proto != "HTTP/2.0" and upgrade != "h2c":
            return EchoResponse(400, [("Content-Type", "text/plain; charset=utf-8")], b"Expected h2c request")
        return await server.echo(req, urlsplit(req.target).query)

    return handle


async def main(ctx: AppContext) -> int | None:
    """Serve the echo on the HTTP, H2C and (with a certificate) HTTPS ports until stopped."""
    env = ctx.env
    if env.get("GRPC_ECHO_SERVER"):
        return await serve_grpc_mode(ctx)
    if env.get("TCP_ECHO_SERVER"):
        return await serve_tcp_mode(ctx)
    if env.get("UDP_ECHO_SERVER"):
        return await serve_udp_mode(ctx)
    http_port = env.get("HTTP_PORT") or "3000"
    h2c_port = env.get("H2C_PORT") or "3001"
    https_port = env.get("HTTPS_PORT") or "8443"
    server = EchoServer(env, http_port)
    sctx: ssl.SSLContext | None = None
    cert, key = env.get("TLS_SERVER_CERT", ""), env.get("TLS_SERVER_PRIVKEY", "")
    try:
        if cert and key:
            ca = env.get("TLS_CLIENT_CACERTS", "")
            sctx = server_tls_context(str(ctx.host_path(cert)), str(ctx.host_path(key)),
                                      str(ctx.host_path(ca)) if ca else None)
        listeners = [(await ctx.listen_tcp(int(http_port)), "http"), (await ctx.listen_tcp(int(h2c_port)), "h2c")]
        if sctx is not None:
            listeners.append((await ctx.listen_tcp(int(https_port)), "https"))
    except (OSError, ValueError, ssl.SSLError) as exc:
        ctx.log(f"panic: Failed to start listening: {exc}")
        return 2

    async def plain(stream: trio.SocketStream) -> None:
        await serve_h1(stream, server.handle)

    h2c = h2c_handler(server)

    async def cleartext_h2(stream: trio.SocketStream) -> None:
        try:
            first = await peek_preface(stream)
        except (trio.BrokenResourceError, OSError):
            await trio.aclose_forcefully(stream)
            return
        if first.startswith(PREFACE):
            await serve_h2(stream, h2c, prefix=first)
        else:
            await serve_h1(stream, h2c, prefix=first)

    async def secure(stream: trio.SocketStream) -> None:
        assert sctx is not None
        try:
            tls, server_name = await accept_tls(stream, sctx)
        except (trio.BrokenResourceError, OSError):
            return
        info = tls_assertions(tls, server_name)
        if tls.selected_alpn_protocol() == "h2":
            await serve_h2(tls, server.handle, tls=info)
        else:
            await serve_h1(tls, server.handle, tls=info)

    handlers = {"http": plain, "h2c": cleartext_h2, "https": secure}
    ports = {"http": http_port, "h2c": h2c_port, "https": https_port}
    async with trio.open_nursery() as n:
        for listener, kind in listeners:
            ctx.log(f"Starting server, listening on port {ports[kind]} ({kind})")
            n.start_soon(trio.serve_listeners, handlers[kind], [listener])
        await ctx.sigterm.wait()
        n.cancel_scope.cancel()
    return 0
