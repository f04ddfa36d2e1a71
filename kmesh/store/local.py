"""The Store semantics shared by the in-process backends (memory, SQLite).

Each of them supplies an :class:`Engine`: a small synchronous key/value
store with a change log. :class:`LocalStore` turns it into a ``Store``:
errors, revisions, paging, compaction and watches (through the shared
:class:`~kmesh.store.broadcast.Broadcaster`). Engine calls run on the trio
thread and never await, so a read-check-write is atomic with respect to
other tasks and an event is published in the same step that commits it.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import AsyncIterator, Callable, Iterator, Protocol

import trio

from kmesh.store.base import (
    Conflict,
    Event,
    EventType,
    Gone,
    ListResult,
    NotFound,
    Obj,
    RevisionTooLarge,
    Unavailable,
    prefix_end,
)
from kmesh.store.broadcast import DEFAULT_WINDOW, Broadcaster
from kmesh.store.codec import decode, encode

Change = tuple[int, str, EventType, str]
"""One log row: (revision, key, type, value); a DELETED row holds the last value."""

# Revisions one history read covers: bounds the work done between checkpoints.
_HISTORY_SPAN = 4096


class Engine(Protocol):
    """A synchronous revisioned key/value store with a log of every change.

    Revisions are consecutive: the n-th write gets revision n. ``compacted``
    is the oldest revision whose state the engine can still answer for.
    """

    revision: int
    compacted: int

    def get(self, key: str) -> tuple[str, int] | None:
        """The current (value, revision that wrote it), or None."""
        ...

    def write(self, key: str, type: EventType, value: str) -> int:
        """Apply and log one change atomically; return its revision.

        ADDED inserts (AlreadyExists if the key is there), MODIFIED
        replaces, DELETED removes the key (``value`` is then its last value,
        kept in the log).
        """
        ...

    def range(self, start: str, end: str, at: int | None, limit: int | None) -> list[tuple[str, str, int]]:
        """(key, value, revision) of keys in [start, end) as of ``at`` (None: now), in key order."""
        ...

    def count(self, start: str, end: str, at: int | None) -> int:
        """How many keys are in [start, end) as of ``at``."""
        ...

    def changes(self, after: int, upto: int, start: str, end: str) -> list[Change]:
        """Log rows with after < revision <= upto and start <= key < end, in revision order."""
        ...

    def compact(self, revision: int) -> Iterator[None]:
        """Set ``compacted`` to ``revision`` now, then drop history in steps (yields between)."""
        ...

    def close(self) -> None:
        """Release the engine's files."""
        ...


