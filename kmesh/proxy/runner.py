"""The proxy's sync loop: when to hand the tracker's state to the mode, and the upstream metrics.

Upstream's timing (BoundedFrequencyRunner): a change is synced at once
unless syncs come faster than ``min_sync_period`` (a token bucket with a
burst of 2), every ``sync_period`` a sync runs anyway, a full sync runs at
start, after a failed sync and every ``full_sync_period``. A failed sync
keeps the installed rules, logs, and is retried (as full) with backoff.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kmesh.client.api import Client
from kmesh.proxy.base import ProxyMode
from kmesh.proxy.health import ProxyHealth
from kmesh.proxy.tracker import ChangeTracker

log = logging.getLogger("kmesh.proxy")
BUCKETS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384)
PROGRAMMING_BUCKETS = (0.25, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 30, 45, 60, 120, 180, 240, 300)


@dataclass
class SyncConfig:
    """Upstream's knobs: minSyncPeriod 1 s (burst 2), syncPeriod 30 s, a full sync hourly."""

    min_sync_period: float = 1.0
    burst: int = 2
    sync_period: float = 30.0
    full_sync_period: float = 3600.0
    retry_max: float = 30.0


# The counter of failed syncs upstream registers for each mode (the userspace mode had none).
FAILURE_COUNTERS = {
    "iptables": ("kubeproxy_sync_proxy_rules_iptables_restore_failures", "Cumulative proxy iptables restore failures"),
    "ipvs": ("kubeproxy_sync_proxy_rules_iptables_restore_failures", "Cumulative proxy iptables restore failures"),
    "nftables": ("kubeproxy_sync_proxy_rules_nftables_sync_failures", "Cumulative proxy nftables sync failures"),
}


