"""Per-route counters, latency sums and access log records, kept small for the mesh to export later."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the latency histogram, as Prometheus buckets."""


@dataclass(slots=True)
class AccessRecord:
    """One served request, for the access log."""

    client: str
    method: str
    target: str
    host: str
    status: int
    listener: str
    route: str
    backend: str
    endpoint: str
    bytes_sent: int
    duration: float
    peer: str = ""  # the client certificate's URI (mesh: the client's SPIFFE ID); "" without one
    upstream_tls: bool = False  # whether the request went to its endpoint over TLS (mesh: mutual TLS)

    def line(self) -> str:
        """The record as one access log line."""
        return (f'{self.client} "{self.method} {self.target}" {self.status} {self.bytes_sent} '
                f'host={self.host} listener={self.listener} route="{self.route}" backend={self.backend} '
                f'endpoint={self.endpoint} {self.duration * 1000:.2f}ms')


class Metrics:
    """Requests by (listener, route, backend, status) and a latency histogram by (listener, route)."""

    def __init__(self, access_log: Callable[[AccessRecord], None] | None = None) -> None:
        self.requests: Counter[tuple[str, str, str, int]] = Counter()
        self.connections: Counter[str] = Counter()
        """Client connections accepted, by listener."""
        self.latency: dict[tuple[str, str], list[float]] = {}
        self.access_log = access_log

    def observe(self, listener: str, route: str, backend: str, status: int, duration: float) -> None:
        """Count one finished request and its latency (seconds)."""
        self.requests[(listener, route, backend, status)] += 1
        key = (listener, route)
        hist = self.latency.get(key)
        if hist is None:
            hist = self.latency[key] = [0.0] * (len(LATENCY_BUCKETS) + 2)  # buckets..., +Inf, sum
        hist[bisect_left(LATENCY_BUCKETS, duration)] += 1  # index len(LATENCY_BUCKETS) is +Inf
        hist[-1] += duration

    def count(self, **where: object) -> int:
        """Requests whose labels equal ``where`` (any of listener, route, backend, status)."""
        names = ("listener", "route", "backend", "status")
        return sum(n for key, n in self.requests.items()
                   if all(key[names.index(k)] == v for k, v in where.items()))
