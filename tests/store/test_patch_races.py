"""Patches racing on one object, through the registry on each store: a patch that names no resourceVersion is
applied again to the newer object on a write conflict (upstream's GuaranteedUpdate), one that names one is a
precondition. (The patched object always carries a version, the stored one's when the patch named none: once
that was taken for a precondition, and on etcd `kubectl patch` got 409s under concurrent writers.)"""

from __future__ import annotations

import json

import pytest
import trio

from kmesh.api import errors as E
from kmesh.api.kinds import get as kind_named
from kmesh.apiserver.registry import Registry
from kmesh.store.base import Store

JSON_PATCH = "application/json-patch+json"


@pytest.mark.parametrize("content_type", [JSON_PATCH, "application/merge-patch+json"])
async def test_racing_patches_all_apply(store: Store, nursery: trio.Nursery, content_type: str) -> None:
    reg = Registry(store, nursery=nursery)
    await reg.ensure_default_namespaces()
    cm = kind_named("ConfigMap")
    await reg.create(cm, "default", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "race"},
                                     "data": {}})
    n = 30

    def body(i: int) -> bytes:
        if content_type == JSON_PATCH:
            return json.dumps([{"op": "add", "path": f"/data/k{i}", "value": str(i)}]).encode()
        return json.dumps({"data": {f"k{i}": str(i)}}).encode()

    async with trio.open_nursery() as n_:
        for i in range(n):
            n_.start_soon(reg.patch, cm, "default", "race", content_type, body(i))
    got = await reg.get(cm, "default", "race")
    assert got["data"] == {f"k{i}": str(i) for i in range(n)}


async def test_a_patch_naming_a_stale_version_is_refused(store: Store, nursery: trio.Nursery) -> None:
    reg = Registry(store, nursery=nursery)
    await reg.ensure_default_namespaces()
    cm = kind_named("ConfigMap")
    made = await reg.create(cm, "default", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pre"}})
    stale = made["metadata"]["resourceVersion"]
    await reg.patch(cm, "default", "pre", "application/merge-patch+json", b'{"data": {"a": "1"}}')
    for doc in ({"metadata": {"resourceVersion": stale}, "data": {"b": "2"}},
                [{"op": "replace", "path": "/metadata/resourceVersion", "value": stale},
                 {"op": "add", "path": "/data/b", "value": "2"}]):
        ct = JSON_PATCH if isinstance(doc, list) else "application/merge-patch+json"
        with pytest.raises(E.APIError) as info:
            await reg.patch(cm, "default", "pre", ct, json.dumps(doc).encode())
        assert info.value.code == 409
    assert (await reg.get(cm, "default", "pre"))["data"] == {"a": "1"}
