"""``registry.k8s.io/e2e-test-images/agnhost``: the e2e test image's ``serve-hostname``, ``netexec`` and ``pause``.

Behaviour follows the upstream subcommands' documented flags and answers;
``/shell`` and ``/upload`` are not served (kmesh runs no shell inside
built-in apps).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import h11
import trio

from kmesh.node.apps import AppContext
from kmesh.node.apps.flags import FlagError, parse_flags
from kmesh.net.http import (
    CloseConnection,
    Request,
    Response,
    http_get,
    serve_connection,
)

SUBCOMMANDS = ("serve-hostname", "netexec", "pause")


async def main(ctx: AppContext) -> int | None:
    """Dispatch on the first argument like the agnhost binary."""
    if not ctx.args:
        ctx.log("agnhost: a subcommand is required: " + ", ".join(SUBCOMMANDS) + " (kmesh's built-in agnhost)")
        return 1
    sub, rest = ctx.args[0], ctx.args[1:]
    try:
        if sub == "serve-hostname":
            return await serve_hostname(ctx, rest)
        if sub == "netexec":
            return await netexec(ctx, rest)
        if sub == "pause":
            ctx.log("Paused")
            await trio.sleep_forever()
    except FlagError as exc:
        ctx.log(f"Error: {exc}")
        return 2
    ctx.log(f'Error: unknown command "{sub}" for "agnhost" (kmesh serves: {", ".join(SUBCOMMANDS)})')
    return 1


# ------------------------------------------------------------ serve-hostname


async def serve_hostname(ctx: AppContext, args: list[str]) -> int | None:
    """Answer the hostname (the pod name) over TCP (write and close), UDP (reply) and/or HTTP (body)."""
    flags, _ = parse_flags(args, {"tcp": False, "udp": False, "http": True, "close": False, "port": 9376})
    if flags["http"] and (flags["tcp"] or flags["udp"]):
        ctx.log("Can't use both HTTP and TCP/UDP servers at the same time (give --http=false)")
        return 1
    port = flags["port"]
    name = ctx.hostname.encode()
    async with trio.open_nursery() as n:
        if flags["tcp"]:
            listener = await ctx.listen_tcp(port)

            async def tcp_conn(stream: trio.SocketStream) -> None:
                async with stream:
                    try:
                        await stream.send_all(name)
                    except (trio.BrokenResourceError, OSError):
                        pass

            n.start_soon(_serve, listener, tcp_conn)
        if flags["udp"]:
            sock = await ctx.bind_udp(port)
            n.start_soon(_udp_loop, sock, lambda data, peer: name)
        if flags["http"]:
            listener = await ctx.listen_tcp(port)

            async def handler(req: Request) -> Response:
                return Response(body=name, close=flags["close"])

            n.start_soon(_serve, listener, lambda s: serve_connection(s, handler, close_each=flags["close"]))
        ctx.log(f"Serving on port {port}.")
        await ctx.sigterm.wait()
        ctx.log("Shutting down after receiving signal: terminated.")
        n.cancel_scope.cancel()
    return 0


async def _serve(listener: trio.SocketListener, handler: Any) -> None:
    async with listener:
        await trio.serve_listeners(handler, [listener])


async def _udp_loop(sock: trio.socket.SocketType, answer: Any) -> None:
    with sock:
        while True:
            data, peer = await sock.recvfrom(65535)
            reply = answer(data, peer)
            if reply is not None:
                try:
                    await sock.sendto(reply, peer)
                except OSError:
                    pass


# ------------------------------------------------------------------- netexec


async def netexec(ctx: AppContext, args: list[str]) -> int | None:
    """HTTP (``--http-port``, 8080) and UDP (``--udp-port``, 8081; -1 disables) test servers."""
    flags, _ = parse_flags(
        args,
        {"http-port": 8080, "udp-port": 8081, "sctp-port": -1, "delay-shutdown": 0, "http-override": "",
         "udp-listen-addresses": "", "tls-cert-file": "", "tls-private-key-file": ""},
    )
    ctx.handles_sigterm = True
    udp_ready = trio.Event()
    if flags["udp-port"] == -1:
        udp_ready.set()
    app = _Netexec(ctx, flags, udp_ready)
    async with trio.open_nursery() as n:
        listener = await ctx.listen_tcp(flags["http-port"])
        n.start_soon(_serve, listener, lambda s: serve_connection(s, app.handle))
        ctx.log(f"Started HTTP server on port {flags['http-port']}")
        if flags["udp-port"] != -1:
            sock = await ctx.bind_udp(flags["udp-port"])
            udp_ready.set()
            ctx.log(f"Started UDP server on port {flags['udp-port']}")
            n.start_soon(_udp_loop, sock, app.udp)
        await ctx.sigterm.wait()
        if flags["delay-shutdown"] > 0:
            ctx.log(f"Sleeping {flags['delay-shutdown']} seconds before terminating...")
            await trio.sleep(flags["delay-shutdown"])
        n.cancel_scope.cancel()
    return 0


class _Netexec:
    def __init__(self, ctx: AppContext, flags: dict[str, Any], udp_ready: trio.Event) -> None:
        self.ctx = ctx
        self.flags = flags
        self.udp_ready = udp_ready

    async def handle(self, req: Request) -> Response:
        if self.flags["http-override"]:
            req = Request("GET", self.flags["http-override"], req.headers, b"", req.client)
        path = req.path
        self.ctx.log(f"{req.method} {req.target}")
        if path in ("/hostname", "/hostName"):
            return Response(body=self.ctx.hostname)
        if path == "/clientip":
            return Response(body=f"{req.client[0]}:{req.client[1]}")
        if path == "/echo":
            code = req.arg("code")
            if code and not code.lstrip("-").isdigit():
                return Response(body=f"argument 'code' must be an integer or empty, got {code!r}\n")
            return Response(status=int(code) if code else 200, body=req.arg("msg"))
        if path == "/header":
            key = req.arg("key")
            if key:
                return Response(body=req.headers.get(key.lower(), ""))
            return Response(body=json.dumps({k.title(): [v] for k, v in req.headers.items()}))
        if path == "/healthz":
            return Response(status=200 if self.udp_ready.is_set() else 412)
        if path == "/readyz":
            if self.ctx.sigterm.is_set():
                return Response(status=503, body="shutting down")
            return Response(status=200, body="ok") if self.udp_ready.is_set() else Response(status=412)
        if path == "/redirect":
            location = req.arg("location")
            if not location:
                return Response(status=400, body="missing location")
            code = req.arg("code", "303")
            return Response(status=int(code) if code.isdigit() else 303, headers=[("Location", location)])
        if path in ("/exit", "/shutdown"):
            code = req.arg("code", "0") if path == "/exit" else "0"
            if not code.isdigit() or int(code) > 127:
                return Response(body=f"argument 'code' must be an integer [0-127] or empty, got {code!r}\n")
            self.ctx.log(f"Exiting with code {code}")
            self.ctx.exit(int(code))
            raise CloseConnection()
        if path == "/dial":
            return await self.dial(req)
        if path in ("/shell", "/upload"):
            return Response(status=501, body=f"{path} is not served by kmesh's built-in agnhost")
        return Response(body=f"NOW: {dt.datetime.now().astimezone()}")

    def udp(self, data: bytes, peer: tuple[str, int]) -> bytes | None:
        text = data.decode(errors="replace").strip()
        if text == "hostname" or text == "hostName":
            return self.ctx.hostname.encode()
        if text.startswith("echo "):
            return text[5:].encode()
        if text == "clientip":
            return f"{peer[0]}:{peer[1]}".encode()
        return None

    async def dial(self, req: Request) -> Response:
        host, port, request = req.arg("host"), req.arg("port"), req.arg("request")
        protocol = (req.arg("protocol") or "http").lower()
        tries_text = req.arg("tries", "1")
        if not tries_text.isdigit():
            return Response(status=400, body=f"tries parameter is invalid. {tries_text!r}")
        if not request:
            return Response(status=400, body="request parameter not specified.")
        if protocol not in ("http", "udp") or not port.isdigit():
            return Response(status=400, body=f"unsupported protocol or bad port: {protocol} {port}")
        responses: list[str] = []
        errors: list[str] = []
        ok = False
        for _ in range(int(tries_text)):
            try:
                with trio.fail_after(5):
                    if protocol == "http":
                        responses.append(await self._dial_http(host, int(port), request))
                    else:
                        responses.append(await self._dial_udp(host, int(port), request))
                ok = True
            except (trio.TooSlowError, OSError, h11.ProtocolError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                ok = False
        out: dict[str, list[str]] = {}
        if responses:
            out["responses"] = responses
        if errors:
            out["errors"] = errors
        return Response(status=200 if ok else 417, body=json.dumps(out), content_type="application/json")

    async def _dial_http(self, host: str, port: int, request: str) -> str:
        sock = await self.ctx.sandbox.open_socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        with sock:
            await sock.bind((self.ctx.host, 0))
            status, body = await http_get(sock, host, port, "/" + request.lstrip("/"))
        if status >= 400:
            raise OSError(f"HTTP {status}: {body[:200].decode(errors='replace')}")
        return body.decode(errors="replace")

    async def _dial_udp(self, host: str, port: int, request: str) -> str:
        sock = await self.ctx.sandbox.open_socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with sock:
            await sock.bind((self.ctx.host, 0))
            await sock.connect((host, port))
            await sock.send(request.encode())
            return (await sock.recv(65535)).decode(errors="replace")
