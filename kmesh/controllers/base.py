"""What every controller shares: a keyed work queue, workers that retry with backoff, metrics.

A controller's informer handlers only add keys to its queue; ``sync(key)``
compares the cached state with the desired one and writes the difference.
Conflicts, missing objects and an unreachable API server are normal in this
loop: the key is retried with backoff and logged quietly.
"""

from __future__ import annotations

import logging
import time
from typing import Generic, Hashable, TypeVar

import trio
from prometheus_client import Counter, Gauge, Histogram

from kmesh.api import errors as E
from kmesh.client.api import APIUnavailable
from kmesh.client.workqueue import WorkQueue

K = TypeVar("K", bound=Hashable)
log = logging.getLogger("kmesh.controllers")

QUEUE_DEPTH = Gauge("workqueue_depth", "Current depth of workqueue", ["name"])
QUEUE_ADDS = Counter("workqueue_adds_total", "Total number of adds handled by workqueue", ["name"])
QUEUE_RETRIES = Counter("workqueue_retries_total", "Total number of retries handled by workqueue", ["name"])
WORK_DURATION = Histogram(
    "workqueue_work_duration_seconds", "How long in seconds processing an item from workqueue takes.", ["name"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10),
)


class Retry(Exception):
    """Raised by ``sync`` to retry its key with backoff without logging a traceback."""


class MeteredQueue(WorkQueue[K]):
    """A WorkQueue that reports its depth and adds under upstream's metric names."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self._depth = QUEUE_DEPTH.labels(name)
        self._adds = QUEUE_ADDS.labels(name)

    def add(self, key: K) -> None:
        """Queue ``key`` (counted)."""
        self._adds.inc()
        super().add(key)
        self._depth.set(len(self))


class Controller(Generic[K]):
    """Base of the controllers: subclasses fill the queue from informer handlers and implement ``sync``."""

    name = "controller"

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self.queue: MeteredQueue[K] = MeteredQueue(self.name)
        self._retries = QUEUE_RETRIES.labels(self.name)
        self._duration = WORK_DURATION.labels(self.name)

    async def sync(self, key: K) -> None:
        """Bring the world in line for ``key``."""
        raise NotImplementedError

    async def run(self) -> None:
        """Process keys with ``workers`` tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.queue.run_delays)
            for _ in range(self.workers):
                nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        q = self.queue
        while True:
            key = await q.get()
            q._depth.set(len(q))
            start = time.perf_counter()
            try:
                await self.sync(key)
            except Exception as exc:  # one bad key must not stop the controller
                if _expected(exc):
                    log.debug("%s: retrying %r: %s", self.name, key, exc)
                elif isinstance(exc, E.APIError):
                    log.warning("%s: retrying %r: %s", self.name, key, exc.message)
                else:
                    log.warning("%s: retrying %r", self.name, key, exc_info=True)
                self._retry(key)
            else:
                q.forget(key)
            finally:
                self._duration.observe(time.perf_counter() - start)
                q.done(key)

    def _retry(self, key: K) -> None:
        self._retries.inc()
        self.queue.add_rate_limited(key)


def _expected(exc: BaseException) -> bool:
    """Failures that are part of normal operation (stale cache, object gone, server away), also grouped."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_expected(e) for e in exc.exceptions)
    if isinstance(exc, (Retry, APIUnavailable)):
        return True
    return isinstance(exc, E.APIError) and exc.code in (404, 409, 429, 503)
