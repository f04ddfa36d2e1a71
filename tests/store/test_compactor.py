"""The periodic compactor (simulated time)."""

from __future__ import annotations

import pytest
import trio

from kmesh.store import Gone, open_store, run_compactor
from tests.store.helpers import PREFIX, cm, key, rv


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_compacts_to_the_previous_tick(kind: str, tmp_path: object, autojump_clock: trio.abc.Clock) -> None:
    url = "memory://" if kind == "memory" else f"sqlite://{tmp_path}/s.db"
    async with open_store(url) as store, trio.open_nursery() as nursery:
        nursery.start_soon(run_compactor, store, 300.0)
        first = rv(await store.create(key("a"), cm("a")))
        await trio.sleep(301)  # tick 1: notes revision `first`, compacts nothing
        await store.list(PREFIX, revision=first - 1)
        second = rv(await store.update(key("a"), cm("a", v="2")))
        await trio.sleep(300)  # tick 2: compacts to `first`, notes `second`
        with pytest.raises(Gone):
            await store.list(PREFIX, revision=first - 1)
        assert [o["data"] for o in (await store.list(PREFIX, revision=first)).items] == [{}]
        await trio.sleep(300)  # tick 3: compacts to `second`
        with pytest.raises(Gone):
            await store.list(PREFIX, revision=first)
        assert rv((await store.list(PREFIX, revision=second)).items[0]) == second
        nursery.cancel_scope.cancel()
