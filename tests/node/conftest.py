"""Fixtures for node agent tests: a real API server (loopback endpoints allowed) and real agents."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from kmesh.client.api import Client
from kmesh.client.informer import Informer
from kmesh.node.agent import Agent, AgentConfig, run_agent
from kmesh.node.sim import SimRuntime
from tests.support.cluster import Cluster, start_cluster

Obj = dict[str, Any]
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.52"


@pytest.fixture
async def api(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Cluster]:
    """An API server that accepts the sim runtime's loopback addresses."""
    c = await start_cluster(nursery, tmp_path / "api", loopback_ok=True)
    try:
        yield c
    finally:
        await c.client.aclose()


@dataclass
class RunningAgent:
    """An agent started by a test, stoppable on its own."""

    agent: Agent
    scope: trio.CancelScope
    stopped: trio.Event = field(default_factory=trio.Event)

    async def stop(self) -> None:
        """Cancel the agent and wait until every task and process of it is gone."""
        self.scope.cancel()
        await self.stopped.wait()


async def _run(client: Client, cfg: AgentConfig, *, task_status: trio.TaskStatus[RunningAgent]) -> None:
    scope = trio.CancelScope()
    stopped = trio.Event()
    try:
        with scope:
            async with trio.open_nursery() as n:
                agent = await n.start(run_agent, client, cfg)
                task_status.started(RunningAgent(agent, scope, stopped))
    finally:
        stopped.set()


def agent_config(tmp_path: Path, node: str = "node-1", ip: str = "127.0.0.1", **kw: Any) -> AgentConfig:
    """A sim-runtime agent config whose data dir is under ``tmp_path``."""
    data = tmp_path / "nodes" / node
    kw.setdefault("heartbeat", 0.5)
    kw.setdefault("backoff_initial", 1.0)
    kw.setdefault("backoff_max", 4.0)
    return AgentConfig(node_name=node, node_ip=ip, runtime=SimRuntime(data), data_dir=data, **kw)


async def start_agent(nursery: trio.Nursery, client: Client, cfg: AgentConfig) -> RunningAgent:
    """Start ``run_agent`` in ``nursery``; returns once the node is registered."""
    return await nursery.start(_run, client, cfg)  # type: ignore[no-any-return]


async def set_pod_cidr(client: Client, node: str, cidr: str) -> None:
    """Do what the node IPAM controller does: give the node its podCIDR."""
    await client.patch("Node", node, {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})


def node1_cidr() -> str:
    """node-1's podCIDR: one per pytest-xdist worker (127.244.201.0/24 for the first), so pods of tests
    running at once on two workers never share an address, and a port on it."""
    n = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return "127.244.201.0/24" if not n.isdigit() or n == "0" else f"127.244.{230 + int(n) % 25}.0/24"


@pytest.fixture
async def node1(api: Cluster, nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningAgent]:
    """One agent (node-1, podCIDR ``node1_cidr()``)."""
    ra = await start_agent(nursery, api.client, agent_config(tmp_path))
    await set_pod_cidr(api.client, "node-1", node1_cidr())
    try:
        yield ra
    finally:
        await ra.stop()


@pytest.fixture
async def pods(api: Cluster, nursery: trio.Nursery) -> Informer:
    """A test-side informer of every pod."""
    inf = Informer(api.client, "Pod")
    await nursery.start(inf.run)
    return inf


def pod(name: str, *containers: Obj, ns: str = "default", **spec: Any) -> Obj:
    """A pod manifest."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"containers": list(containers), **spec},
    }


def agnhost(name: str, *args: str, **kw: Any) -> Obj:
    """An agnhost container."""
    return {"name": name, "image": AGNHOST, "args": list(args), **kw}


def command(name: str, *argv: str, **kw: Any) -> Obj:
    """A container that runs ``argv`` as a process."""
    return {"name": name, "image": "python:3.11-slim", "command": list(argv), **kw}


async def create_bound(client: Client, manifest: Obj, node: str = "node-1") -> Obj:
    """Create a pod and bind it to ``node`` (what the scheduler does)."""
    created = await client.create(manifest)
    md = created["metadata"]
    await client.bind(md["namespace"], md["name"], node)
    return created


def condition(p: Obj | None, ctype: str) -> str:
    """The status of one pod condition ("" when absent)."""
    for c in ((p or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return str(c.get("status"))
    return ""


def cstatus(p: Obj | None, name: str) -> Obj:
    """One container status."""
    for c in ((p or {}).get("status") or {}).get("containerStatuses") or []:
        if c.get("name") == name:
            return c  # type: ignore[no-any-return]
    return {}


async def wait_pod(inf: Informer, name: str, pred: Callable[[Obj | None], bool], ns: str = "default", timeout: float = 15) -> Obj | None:
    """Wait (bounded) until ``pred`` holds for the cached pod; returns it."""
    with trio.fail_after(timeout):
        await inf.wait_for(lambda i: pred(i.get(name, ns)))
    return inf.get(name, ns)


def running_ready(p: Obj | None) -> bool:
    """Phase Running and Ready=True."""
    return bool(p) and (p or {}).get("status", {}).get("phase") == "Running" and condition(p, "Ready") == "True"
