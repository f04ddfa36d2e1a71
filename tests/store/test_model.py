"""Random operation sequences give the same answers on the memory and SQLite stores.

The memory store is the model: simple enough to trust. SQLite answers lists
at past revisions and compaction with SQL over its log table, which is where
subtle differences would hide.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmesh.store import Gone, Store, StoreError
from kmesh.store.memory import MemoryStore
from kmesh.store.sqlite import SqliteStore
from tests.store.helpers import PREFIX, cm, key

NAMES = ["a", "b", "c"]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from(NAMES)),
        st.tuples(st.just("update"), st.sampled_from(NAMES)),
        st.tuples(st.just("delete"), st.sampled_from(NAMES)),
        st.tuples(st.just("compact"), st.integers(0, 6)),  # this many revisions back
    ),
    max_size=40,
)


async def apply(store: Store, op: tuple[str, Any], step: int) -> object:
    kind, arg = op
    try:
        if kind == "create":
            return await store.create(key(arg), cm(arg, step=str(step)))
        if kind == "update":
            return await store.update(key(arg), cm(arg, step=str(step)))
        if kind == "delete":
            return await store.delete(key(arg))
        await store.compact(max(0, await store.current_revision() - arg))
        return None
    except StoreError as e:
        return type(e).__name__


async def observe(store: Store) -> list[object]:
    """Everything a client can see: lists at every revision (or Gone), pages, and the watchable history."""
    now = await store.current_revision()
    seen: list[object] = []
    for rev in range(now + 1):
        try:
            seen.append((await store.list(PREFIX, revision=rev)).items)
            page = await store.list(PREFIX, revision=rev, start_after=key("a"), limit=1)
            seen.append((page.items, page.more, page.remaining))
        except Gone:
            seen.append("Gone")
    for rev in range(now + 1):
        try:
            async with store.watch(PREFIX, rev) as events:
                got = []
                for _ in range(now - rev):
                    ev = await events.__anext__()
                    got.append((ev.type, ev.key, ev.obj, ev.revision))
                seen.append(got)
        except Gone:
            seen.append("Gone")
    return seen


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_sqlite_matches_memory(sequence: list[tuple[str, Any]]) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with MemoryStore() as mem, SqliteStore(Path(tmp) / "s.db") as lite:
                for step, op in enumerate(sequence):
                    assert await apply(mem, op, step) == await apply(lite, op, step), (step, op)
                assert await observe(mem) == await observe(lite)
            async with SqliteStore(Path(tmp) / "s.db") as reopened:  # and the same after a restart
                async with MemoryStore() as again:
                    for step, op in enumerate(sequence):
                        await apply(again, op, step)
                    assert await observe(again) == await observe(reopened)

    trio.run(run)
