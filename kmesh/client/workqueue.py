"""The work queue controllers and agents share: deduplicated keys, no key worked on twice at once,
delayed and rate-limited retries.

Semantics follow client-go's workqueue: a key added while queued is not
queued twice; a key added while being processed is queued again once its
worker calls ``done``; ``add_rate_limited`` retries with exponential backoff
until ``forget`` resets it.

A queue given ``metrics`` (a ``QueueMetrics``, see
``kmesh.client.workqueue_metrics``) reports to it where client-go's queue
reports: an add that really queues, a get, a done, and every delayed add
(client-go counts those as retries).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Awaitable, Callable, Generic, Hashable, Protocol, TypeVar

import trio

K = TypeVar("K", bound=Hashable)
log = logging.getLogger("kmesh.workqueue")


class QueueMetrics(Protocol):
    """What a queue tells its metrics (client-go's queueMetrics)."""

    def add(self, key: Hashable) -> None:
        """``key`` was queued (it was not already waiting)."""

    def get(self, key: Hashable) -> None:
        """A worker took ``key``."""

    def done(self, key: Hashable) -> None:
        """The worker finished ``key``."""

    def retry(self) -> None:
        """A delayed add (a retry or a resync)."""


class WorkQueue(Generic[K]):
    """An async, deduplicating queue of keys with retry backoff."""

    def __init__(self, *, base_delay: float = 0.005, max_delay: float = 30.0,
                 metrics: QueueMetrics | None = None) -> None:
        self._queue: deque[K] = deque()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._delayed: dict[K, float] = {}
        self._wakeup = trio.Event()
        self._delay_changed = trio.Event()
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.metrics = metrics

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: K) -> None:
        """Queue ``key`` unless it is already queued."""
        if key in self._queued or key in self._dirty:
            return
        if self.metrics is not None:
            self.metrics.add(key)
        if key in self._processing:
            self._dirty.add(key)
            return
        self._push(key)

    def _push(self, key: K) -> None:
        self._queued.add(key)
        self._queue.append(key)
        self._wakeup.set()

    def add_after(self, key: K, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds (the earliest of several requests wins)."""
        if self.metrics is not None:
            self.metrics.retry()
        if delay <= 0:
            self.add(key)
            return
        when = trio.current_time() + delay
        if when < self._delayed.get(key, math.inf):
            self._delayed[key] = when
            self._delay_changed.set()

    def add_rate_limited(self, key: K) -> None:
        """Queue ``key`` again after a backoff that doubles with each failure."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        self.add_after(key, min(self.base_delay * (2**n), self.max_delay))

    def forget(self, key: K) -> None:
        """Reset the backoff of ``key`` (after a success)."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        """How many times in a row ``key`` was retried."""
        return self._failures.get(key, 0)

    def waiting(self, key: K) -> bool:
        """Whether ``key`` is queued, being worked on, or due later."""
        return key in self._queued or key in self._processing or key in self._delayed

    def delayed(self) -> int:
        """How many keys wait for a delayed add (backoff or resync)."""
        return len(self._delayed)

    async def get(self) -> K:
        """The next key to work on; call ``done`` when finished."""
        while not self._queue:
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        key = self._queue.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        if self.metrics is not None:
            self.metrics.get(key)
        return key

    def done(self, key: K) -> None:
        """Mark ``key`` finished; re-queue it if it was added meanwhile."""
        self._processing.discard(key)
        if self.metrics is not None:
            self.metrics.done(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self._push(key)

    async def run_delays(self) -> None:
        """Move delayed keys into the queue when due (run as a task)."""
        while True:
            now = trio.current_time()
            due = [k for k, t in self._delayed.items() if t <= now]
            for k in due:
                del self._delayed[k]
                self.add(k)
            nxt = min(self._delayed.values(), default=math.inf)
            self._delay_changed = trio.Event()
            with trio.move_on_at(nxt):
                await self._delay_changed.wait()

    async def run(self, handler: Callable[[K], Awaitable[None]], workers: int = 1) -> None:
        """Process keys with ``workers`` tasks until cancelled.

        ``handler`` raising an exception re-queues the key with backoff;
        returning normally forgets its failures.
        """

        async def worker() -> None:
            while True:
                key = await self.get()
                try:
                    await handler(key)
                except Exception as exc:  # noqa: BLE001 - a failed key is retried, the worker lives on
                    n = self.failures(key)
                    if n in (0, 5) or n % 50 == 0:
                        log.warning("retrying %r after failure %d: %s", key, n + 1, exc)
                    log.debug("failure of %r", key, exc_info=True)
                    self.add_rate_limited(key)
                else:
                    self.forget(key)
                finally:
                    self.done(key)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.run_delays)
            for _ in range(workers):
                nursery.start_soon(worker)
