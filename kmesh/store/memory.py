"""An in-memory store for tests: full MVCC history, nothing on disk."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from typing import Iterator

from kmesh.store.base import AlreadyExists, EventType
from kmesh.store.broadcast import DEFAULT_WINDOW
from kmesh.store.local import Change, LocalStore

Version = tuple[int, "str | None"]
"""(revision, value); value None marks a delete."""


class MemoryEngine:
    """Per-key version lists (for lists at a revision) plus a global change log."""

    def __init__(self) -> None:
        self.revision = 0
        self.compacted = 0
        self._current: dict[str, tuple[str, int]] = {}
        self._versions: dict[str, list[Version]] = {}
        self._keys: list[str] = []  # every key with a version, sorted
        self._log: list[Change] = []  # revisions _log[0][0] .. self.revision, consecutive

    def get(self, key: str) -> tuple[str, int] | None:
        return self._current.get(key)

    def write(self, key: str, type: EventType, value: str) -> int:
        if type == "ADDED" and key in self._current:
            raise AlreadyExists(f"{key} already exists", key)
        rev = self.revision + 1
        if type == "DELETED":
            del self._current[key]
        else:
            self._current[key] = (value, rev)
        versions = self._versions.get(key)
        if versions is None:
            versions = self._versions[key] = []
            insort(self._keys, key)
        versions.append((rev, None if type == "DELETED" else value))
        self._log.append((rev, key, type, value))
        self.revision = rev
        return rev

    def _keys_in(self, start: str, end: str) -> list[str]:
        return self._keys[bisect_left(self._keys, start) : bisect_left(self._keys, end)]

    def _value_at(self, key: str, at: int | None) -> tuple[str, int] | None:
        if at is None:
            return self._current.get(key)
        versions = self._versions[key]
        i = bisect_right(versions, at, key=lambda v: v[0])
        if i == 0:
            return None
        rev, value = versions[i - 1]
        return None if value is None else (value, rev)

    def range(self, start: str, end: str, at: int | None, limit: int | None) -> list[tuple[str, str, int]]:
        out: list[tuple[str, str, int]] = []
        for key in self._keys_in(start, end):
            if limit is not None and len(out) >= limit:
                break
            found = self._value_at(key, at)
            if found is not None:
                out.append((key, found[0], found[1]))
        return out

    def count(self, start: str, end: str, at: int | None) -> int:
        return sum(1 for key in self._keys_in(start, end) if self._value_at(key, at) is not None)

    def changes(self, after: int, upto: int, start: str, end: str) -> list[Change]:
        if not self._log:
            return []
        first = self._log[0][0]
        rows = self._log[max(0, after + 1 - first) : max(0, upto + 1 - first)]
        return [row for row in rows if start <= row[1] < end]

    def compact(self, revision: int) -> Iterator[None]:
        self.compacted = revision
        dropped = False
        for key in list(self._versions):
            versions = self._versions[key]
            i = bisect_right(versions, revision, key=lambda v: v[0])
            if i == 0:
                continue
            # Keep the latest version at or before the compaction (unless a delete).
            keep = i - 1 if versions[i - 1][1] is not None else i
            del versions[:keep]
            if not versions:
                del self._versions[key]
                dropped = True
        if dropped:
            self._keys = [key for key in self._keys if key in self._versions]
        if self._log:
            del self._log[: max(0, revision + 1 - self._log[0][0])]
        yield

    def close(self) -> None:
        pass


class MemoryStore(LocalStore):
    """A Store kept in memory: for tests, and for `kmesh up --store memory`."""

    def __init__(self, *, window: int = DEFAULT_WINDOW) -> None:
        super().__init__(MemoryEngine(), window=window)
