"""etcd specifics: other writers, lost streams, unreachable members, the test server itself.

The session's ``etcd_server`` speaks TLS with client certificates (as the lab's);
``own_etcd`` runs both ways, so plain http (a user's etcd) stays covered.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import trio

from kmesh.apiserver.pki import ensure_etcd_pki
from kmesh.store import Unavailable, open_store
from kmesh.store.etcd_server import EtcdServer, free_ports
from tests.conftest import require_binary
from tests.store.conftest import SHM
from tests.store.helpers import PREFIX, cm, key, rv, summary, take

pytestmark = pytest.mark.etcd


def prefix() -> str:
    return f"/kmesh-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["http", "https"])
def own_etcd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd of this test's own, to stop and restart: plain http, and TLS with client certificates."""
    require_binary("etcd")
    tls = ensure_etcd_pki(tmp_path).server_tls() if request.param == "https" else None
    server = EtcdServer(tmp_root=SHM, die_with_parent=True, tls=tls)
    try:
        yield server.start()
    finally:
        server.stop()


def http_client(server: EtcdServer) -> httpx.AsyncClient:
    """A plain httpx client of ``server`` (with its client certificate when it speaks TLS)."""
    tls = server.client_tls
    return httpx.AsyncClient(verify=tls.ssl_context() if tls is not None else True)


async def etcd_watchers(server: EtcdServer) -> int:
    """How many watches etcd is serving (its own metric)."""
    async with http_client(server) as http:
        text = (await http.get(server.url + "/metrics")).text
    for line in text.splitlines():
        if line.startswith("etcd_debugging_mvcc_watcher_total "):
            return int(float(line.split()[1]))
    raise AssertionError("etcd has no watcher metric")


async def wait_watchers(server: EtcdServer, n: int) -> None:
    """Poll etcd's metric until it shows ``n`` watches (etcd updates it asynchronously)."""
    with trio.fail_after(10):
        while await etcd_watchers(server) != n:
            await trio.sleep(0.02)


async def test_other_clients_writes_reach_watchers(etcd_server: EtcdServer) -> None:
    p = prefix()
    tls = etcd_server.client_tls
    async with (open_store(etcd_server.url, prefix=p, etcd_tls=tls) as mine,
                open_store(etcd_server.url, prefix=p, etcd_tls=tls) as theirs):
        start = await mine.current_revision()
        async with mine.watch(PREFIX, start) as events:
            a = await theirs.create(key("a"), cm("a"))
            # A writer that is not kmesh at all: a plain gateway put.
            put = {
                "key": base64.b64encode((p + key("b")).encode()).decode(),
                "value": base64.b64encode(json.dumps(cm("b")).encode()).decode(),
            }
            async with http_client(etcd_server) as http:
                resp = await http.post(etcd_server.url + "/v3/kv/put", json=put)
            b_rev = int(resp.json()["header"]["revision"])
            got = await take(events, 2)
        assert summary(got) == [("ADDED", key("a"), rv(a)), ("ADDED", key("b"), b_rev)]
        assert got[1].obj["metadata"]["resourceVersion"] == str(b_rev)
        assert (await mine.get(key("b")))["metadata"]["name"] == "b"


async def test_watch_survives_an_etcd_restart(own_etcd: EtcdServer) -> None:
    async with open_store(own_etcd.url, prefix=prefix(), etcd_tls=own_etcd.client_tls) as store:
        start = await store.current_revision()
        async with store.watch(PREFIX, start) as events:
            before = [rv(await store.create(key(f"a{i}"), cm(f"a{i}"))) for i in range(3)]
            assert [ev.revision for ev in await take(events, 3)] == before
            own_etcd.kill()
            with pytest.raises(Unavailable):
                await store.create(key("down"), cm("down"))
            await own_etcd.astart()
            after = [rv(await store.create(key(f"b{i}"), cm(f"b{i}"))) for i in range(3)]
            assert [ev.revision for ev in await take(events, 3)] == after
        # The history survived too.
        async with store.watch(PREFIX, start) as events:
            assert [ev.revision for ev in await take(events, 6)] == before + after


