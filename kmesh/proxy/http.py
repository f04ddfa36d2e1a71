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
from prometheus_client import CONTENT_TYPE_LATEST

from kmesh.net.metrics import serve_metrics
from kmesh.net.http import Request, Response, http_get

if TYPE_CHECKING:
    from kmesh.proxy.runner import ProxyRunner

METRICS_PORT = 10249


async def serve(runner: ProxyRunner, host: str = "127.0.0.1", port: int = METRICS_PORT, *,
                task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the endpoint until cancelled; ``task_status`` gets the bound port."""

    async def healthz(req: Request) -> Response:
        m = runner.metrics
        return Response(status=200 if m.syncs else 503, content_type="application/json",
                        body=json.dumps({"mode": runner.mode.name, "syncs": m.syncs, "failures": m.failures}))

    async def rules(req: Request) -> Response:
        return Response(body=await runner.mode.rules())

    async def ipvs(req: Request) -> Response:
        table = getattr(runner.mode, "table_text", None)
        if table is None:
            return Response(status=404, body=f"the {runner.mode.name} mode has no IPVS table\n")
        return Response(body=await table())

    await serve_metrics(runner.metrics.registry, host, port, content_type=CONTENT_TYPE_LATEST,
                        routes={"/healthz": healthz, "/rules": rules, "/ipvs": ipvs}, task_status=task_status)


async def fetch(path: str, *, netns_name: str | None, host: str = "127.0.0.1", port: int = METRICS_PORT) -> tuple[int, str]:
    """GET ``path`` from a proxy's endpoint, from inside ``netns_name`` (its node) when given."""
    from kmesh.net import netns

    sock = await netns.open_socket(netns_name, socket.AF_INET, socket.SOCK_STREAM)
    with sock, trio.fail_after(30):
        status, body = await http_get(sock, host, port, path)
    return status, body.decode(errors="replace")