class LocalStore:
    """A ``Store`` over an in-process :class:`Engine`; use ``async with`` or ``aclose``."""

    def __init__(self, engine: Engine, *, window: int = DEFAULT_WINDOW) -> None:
        self._engine = engine
        history = _LocalHistory(engine, lambda: self._bc.closed)
        self._bc = Broadcaster(history, floor=engine.revision, capacity=window)

    @property
    def active_watches(self) -> int:
        """Open watch contexts (for tests and metrics)."""
        return self._bc.active_watches

    @property
    def open_readers(self) -> int:
        """Watchers currently reading history rather than the window."""
        return self._bc.open_readers

    async def __aenter__(self) -> LocalStore:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _open_engine(self) -> Engine:
        if self._bc.closed:
            raise Unavailable("store is closed")
        return self._engine

    async def create(self, key: str, obj: Obj) -> Obj:
        """Store ``obj`` under a new ``key``; AlreadyExists if it exists."""
        value = encode(obj)
        await trio.lowlevel.checkpoint_if_cancelled()
        self._open_engine()
        return await self._commit(key, "ADDED", value)

    async def get(self, key: str) -> Obj:
        """The current object at ``key``; NotFound if absent."""
        await trio.lowlevel.checkpoint()
        found = self._open_engine().get(key)
        if found is None:
            raise NotFound(f"{key} not found", key)
        return decode(*found)

    async def update(self, key: str, obj: Obj, expected_revision: int | None = None) -> Obj:
        """Replace the object at ``key`` (NotFound / Conflict as in Store)."""
        value = encode(obj)
        await trio.lowlevel.checkpoint_if_cancelled()
        self._current(key, expected_revision)
        return await self._commit(key, "MODIFIED", value)

    async def delete(self, key: str, expected_revision: int | None = None) -> Obj:
        """Remove ``key``; return its last state with the delete's revision."""
        await trio.lowlevel.checkpoint_if_cancelled()
        value, _ = self._current(key, expected_revision)
        return await self._commit(key, "DELETED", value)

    def _current(self, key: str, expected_revision: int | None) -> tuple[str, int]:
        found = self._open_engine().get(key)
        if found is None:
            raise NotFound(f"{key} not found", key)
        if expected_revision is not None and found[1] != expected_revision:
            raise Conflict(
                f"{key}: resourceVersion {expected_revision} is stale (now {found[1]})", key
            )
        return found

    async def _commit(self, key: str, type: EventType, value: str) -> Obj:
        revision = self._engine.write(key, type, value)
        self._bc.publish([Event(type, key, decode(value, revision), revision)], len(value))
        # The write happened: yield to others, but never lose its result to a cancel.
        await trio.lowlevel.cancel_shielded_checkpoint()
        return decode(value, revision)

    async def list(
        self,
        prefix: str,
        *,
        revision: int | None = None,
        start_after: str | None = None,
        limit: int | None = None,
    ) -> ListResult:
        """Objects under ``prefix``, now or as of ``revision`` (see Store.list)."""
        await trio.lowlevel.checkpoint()
        engine = self._open_engine()
        if limit is not None and limit <= 0:  # as in Kubernetes: no limit
            limit = None
        if revision is not None and revision > engine.revision:
            raise RevisionTooLarge(f"revision {revision} is newer than {engine.revision}")
        if revision is not None and revision < engine.compacted:
            raise Gone(f"revision {revision} is compacted (oldest is {engine.compacted})")
        at = None if revision is None or revision == engine.revision else revision
        start = prefix if start_after is None else max(prefix, start_after + "\0")
        end = prefix_end(prefix)
        rows = engine.range(start, end, at, None if limit is None else limit + 1)
        more = limit is not None and len(rows) > limit
        remaining = 0
        if more:
            del rows[limit:]
            remaining = engine.count(rows[-1][0] + "\0", end, at) if rows else engine.count(start, end, at)
        items = [decode(value, rev) for _, value, rev in rows]
        return ListResult(items, engine.revision if at is None else at, more, remaining)

    def watch(self, prefix: str, revision: int) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """Every change under ``prefix`` after ``revision`` (see Store.watch)."""
        return self._bc.watch(prefix, revision)

    async def current_revision(self) -> int:
        """The revision of the latest write (0 for an empty new store)."""
        await trio.lowlevel.checkpoint()
        return self._open_engine().revision

    async def compact(self, revision: int) -> None:
        """Drop history up to ``revision``; watches and lists before it get Gone."""
        await trio.lowlevel.checkpoint()
        engine = self._open_engine()
        if revision > engine.revision:
            raise RevisionTooLarge(f"cannot compact to {revision}: latest is {engine.revision}")
        if revision <= engine.compacted:
            return
        for _ in engine.compact(revision):
            await trio.lowlevel.checkpoint()
            if self._bc.closed:
                return

    async def aclose(self) -> None:
        """End every watch and release the engine."""
        if not self._bc.closed:
            self._bc.close()
            self._engine.close()
        await trio.lowlevel.checkpoint()


class _LocalHistory:
    """Serves watchers behind the window from the engine's change log."""

    def __init__(self, engine: Engine, closed: Callable[[], bool]) -> None:
        self._engine = engine
        self._closed = closed

    async def check(self, revision: int) -> None:
        await trio.lowlevel.checkpoint()
        _check_compacted(self._engine, revision)

    def reader(self, prefix: str, after: int) -> _LocalReader:
        return _LocalReader(self._engine, self._closed, prefix, after)


class _LocalReader:
    def __init__(self, engine: Engine, closed: Callable[[], bool], prefix: str, after: int) -> None:
        self._engine = engine
        self._closed = closed
        self._prefix = prefix
        self._end = prefix_end(prefix)
        self._pos = after

    async def next_batch(self) -> tuple[list[Event], int]:
        await trio.lowlevel.checkpoint()
        if self._closed():
            raise Unavailable("store is closed")
        engine = self._engine
        _check_compacted(engine, self._pos)
        upto = min(self._pos + _HISTORY_SPAN, engine.revision)
        rows = engine.changes(self._pos, upto, self._prefix, self._end)
        self._pos = upto
        return [Event(type, key, decode(value, rev), rev) for rev, key, type, value in rows], upto

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _check_compacted(engine: Engine, revision: int) -> None:
    if revision < engine.compacted:
        raise Gone(f"revision {revision} is compacted (oldest is {engine.compacted})")