async def test_cancelled_history_watch_closes_its_etcd_stream(etcd_server: EtcdServer) -> None:
    url, tls = etcd_server.url, etcd_server.client_tls
    baseline = await etcd_watchers(etcd_server)
    async with (open_store(url, prefix=prefix(), etcd_tls=tls) as store,
                open_store(url, prefix=prefix(), etcd_tls=tls) as elsewhere):
        start = await store.current_revision()
        a = await store.create(key("a"), cm("a"))
        await elsewhere.create(key("x"), cm("x"))  # etcd's revision moves on, not under our prefix
        got: list[int] = []
        first = trio.Event()

        async def consume() -> None:
            async with store.watch(PREFIX, start) as events:
                async for ev in events:
                    got.append(ev.revision)
                    first.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            # The shared feed plus this watcher's own history stream.
            await wait_watchers(etcd_server, baseline + 2)
            with trio.fail_after(10):
                await first.wait()
            assert got == [rv(a)]
            assert getattr(store, "open_readers") == 1  # still on history: nothing newer under the prefix yet
            nursery.cancel_scope.cancel()
        assert getattr(store, "open_readers") == 0
        await wait_watchers(etcd_server, baseline + 1)
    await wait_watchers(etcd_server, baseline)


async def test_unreachable_etcd_is_unavailable() -> None:
    (port,) = free_ports(1)
    async with open_store(f"etcd://127.0.0.1:{port}") as store:
        with pytest.raises(Unavailable):
            await store.create(key("a"), cm("a"))
        for _ in range(2):  # a failed start of the shared feed can be tried again
            with pytest.raises(Unavailable):
                async with store.watch(PREFIX, 0):
                    pass


async def test_endpoint_list_fails_over(etcd_server: EtcdServer) -> None:
    (dead,) = free_ports(1)
    url = f"etcd://127.0.0.1:{dead},{etcd_server.url.removeprefix('https://')}"  # etcd:// + TLS files: https
    async with open_store(url, prefix=prefix(), etcd_tls=etcd_server.client_tls) as store:
        a = await store.create(key("a"), cm("a"))
        async with store.watch(PREFIX, rv(a) - 1) as events:
            assert summary(await take(events, 1)) == [("ADDED", key("a"), rv(a))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_etcd_server_starts_on_loopback_and_stops_by_pid() -> None:
    require_binary("etcd")
    server = EtcdServer(tmp_root=SHM, die_with_parent=True)
    with server:
        pid = server.pid
        assert pid is not None and _alive(pid)
        assert server.url.startswith("http://127.0.0.1:")
        assert httpx.get(server.url + "/health").json()["health"] == "true"
        data_dir = server.data_dir
        assert data_dir is not None and data_dir.exists()
    assert not _alive(pid)
    assert not data_dir.exists()  # a temporary data dir goes with it


async def test_etcd_server_from_trio() -> None:
    require_binary("etcd")
    async with EtcdServer(tmp_root=SHM, die_with_parent=True) as server:
        pid = server.pid
        async with open_store(server.url) as store:
            assert rv(await store.create(key("a"), cm("a"))) > 0
    assert pid is not None and not _alive(pid)


async def test_closing_the_store_ends_watches_reading_history(etcd_server: EtcdServer) -> None:
    url, tls = etcd_server.url, etcd_server.client_tls
    outcome: list[str] = []
    async with open_store(url, prefix=prefix(), etcd_tls=tls) as elsewhere:
        async with open_store(url, prefix=prefix(), etcd_tls=tls) as store:
            start = await store.current_revision()
            await store.create(key("a"), cm("a"))
            await elsewhere.create(key("x"), cm("x"))

            async def consume(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                async with store.watch(PREFIX, start) as events:
                    await events.__anext__()
                    task_status.started()
                    try:
                        await events.__anext__()  # blocks on its own etcd stream
                    except Unavailable:
                        outcome.append("unavailable")

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    await nursery.start(consume)
                    assert getattr(store, "open_readers") == 1
                    await store.aclose()
    assert outcome == ["unavailable"]
