"""kube-proxy's health server (upstream: ``--healthz-bind-address``, default ``0.0.0.0:10256``).

Upstream's rule: the proxy is healthy unless a change has waited for a sync
longer than ``healthTimeout`` (2 × syncPeriod); ``/healthz`` also needs the
node to be eligible (its Node not being deleted and not tainted
``ToBeDeletedByClusterAutoscaler``), ``/livez`` does not. Both answer 200 or
503 with JSON, ``/healthz``: ``{"lastUpdated": ..., "currentTime": ...,
"nodeEligible": true}``; a healthy answer reports ``lastUpdated`` as the
current time (upstream keeps that for old clients). Times are written as Go
prints them (``2026-12-06 20:08:52.123456 +0000 UTC``), without Go's
monotonic-clock suffix. Each answer counts in ``kubeproxy_proxy_healthz_total{code}``
or ``kubeproxy_proxy_livez_total{code}`` on the metrics endpoint.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable

import trio
from prometheus_client import CollectorRegistry, Counter

from kmesh.api.obj import Obj
from kmesh.client.informer import Change
from kmesh.net.http import Request, Response
from kmesh.net.metrics import serve_routes
from kmesh.net.sockets import OpenSocket

HEALTHZ_PORT = 10256
TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler"


def go_time(when: float) -> str:
    """A Unix time as Go's ``time.Time.String()`` writes it in UTC (without the monotonic reading)."""
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


class ProxyHealth:
    """When the proxy last synced, what waits for a sync, and whether its node is eligible."""

    def __init__(self, timeout: float, registry: CollectorRegistry, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.timeout = timeout
        self.clock = clock
        self.last_updated: float | None = None
        self.oldest_pending: float | None = None
        self.node_eligible = True  # until the Node says otherwise, as upstream
        self.healthz_total = Counter("kubeproxy_proxy_healthz", "Cumulative proxy healthz HTTP status", ["code"],
                                     registry=registry)
        self.livez_total = Counter("kubeproxy_proxy_livez", "Cumulative proxy livez HTTP status", ["code"],
                                   registry=registry)

    def queued_update(self) -> None:
        """A change arrived that a sync has to program (the first one starts the clock)."""
        if self.oldest_pending is None:
            self.oldest_pending = self.clock()

    def updated(self, still_pending: bool = False) -> None:
        """A sync succeeded; ``still_pending``: changes came in while it ran."""
        now = self.clock()
        self.last_updated = now
        self.oldest_pending = now if still_pending else None

    def on_node(self, change: Change) -> None:
        """Follow the proxy's own Node (an informer handler)."""
        node: Obj | None = change.new
        if node is None or (node.get("metadata") or {}).get("deletionTimestamp"):
            self.node_eligible = False
            return
        taints = (node.get("spec") or {}).get("taints") or []
        self.node_eligible = not any(t.get("key") == TO_BE_DELETED_TAINT for t in taints)

    def healthy(self) -> bool:
        """No change has waited longer than the timeout (the node aside)."""
        return self.oldest_pending is None or self.clock() - self.oldest_pending < self.timeout

    def _answer(self, ok: bool, doc: dict[str, object], counter: Counter) -> Response:
        code = 200 if ok else 503
        counter.labels(str(code)).inc()
        return Response(status=code, content_type="application/json", body=json.dumps(doc, separators=(",", ":")),
                        headers=[("X-Content-Type-Options", "nosniff")])

    def _times(self, ok: bool) -> dict[str, object]:
        now = self.clock()
        last = now if ok else self.last_updated
        return {"lastUpdated": go_time(last) if last is not None else go_time(0), "currentTime": go_time(now)}

    async def healthz(self, req: Request) -> Response:
        """``/healthz``: healthy and the node eligible."""
        ok = self.healthy() and self.node_eligible
        return self._answer(ok, {**self._times(ok), "nodeEligible": self.node_eligible}, self.healthz_total)

    async def livez(self, req: Request) -> Response:
        """``/livez``: healthy, whatever the node."""
        ok = self.healthy()
        return self._answer(ok, self._times(ok), self.livez_total)


async def serve_health(health: ProxyHealth, host: str = "0.0.0.0", port: int = HEALTHZ_PORT, *,
                       open_socket: OpenSocket | None = None,
                       task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``/healthz`` and ``/livez`` on ``host:port`` until cancelled; ``task_status`` gets the bound port."""
    await serve_routes({"/healthz": health.healthz, "/livez": health.livez}, host, port, open_socket=open_socket,
                       task_status=task_status)
