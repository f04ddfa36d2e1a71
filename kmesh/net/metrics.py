"""The small HTTP endpoint the node agent, the DNS server and the proxy serve their Prometheus metrics on.

``serve_metrics`` binds ``host:port`` (inside a network namespace when given
an ``open_socket``), reports the bound port and answers ``/metrics`` with a
registry's text format; a component adds its own paths through ``routes``.
With ``any_port_if_taken`` a port already in use is not an error: the
endpoint takes a free one instead (labs running side by side each try
upstream's port first).
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable, Mapping

import trio
from prometheus_client import CollectorRegistry, generate_latest

from kmesh.net.http import Request, Response, serve_http
from kmesh.net.sockets import OpenSocket, default_open_socket, tcp_listener

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Route = Callable[[Request], Awaitable[Response]]


async def serve_metrics(
    registry: CollectorRegistry, host: str, port: int, *,
    routes: Mapping[str, Route] | None = None, any_path: bool = False, content_type: str = CONTENT_TYPE,
    open_socket: OpenSocket | None = None, backlog: int = 64, any_port_if_taken: bool = False,
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

    opener = open_socket or default_open_socket
    try:
        sock = await tcp_listener(host, port, opener, backlog)
    except OSError as exc:
        if not (any_port_if_taken and port and exc.errno == errno.EADDRINUSE):
            raise
        sock = await tcp_listener(host, 0, opener, backlog)
    task_status.started(sock.getsockname()[1])
    await serve_http(trio.SocketListener(sock), handle)
