"""The shared event window on its own, with a list as the backend's history."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from kmesh.store import Event, Gone, Unavailable
from kmesh.store.broadcast import Broadcaster
from tests.store.helpers import take


class ListHistory:
    """A backend history kept in a list (what the SQLite log table is on disk)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.compacted = 0

    async def check(self, revision: int) -> None:
        await trio.lowlevel.checkpoint()
        if revision < self.compacted:
            raise Gone("compacted")

    def reader(self, prefix: str, after: int) -> ListReader:
        return ListReader(self, prefix, after)


class ListReader:
    def __init__(self, history: ListHistory, prefix: str, after: int) -> None:
        self.history, self.prefix, self.pos = history, prefix, after

    async def next_batch(self) -> tuple[list[Event], int]:
        await self.history.check(self.pos)
        out = [ev for ev in self.history.events if ev.revision > self.pos][:3]  # small batches
        self.pos = out[-1].revision if len(out) == 3 else max([self.pos] + [ev.revision for ev in self.history.events])
        return [ev for ev in out if ev.key.startswith(self.prefix)], self.pos

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def ev(rev: int, k: str = "/a/x") -> Event:
    return Event("MODIFIED", k, {"metadata": {"resourceVersion": str(rev)}}, rev)


def write(h: ListHistory, bc: Broadcaster, *events: Event) -> None:
    h.events.extend(events)
    bc.publish(events)


async def test_window_keeps_the_newest_and_moves_its_floor() -> None:
    h = ListHistory()
    bc = Broadcaster(h, floor=0, capacity=4)
    write(h, bc, *(ev(r) for r in range(1, 11)))
    assert len(bc) == 4 and bc.floor == 6 and bc.last == 10
    async with bc.watch("/a/", 0) as events:  # starts before the window: history, then the window
        assert [e.revision for e in await take(events, 10)] == list(range(1, 11))
        write(h, bc, ev(11))
        assert [e.revision for e in await take(events, 1)] == [11]


async def test_one_revision_with_several_events_is_never_split() -> None:
    h = ListHistory()
    bc = Broadcaster(h, floor=0, capacity=3)
    write(h, bc, ev(1), ev(2, "/a/1"), ev(2, "/a/2"), ev(2, "/a/3"), ev(3))
    # The window dropped one of revision 2's events: its floor is 2, and
    # a watcher from 1 reads all of revision 2 from history.
    assert bc.floor == 2
    async with bc.watch("/a/", 1) as events:
        got = await take(events, 4)
    assert [(e.revision, e.key) for e in got] == [(2, "/a/1"), (2, "/a/2"), (2, "/a/3"), (3, "/a/x")]


async def test_reset_sends_watchers_behind_it_to_history() -> None:
    h = ListHistory()
    bc = Broadcaster(h, floor=0)
    write(h, bc, ev(1))
    async with bc.watch("/a/", 0) as events:
        assert [e.revision for e in await take(events, 1)] == [1]
        # The feed lost events 2-3 (a broken stream it could not resume) but history has them.
        h.events += [ev(2), ev(3)]
        bc.reset(3)
        write(h, bc, ev(4))
        assert [e.revision for e in await take(events, 3)] == [2, 3, 4]
    # Had history been compacted meanwhile, the watcher is told Gone.
    async with bc.watch("/a/", 4) as events:
        h.events += [ev(5)]
        h.compacted = 5
        bc.reset(5)
        with pytest.raises(Gone):
            await take(events, 1)


async def test_close_ends_waiting_watchers() -> None:
    bc = Broadcaster(ListHistory(), floor=0)
    outcome: list[str] = []

    async def watch(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with bc.watch("", 0) as events:
            task_status.started()
            try:
                await events.__anext__()
            except Unavailable:
                outcome.append("unavailable")

    async with trio.open_nursery() as nursery:
        await nursery.start(watch)
        await trio.testing.wait_all_tasks_blocked()  # the watcher is parked, waiting for events
        bc.close()
    assert outcome == ["unavailable"]
    assert bc.active_watches == 0
