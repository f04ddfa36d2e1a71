"""CoreDNS-named Prometheus metrics, counted with plain ints on the hot path and exported by a collector.

``prometheus_client`` counters take a lock per increment; at tens of
thousands of queries a second that shows, so the server counts into dicts
and this collector turns them into metric families when scraped.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from kmesh.net import metrics as metrics_endpoint
from kmesh.net.sockets import OpenSocket

BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192)
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 16: "BADVERS"}
TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
         65: "HTTPS", 251: "IXFR", 252: "AXFR", 255: "ANY"}


class Stats:
    """Counters the server bumps per query (no locks: one trio thread owns them)."""

    def __init__(self, server: str, zone: str) -> None:
        self.server = server
        self.zone = zone + "."
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)  # (proto, qtype)
        self.responses: defaultdict[int, int] = defaultdict(int)            # rcode
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.duration_sum = 0.0
        self.fast = [0] * 4096  # UDP fast-path answers by (qtype low byte << 4 | rcode), folded in when scraped

    def fold(self) -> None:
        """Move the fast-path tallies into the labelled counters (and the lowest duration bucket)."""
        for idx, n in enumerate(self.fast):
            if n:
                self.fast[idx] = 0
                self.requests[("udp", idx >> 4)] += n
                self.responses[idx & 0x0F] += n
                self.buckets[0] += n

    def observe(self, proto: str, qtype: int, rcode: int, seconds: float) -> None:
        """Count one answered (or dropped: rcode -1) request."""
        self.requests[(proto, qtype)] += 1
        if rcode >= 0:
            self.responses[rcode] += 1
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.duration_sum += seconds


class StatsCollector(Collector):
    """Exposes ``Stats`` as coredns_dns_requests_total, coredns_dns_responses_total, coredns_dns_request_duration_seconds."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        s = self.stats
        s.fold()
        req = CounterMetricFamily("coredns_dns_requests", "Counter of DNS requests made per zone, protocol and family.",
                                  labels=["server", "zone", "view", "proto", "family", "type"])
        for (proto, qtype), n in sorted(s.requests.items()):
            req.add_metric([s.server, s.zone, "", proto, "1", TYPES.get(qtype, "other")], n)
        yield req
        resp = CounterMetricFamily("coredns_dns_responses", "Counter of response status codes.",
                                   labels=["server", "zone", "view", "rcode", "plugin"])
        for rcode, n in sorted(s.responses.items()):
            resp.add_metric([s.server, s.zone, "", RCODES.get(rcode, str(rcode)), "kubernetes"], n)
        yield resp
        hist = HistogramMetricFamily("coredns_dns_request_duration_seconds",
                                     "Histogram of the time (in seconds) each request took per zone.",
                                     labels=["server", "zone", "view", "type"])
        acc, cum = 0, []
        for bound, n in zip((*BUCKETS, float("inf")), s.buckets):
            acc += n
            cum.append((str(bound) if bound != float("inf") else "+Inf", acc))
        hist.add_metric([s.server, s.zone, "", "all"], cum, s.duration_sum)
        yield hist


def registry_for(stats: Stats) -> CollectorRegistry:
    """A registry holding only this server's metrics."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StatsCollector(stats))
    return reg


async def serve_metrics(registry: CollectorRegistry, host: str, port: int, *,
                        open_socket: OpenSocket | None = None,
                        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """The metrics endpoint: ``/metrics`` only, as CoreDNS's prometheus plugin (GET and HEAD); reports the bound port."""
    await metrics_endpoint.serve_metrics(registry, host, port, open_socket=open_socket, backlog=128,
                                         task_status=task_status)