class ProxyMetrics:
    """kube-proxy's sync metrics, with upstream's names, in a registry of their own.

    ``mode`` adds that mode's failure counter (upstream's, see FAILURE_COUNTERS)."""

    def __init__(self, mode: str = "") -> None:
        self.registry = CollectorRegistry()
        self.sync_duration = Histogram(
            "kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds",
            buckets=BUCKETS, registry=self.registry)
        self.full_sync_duration = Histogram(
            "kubeproxy_sync_full_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for full resyncs",
            buckets=BUCKETS, registry=self.registry)
        self.partial_sync_duration = Histogram(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for partial resyncs",
            buckets=BUCKETS, registry=self.registry)
        self.programming = Histogram(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds", buckets=PROGRAMMING_BUCKETS, registry=self.registry)
        self.last_sync = Gauge(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds", "The last time proxy rules were successfully synced",
            registry=self.registry)
        self.last_queued = Gauge(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            registry=self.registry)
        failure = FAILURE_COUNTERS.get(mode)
        self.failures_total = Counter(*failure, registry=self.registry) if failure else None
        self.syncs = 0
        self.failures = 0


class ProxyRunner:
    """A running proxy: the tracker, the mode and the counters (handed out by ``run_proxy``)."""

    def __init__(self, tracker: ChangeTracker, mode: ProxyMode, cfg: SyncConfig, metrics: ProxyMetrics) -> None:
        self.tracker = tracker
        self.mode = mode
        self.cfg = cfg
        self.metrics = metrics
        self.health = ProxyHealth(2 * cfg.sync_period, metrics.registry)  # upstream: healthTimeout = 2 × syncPeriod
        tracker.on_change = self._queued
        if tracker.node is not None:
            tracker.node.add_handler(self.health.on_node)
        self._synced = trio.Condition()
        self.metrics_port: int | None = None
        self.healthz_port: int | None = None

    def _queued(self) -> None:
        self.health.queued_update()
        self.metrics.last_queued.set(time.time())

    async def wait_synced(self, count: int = 1) -> None:
        """Return once ``count`` successful syncs have happened in all."""
        async with self._synced:
            while self.metrics.syncs < count:
                await self._synced.wait()

    async def sync_once(self, full: bool) -> bool:
        """One sync of whatever is pending; False (and the changes kept pending) when the mode failed."""
        state, changed = self.tracker.take()
        t0 = time.monotonic()
        try:
            await self.mode.sync(state, changed, full)
        except Exception as exc:  # noqa: BLE001 - a failed sync keeps what is installed and is retried
            self.metrics.failures += 1
            if self.metrics.failures_total is not None:
                self.metrics.failures_total.inc()
            log.warning("%s proxy: sync failed, will retry as full: %s", self.mode.name, exc)
            self.tracker.give_back(changed)
            return False
        now = time.time()
        took = time.monotonic() - t0
        self.metrics.sync_duration.observe(took)
        (self.metrics.full_sync_duration if full else self.metrics.partial_sync_duration).observe(took)
        self.metrics.last_sync.set(now)
        self.health.updated(still_pending=self.tracker.pending)
        for name in changed:
            sp = state.services.get(name)
            if sp is not None and sp.trigger_time is not None:
                self.metrics.programming.observe(max(0.0, now - sp.trigger_time))
        self.metrics.syncs += 1
        async with self._synced:
            self._synced.notify_all()
        return True

    async def loop(self) -> None:
        """Sync on changes (rate-limited), periodically, and fully at start/after failures/hourly."""
        cfg = self.cfg
        tokens = float(cfg.burst)
        last_refill = time.monotonic()
        full = True
        last_full = 0.0
        delay = 0.5
        while True:
            now = time.monotonic()
            if now - last_full >= cfg.full_sync_period:
                full = True
            ok = await self.sync_once(full)
            if ok:
                if full:
                    last_full = time.monotonic()
                full = False
                delay = 0.5
            else:
                full = True
                await trio.sleep(delay)
                delay = min(delay * 2, cfg.retry_max)
                continue
            with trio.move_on_after(cfg.sync_period):
                await self.tracker.wait_changed()
            # token bucket: refill at 1/min_sync_period, at most `burst`; one token per sync
            now = time.monotonic()
            if cfg.min_sync_period > 0:
                tokens = min(float(cfg.burst), tokens + (now - last_refill) / cfg.min_sync_period)
                last_refill = now
                if tokens < 1.0:
                    await trio.sleep((1.0 - tokens) * cfg.min_sync_period)
                    now = time.monotonic()
                    tokens = min(float(cfg.burst), tokens + (now - last_refill) / cfg.min_sync_period)
                    last_refill = now
                tokens -= 1.0


async def run_proxy(
    client: Client, mode: ProxyMode, cfg: SyncConfig | None = None, *, metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1", healthz_port: int | None = None, healthz_host: str = "0.0.0.0",
    task_status: trio.TaskStatus[ProxyRunner] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a proxy in ``mode`` until cancelled; ``task_status`` gets the runner after the first sync.

    ``metrics_port``: /metrics, /healthz, /proxyMode (and kmesh's /rules, /ipvs) on ``metrics_host``
    (upstream 127.0.0.1:10249); ``healthz_port``: /healthz and /livez on ``healthz_host`` (upstream
    0.0.0.0:10256); 0 picks a free port, None serves none. On cancellation the installed rules stay
    (as upstream's); call ``mode.cleanup()`` to remove them."""
    cfg = cfg or SyncConfig()
    tracker = ChangeTracker(client, node=mode.ctx.node)
    metrics = ProxyMetrics(mode.name)
    runner = ProxyRunner(tracker, mode, cfg, metrics)
    async with trio.open_nursery() as n:
        await n.start(tracker.run)
        await mode.start(n)
        n.start_soon(runner.loop)
        await runner.wait_synced(1)
        if metrics_port is not None:
            from kmesh.proxy.http import serve

            runner.metrics_port = await n.start(serve, runner, metrics_host, metrics_port)
        if healthz_port is not None:
            from kmesh.proxy.health import serve_health

            runner.healthz_port = await n.start(serve_health, runner.health, healthz_host, healthz_port)
        task_status.started(runner)
