"""Acceptance: 10 concurrent writers, 20,000 writes, one watcher sees each exactly once, in order."""

from __future__ import annotations

import pytest
import trio

from kmesh.store import Event
from tests.store.conftest import Backend, make_backend
from tests.store.helpers import PREFIX, check_event, cm, key, rv

WRITERS = 10
PER_WRITER = 1000  # creates; as many updates again: 20,000 writes in total


@pytest.fixture(params=["memory", "sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def acceptance_backend(request: pytest.FixtureRequest, tmp_path: object) -> Backend:
    return make_backend(request.param, request, tmp_path)  # type: ignore[arg-type]


@pytest.mark.slow
async def test_concurrent_writers_one_watcher_sees_every_write_once(acceptance_backend: Backend) -> None:
    async with acceptance_backend.open() as store:
        start = await store.current_revision()
        acked: dict[int, tuple[str, str]] = {}  # revision -> (type, key)
        seen: list[Event] = []
        done_key = "/registry/configmaps/zz-done/marker"

        async def writer(w: int) -> None:
            names = [f"w{w}-{i}" for i in range(PER_WRITER)]
            for name in names:
                acked[rv(await store.create(key(name), cm(name)))] = ("ADDED", key(name))
            for name in names:
                acked[rv(await store.update(key(name), cm(name, v="2")))] = ("MODIFIED", key(name))

        async def watcher(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with store.watch("/registry/configmaps/", start) as events:
                task_status.started()
                async for ev in events:
                    if ev.key == done_key:
                        return
                    seen.append(ev)

        with trio.fail_after(240):
            async with trio.open_nursery() as nursery:
                await nursery.start(watcher)
                async with trio.open_nursery() as writers:
                    for w in range(WRITERS):
                        writers.start_soon(writer, w)
                await store.create(done_key, cm("marker"))

        assert len(acked) == WRITERS * PER_WRITER * 2
        revisions = [ev.revision for ev in seen]
        assert revisions == sorted(acked), "every acknowledged write, once, in revision order"
        assert [(ev.type, ev.key) for ev in seen] == [acked[r] for r in revisions]
        for ev in seen:
            check_event(ev)
            assert ev.key.startswith(PREFIX)
