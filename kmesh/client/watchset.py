"""Informers for several kinds and a wait for the next burst of their changes.

For components that recompute everything from what the informers hold after
changes (the Gateway controller and the proxies' feeders translate the whole
world again; the policy agent renders a node's rules again): changes arriving
together (an apply of many objects) are taken in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer


@dataclass
class WatchSet:
    """Informers for ``kinds``; ``changes()`` waits for the next burst."""

    client: Client
    kinds: tuple[str, ...]
    coalesce: float = 0.02  # seconds: changes arriving within it are one burst
    informers: dict[str, Informer] = field(default_factory=dict)
    _dirty: trio.Event = field(default_factory=trio.Event)

    async def start(self, nursery: trio.Nursery) -> None:
        """Run the informers in ``nursery``; returns once each has listed."""
        for k in self.kinds:
            inf = Informer(self.client, k)
            inf.add_handler(self._changed)
            self.informers[k] = inf
            await nursery.start(inf.run)

    async def _changed(self, _change: Change) -> None:
        self._dirty.set()

    def again(self) -> None:
        """Make the next ``changes()`` return at once (what was done must be retried)."""
        self._dirty.set()

    async def changes(self) -> None:
        """Return after the next burst of changes."""
        await self._dirty.wait()
        await trio.sleep(self.coalesce)
        self._dirty = trio.Event()
