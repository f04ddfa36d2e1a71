"""The small HTTP endpoint the node agent, the DNS server and the proxy serve their Prometheus metrics on.

``serve_metrics`` binds ``host:port`` (inside a network namespace when given
an ``open_socket``), reports the bound port and answers ``/metrics`` with a
registry's text format; a component adds its own paths through ``routes``.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Mapping

import trio
from prometheus_client import CollectorRegistry, generate_latest

from kmesh.node.apps.http import Request, Response, serve_http

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OpenSocket = Callable[[int, int], Awaitable[trio.socket.SocketType]]
Route = Callable[[Request], Awaitable[Response]]


async def listen_tcp(host: str, port: int, *, open_socket: OpenSocket | None = None, backlog: int = 64) -> trio.SocketListener:
    """A listening TCP socket on ``host:port`` (SO_REUSEADDR), opened with ``open_socket`` when given."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if open_socket is None:
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
    else:
        sock = await open_socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def serve_metrics(
    registry: CollectorRegistry, host: str, port: int, *,
    routes: Mapping[str, Route] | None = None, any_path: bool = False, content_type: str = CONTENT_TYPE,
    open_socket: OpenSocket | None = None, backlog: int = 64,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` (every path with ``any_path``) and ``routes`` until cancelled; ``task_status`` gets the bound port."""
    extra = dict(routes or {})

    async def handle(req: Request) -> Response:
        route = extra.get(req.path)
        if route is not None:
            return await route(req)
        if req.path == "/metrics" or any_path:
            return Response(body=generate_latest(registry), content_type=content_type)
        return Response(status=404, body="not found\n")

    listener = await listen_tcp(host, port, open_socket=open_socket, backlog=backlog)
    task_status.started(listener.socket.getsockname()[1])
    await serve_http(listener, handle)
