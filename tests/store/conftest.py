"""Store fixtures: every conformance test runs on memory, SQLite and a real etcd.

The session's etcd runs as the lab runs its own: https with client
certificates from its own CA (``kmesh.apiserver.pki.ensure_etcd_pki``).
"""

from __future__ import annotations

import os
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest

from kmesh.apiserver.pki import ensure_etcd_pki
from kmesh.store import Store, open_store
from kmesh.store.etcd_api import EtcdTLS
from kmesh.store.etcd_server import EtcdServer
from tests.conftest import require_binary

# etcd's data on tmpfs when there is one: its fsyncs are then free.
SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None

BACKENDS = ["memory", "sqlite", pytest.param("etcd", marks=pytest.mark.etcd)]


@dataclass
class Backend:
    """How to open (and reopen) one test's store."""

    name: str
    url: str
    prefix: str = ""
    tls: EtcdTLS | None = None

    def open(self, **kw: Any) -> AbstractAsyncContextManager[Store]:
        """A fresh store on this backend (for memory, an empty one)."""
        return open_store(self.url, prefix=self.prefix, etcd_tls=self.tls, **kw)


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One etcd for the whole session (tests keep apart by key prefix), TLS with client certificates;
    ``client_tls`` opens it."""
    require_binary("etcd")
    pki = ensure_etcd_pki(tmp_path_factory.mktemp("etcd-pki"))
    with EtcdServer(tmp_root=SHM, die_with_parent=True, tls=pki.server_tls()) as server:
        yield server


def make_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The Backend for ``name``; etcd ones get a random key prefix."""
    if name == "memory":
        return Backend("memory", "memory://")
    if name == "sqlite":
        return Backend("sqlite", f"sqlite://{tmp_path}/store.db")
    server: EtcdServer = request.getfixturevalue("etcd_server")
    return Backend("etcd", server.url, prefix=f"/kmesh-test-{uuid.uuid4().hex[:12]}", tls=server.client_tls)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each backend in turn."""
    return make_backend(request.param, request, tmp_path)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """An open, empty store on each backend in turn."""
    async with backend.open() as s:
        yield s
