"""``kmesh/echo``: TCP and UDP echo, and HTTP echo when a TCP client speaks HTTP.

Ports: every ``containerPort`` of the container (TCP ones get a TCP listener,
UDP ones a UDP socket); with none declared, TCP and UDP 8080. ``--port=N``
in args overrides both. On TCP, if the first bytes a client sends start an
HTTP/1.x request line, the connection is served as HTTP and every request
gets ``200`` with a JSON body describing who answered and what was asked::

    {"pod": ..., "namespace": ..., "node": ..., "podIP": ..., "client": "ip:port",
     "method": ..., "path": ..., "query": {...}, "headers": {...}, "body": ...}

Otherwise every byte is echoed back until the client closes. UDP datagrams
are sent back as they came. Useful for load-balancing experiments: each
answer names the pod and the client address the pod saw.

``--fail-ratio=F`` (0..1) makes a flaky endpoint for retry experiments: each
HTTP request, drawn on its own, is answered ``--fail-code`` (default 503)
with probability F instead of the echo. Probe such a pod with ``tcpSocket``:
an HTTP probe would fail as often.
"""

from __future__ import annotations

import json
import random

import trio

from kmesh.node.apps import AppContext
from kmesh.node.apps.flags import FlagError, parse_flags
from kmesh.net.http import Request, Response, looks_like_http, serve_connection

DEFAULT_PORT = 8080


async def main(ctx: AppContext) -> int | None:
    """Serve echo on the container's ports until stopped."""
    try:
        flags, _ = parse_flags(ctx.args, {"port": 0, "fail-ratio": 0.0, "fail-code": 503})
        if not 0.0 <= flags["fail-ratio"] <= 1.0:
            raise FlagError(f"-fail-ratio must be within 0..1, got {flags['fail-ratio']}")
        if not 100 <= flags["fail-code"] <= 599:
            raise FlagError(f"-fail-code must be an HTTP status (100-599), got {flags['fail-code']}")
    except FlagError as exc:
        ctx.log(f"Error: {exc}")
        return 2
    tcp_ports = ctx.container_ports("TCP")
    udp_ports = ctx.container_ports("UDP")
    if flags["port"]:
        tcp_ports = udp_ports = [flags["port"]]
    elif not tcp_ports and not udp_ports:
        tcp_ports = udp_ports = [DEFAULT_PORT]
    async with trio.open_nursery() as n:
        for port in tcp_ports:
            listener = await ctx.listen_tcp(port)
            n.start_soon(_serve_tcp, ctx, listener, flags["fail-ratio"], flags["fail-code"])
        for port in udp_ports:
            sock = await ctx.bind_udp(port)
            n.start_soon(_serve_udp, sock)
        ctx.log(f"echo: TCP {tcp_ports} UDP {udp_ports} on {ctx.host}")
        await ctx.sigterm.wait()
        n.cancel_scope.cancel()
    return 0


async def _serve_tcp(ctx: AppContext, listener: trio.SocketListener, fail_ratio: float = 0.0,
                     fail_code: int = 503) -> None:
    async def handler(req: Request) -> Response:
        if fail_ratio and random.random() < fail_ratio:
            return Response(status=fail_code, body="injected failure\n")
        md = ctx.pod.get("metadata") or {}
        doc = {
            "pod": md.get("name"), "namespace": md.get("namespace"),
            "node": (ctx.pod.get("spec") or {}).get("nodeName"), "podIP": ctx.sandbox.ip,
            "client": f"{req.client[0]}:{req.client[1]}", "method": req.method, "path": req.path,
            "query": req.query, "headers": req.headers, "body": req.body.decode(errors="replace"),
        }
        return Response(body=json.dumps(doc) + "\n", content_type="application/json")

    async def conn(stream: trio.SocketStream) -> None:
        try:
            first = await stream.receive_some(65536)
        except (trio.BrokenResourceError, OSError):
            await trio.aclose_forcefully(stream)
            return
        if looks_like_http(first):
            await serve_connection(stream, handler, prefix=first)
            return
        async with stream:
            try:
                data = first
                while data:
                    await stream.send_all(data)
                    data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async with listener:
        await trio.serve_listeners(conn, [listener])  # type: ignore[arg-type]


async def _serve_udp(sock: trio.socket.SocketType) -> None:
    with sock:
        while True:
            data, peer = await sock.recvfrom(65535)
            try:
                await sock.sendto(data, peer)
            except OSError:
                pass
