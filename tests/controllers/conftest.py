"""Fixtures: a real API server, the real controllers, and a kubelet's writes for pods on test nodes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import trio

from kmesh.client.informer import Informer
from kmesh.controllers.manager import ControllerConfig, ControllerManager, run_controllers
from tests.controllers.kubelet import FakeKubelet, start_kubelet
from tests.support.cluster import Cluster, start_cluster


@dataclass
class Env:
    """A cluster with controllers running and a kubelet acting for every node."""

    cluster: Cluster
    mgr: ControllerManager
    kubelet: FakeKubelet
    scope: trio.CancelScope

    @property
    def client(self) -> Any:
        return self.cluster.client

    def informer(self, kind: str) -> Informer:
        """The controllers' shared informer of ``kind`` (what they see)."""
        return self.mgr.factory.informer(kind)


StartEnv = Callable[..., Awaitable[Env]]


@pytest.fixture
async def start_env(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[StartEnv]:
    """Start API server + controllers (+ kubelet); keyword arguments go to ControllerConfig, ``server`` to the server."""
    envs: list[Env] = []

    async def start(*, store_url: str = "memory://", server: dict[str, Any] | None = None,
                    auto_ready: bool = True, **config: Any) -> Env:
        d = tmp_path / f"env{len(envs)}"
        d.mkdir()
        cluster = await start_cluster(nursery, d, store_url, **{"loopback_ok": True, **(server or {})})
        scope = trio.CancelScope()

        async def run(*, task_status: trio.TaskStatus[tuple[ControllerManager, FakeKubelet]]) -> None:
            with scope:
                async with trio.open_nursery() as n:
                    mgr = await n.start(run_controllers, cluster.client, ControllerConfig(**config))
                    kubelet = await start_kubelet(n, cluster.client, auto_ready=auto_ready)
                    task_status.started((mgr, kubelet))

        mgr, kubelet = await nursery.start(run)
        env = Env(cluster, mgr, kubelet, scope)
        envs.append(env)
        return env

    try:
        yield start
    finally:
        for env in envs:
            env.scope.cancel()
            await env.cluster.client.aclose()


@pytest.fixture
async def env(start_env: StartEnv) -> Env:
    """The default environment (memory store, every controller)."""
    return await start_env()
