"""The Store protocol every backend (memory, SQLite, etcd) implements.

A store maps string keys (``/registry/<resource>/<namespace>/<name>``, or
``/registry/<resource>/<name>`` for cluster-scoped kinds) to Kubernetes
objects (JSON-compatible dicts). One increasing integer revision orders every
change; an object's ``metadata.resourceVersion`` is the revision that last
wrote it, as a string. The store sets it on every object it returns; callers
never have to.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import AsyncIterator, Literal, Protocol

from kmesh.api.obj import Obj

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


class StoreError(Exception):
    """Base of the errors a store raises; ``code`` is the HTTP status it maps to."""

    code: int = 500
    reason: str = "InternalError"

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class NotFound(StoreError):
    """The key does not exist."""

    code = 404
    reason = "NotFound"


class AlreadyExists(StoreError):
    """Create of a key that exists."""

    code = 409
    reason = "AlreadyExists"


class Conflict(StoreError):
    """Update or delete with a resourceVersion that is no longer current."""

    code = 409
    reason = "Conflict"


class Gone(StoreError):
    """A watch or list asked for a revision that compaction removed."""

    code = 410
    reason = "Expired"


class Unavailable(StoreError):
    """The backend (e.g. etcd) cannot be reached."""

    code = 503
    reason = "ServiceUnavailable"


class RevisionTooLarge(StoreError):
    """A list or compaction asked for a revision newer than the latest write.

    Kubernetes answers this with 504 Timeout ("Too large resource version")
    so that clients retry.
    """

    code = 504
    reason = "Timeout"


@dataclass(frozen=True, slots=True)
class Event:
    """One change: ``obj`` is the new state (for DELETED, the last state).

    ``obj["metadata"]["resourceVersion"]`` equals ``str(revision)``; for a
    DELETED event that is the revision of the delete.
    """

    type: EventType
    key: str
    obj: Obj
    revision: int


@dataclass(frozen=True, slots=True)
class ListResult:
    """Objects under a prefix at ``revision``, in key order.

    ``more`` is true when ``limit`` cut the list; continue from the last
    item's key with ``start_after`` and the same ``revision``.
    """

    items: list[Obj]
    revision: int
    more: bool = False
    remaining: int = 0


class Store(Protocol):
    """A revisioned key/object store with ordered, exactly-once watches."""

    async def create(self, key: str, obj: Obj) -> Obj:
        """Store ``obj`` under a new ``key``; AlreadyExists if it exists."""
        ...

    async def get(self, key: str) -> Obj:
        """The current object at ``key``; NotFound if absent."""
        ...

    async def update(self, key: str, obj: Obj, expected_revision: int | None = None) -> Obj:
        """Replace the object at ``key``.

        NotFound if absent; Conflict if ``expected_revision`` is given and
        is not the revision that last wrote the key.
        """
        ...

    async def delete(self, key: str, expected_revision: int | None = None) -> Obj:
        """Remove ``key`` and return its last state with the delete's revision.

        NotFound if absent; Conflict on a stale ``expected_revision``.
        """
        ...

    async def list(
        self,
        prefix: str,
        *,
        revision: int | None = None,
        start_after: str | None = None,
        limit: int | None = None,
    ) -> ListResult:
        """Objects whose key starts with ``prefix``.

        With ``revision``, the state as of that revision (Gone if compacted);
        else the current state and the current revision.
        """
        ...

    def watch(self, prefix: str, revision: int) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """Every change under ``prefix`` with a revision greater than ``revision``.

        Exactly once each, in revision order. Gone (raised on entering the
        context or from the iterator) when ``revision`` is older than the
        compacted revision.
        """
        ...

    async def current_revision(self) -> int:
        """The revision of the latest write (0 for an empty new store)."""
        ...

    async def compact(self, revision: int) -> None:
        """Drop history up to ``revision``; watches from before it get Gone."""
        ...

    async def aclose(self) -> None:
        """Release connections and files."""
        ...


def with_revision(obj: Obj, revision: int) -> Obj:
    """A shallow copy of ``obj`` whose metadata.resourceVersion is ``revision``."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta["resourceVersion"] = str(revision)
    out["metadata"] = meta
    return out


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"
