"""Fixtures the CNI tests share: a real etcd (one per test module) and a client of it per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from kmesh.store.etcd_api import EtcdClient
from kmesh.store.etcd_server import EtcdServer
from tests.conftest import require_binary

SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # etcd's data dir in memory where there is one


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdServer]:
    """An etcd for the module's tests (skipped without the binary)."""
    require_binary("etcd")
    with EtcdServer(tmp_root=SHM, die_with_parent=True) as server:
        yield server


@pytest.fixture
async def etcd(etcd_server: EtcdServer) -> AsyncIterator[EtcdClient]:
    """A client of ``etcd_server``, closed after the test."""
    client = EtcdClient(etcd_server.url)
    try:
        yield client
    finally:
        await client.aclose()
