"""One shared window of recent events that any number of watchers read.

A backend publishes every change once, in revision order, into a bounded
in-memory window (bounded in events, and in bytes where the backend says how
large its events are: a few large objects must not pin hundreds of megabytes
until 100,000 newer events push them out). Each watcher only keeps its position (the revision of the
last event it yielded), so 100 watchers cost 100 positions, not 100 streams.

A watcher whose position is older than the window (it started from an old
revision, or it read too slowly and the window moved past it) reads from the
backend's own history instead — the SQLite log table, the memory store's
history, or a dedicated etcd watch — until it has caught up with the window,
then switches back. Both sources are indexed by revision and the switch
happens at a revision both cover, so no event is lost or repeated.

Watchers share the Event objects in the window: treat them as read-only.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator, Iterable, Protocol

import trio

from kmesh.store.base import Event, Unavailable

DEFAULT_WINDOW = 100_000
DEFAULT_WINDOW_BYTES = 16 * 1024 * 1024  # encoded size of the events the window keeps, at most
# How many window events one watcher takes per refill: bounds the work done
# without a checkpoint and the size of each watcher's private buffer.
_READ_BATCH = 1024


class HistoryReader(Protocol):
    """Reads a backend's past events under one prefix, from one revision on."""

    async def next_batch(self) -> tuple[list[Event], int]:
        """The next events in revision order, and the revision they reach.

        The second value, ``through``, promises that every event under the
        prefix with a revision up to ``through`` has now been returned. It
        may wait for events (etcd) or return an empty batch (local stores).
        Raises Gone if the history was compacted past the reader's position.
        """
        ...

    async def aclose(self) -> None:
        """Release what the reader holds (an etcd stream)."""
        ...


class History(Protocol):
    """A backend's access to its own past, for watchers behind the window."""

    async def check(self, revision: int) -> None:
        """Raise Gone if a watch from ``revision`` is no longer possible."""
        ...

    def reader(self, prefix: str, after: int) -> HistoryReader:
        """A reader of the events under ``prefix`` with revision > ``after``."""
        ...


