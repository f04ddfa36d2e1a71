"""What every controller shares: a keyed work queue (with workqueue metrics), workers that retry with backoff.

A controller's informer handlers only add keys to its queue; ``sync(key)``
compares the cached state with the desired one and writes the difference.
Conflicts, missing objects and an unreachable API server are normal in this
loop: the key is retried with backoff and logged quietly.
"""

from __future__ import annotations

import logging
from typing import Generic, Hashable, TypeVar

import trio

from kmesh.api import errors as E
from kmesh.client.api import APIUnavailable
from kmesh.client.workqueue import WorkQueue
from kmesh.client.workqueue_metrics import WorkqueueMetrics
from kmesh.controllers.metrics import CONTROLLER_MANAGER

K = TypeVar("K", bound=Hashable)
log = logging.getLogger("kmesh.controllers")


class Retry(Exception):
    """Raised by ``sync`` to retry its key with backoff without logging a traceback."""


class Controller(Generic[K]):
    """Base of the controllers: subclasses fill the queue from informer handlers and implement ``sync``."""

    name = "controller"
    queue_name = ""  # the queue's ``name`` label in workqueue_* metrics (upstream's); default: ``name``
    workqueue_metrics: WorkqueueMetrics = CONTROLLER_MANAGER  # whose /metrics reports the queue

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self.queue: WorkQueue[K] = WorkQueue(metrics=self.workqueue_metrics.for_queue(self.queue_name or self.name))

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
                q.done(key)

    def _retry(self, key: K) -> None:
        self.queue.add_rate_limited(key)


def _expected(exc: BaseException) -> bool:
    """Failures that are part of normal operation (stale cache, object gone, server away), also grouped."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_expected(e) for e in exc.exceptions)
    if isinstance(exc, (Retry, APIUnavailable)):
        return True
    return isinstance(exc, E.APIError) and exc.code in (404, 409, 429, 503)
