"""SQLite specifics: durability across kill -9, reopening, one owner per file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from kmesh.store import Unavailable, open_store
from kmesh.store.sqlite import SqliteStore
from tests.store.helpers import PREFIX, cm, key, rv, summary, take

ROOT = Path(__file__).resolve().parents[2]


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.store.sqlite_writer", str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    acked: list[tuple[int, str]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            rev, k = line.split()
            acked.append((int(rev), k))
            if len(acked) >= 3000:
                break
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream
        acked += [(int(r), k) for r, k in (line.split() for line in proc.stdout)]
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert len(acked) >= 3000

    async def check() -> None:
        async with SqliteStore(db) as store:
            current = await store.current_revision()
            assert current >= acked[-1][0]
            for rev, k in acked:
                assert rv(await store.get(k)) == rev
            # The log has them too: a watch from 0 replays every write in order.
            async with store.watch(PREFIX, 0) as events:
                got = await take(events, len(acked))
            assert [(ev.revision, ev.key) for ev in got] == acked
            nxt = await store.create(key("after"), cm("after"))
            assert rv(nxt) == current + 1

    trio.run(check)


async def test_reopen_continues_with_history(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/s.db"
    async with open_store(url) as store:
        a = await store.create(key("a"), cm("a", v="1"))
        a2 = await store.update(key("a"), cm("a", v="2"))
        b = await store.create(key("b"), cm("b"))
        gone = await store.delete(key("b"))
    async with open_store(url) as store:
        assert await store.current_revision() == rv(gone)
        assert (await store.get(key("a"))) == a2
        old = await store.list(PREFIX, revision=rv(b))
        assert [o["metadata"]["name"] for o in old.items] == ["a", "b"]
        assert old.items[0]["data"] == {"v": "2"}
        async with store.watch(PREFIX, rv(a)) as events:
            got = await take(events, 3)
        assert summary(got) == [
            ("MODIFIED", key("a"), rv(a2)),
            ("ADDED", key("b"), rv(b)),
            ("DELETED", key("b"), rv(gone)),
        ]
        c = await store.create(key("c"), cm("c"))
        assert rv(c) == rv(gone) + 1


async def test_compaction_is_kept_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SqliteStore(path) as store:
        a = await store.create(key("a"), cm("a"))
        await store.update(key("a"), cm("a", v="2"))
        gone = await store.delete(key("a"))  # the newest write, then compacted away
        await store.compact(rv(gone))
    async with SqliteStore(path) as store:
        assert await store.current_revision() == rv(gone)
        with pytest.raises(Exception) as info:
            await store.list(PREFIX, revision=rv(a))
        assert info.value.__class__.__name__ == "Gone"
        b = await store.create(key("b"), cm("b"))
        assert rv(b) == rv(gone) + 1


async def test_one_process_owns_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SqliteStore(path):
        with pytest.raises(Unavailable):
            SqliteStore(path)
    async with SqliteStore(path):  # released on close
        pass
