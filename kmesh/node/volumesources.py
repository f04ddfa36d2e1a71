"""The Secrets and ConfigMaps that pods on this node mount, each watched on its own and shared between pods.

As upstream's kubelet (its "Watch" change detection strategy), the node
watches exactly the objects its pods reference (``fieldSelector
metadata.name=<name>`` in their namespace), not every Secret of the
cluster; a watch ends when the last pod using it lets go.
"""

from __future__ import annotations

import logging

import trio

from kmesh.api.obj import Obj
from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer

log = logging.getLogger("kmesh.node.volumes")
SYNC_WAIT = 10.0  # seconds a mount waits for a new watch's first list before calling the object missing

SourceKey = tuple[str, str, str]  # (kind, namespace, name)


class SourceWatch:
    """One watched object: its current state and an event that fires on its next change."""

    def __init__(self, key: SourceKey, informer: Informer | None) -> None:
        self.key = key
        self.informer = informer
        self.refs = 0
        self.scope = trio.CancelScope()
        self._changed = trio.Event()
        if informer is not None:
            informer.add_handler(self._on_change)

    def _on_change(self, change: Change) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def changed(self) -> trio.Event:
        """Set at the object's next change (creation, update, deletion)."""
        return self._changed

    def get(self) -> Obj | None:
        """The object as last seen (None: not there, or not listed yet)."""
        if self.informer is None:
            return None
        return self.informer.get(self.key[2], self.key[1])

    async def wait_synced(self) -> None:
        """Return once the first list has answered (or after ``SYNC_WAIT`` seconds)."""
        if self.informer is not None:
            with trio.move_on_after(SYNC_WAIT):
                await self.informer.synced.wait()


class VolumeSources:
    """The node's shared watches of mounted Secrets/ConfigMaps; runs them in its own nursery."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.watches: dict[SourceKey, SourceWatch] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the watches until cancelled."""
        async with trio.open_nursery() as n:
            self._nursery = n
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def acquire(self, kind: str, namespace: str, name: str) -> SourceWatch:
        """A watch of one object (started on first use); give it back with ``release``."""
        key = (kind, namespace, name)
        w = self.watches.get(key)
        if w is None:
            try:
                inf: Informer | None = Informer(self.client, kind, namespace=namespace,
                                                field_selector=f"metadata.name={name}")
            except KeyError:  # a kind this API does not serve: never there
                inf = None
            w = SourceWatch(key, inf)
            self.watches[key] = w
            if inf is not None and self._nursery is not None:
                self._nursery.start_soon(self._run_watch, w)
        w.refs += 1
        return w

    async def _run_watch(self, w: SourceWatch) -> None:
        assert w.informer is not None
        with w.scope:
            await w.informer.run()

    def release(self, w: SourceWatch) -> None:
        """Let go of a watch; the last release stops it."""
        w.refs -= 1
        if w.refs <= 0 and self.watches.get(w.key) is w:
            del self.watches[w.key]
            w.scope.cancel()
