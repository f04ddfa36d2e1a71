"""A whole sim-runtime cluster in the test's trio loop: API server, controllers and N agents.

Each agent runs under its own cancel scope so a test can stop one node's
agent (as if its kubelet died) and start it again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from kmesh.controllers.manager import ControllerConfig, run_controllers
from kmesh.lab.simnodes import sim_node_name
from kmesh.lab.simslots import SLOTS, SimNet, SlotsTaken, claim
from kmesh.node.agent import AgentConfig, run_agent
from kmesh.node.sim import SimRuntime
from tests.support.cluster import Cluster, Stoppable, start_cluster


@dataclass
class AgentHandle:
    """One node's agent, stoppable and restartable."""

    name: str
    ip: str
    data_dir: Path
    running: Stoppable | None = None

    async def stop(self) -> None:
        """Cancel the agent and wait until it has cleaned up."""
        assert self.running is not None
        await self.running.stop()


@dataclass
class SimCluster:
    """The running parts of a sim cluster."""

    api: Cluster
    agents: list[AgentHandle]
    nursery: trio.Nursery
    heartbeat: float = 10.0  # the agents' lease renewal period (upstream: a quarter of the 40 s grace)

    @property
    def client(self) -> Any:
        return self.api.client

    async def kubectl(self, *args: str, **kw: Any) -> Any:
        return await self.api.kubectl(*args, **kw)

    async def start_agent(self, handle: AgentHandle) -> None:
        """(Re)start one node's agent."""

        async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            running = handle.running = Stoppable()
            try:
                with running.scope:
                    async with trio.open_nursery() as n:
                        cfg = AgentConfig(
                            node_name=handle.name, node_ip=handle.ip,
                            runtime=SimRuntime(handle.data_dir), data_dir=handle.data_dir,
                            heartbeat=self.heartbeat,
                        )
                        await n.start(run_agent, self.client, cfg)
                        task_status.started()
            finally:
                running.stopped.set()

        await self.nursery.start(run)


async def start_sim_cluster(
    nursery: trio.Nursery, tmp_path: Path, *, nodes: int = 3, store_url: str = "memory://",
    node_grace_period: float = 40.0,
) -> SimCluster:
    """API server + controllers + ``nodes`` agents, all inside ``nursery``.

    The cluster takes a sim address slot, as ``kmesh up --runtime sim`` does, so it never shares loopback
    addresses with a sim lab another test (or user) runs at the same time; it takes the highest free one,
    leaving the low slots to the labs ``kmesh up`` starts (they take the lowest, and some tests expect the
    slot they had); the slot is given back when ``nursery`` ends."""
    net, fd = _claim_from_the_top()
    nursery.start_soon(_hold_slot, fd)
    api = await start_cluster(nursery, tmp_path, store_url, service_cidr=net.service_cidr, loopback_ok=True)
    await nursery.start(
        run_controllers, api.client,
        ControllerConfig(cluster_cidr=net.cluster_cidr, service_cidr=net.service_cidr,
                         node_grace_period=node_grace_period),
    )
    # Leases are renewed four times per grace period, as upstream's defaults (10 s of 40 s) do.
    sim = SimCluster(api, [], nursery, heartbeat=min(10.0, node_grace_period / 4))
    for i in range(nodes):
        d = tmp_path / "nodes" / sim_node_name(i)
        d.mkdir(parents=True, exist_ok=True)
        h = AgentHandle(sim_node_name(i), net.node_ip(i), d)
        sim.agents.append(h)
        await sim.start_agent(h)
    return sim


async def _hold_slot(fd: int) -> None:
    """Keep the sim address slot until cancelled (the cluster's nursery ends), then give it back."""
    try:
        await trio.sleep_forever()
    finally:
        os.close(fd)


def _claim_from_the_top() -> tuple[SimNet, int]:
    """The highest free sim address slot and the descriptor holding it."""
    for slot in reversed(range(SLOTS)):
        try:
            return claim(slot=slot)
        except SlotsTaken:
            continue
    raise SlotsTaken(f"all {SLOTS} sim address slots are in use")
