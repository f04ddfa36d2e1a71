"""The one informer every component uses: list, watch from the list's revision, cache, hand on changes.

On 410 Gone it lists again and hands on the difference; when the API server
is unreachable it keeps its cache (so components keep serving what they
have) and retries with backoff until the server returns.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Awaitable, Callable

import trio

from kmesh.api import errors as E
from kmesh.api.kinds import Kind
from kmesh.api.kinds import get as kind_named
from kmesh.api.obj import Obj
from kmesh.client.api import APIUnavailable, Client

log = logging.getLogger("kmesh.informer")

Key = tuple[str, str]  # (namespace or "", name)


@dataclass(frozen=True, slots=True)
class Change:
    """One change handed to a component: ``old`` None for an add, ``new`` None for a delete."""

    kind: Kind
    old: Obj | None
    new: Obj | None

    @property
    def type(self) -> str:
        """ADDED, MODIFIED or DELETED."""
        if self.old is None:
            return "ADDED"
        if self.new is None:
            return "DELETED"
        return "MODIFIED"

    @property
    def obj(self) -> Obj:
        """The newest state known (the last one for a delete)."""
        return self.new if self.new is not None else self.old  # type: ignore[return-value]


Handler = Callable[[Change], Awaitable[None] | None]


def key_of(obj: Obj) -> Key:
    """The cache key of an object."""
    md = obj.get("metadata") or {}
    return (md.get("namespace") or "", md.get("name") or "")


class Informer:
    """A local, always-current cache of one kind (optionally filtered) fed by list+watch."""

    def __init__(
        self,
        client: Client,
        kind: Kind | str,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        handlers: list[Handler] | None = None,
        backoff_max: float = 5.0,
    ) -> None:
        self.client = client
        self.kind = kind if isinstance(kind, Kind) else kind_named(kind)
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.handlers: list[Handler] = list(handlers or [])
        self.cache: dict[Key, Obj] = {}
        self.resource_version = ""
        self.synced = trio.Event()
        self.connected = False
        self.backoff_max = backoff_max
        self.relists = 0
        self._changed = trio.Condition()

    def add_handler(self, handler: Handler) -> None:
        """Call ``handler`` for every later change (and, if already synced, not for the past)."""
        self.handlers.append(handler)

    def get(self, name: str, namespace: str | None = None) -> Obj | None:
        """A cached object."""
        return self.cache.get((namespace or "", name))

    def list(self, namespace: str | None = None) -> list[Obj]:
        """Cached objects (of one namespace, if given)."""
        if namespace is None:
            return list(self.cache.values())
        return [o for (ns, _), o in self.cache.items() if ns == namespace]

    async def wait_for(self, predicate: Callable[["Informer"], bool]) -> None:
        """Return once ``predicate(self)`` holds (checked after every change)."""
        async with self._changed:
            while not predicate(self):
                await self._changed.wait()

    async def _set_connected(self, value: bool) -> None:
        if self.connected != value:
            self.connected = value
            async with self._changed:
                self._changed.notify_all()

    async def _emit(self, change: Change) -> None:
        for h in self.handlers:
            res = h(change)
            if res is not None:
                await res
        async with self._changed:
            self._changed.notify_all()

    async def _relist(self) -> None:
        items, rv = await self.client.list_all(
            self.kind, self.namespace, label_selector=self.label_selector, field_selector=self.field_selector
        )
        fresh = {key_of(o): o for o in items}
        old_cache = self.cache
        self.cache = fresh
        self.resource_version = rv
        self.relists += 1
        for k, obj in fresh.items():
            prev = old_cache.get(k)
            if prev is None:
                await self._emit(Change(self.kind, None, obj))
            elif prev["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                await self._emit(Change(self.kind, prev, obj))
        for k, prev in old_cache.items():
            if k not in fresh:
                await self._emit(Change(self.kind, prev, None))
        if not self.synced.is_set():
            self.synced.set()
        async with self._changed:
            self._changed.notify_all()

    async def _watch(self) -> None:
        async with self.client.watch(
            self.kind, self.namespace, resource_version=self.resource_version,
            label_selector=self.label_selector, field_selector=self.field_selector,
        ) as events:
            await self._set_connected(True)
            async for etype, obj in events:
                rv = obj.get("metadata", {}).get("resourceVersion", "")
                if etype == "BOOKMARK":
                    self.resource_version = rv or self.resource_version
                    continue
                k = key_of(obj)
                prev = self.cache.get(k)
                if etype == "DELETED":
                    self.cache.pop(k, None)
                    if prev is not None:
                        await self._emit(Change(self.kind, prev, None))
                else:
                    self.cache[k] = obj
                    await self._emit(Change(self.kind, prev, obj))
                self.resource_version = rv or self.resource_version

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the cache current until cancelled; ``task_status`` fires after the first list."""
        delay = 0.1
        need_list = True
        started = False
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                    if not started:
                        started = True
                        task_status.started()
                await self._watch()
                delay = 0.1  # the server closed the stream (timeout): watch again
            except E.APIError as exc:
                await self._set_connected(False)
                if exc.code == 410:
                    need_list = True
                    continue
                log.warning("%s informer: %s", self.kind.plural, exc.message)
                need_list = True
                await trio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
            except APIUnavailable as exc:
                await self._set_connected(False)
                log.info("%s informer: API unreachable (%s); serving the cache", self.kind.plural, exc)
                await trio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff_max)
