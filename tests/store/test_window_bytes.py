"""The shared event window is bounded in bytes too: large objects do not stay pinned in memory."""

from __future__ import annotations

import gc
import weakref

from kmesh.store import Event
from kmesh.store.broadcast import Broadcaster
from kmesh.store.memory import MemoryStore
from tests.store.helpers import take
from tests.store.test_broadcast import ListHistory, ev


class Big(dict):  # a dict that can be weakly referenced: is the window still holding it?
    pass


def big(rev: int) -> Event:
    return Event("MODIFIED", f"/a/{rev}", Big(metadata={"resourceVersion": str(rev)}), rev)


async def test_the_window_drops_its_oldest_events_beyond_max_bytes() -> None:
    h = ListHistory()
    bc = Broadcaster(h, floor=0, capacity=1000, max_bytes=3000)
    events = [big(r) for r in range(1, 11)]
    refs = [weakref.ref(e.obj) for e in events]
    for e in events:
        h.events.append(e)
        bc.publish([e], 1000)
    assert len(bc) == 3 and bc.bytes == 3000 and bc.floor == 7 and bc.last == 10
    del events, e
    h.events = [ev(r, f"/a/{r}") for r in range(1, 11)]  # history keeps its own copies
    gc.collect()
    assert [r() is None for r in refs] == [True] * 7 + [False] * 3  # dropped means released
    async with bc.watch("/a/", 0) as watcher:  # from before the window: history, then the window
        assert [e.revision for e in await take(watcher, 10)] == list(range(1, 11))


async def test_one_event_larger_than_the_bound_is_kept() -> None:
    bc = Broadcaster(ListHistory(), floor=0, max_bytes=100)
    bc.publish([ev(1)], 50)
    bc.publish([ev(2)], 500)
    assert len(bc) == 1 and bc.floor == 1 and bc.bytes == 500
    bc.publish([ev(3)], 10)
    assert len(bc) == 1 and bc.floor == 2 and bc.bytes == 10


async def test_a_store_counts_its_values_and_watchers_behind_read_history() -> None:
    async with MemoryStore() as store:
        store._bc.max_bytes = 64 * 1024  # a small window: 1 MiB of values cannot all stay
        first = await store.current_revision()
        value = "v" * 16 * 1024
        for i in range(64):
            await store.create(f"/registry/configmaps/default/c{i}", {"metadata": {"name": f"c{i}"}, "data": {"k": value}})
        assert store._bc.bytes <= 64 * 1024 and len(store._bc) < 64
        async with store.watch("/registry/configmaps/", first) as watcher:
            got = await take(watcher, 64)
        assert [e.key.rsplit("/", 1)[1] for e in got] == [f"c{i}" for i in range(64)]
