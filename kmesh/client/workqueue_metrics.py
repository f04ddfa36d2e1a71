"""client-go's workqueue metrics (``workqueue_*{name}``) for ``WorkQueue``, in a registry of the caller's.

``WorkqueueMetrics(registry)`` holds the families; ``for_queue(name)`` gives
the ``QueueMetrics`` one queue reports to. The numbers mean what they mean
upstream: an add is counted only when the key was not already waiting,
depth is what has been added and not yet taken, queue duration runs from
the first add to the get, work duration from the get to the done, every
delayed add is a retry, and the work in progress (unfinished seconds, the
longest running one) is read at scrape time.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Hashable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

# client-go: ExponentialBuckets(10e-9, 10, 10), 10 ns to 10 s
DURATION_BUCKETS = tuple(1e-8 * 10**i for i in range(10))


class _QueueMetrics:
    """One queue's view of the families (client-go's defaultQueueMetrics)."""

    def __init__(self, families: WorkqueueMetrics, name: str) -> None:
        self.name = name
        self._depth = families.depth.labels(name)
        self._adds = families.adds.labels(name)
        self._latency = families.latency.labels(name)
        self._work = families.work.labels(name)
        self._retries = families.retries.labels(name)
        self.added_at: dict[Hashable, float] = {}
        self.started_at: dict[Hashable, float] = {}

    def add(self, key: Hashable) -> None:
        """Count an add; its queue time starts now unless it was already waiting."""
        self._adds.inc()
        self._depth.inc()
        self.added_at.setdefault(key, time.monotonic())

    def get(self, key: Hashable) -> None:
        """A worker took the key: its time in the queue ends, its work starts."""
        self._depth.dec()
        now = time.monotonic()
        added = self.added_at.pop(key, None)
        if added is not None:
            self._latency.observe(now - added)
        self.started_at[key] = now

    def done(self, key: Hashable) -> None:
        """The work on the key ended."""
        started = self.started_at.pop(key, None)
        if started is not None:
            self._work.observe(time.monotonic() - started)

    def retry(self) -> None:
        """Count a delayed add."""
        self._retries.inc()


class WorkqueueMetrics:
    """The ``workqueue_*`` families in ``registry``; one per component (controller-manager, scheduler)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.depth = Gauge("workqueue_depth", "Current depth of workqueue", ["name"], registry=registry)
        self.adds = Counter("workqueue_adds", "Total number of adds handled by workqueue", ["name"], registry=registry)
        self.latency = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested.", ["name"], buckets=DURATION_BUCKETS, registry=registry)
        self.work = Histogram(
            "workqueue_work_duration_seconds", "How long in seconds processing an item from workqueue takes.",
            ["name"], buckets=DURATION_BUCKETS, registry=registry)
        self.retries = Counter("workqueue_retries", "Total number of retries handled by workqueue", ["name"],
                               registry=registry)
        self._queues: weakref.WeakSet[_QueueMetrics] = weakref.WeakSet()
        registry.register(_InProgress(self._queues))  # type: ignore[arg-type]

    def for_queue(self, name: str) -> _QueueMetrics:
        """The ``QueueMetrics`` of the queue called ``name`` (its ``name`` label)."""
        q = _QueueMetrics(self, name)
        self._queues.add(q)
        return q


class _InProgress:
    """``workqueue_unfinished_work_seconds`` and ``workqueue_longest_running_processor_seconds``, at scrape time."""

    def __init__(self, queues: weakref.WeakSet[_QueueMetrics]) -> None:
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        """The two gauges, per queue name (queues of one name add up)."""
        now = time.monotonic()
        unfinished: dict[str, float] = {}
        longest: dict[str, float] = {}
        for q in list(self.queues):
            ages = [now - t for t in q.started_at.values()]
            unfinished[q.name] = unfinished.get(q.name, 0.0) + sum(ages)
            longest[q.name] = max([longest.get(q.name, 0.0), *ages])
        u = GaugeMetricFamily(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been observed by work_duration. "
            "Large values indicate stuck threads. One can deduce the number of stuck threads by observing the rate "
            "at which this increases.", labels=["name"])
        g = GaugeMetricFamily(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running.", labels=["name"])
        for name in sorted(unfinished):
            u.add_metric([name], unfinished[name])
            g.add_metric([name], longest[name])
        yield u
        yield g
