"""The shared informer against a real API server: sync, changes, selectors, outages and 410 re-lists."""

from __future__ import annotations

from pathlib import Path

import trio

from kmesh.apiserver.server import ServerConfig
from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer
from kmesh.client.kubeconfig import Credentials
from kmesh.store import open_store
from tests.support.cluster import Cluster, serve_stoppable


def cm(name: str, ns: str = "default", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, "labels": labels}, "data": {"k": name}}


async def test_informer_lists_then_follows_changes(cluster: Cluster, nursery: trio.Nursery) -> None:
    c = cluster.client
    await c.create(cm("before"))
    seen: list[tuple[str, str]] = []
    inf = Informer(c, "ConfigMap", namespace="default", handlers=[lambda ch: seen.append((ch.type, ch.obj["metadata"]["name"]))])
    await nursery.start(inf.run)
    assert inf.synced.is_set()
    assert inf.get("before", "default") is not None
    assert seen == [("ADDED", "before")]

    await c.create(cm("after"))
    await inf.wait_for(lambda i: i.get("after", "default") is not None)
    obj = await c.get("ConfigMap", "after", "default")
    obj["data"]["k"] = "changed"
    await c.update(obj)
    await inf.wait_for(lambda i: (i.get("after", "default") or {}).get("data", {}).get("k") == "changed")
    await c.delete("ConfigMap", "before", "default")
    await inf.wait_for(lambda i: i.get("before", "default") is None)
    assert seen == [("ADDED", "before"), ("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "before")]


async def test_label_selector_informer_sees_objects_leave_and_enter(cluster: Cluster, nursery: trio.Nursery) -> None:
    c = cluster.client
    await c.create(cm("a", app="web"))
    await c.create(cm("b", app="db"))
    changes: list[Change] = []
    inf = Informer(c, "ConfigMap", label_selector="app=web", handlers=[changes.append])
    await nursery.start(inf.run)
    assert [o["metadata"]["name"] for o in inf.list()] == ["a"]
    await c.patch("ConfigMap", "a", {"metadata": {"labels": {"app": "db"}}}, "default")
    await c.patch("ConfigMap", "b", {"metadata": {"labels": {"app": "web"}}}, "default")
    await inf.wait_for(lambda i: [o["metadata"]["name"] for o in i.list()] == ["b"])
    assert [(ch.type, ch.obj["metadata"]["name"]) for ch in changes] == [("ADDED", "a"), ("DELETED", "a"), ("ADDED", "b")]


async def test_informer_keeps_cache_through_outage_and_relists_after_compaction(tmp_path: Path, nursery: trio.Nursery) -> None:
    db = f"sqlite://{tmp_path / 'store.db'}"
    srv, server = await nursery.start(serve_stoppable, ServerConfig(data_dir=tmp_path, store_url=db, port=0))
    port = int(srv.url.rsplit(":", 1)[1])
    client = Client(Credentials(srv.url, srv.pki.ca_pem(), srv.pki.token))
    await client.create(cm("keep"))
    await client.create(cm("drop"))
    changes: list[Change] = []
    inf = Informer(client, "ConfigMap", namespace="default", handlers=[changes.append], backoff_max=0.2)
    async with trio.open_nursery() as inner:
        await inner.start(inf.run)
        assert {o["metadata"]["name"] for o in inf.list()} == {"keep", "drop"}

        await server.stop()  # the API server goes away
        await inf.wait_for(lambda i: not i.connected)
        assert {o["metadata"]["name"] for o in inf.list()} == {"keep", "drop"}  # still serving its cache

        # While it is away, the store changes and its history is compacted.
        async with open_store(db) as store:
            await store.delete("/registry/configmaps/default/drop")
            await store.create("/registry/configmaps/default/new", cm("new"))
            await store.compact(await store.current_revision())

        srv2, server2 = await nursery.start(serve_stoppable, ServerConfig(data_dir=tmp_path, store_url=db, port=port))
        await inf.wait_for(lambda i: {o["metadata"]["name"] for o in i.list()} == {"keep", "new"})
        assert inf.relists >= 2
        tail = [(ch.type, ch.obj["metadata"]["name"]) for ch in changes[2:]]
        assert sorted(tail) == [("ADDED", "new"), ("DELETED", "drop")]
        inner.cancel_scope.cancel()
    await client.aclose()
    await server2.stop()
