"""Store URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmesh.store import open_store, store_kind
from kmesh.store.etcd_api import split_endpoints
from kmesh.store.memory import MemoryStore
from kmesh.store.sqlite import SqliteStore


@pytest.mark.parametrize(
    "url,kind",
    [
        ("memory://", "memory"),
        ("sqlite:///var/lib/kmesh/state.db", "sqlite"),
        ("/var/lib/kmesh/state.db", "sqlite"),
        ("etcd://10.0.0.1:2379", "etcd"),
        ("http://127.0.0.1:2379,http://127.0.0.2:2379", "etcd"),
    ],
)
def test_store_kind(url: str, kind: str) -> None:
    assert store_kind(url) == kind


def test_unknown_scheme() -> None:
    with pytest.raises(ValueError):
        store_kind("redis://localhost")


def test_etcd_endpoints() -> None:
    assert split_endpoints("etcd://a:1,b:2") == ["http://a:1", "http://b:2"]
    assert split_endpoints("http://a:1/, http://b:2") == ["http://a:1", "http://b:2"]


async def test_open_local_stores(tmp_path: Path) -> None:
    async with open_store("memory://") as mem:
        assert isinstance(mem, MemoryStore)
    async with open_store(f"sqlite://{tmp_path}/a.db") as lite:
        assert isinstance(lite, SqliteStore)
    async with open_store(str(tmp_path / "b.db")) as plain:
        assert isinstance(plain, SqliteStore)
    assert (tmp_path / "a.db").exists() and (tmp_path / "b.db").exists()
