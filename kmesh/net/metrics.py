"""The small HTTP endpoints components serve on the side: Prometheus metrics, health, a mode's state.

``serve_routes`` binds ``host:port`` (inside a network namespace when given
an ``open_socket``), reports the bound port and answers each path of its
route table to GET and HEAD, 404 (Go's ``404 page not found``, as
upstream's endpoints answer) for any other path and 405 (``Allow: GET,
HEAD``) for any other method on a known path: these endpoints only show
state, and only on the paths upstream serves (plus the few kmesh documents
in docs/differences.md). ``serve_metrics`` is that with ``/metrics``
answered from a registry's text format; a component adds its own paths
through ``routes``. With ``any_port_if_taken`` a port already in use is not an
error: the endpoint takes a free one instead (labs running side by side each
try upstream's port first).
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
METHODS = ("GET", "HEAD")


async def serve_routes(
    routes: Mapping[str, Route], host: str, port: int, *,
    open_socket: OpenSocket | None = None, backlog: int = 64, any_port_if_taken: bool = False,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``routes`` (path → handler, GET and HEAD only) until cancelled; ``task_status`` gets the bound port."""
    table = dict(routes)

    async def handle(req: Request) -> Response:
        route = table.get(req.path)
        if route is None:
            return Response(status=404, body="404 page not found\n")
        if req.method not in METHODS:
            return Response(status=405, body="Method Not Allowed\n", headers=[("Allow", ", ".join(METHODS))])
        return await route(req)

    opener = open_socket or default_open_socket
    try:
        sock = await tcp_listener(host, port, opener, backlog)
    except OSError as exc:
        if not (any_port_if_taken and port and exc.errno == errno.EADDRINUSE):
            raise
        sock = await tcp_listener(host, 0, opener, backlog)
    task_status.started(sock.getsockname()[1])
    await serve_http(trio.SocketListener(sock), handle)


async def serve_metrics(
    registry: CollectorRegistry, host: str, port: int, *,
    routes: Mapping[str, Route] | None = None, content_type: str = CONTENT_TYPE,
    open_socket: OpenSocket | None = None, backlog: int = 64, any_port_if_taken: bool = False,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` and ``routes`` until cancelled; ``task_status`` gets the bound port."""

    async def metrics(req: Request) -> Response:
        return Response(body=generate_latest(registry), content_type=content_type)

    await serve_routes({"/metrics": metrics, **(routes or {})}, host, port,
                       open_socket=open_socket, backlog=backlog, any_port_if_taken=any_port_if_taken,
                       task_status=task_status)
