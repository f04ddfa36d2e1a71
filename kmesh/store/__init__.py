"""The API storage layer: one Store protocol, three backends.

``open_store(url)`` gives a running store for a URL:

- ``memory://`` — in memory, for tests;
- ``sqlite:///abs/path.db`` or a plain path — the default, one file;
- ``etcd://host:port``, ``http://host:port`` or ``https://host:port``
  (comma-separated for several members) — a real etcd; over TLS, with
  ``etcd_tls`` naming the CA and client certificate.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, AsyncIterator

from kmesh.store.base import (
    AlreadyExists,
    Conflict,
    Event,
    EventType,
    Gone,
    ListResult,
    NotFound,
    Obj,
    RevisionTooLarge,
    Store,
    StoreError,
    Unavailable,
)
from kmesh.store.broadcast import DEFAULT_WINDOW
from kmesh.store.compactor import run_compactor

if TYPE_CHECKING:
    from kmesh.store.etcd_api import EtcdTLS

__all__ = [
    "AlreadyExists",
    "Conflict",
    "Event",
    "EventType",
    "Gone",
    "ListResult",
    "NotFound",
    "Obj",
    "RevisionTooLarge",
    "Store",
    "StoreError",
    "Unavailable",
    "open_store",
    "run_compactor",
    "store_kind",
]


def store_kind(url: str) -> str:
    """Which backend a store URL names: ``"memory"``, ``"sqlite"`` or ``"etcd"``."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory" or url in ("memory", "memory:"):
        return "memory"
    if scheme in ("etcd", "http", "https"):
        return "etcd"
    if scheme in ("sqlite", ""):
        return "sqlite"
    raise ValueError(f"unknown store URL {url!r} (memory://, sqlite:///path.db, etcd://host:port, https://host:port)")


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:///abs/path.db`` URL (or a plain path) names."""
    path = url[len("sqlite://") :] if url.lower().startswith("sqlite://") else url
    if not path:
        raise ValueError(f"no path in store URL {url!r}")
    return path


@asynccontextmanager
async def open_store(
    url: str, *, prefix: str = "", window: int = DEFAULT_WINDOW, etcd_tls: EtcdTLS | None = None
) -> AsyncIterator[Store]:
    """A running store for ``url``, closed (with its background tasks) on exit.

    ``prefix`` is the etcd key prefix (ignored by the other backends);
    ``window`` is how many recent events watchers share in memory;
    ``etcd_tls`` the CA and client certificate of an https etcd.
    """
    kind = store_kind(url)
    if kind == "memory":
        from kmesh.store.memory import MemoryStore

        async with MemoryStore(window=window) as mem:
            yield mem
    elif kind == "sqlite":
        from kmesh.store.sqlite import SqliteStore

        async with SqliteStore(sqlite_path(url), window=window) as lite:
            yield lite
    else:
        from kmesh.store.etcd import EtcdStore

        async with EtcdStore(url, prefix, window=window, tls=etcd_tls) as etcd:
            yield etcd
