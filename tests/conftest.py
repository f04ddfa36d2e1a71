"""Shared test helpers: skipping (or, in CI, failing) when a real part is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator

import pytest
import trio

if TYPE_CHECKING:
    from tests.support.cluster import Cluster

REQUIRE_REAL = os.environ.get("KMESH_REQUIRE_NETNS") == "1"


def require(ok: bool, what: str) -> None:
    """Skip the test when ``ok`` is false, but fail under KMESH_REQUIRE_NETNS=1 (CI)."""
    if ok:
        return
    if REQUIRE_REAL:
        pytest.fail(f"required for this test and missing: {what}")
    pytest.skip(f"missing: {what}")


def require_binary(name: str) -> str:
    """The path of a program the test needs (skip/fail as ``require`` does)."""
    path = shutil.which(name)
    require(path is not None, f"program {name!r} on PATH")
    assert path is not None
    return path


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator["Cluster"]:
    """An API server on the memory store, with a client and kubectl."""
    from tests.support.cluster import start_cluster

    c = await start_cluster(nursery, tmp_path)
    try:
        yield c
    finally:
        await c.client.aclose()
