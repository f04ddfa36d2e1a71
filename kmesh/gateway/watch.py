"""The objects a Gateway API or Ingress translation reads, kept current by a ``WatchSet``.

Shared by the Gateway controller and the proxies' feeders: both translate the
whole world again after each burst of changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from kmesh.client.watchset import WatchSet
from kmesh.gateway.world import World


@dataclass
class WorldWatch(WatchSet):
    """A WatchSet whose objects make a :class:`World`."""

    def world(self) -> World:
        """The objects the informers hold now."""
        return World.of([o for inf in self.informers.values() for o in inf.list()])
