"""The sim runtime's nodes: N node agents as tasks of the supervisor, pods on loopback addresses.

The nodes are node-1..node-N, or those a topology file names, with its labels
(``kmesh.lab.topofile.lab_nodes``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from kmesh.client.api import Client
from kmesh.client.informer import Informer
from kmesh.lab.datadir import DataDir, NodeInfo
from kmesh.lab.topofile import default_node_name, lab_nodes

if TYPE_CHECKING:
    from kmesh.lab.supervisor import UpOptions

SIM_NODE_NET = ipaddress.ip_network("127.1.0.0/24")


def sim_node_name(i: int) -> str:
    """The name of the i-th node (0-based): node-1, node-2, …"""
    return default_node_name(i)


def sim_node_ip(i: int) -> str:
    """The loopback address standing for the i-th node's IP."""
    return str(SIM_NODE_NET.network_address + i + 1)


async def start_sim_nodes(
    nursery: trio.Nursery, client: Client, opts: UpOptions, dd: DataDir, node_ip: Callable[[int], str] | None = None,
    metrics: dict[str, str] | None = None,
) -> list[NodeInfo]:
    """Start one agent per node in ``nursery``; return once every node has its pod CIDR.

    ``node_ip``: the i-th node's address (default: slot 0's 127.1.0.N). Each kubelet serves its
    /metrics on its node IP, port 10250 when free; ``metrics`` gets ``kubelet/<node>`` → URL."""
    node_ip = node_ip or sim_node_ip
    from kmesh.node.agent import AgentConfig, run_agent
    from kmesh.node.metrics import KUBELET_PORT
    from kmesh.node.sim import SimRuntime

    specs = lab_nodes(opts.nodes, opts.node_specs)
    names = [n.name for n in specs]
    for i, spec in enumerate(specs):
        name = spec.name
        node_dir = dd.root / "nodes" / name
        node_dir.mkdir(parents=True, exist_ok=True)
        cfg = AgentConfig(node_name=name, node_ip=node_ip(i), runtime=SimRuntime(Path(node_dir)),
                          data_dir=Path(node_dir), metrics_port=KUBELET_PORT, metrics_any_port_if_taken=True,
                          labels=dict(spec.labels))
        agent = await nursery.start(run_agent, client, cfg)
        if metrics is not None:
            metrics[f"kubelet/{name}"] = f"http://{cfg.node_ip}:{agent.metrics_port}/metrics"
    nodes = Informer(client, "Node")
    async with trio.open_nursery() as watch:
        await watch.start(nodes.run)
        with trio.fail_after(60):
            await nodes.wait_for(lambda inf: all((inf.get(n) or {}).get("spec", {}).get("podCIDR") for n in names))
        watch.cancel_scope.cancel()
    return [
        NodeInfo(name=n, ip=node_ip(i), podCIDR=(nodes.get(n) or {})["spec"]["podCIDR"], netns=None)
        for i, n in enumerate(names)
    ]
