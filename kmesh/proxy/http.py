"""The proxy's own HTTP endpoint (upstream: metrics on 127.0.0.1:10249, healthz on :10256).

``/metrics``: the sync metrics; ``/healthz``: 200 with the last sync time once
synced; ``/rules``: what the mode has installed, in the native tool's text
(``kmesh proxy rules`` reads it); ``/ipvs``: the IPVS table as ``ipvsadm -Ln``
prints it (IPVS mode only).
"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kmesh.node.apps.http import Request, Response, http_get, serve_http

if TYPE_CHECKING:
    from kmesh.proxy.runner import ProxyRunner

METRICS_PORT = 10249


async def serve(runner: ProxyRunner, host: str = "127.0.0.1", port: int = METRICS_PORT, *,
                task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the endpoint until cancelled; ``task_status`` gets the bound port."""

    async def handle(req: Request) -> Response:
        if req.path == "/metrics":
            return Response(body=generate_latest(runner.metrics.registry), content_type=CONTENT_TYPE_LATEST)
        if req.path == "/healthz":
            m = runner.metrics
            return Response(status=200 if m.syncs else 503, content_type="application/json",
                            body=json.dumps({"mode": runner.mode.name, "syncs": m.syncs, "failures": m.failures}))
        if req.path == "/rules":
            return Response(body=await runner.mode.rules())
        if req.path == "/ipvs":
            table = getattr(runner.mode, "table_text", None)
            if table is None:
                return Response(status=404, body=f"the {runner.mode.name} mode has no IPVS table\n")
            return Response(body=await table())
        return Response(status=404, body="not found\n")

    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
    await sock.bind((host, port))
    sock.listen(64)
    task_status.started(sock.getsockname()[1])
    await serve_http(trio.SocketListener(sock), handle)


async def fetch(path: str, *, netns_name: str | None, host: str = "127.0.0.1", port: int = METRICS_PORT) -> tuple[int, str]:
    """GET ``path`` from a proxy's endpoint, from inside ``netns_name`` (its node) when given."""
    from kmesh.lab import netns

    sock = await netns.open_socket(netns_name, socket.AF_INET, socket.SOCK_STREAM)
    with sock, trio.fail_after(30):
        status, body = await http_get(sock, host, port, path)
    return status, body.decode(errors="replace")
