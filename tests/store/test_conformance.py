"""One conformance suite, run on every backend (memory, SQLite, etcd)."""

from __future__ import annotations

import pytest
import trio

from kmesh.store import AlreadyExists, Conflict, Gone, NotFound, RevisionTooLarge, Store
from tests.store.conftest import Backend
from tests.store.helpers import PREFIX, check_event, cm, key, rv, summary, take


async def test_create_get_update_delete(store: Store) -> None:
    created = await store.create(key("a"), cm("a", x="1"))
    assert created["data"] == {"x": "1"}
    got = await store.get(key("a"))
    assert got == created
    updated = await store.update(key("a"), {**got, "data": {"x": "2"}})
    assert updated["data"] == {"x": "2"} and rv(updated) > rv(created)
    assert await store.get(key("a")) == updated
    deleted = await store.delete(key("a"))
    assert deleted["data"] == {"x": "2"}
    assert rv(deleted) > rv(updated)
    with pytest.raises(NotFound):
        await store.get(key("a"))


async def test_errors(store: Store) -> None:
    first = await store.create(key("a"), cm("a"))
    with pytest.raises(AlreadyExists):
        await store.create(key("a"), cm("a"))
    for call in (store.get(key("b")), store.update(key("b"), cm("b")), store.delete(key("b"))):
        with pytest.raises(NotFound) as info:
            await call
        assert info.value.code == 404
    second = await store.update(key("a"), cm("a", v="2"), expected_revision=rv(first))
    with pytest.raises(Conflict):
        await store.update(key("a"), cm("a", v="3"), expected_revision=rv(first))
    with pytest.raises(Conflict):
        await store.delete(key("a"), expected_revision=rv(first))
    assert (await store.get(key("a")))["data"] == {"v": "2"}  # nothing changed on error
    gone = await store.delete(key("a"), expected_revision=rv(second))
    assert gone["data"] == {"v": "2"}
    with pytest.raises(NotFound):
        await store.delete(key("a"), expected_revision=rv(second))


async def test_resource_version_is_the_revision_and_increases(store: Store) -> None:
    given = cm("a")
    given["metadata"]["resourceVersion"] = "999999"  # the caller's is ignored
    seen = [rv(await store.create(key("a"), given))]
    seen.append(rv(await store.create(key("b"), cm("b"))))
    seen.append(rv(await store.update(key("a"), cm("a", x="1"))))
    seen.append(rv(await store.delete(key("b"))))
    assert seen == sorted(set(seen))
    assert given["metadata"]["resourceVersion"] == "999999"  # the argument is not modified
    assert rv(await store.get(key("a"))) == seen[2]
    listed = await store.list(PREFIX)
    assert [rv(o) for o in listed.items] == [seen[2]]
    assert listed.revision == seen[3] == await store.current_revision()


async def test_returned_objects_are_private(store: Store) -> None:
    created = await store.create(key("a"), cm("a", x="1"))
    created["data"]["x"] = "changed by caller"
    assert (await store.get(key("a")))["data"] == {"x": "1"}


async def test_list_is_by_prefix_in_key_order(store: Store) -> None:
    for name in ("c", "a", "b"):
        await store.create(key(name), cm(name))
    await store.create("/registry/configmaps/defaultx/z", cm("z"))
    await store.create("/registry/configmaps/kube-system/y", cm("y"))
    listed = await store.list(PREFIX)
    assert [o["metadata"]["name"] for o in listed.items] == ["a", "b", "c"]
    assert not listed.more and listed.remaining == 0
    everything = await store.list("/registry/configmaps/")
    assert len(everything.items) == 5
    assert (await store.list("/registry/secrets/")).items == []


async def test_list_at_an_older_revision(store: Store) -> None:
    await store.create(key("a"), cm("a", v="1"))
    await store.create(key("b"), cm("b", v="1"))
    before = (await store.list(PREFIX)).revision
    await store.update(key("a"), cm("a", v="2"))
    await store.delete(key("b"))
    await store.create(key("c"), cm("c", v="1"))
    old = await store.list(PREFIX, revision=before)
    assert old.revision == before
    assert [(o["metadata"]["name"], o["data"]["v"]) for o in old.items] == [("a", "1"), ("b", "1")]
    assert all(rv(o) <= before for o in old.items)
    now = await store.list(PREFIX)
    assert [(o["metadata"]["name"], o["data"]["v"]) for o in now.items] == [("a", "2"), ("c", "1")]
    with pytest.raises(RevisionTooLarge):
        await store.list(PREFIX, revision=now.revision + 1000)


async def test_paging_at_a_fixed_revision(store: Store) -> None:
    for i in range(10):
        await store.create(key(f"n{i:02}"), cm(f"n{i:02}"))
    first = await store.list(PREFIX, limit=4)
    assert [o["metadata"]["name"] for o in first.items] == ["n00", "n01", "n02", "n03"]
    assert first.more and first.remaining == 6
    # The world moves on; the next pages still show the first page's revision.
    await store.delete(key("n05"))
    await store.create(key("n055"), cm("n055"))
    await store.update(key("n09"), cm("n09", later="yes"))
    names: list[str] = [o["metadata"]["name"] for o in first.items]
    page = first
    while page.more:
        last = page.items[-1]["metadata"]["name"]
        page = await store.list(PREFIX, revision=first.revision, start_after=key(last), limit=4)
        assert page.revision == first.revision
        names += [o["metadata"]["name"] for o in page.items]
        assert all("later" not in o["data"] for o in page.items)
    assert names == [f"n{i:02}" for i in range(10)]
    assert page.remaining == 0


