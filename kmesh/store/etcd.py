"""A Store on a real etcd (>= 3.4) through its v3 JSON gateway.

Revisions are etcd's own (``mod_revision`` / ``header.revision``), so
several kmesh servers can share one etcd. Writes are transactions: create
compares ``create_revision == 0``; update and delete compare ``mod_revision``
when given an expected revision. Values are the object JSON without
``resourceVersion``.

Watches share ONE etcd watch on the store's whole prefix, started on first
use in the store's nursery (hence ``async with EtcdStore(...)``); it feeds
the shared window and resumes from the last seen revision when etcd drops
it. Watchers behind the window read a dedicated etcd watch of their own
(:mod:`kmesh.store.etcd_watch`).
"""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, AsyncIterator, Sequence

import trio

from kmesh.store.base import (
    AlreadyExists,
    Conflict,
    Event,
    Gone,
    ListResult,
    NotFound,
    Obj,
    StoreError,
    Unavailable,
)
from kmesh.store.broadcast import DEFAULT_WINDOW, Broadcaster
from kmesh.store.codec import decode, encode
from kmesh.store.etcd_api import EtcdClient, EtcdTLS, Json, b64, range_end, unb64
from kmesh.store.etcd_watch import EtcdHistory, run_feed


class EtcdStore:
    """A Store in etcd under ``prefix``; use as ``async with EtcdStore(url) as store``.

    ``tls``: the CA and client certificate for an https etcd (see ``EtcdTLS``).
    """

    def __init__(
        self, url: str | Sequence[str], prefix: str = "", *, window: int = DEFAULT_WINDOW, tls: EtcdTLS | None = None
    ) -> None:
        self.client = EtcdClient(url, tls)
        self.prefix = prefix
        self._window = window
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._bc: Broadcaster | None = None
        self._feed_lock = trio.Lock()
        self._feed_scope: trio.CancelScope | None = None
        self._closed = False

    # -- lifetime ---------------------------------------------------------

    async def __aenter__(self) -> EtcdStore:
        stack = AsyncExitStack()
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        self._stack = stack
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
        stack, self._stack = self._stack, None
        if stack is not None:
            # The body's own exception is not the nursery's: let it propagate unwrapped.
            await stack.aclose()

    async def aclose(self) -> None:
        """End every watch, stop the feed and close the connections."""
        if self._closed:
            return
        self._closed = True
        if self._bc is not None:
            self._bc.close()
        if self._feed_scope is not None:
            self._feed_scope.cancel()
        with trio.CancelScope(shield=True):
            await self.client.aclose()

    @property
    def active_watches(self) -> int:
        """Open watch contexts (for tests and metrics)."""
        return 0 if self._bc is None else self._bc.active_watches

    @property
    def open_readers(self) -> int:
        """Watchers currently reading their own etcd watch rather than the window."""
        return 0 if self._bc is None else self._bc.open_readers

    # -- keys -------------------------------------------------------------

    def _key(self, key: str) -> bytes:
        return (self.prefix + key).encode()

    def _kv_obj(self, kv: Json) -> Obj:
        return decode(unb64(kv.get("value", "")), int(kv["mod_revision"]))

    # -- CRUD -------------------------------------------------------------

    async def create(self, key: str, obj: Obj) -> Obj:
        """Store ``obj`` under a new ``key``; AlreadyExists if it exists."""
        value = encode(obj)
        k = b64(self._key(key))
        resp = await self.client.call(
            "/v3/kv/txn",
            {
                "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": 0}],
                "success": [{"request_put": {"key": k, "value": b64(value.encode())}}],
            },
        )
        if not resp.get("succeeded"):
            raise AlreadyExists(f"{key} already exists", key)
        return decode(value, int(resp["header"]["revision"]))

    async def get(self, key: str) -> Obj:
        """The current object at ``key``; NotFound if absent."""
        resp = await self.client.call("/v3/kv/range", {"key": b64(self._key(key))})
        kvs = resp.get("kvs")
        if not kvs:
            raise NotFound(f"{key} not found", key)
        return self._kv_obj(kvs[0])

    def _guarded(self, key: str, k: str, expected_revision: int | None, success: Json) -> Json:
        if expected_revision is None:
            compare = {"key": k, "target": "CREATE", "result": "GREATER", "create_revision": 0}
        else:
            compare = {"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": expected_revision}
        return {
            "compare": [compare],
            "success": [success],
            "failure": [{"request_range": {"key": k, "keys_only": True}}],
        }

    def _failed(self, key: str, resp: Json, expected_revision: int | None) -> StoreError:
        found = resp["responses"][0]["response_range"].get("kvs")
        if not found:
            return NotFound(f"{key} not found", key)
        now = found[0].get("mod_revision")
        return Conflict(f"{key}: resourceVersion {expected_revision} is stale (now {now})", key)

    async def update(self, key: str, obj: Obj, expected_revision: int | None = None) -> Obj:
        """Replace the object at ``key`` (NotFound / Conflict as in Store)."""
        value = encode(obj)
        k = b64(self._key(key))
        put = {"request_put": {"key": k, "value": b64(value.encode())}}
        resp = await self.client.call("/v3/kv/txn", self._guarded(key, k, expected_revision, put))
        if not resp.get("succeeded"):
            raise self._failed(key, resp, expected_revision)
        return decode(value, int(resp["header"]["revision"]))

    async def delete(self, key: str, expected_revision: int | None = None) -> Obj:
        """Remove ``key``; return its last state with the delete's revision."""
        k = b64(self._key(key))
        rm = {"request_delete_range": {"key": k, "prev_kv": True}}
        resp = await self.client.call("/v3/kv/txn", self._guarded(key, k, expected_revision, rm))
        if not resp.get("succeeded"):
            raise self._failed(key, resp, expected_revision)
        prev = resp["responses"][0]["response_delete_range"]["prev_kvs"][0]
        return decode(unb64(prev.get("value", "")), int(resp["header"]["revision"]))

    async def list(
        self,
        prefix: str,
        *,
        revision: int | None = None,
        start_after: str | None = None,
        limit: int | None = None,
    ) -> ListResult:
        """Objects under ``prefix``, now or as of ``revision`` (see Store.list)."""
        full = self._key(prefix)
        start = full if start_after is None else max(full, self._key(start_after) + b"\0")
        body: dict[str, Any] = {"key": b64(start or b"\0"), "range_end": b64(range_end(full))}
        if revision is not None:
            if revision < 1:  # before the first write: nothing (as the local stores say)
                return ListResult([], revision)
            body["revision"] = revision
        if limit is not None and limit > 0:  # 0: no limit, as in Kubernetes and etcd
            body["limit"] = limit
        resp = await self.client.call("/v3/kv/range", body)
        kvs = resp.get("kvs", [])
        more = bool(resp.get("more"))
        remaining = int(resp.get("count", 0)) - len(kvs) if more else 0
        rev = revision if revision is not None else int(resp["header"]["revision"])
        return ListResult([self._kv_obj(kv) for kv in kvs], rev, more, remaining)

    async def current_revision(self) -> int:
        """The etcd cluster's latest revision."""
        resp = await self.client.call("/v3/kv/range", {"key": b64(self._key("") or b"\0"), "count_only": True})
        return int(resp["header"]["revision"])

    async def compact(self, revision: int) -> None:
        """Compact etcd's history up to ``revision`` (no-op if already done)."""
        try:
            await self.client.call("/v3/kv/compaction", {"revision": revision})
        except Gone:
            pass  # compacted at or past it already

    # -- watch ------------------------------------------------------------

    @asynccontextmanager
    async def watch(self, prefix: str, revision: int) -> AsyncIterator[AsyncIterator[Event]]:
        """Every change under ``prefix`` after ``revision`` (see Store.watch)."""
        bc = await self._broadcaster()
        async with bc.watch(prefix, revision) as events:
            yield events

    async def _broadcaster(self) -> Broadcaster:
        """The shared window, starting the feeding etcd watch on first use."""
        async with self._feed_lock:
            if self._bc is None:
                if self._closed:
                    raise Unavailable("store is closed")
                if self._nursery is None:
                    raise RuntimeError("EtcdStore watches need `async with EtcdStore(...)` (or open_store)")
                history = EtcdHistory(self.client, self.prefix)
                floor = await self.current_revision()
                bc = Broadcaster(history, floor=floor, capacity=self._window)
                await self._nursery.start(self._feed, bc)
                self._bc = bc
            return self._bc

    async def _feed(self, bc: Broadcaster, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as self._feed_scope:
            await run_feed(self.client, self.prefix, bc, task_status=task_status)
