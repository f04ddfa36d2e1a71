"""List paging, selectors and watch semantics over HTTP (the parts kubectl and informers rely on)."""

from __future__ import annotations

import pytest
import trio

from kmesh.api.errors import APIError
from tests.support.cluster import Cluster


def cm(name: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}}


async def test_paging_is_consistent_and_complete(cluster: Cluster) -> None:
    c = cluster.client
    for i in range(25):
        await c.create(cm(f"cm-{i:02d}", parity=str(i % 2)))
    first = await c.list("ConfigMap", "default", limit=10)
    assert len(first["items"]) == 10 and first["metadata"]["continue"]
    await c.create(cm("cm-zz"))  # written after the first page: not in this paged list
    names = [o["metadata"]["name"] for o in first["items"]]
    token = first["metadata"]["continue"]
    while token:
        page = await c.list("ConfigMap", "default", limit=10, continue_token=token)
        assert page["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        names += [o["metadata"]["name"] for o in page["items"]]
        token = page["metadata"].get("continue", "")
    assert names == [f"cm-{i:02d}" for i in range(25)]


async def test_label_and_field_selectors(cluster: Cluster) -> None:
    c = cluster.client
    for i in range(6):
        await c.create(cm(f"s{i}", parity=str(i % 2)))
    odd = await c.list("ConfigMap", "default", label_selector="parity=1", limit=2)
    got = [o["metadata"]["name"] for o in odd["items"]]
    token = odd["metadata"].get("continue", "")
    while token:
        page = await c.list("ConfigMap", "default", label_selector="parity=1", limit=2, continue_token=token)
        got += [o["metadata"]["name"] for o in page["items"]]
        token = page["metadata"].get("continue", "")
    assert got == ["s1", "s3", "s5"]
    one = await c.list("ConfigMap", None, field_selector="metadata.name=s2,metadata.namespace=default")
    assert [o["metadata"]["name"] for o in one["items"]] == ["s2"]
    with pytest.raises(APIError) as err:
        await c.list("ConfigMap", "default", field_selector="data.x=1")
    assert err.value.code == 400 and "field label not supported" in err.value.message
    with pytest.raises(APIError) as err:
        await c.list("ConfigMap", "default", label_selector="a in (")
    assert err.value.code == 400


async def test_watch_from_resource_version_and_gone(cluster: Cluster) -> None:
    c = cluster.client
    a = await c.create(cm("a"))
    rv = a["metadata"]["resourceVersion"]
    await c.create(cm("b"))
    await c.delete("ConfigMap", "a", "default")
    seen = []
    async with c.watch("ConfigMap", "default", resource_version=rv, bookmarks=False) as events:
        with trio.fail_after(10):
            async for etype, obj in events:
                seen.append((etype, obj["metadata"]["name"]))
                if len(seen) == 2:
                    break
    assert seen == [("ADDED", "b"), ("DELETED", "a")]
    store = cluster.server.registry.store
    await store.compact(await store.current_revision())
    with pytest.raises(APIError) as err:
        async with c.watch("ConfigMap", "default", resource_version=rv) as events:
            with trio.fail_after(10):
                async for _ in events:
                    pass
    assert err.value.code == 410


async def test_invalid_object_is_not_stored_and_names_the_field(cluster: Cluster) -> None:
    c = cluster.client
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"selector": {"matchLabels": {"app": "x"}},
                    "template": {"metadata": {"labels": {"app": "y"}},
                                 "spec": {"containers": [{"name": "c", "image": ""}]}}}}
    with pytest.raises(APIError) as err:
        await c.create(bad)
    assert err.value.code == 422
    fields = {cause["field"] for cause in err.value.causes}
    assert "spec.template.spec.containers[0].image" in fields
    assert "spec.template.metadata.labels" in fields
    assert (await c.list("Deployment", "default"))["items"] == []


async def test_quiet_watch_gets_bookmarks_with_the_latest_revision(cluster: Cluster) -> None:
    from kmesh.api.kinds import get as kind_named
    from kmesh.apiserver.registry import ListOptions, WatchEvent

    registry = cluster.server.registry
    created = await cluster.client.create(cm("x"))
    got: list[WatchEvent] = []
    bookmark = trio.Event()

    async def emit(ev: WatchEvent) -> None:
        got.append(ev)
        if ev.type == "BOOKMARK":
            bookmark.set()

    opts = ListOptions(resource_version="0")
    async with trio.open_nursery() as n:
        n.start_soon(lambda: registry.watch(kind_named("ConfigMap"), "default", opts, emit,
                                            bookmarks=True, bookmark_interval=0.2))
        with trio.fail_after(10):
            await bookmark.wait()
        n.cancel_scope.cancel()
    assert got[0].type == "ADDED" and got[0].obj["metadata"]["name"] == "x"
    assert got[-1].type == "BOOKMARK"
    assert int(got[-1].obj["metadata"]["resourceVersion"]) >= int(created["metadata"]["resourceVersion"])