class Broadcaster:
    """The shared event window plus the watchers that read it.

    Invariant: every event with a revision greater than ``floor`` is in the
    window, and ``last`` is the revision of the newest published event.
    """

    def __init__(self, history: History, floor: int, capacity: int = DEFAULT_WINDOW,
                 max_bytes: int = DEFAULT_WINDOW_BYTES) -> None:
        if capacity < 1:
            raise ValueError("window capacity must be at least 1")
        self.history = history
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0  # the sizes published with the events in the window
        self.floor = floor
        self.last = floor
        self.closed = False
        self.active_watches = 0
        self.open_readers = 0
        self._events: list[Event] = []
        self._sizes: list[int] = []  # parallel to _events: the size published with each
        self._start = 0  # index of the oldest event still in the window
        self._lot = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._events) - self._start

    def publish(self, events: Iterable[Event], nbytes: int = 0) -> None:
        """Append events (revision order, after ``last``) and wake the watchers.

        ``nbytes``: their encoded size, if the backend knows it; the window
        then also keeps at most ``max_bytes`` (and always the newest event).
        """
        added = False
        for ev in events:
            if ev.revision < self.last:
                raise ValueError(f"event revision {ev.revision} is older than {self.last}")
            self._events.append(ev)
            self._sizes.append(0)
            self.last = ev.revision
            added = True
        if not added:
            return
        self._sizes[-1] += nbytes
        self.bytes += nbytes
        drop = self._start + max(0, len(self) - self.capacity)
        for i in range(self._start, drop):
            self.bytes -= self._sizes[i]
        newest = len(self._events) - 1
        while self.bytes > self.max_bytes and drop < newest:
            self.bytes -= self._sizes[drop]
            drop += 1
        if drop > self._start:
            self.floor = max(self.floor, self._events[drop - 1].revision)
            for i in range(self._start, drop):
                self._events[i] = _GONE  # release the objects now, not when the list is next cut
            self._start = drop
            if self._start >= max(len(self._events) // 2, 1024):  # amortised O(1) trimming
                del self._events[: self._start]
                del self._sizes[: self._start]
                self._start = 0
        self._lot.unpark_all()

    def reset(self, floor: int) -> None:
        """Forget the window: history is the only source up to ``floor``.

        For a feed that lost its stream and could not resume it (etcd
        compacted meanwhile); watchers behind ``floor`` go to history, which
        tells them Gone if it cannot serve them.
        """
        del self._events[:]
        del self._sizes[:]
        self.bytes = 0
        self._start = 0
        self.floor = max(self.floor, floor)
        self.last = max(self.last, self.floor)
        self._lot.unpark_all()

    def close(self) -> None:
        """End every watch: their iterators raise Unavailable."""
        self.closed = True
        self._lot.unpark_all()

    def read(self, prefix: str, after: int) -> tuple[list[Event], int]:
        """Window events under ``prefix`` with revision > ``after``, and the new position.

        Scans at most about ``_READ_BATCH`` events; never splits one
        revision's events. The caller must have ``after >= self.floor``.
        """
        events = self._events
        i = bisect_right(events, after, lo=self._start, key=_revision)
        if i >= len(events):
            return [], after
        j = min(len(events), i + _READ_BATCH)
        while j < len(events) and events[j].revision == events[j - 1].revision:
            j += 1
        out = [ev for ev in events[i:j] if ev.key.startswith(prefix)]
        return out, events[j - 1].revision

    async def wait_after(self, revision: int) -> None:
        """Wait until an event newer than ``revision`` is published (or reset/close)."""
        while self.last <= revision and self.floor <= revision and not self.closed:
            await self._lot.park()

    @asynccontextmanager
    async def watch(self, prefix: str, revision: int) -> AsyncIterator[AsyncIterator[Event]]:
        """Watch the changes under ``prefix`` after ``revision`` (see Store.watch)."""
        if self.closed:
            raise Unavailable("store is closed")
        await self.history.check(revision)
        watcher = Watcher(self, prefix, revision)
        self.active_watches += 1
        try:
            yield watcher
        finally:
            self.active_watches -= 1
            await watcher.aclose()


_GONE = Event("DELETED", "", {}, 0)  # stands in for an event the window dropped (never read: below _start)


def _revision(ev: Event) -> int:
    return ev.revision


class Watcher:
    """One watch's position; iterating yields its events exactly once, in order."""

    def __init__(self, bc: Broadcaster, prefix: str, after: int) -> None:
        self._bc = bc
        self._prefix = prefix
        self._pos = after
        self._buf: deque[Event] = deque()
        self._reader: HistoryReader | None = None

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> Event:
        while not self._buf:
            await self._fill()
        await trio.lowlevel.checkpoint()
        return self._buf.popleft()

    async def _fill(self) -> None:
        bc = self._bc
        if bc.closed:
            raise Unavailable("store is closed")
        if self._pos < bc.floor:
            await self._fill_from_history()
            return
        events, pos = bc.read(self._prefix, self._pos)
        if pos == self._pos:
            await bc.wait_after(pos)
            return
        self._buf.extend(events)
        self._pos = pos

    async def _fill_from_history(self) -> None:
        bc = self._bc
        if self._reader is None:
            self._reader = bc.history.reader(self._prefix, self._pos)
            bc.open_readers += 1
        events, through = await self._reader.next_batch()
        for ev in events:
            if ev.revision > self._pos:
                self._buf.append(ev)
        self._pos = max(self._pos, through, events[-1].revision if events else 0)
        if self._pos >= bc.floor:  # caught up: the window has everything after pos
            await self._close_reader()

    async def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            self._bc.open_readers -= 1
            await reader.aclose()

    async def aclose(self) -> None:
        """Release the history reader, if any (also when cancelled)."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(5):
                await self._close_reader()
