"""echo-basic's TCP (``TCP_ECHO_SERVER``) and UDP (``UDP_ECHO_SERVER``) echo modes.

TCP, on ``TCP_PORT`` (3000) and, with ``TLS_SERVER_CERT``/``TLS_SERVER_PRIV_KEY``,
TLS on ``TLS_PORT`` (8443): the server greets with ``Gateway API Test TCP
Server``, then answers lines: ``TEST`` → a JSON line with the pod context,
ports, ``isTLS`` and the TLS details; ``IS_TLS`` → ``true``/``false``;
``PING`` → ``PONG``. UDP, on ``UDP_PORT`` (8080): every datagram (its first
1024 bytes) is answered with ``{"request": <payload>, "namespace", "ingress",
"service", "pod"}``.
"""

from __future__ import annotations

import ssl

import trio

from kmesh.node.apps import AppContext
from kmesh.node.apps.echobasic_handler import go_json
from kmesh.node.apps.echobasic_tls import GO_CIPHER_NAMES, accept_tls, server_tls_context

WELCOME = b"Gateway API Test TCP Server\n"
_TLS_NAMES = {"TLSv1.3": "TLS 1.3", "TLSv1.2": "TLS 1.2", "TLSv1.1": "TLS 1.1", "TLSv1": "TLS 1.0"}


def pod_context(env: dict[str, str]) -> dict[str, str]:
    """The context fields every echo-basic answer carries."""
    return {"namespace": env.get("NAMESPACE", ""), "ingress": env.get("INGRESS_NAME", ""),
            "service": env.get("SERVICE_NAME", ""), "pod": env.get("POD_NAME", "")}


async def serve_tcp_mode(ctx: AppContext) -> int:
    """The TCP echo: plain and (with a certificate) TLS listeners until stopped."""
    env = ctx.env
    tcp_port, tls_port = env.get("TCP_PORT") or "3000", env.get("TLS_PORT") or "8443"
    if not tcp_port.isdigit() or not tls_port.isdigit():
        ctx.log(f"panic: Failed to start tcp server: non-integer value in TCP_PORT or TLS_PORT: {tcp_port} {tls_port}")
        return 2
    base = {**pod_context(env), "tcpport": tcp_port, "tlsport": tls_port}
    cert, key = env.get("TLS_SERVER_CERT", ""), env.get("TLS_SERVER_PRIV_KEY", "")
    sctx: ssl.SSLContext | None = None
    try:
        if cert and key:
            sctx = server_tls_context(str(ctx.host_path(cert)), str(ctx.host_path(key)), alpn=False)
        listeners = [(await ctx.listen_tcp(int(tcp_port)), False)]
        if sctx is not None:
            listeners.append((await ctx.listen_tcp(int(tls_port)), True))
    except (OSError, ssl.SSLError) as exc:
        ctx.log(f"panic: Failed to start tcp server: {exc}")
        return 2

    async def conn(stream: trio.SocketStream, tls: bool) -> None:
        doc: dict[str, object] = dict(base)
        out: trio.abc.Stream = stream
        if tls:
            assert sctx is not None
            try:
                s, server_name = await accept_tls(stream, sctx)
            except (trio.BrokenResourceError, OSError):
                return
            cipher = (s.cipher() or ("",))[0]
            version = s.version() or ""
            doc["tls"] = {"version": _TLS_NAMES.get(version, version), "serverName": server_name,
                          "cipherSuite": GO_CIPHER_NAMES.get(cipher, cipher)}
            out = s
        doc = {**{k: v for k, v in doc.items() if k != "tls"}, "isTLS": tls,
               **({"tls": doc["tls"]} if "tls" in doc else {})}
        payload = go_json(doc, indent=False)
        try:
            await out.send_all(WELCOME)
            buf = b""
            while data := await out.receive_some(65536):
                buf += data
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    text = line.rstrip(b"\r")
                    if text == b"TEST":
                        await out.send_all(payload + b"\n")
                    elif text == b"IS_TLS":
                        await out.send_all(b"true\n" if tls else b"false\n")
                    elif text == b"PING":
                        await out.send_all(b"PONG\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(out)

    async with trio.open_nursery() as n:
        for listener, tls in listeners:
            ctx.log(f"Starting server (tcp) protocol={'tls' if tls else 'tcp'} port={tls_port if tls else tcp_port}")

            async def handler(stream: trio.SocketStream, tls: bool = tls) -> None:
                await conn(stream, tls)

            n.start_soon(trio.serve_listeners, handler, [listener])
        await ctx.sigterm.wait()
        n.cancel_scope.cancel()
    return 0


async def serve_udp_mode(ctx: AppContext) -> int:
    """The UDP echo until stopped."""
    port = ctx.env.get("UDP_PORT") or "8080"
    context = pod_context(ctx.env)
    try:
        sock = await ctx.bind_udp(int(port))
    except (OSError, ValueError) as exc:
        ctx.log(f"echo server error: {exc}")
        return 1
    ctx.log(f"UDP server listening on :{port}")
    with sock:
        async with trio.open_nursery() as n:

            async def loop() -> None:
                while True:
                    data, peer = await sock.recvfrom(1024)
                    reply = go_json({"request": data.decode("utf-8", "replace"), **context}, indent=False)
                    try:
                        await sock.sendto(reply, peer)
                    except OSError:
                        pass

            n.start_soon(loop)
            await ctx.sigterm.wait()
            n.cancel_scope.cancel()
    return 0
