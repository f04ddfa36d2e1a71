"""What a subnet manager's ``watch_peers`` reports, collected for the etcd and kube subnet tests to wait on."""

from __future__ import annotations

from collections.abc import Callable

import trio

from kmesh.cni.subnets import PeerEvent


class PeerEvents:
    """Pass ``on_event`` to ``watch_peers``; ``events`` holds what came and was not taken yet."""

    def __init__(self) -> None:
        self.events: list[PeerEvent] = []
        self.arrived = trio.Condition()

    async def on_event(self, ev: PeerEvent) -> None:
        """The watch callback: keep ``ev`` and wake the waiters."""
        self.events.append(ev)
        async with self.arrived:
            self.arrived.notify_all()

    async def next(self) -> PeerEvent:
        """Take the oldest event, waiting for one."""
        async with self.arrived:
            while not self.events:
                await self.arrived.wait()
            return self.events.pop(0)

    async def first(self, pred: Callable[[PeerEvent], bool]) -> PeerEvent:
        """Take the oldest event ``pred`` accepts, waiting for one (the others stay)."""
        async with self.arrived:
            while True:
                for ev in self.events:
                    if pred(ev):
                        self.events.remove(ev)
                        return ev
                await self.arrived.wait()
