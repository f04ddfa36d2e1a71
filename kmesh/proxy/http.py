"""The proxy's metrics endpoint (upstream: 127.0.0.1:10249; the health server on :10256 is kmesh.proxy.health).

As upstream's: ``/metrics``: the sync metrics; ``/healthz``: ``ok``;
``/proxyMode``: the mode's name. kmesh's own: ``/rules``: what the mode has
installed, in the native tool's text (``kmesh proxy rules`` reads it);
``/ipvs``: the IPVS table as ``ipvsadm -Ln`` prints it (IPVS mode only).
Every path answers GET and HEAD only (405 otherwise), any other path 404
(``kmesh.net.metrics.serve_routes``); docs/differences.md says why the two
kmesh paths stay.
"""

from __future__ import annotations

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
        return Response(body="ok")

    async def proxy_mode(req: Request) -> Response:
        return Response(body=runner.mode.name, headers=[("X-Content-Type-Options", "nosniff")])

    async def rules(req: Request) -> Response:
        return Response(body=await runner.mode.rules())

    async def ipvs(req: Request) -> Response:
        table = getattr(runner.mode, "table_text", None)
        if table is None:
            return Response(status=404, body=f"the {runner.mode.name} mode has no IPVS table\n")
        return Response(body=await table())

    await serve_metrics(runner.metrics.registry, host, port, content_type=CONTENT_TYPE_LATEST,
                        routes={"/healthz": healthz, "/proxyMode": proxy_mode, "/rules": rules, "/ipvs": ipvs}, task_status=task_status)


async def fetch(path: str, *, netns_name: str | None, host: str = "127.0.0.1", port: int = METRICS_PORT) -> tuple[int, str]:
    """GET ``path`` from a proxy's endpoint (metrics or health), from inside ``netns_name`` (its node) when given."""
    from kmesh.net import netns

    sock = await netns.open_socket(netns_name, socket.AF_INET, socket.SOCK_STREAM)
    with sock, trio.fail_after(30):
        status, body = await http_get(sock, host, port, path)
    return status, body.decode(errors="replace")


def _sample(text: str, suffixes: tuple[str, ...]) -> float | None:
    """The sum of the samples in Prometheus ``text`` whose names end with one of ``suffixes`` (None: none)."""
    from prometheus_client.parser import text_string_to_metric_families

    found = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(suffixes):
                found = (found or 0.0) + sample.value
    return found


async def summary(*, netns_name: str | None, metrics_port: int = METRICS_PORT, healthz_port: int | None = None) -> str:
    """One proxy as ``kmesh status`` shows it: "<mode>, <n> syncs[, <k> failed][, unhealthy]".

    The mode from ``/proxyMode``, the counts from ``/metrics`` (successful syncs, the mode's failure
    counter), health from the health server's ``/healthz`` when ``healthz_port`` is given."""
    _, mode = await fetch("/proxyMode", netns_name=netns_name, port=metrics_port)
    _, text = await fetch("/metrics", netns_name=netns_name, port=metrics_port)
    syncs = int(_sample(text, ("kubeproxy_sync_proxy_rules_duration_seconds_count",)) or 0)
    failed = int(_sample(text, ("_restore_failures_total", "_sync_failures_total")) or 0)
    out = f"{mode.strip()}, {syncs} syncs" + (f", {failed} failed" if failed else "")
    if healthz_port is not None:
        status, _ = await fetch("/healthz", netns_name=netns_name, port=healthz_port)
        if status != 200:
            out += ", unhealthy"
    return out