async def test_compaction(store: Store) -> None:
    a = await store.create(key("a"), cm("a"))
    b = await store.create(key("b"), cm("b"))
    await store.update(key("b"), cm("b", v="2"))
    await store.delete(key("a"))
    at = await store.current_revision()
    await store.compact(at)
    await store.compact(at)  # again: nothing to do
    with pytest.raises(Gone):
        await store.list(PREFIX, revision=rv(b))
    with pytest.raises(Gone):
        async with store.watch(PREFIX, rv(a)) as events:
            await events.__anext__()
    kept = await store.list(PREFIX, revision=at)  # the compacted revision itself stays readable
    assert [(o["metadata"]["name"], o["data"]) for o in kept.items] == [("b", {"v": "2"})]
    c = await store.create(key("c"), cm("c"))
    async with store.watch(PREFIX, at) as events:
        assert summary(await take(events, 1)) == [("ADDED", key("c"), rv(c))]


async def test_watch_from_a_revision_sees_later_changes_in_order(store: Store) -> None:
    await store.create(key("old"), cm("old"))
    start = await store.current_revision()
    a = await store.create(key("a"), cm("a", v="1"))
    a2 = await store.update(key("a"), cm("a", v="2"))
    await store.create("/registry/secrets/default/s", cm("s"))  # another prefix
    gone = await store.delete(key("a"))
    async with store.watch(PREFIX, start) as events:
        got = await take(events, 3)
    assert summary(got) == [
        ("ADDED", key("a"), rv(a)),
        ("MODIFIED", key("a"), rv(a2)),
        ("DELETED", key("a"), rv(gone)),
    ]
    for ev in got:
        check_event(ev)
    assert got[1].obj["data"] == {"v": "2"}
    assert got[2].obj["data"] == {"v": "2"}  # the last state, at the delete's revision
    assert got[2].obj == gone


async def test_watch_sees_writes_made_after_it_started(store: Store) -> None:
    start = await store.current_revision()
    async with store.watch(PREFIX, start) as events:
        async with trio.open_nursery() as nursery:
            written = []

            async def writer() -> None:
                for i in range(5):
                    written.append(rv(await store.create(key(f"k{i}"), cm(f"k{i}"))))

            nursery.start_soon(writer)
            got = await take(events, 5)
    assert [ev.revision for ev in got] == written
    assert [ev.type for ev in got] == ["ADDED"] * 5


async def test_watch_history_then_live(store: Store) -> None:
    """Started at an old revision: the past from history, then live events, no gap or repeat."""
    start = await store.current_revision()
    past = [rv(await store.create(key(f"p{i}"), cm(f"p{i}"))) for i in range(20)]
    async with store.watch(PREFIX, start) as events:
        first = await take(events, 20)
        live = [rv(await store.update(key(f"p{i}"), cm(f"p{i}", v="2"))) for i in range(5)]
        second = await take(events, 5)
    assert [ev.revision for ev in first] == past
    assert [ev.revision for ev in second] == live
    assert {ev.type for ev in second} == {"MODIFIED"}


async def test_watchers_behind_a_small_window_are_served_from_history(backend: Backend) -> None:
    async with backend.open(window=8) as store:
        start = await store.current_revision()
        async with store.watch(PREFIX, start) as slow:
            async with store.watch("/registry/", start) as other:
                written = []
                for batch in range(3):
                    for i in range(30):
                        name = f"b{batch}-{i}"
                        written.append(rv(await store.create(key(name), cm(name))))
                    # `slow` reads nothing meanwhile: it falls behind the window.
                    got = await take(slow, 30)
                    assert [ev.revision for ev in got] == written[-30:]
                got = await take(other, 90)
                assert [ev.revision for ev in got] == written


async def test_cancelled_watch_releases_everything(store: Store) -> None:
    old = await store.current_revision()
    await store.create(key("a"), cm("a"))
    now = await store.current_revision()

    async def consume(start: int, first: trio.Event, *, task_status: trio.TaskStatus[None]) -> None:
        async with store.watch(PREFIX, start) as events:
            task_status.started()
            async for _ in events:
                first.set()

    for start in (now, old):  # blocked on the window, and after reading history
        first = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(consume, start, first)
            assert getattr(store, "active_watches") == 1
            if start == old:
                with trio.fail_after(10):
                    await first.wait()
            nursery.cancel_scope.cancel()
        assert getattr(store, "active_watches") == 0
        assert getattr(store, "open_readers") == 0
    # The store is fine afterwards.
    b = await store.create(key("b"), cm("b"))
    async with store.watch(PREFIX, now) as events:
        assert summary(await take(events, 1)) == [("ADDED", key("b"), rv(b))]


async def test_hundred_watchers_see_the_same_events(store: Store) -> None:
    before = await store.current_revision()
    early = [rv(await store.create(key(f"e{i}"), cm(f"e{i}"))) for i in range(10)]
    now = await store.current_revision()
    results: dict[int, list[int]] = {}
    ready = trio.Semaphore(0)

    async def watcher(i: int, start: int, n: int) -> None:
        async with store.watch(PREFIX, start) as events:
            ready.release()
            results[i] = [ev.revision for ev in await take(events, n, timeout=60)]

    async with trio.open_nursery() as nursery:
        for i in range(100):
            # Half from an older revision (history first), half from now.
            if i % 2:
                nursery.start_soon(watcher, i, before, 10 + 50)
            else:
                nursery.start_soon(watcher, i, now, 50)
        for _ in range(100):
            await ready.acquire()
        later = [rv(await store.create(key(f"l{i}"), cm(f"l{i}"))) for i in range(50)]
    for i, revs in results.items():
        assert revs == (early + later if i % 2 else later), i
    assert len(results) == 100
    assert getattr(store, "active_watches") == 0
