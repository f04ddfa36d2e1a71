"""The netns runtime's lab: topology first, then the control plane in its namespace, then node agents.

``prepare`` runs in the supervisor before trio starts: it builds the
underlay, the control-plane and node namespaces, opens the sockets that must
live in the root namespace (the API for kubectl on 127.0.0.1, the DNS server
``cluster.json`` names) and then moves the supervisor into the control-plane
namespace for good, so that everything it starts afterwards (API server on
the underlay, etcd, controllers) lives there.

``start_nodes`` starts one ``kmesh agent --runtime netns`` process per node,
inside the node's namespace, and returns once every node has its subnet.

The nodes are node-1..node-N, or those a topology file names, with its labels
(``kmesh.lab.topofile.lab_nodes``: the agents get them as ``--node-labels``).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from kmesh.client.api import Client
from kmesh.client.informer import Informer
from kmesh.net import netns
from kmesh.lab.datadir import DataDir, NodeInfo
from kmesh.lab.procs import run_agent_process
from kmesh.lab.topofile import NodeSpec, default_node_name, lab_nodes
from kmesh.lab.topology import (
    CONTROL_PLANE_IP,
    LabNames,
    add_host,
    build_underlay,
    node_ip,
    strict_arp,
)
from kmesh.store.etcd_api import EtcdTLS

if TYPE_CHECKING:
    from kmesh.lab.supervisor import UpOptions

API_PORT = 6443
_log = logging.getLogger("kmesh.lab")


@dataclass
class NetnsLab:
    """What ``prepare`` made and opened."""

    names: LabNames
    api_socket: socket.socket  # 127.0.0.1:<port> in the root namespace (kubectl)
    root_ns: str  # a path to the root network namespace, kept open
    node_names: list[str] = field(default_factory=list)

    @property
    def api_port(self) -> int:
        """The API port kubectl uses on 127.0.0.1."""
        return int(self.api_socket.getsockname()[1])

    async def open_root_socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> trio.socket.SocketType:
        """A socket in the root namespace (for servers the machine's loopback must reach)."""
        return await netns.open_socket(self.root_ns, family, type)


def prepare(opts: UpOptions, progress: Callable[[str], None]) -> NetnsLab:
    """Build the lab's namespaces and enter the control plane's (see the module docstring)."""
    names = LabNames(opts.name)
    progress("underlay bridge")
    build_underlay(names)
    progress("control-plane namespace")
    add_host(names, names.control_plane, "cp", CONTROL_PLANE_IP)
    node_names = [n.name for n in lab_nodes(opts.nodes, opts.node_specs)]
    for i, n in enumerate(node_names):
        progress(f"node namespace {names.node(n)}")
        add_host(names, names.node(n), n, node_ip(i), router=True)
        if opts.proxy_mode == "ipvs":  # kube-proxy's strictARP (MetalLB asks for it): only the speaker answers
            strict_arp(names.node(n))   # ARP for the LoadBalancer addresses kube-ipvs0 holds on every node
    api = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    api.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    api.bind(("127.0.0.1", opts.port))
    api.listen(1024)
    api.set_inheritable(True)
    root_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    netns.enter_for_good(names.control_plane)
    return NetnsLab(names=names, api_socket=api, root_ns=f"/proc/self/fd/{root_fd}", node_names=node_names)


def agent_argv(
    opts: UpOptions, dd: DataDir, i: int, kubeconfig: Path, etcd_url: str | None, etcd_tls: EtcdTLS | None = None,
) -> list[str]:
    """The command line of node ``i``'s agent (``etcd_tls``: the files its subnet manager presents to etcd)."""
    specs = lab_nodes(opts.nodes, opts.node_specs)
    node = specs[i] if i < len(specs) else NodeSpec(default_node_name(i))
    argv = [
        sys.executable, "-m", "kmesh.cli", "agent", "--runtime", "netns", "--kubeconfig", str(kubeconfig),
        "--node", node.name, "--node-ip", node_ip(i), "--lab", opts.name, "--data-dir", str(dd.root),
        "--backend", opts.backend, "--subnet-manager", opts.subnet_manager, "--proxy-mode", opts.proxy_mode,
        "--ipvs-scheduler", opts.ipvs_scheduler,
    ]
    if node.labels:
        from kmesh.node.nodeinfo import format_node_labels

        argv += ["--node-labels", format_node_labels(node.labels)]
    for value in opts.nodeport_addresses:
        argv += ["--nodeport-addresses", value]
    if etcd_url:
        argv += ["--etcd", etcd_url]
    if etcd_url and etcd_tls is not None:
        for flag, value in (("--etcd-cafile", etcd_tls.cafile), ("--etcd-certfile", etcd_tls.certfile),
                            ("--etcd-keyfile", etcd_tls.keyfile)):
            if value:
                argv += [flag, value]
    return argv


async def run_node(
    lab: NetnsLab, argv: list[str], name: str, log: Path, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """One agent process inside its node namespace, until cancelled (see ``procs.run_agent_process``)."""
    await run_agent_process(netns.nsenter_argv(lab.names.node(name), argv), name, log, task_status=task_status)


async def start_nodes(
    nursery: trio.Nursery, client: Client, opts: UpOptions, dd: DataDir, lab: NetnsLab, kubeconfig: Path,
    etcd_url: str | None, progress: Callable[[str], None], *, etcd_tls: EtcdTLS | None = None,
) -> list[NodeInfo]:
    """Start every node's agent and return once each node has a pod subnet."""
    dd.log_dir.mkdir(parents=True, exist_ok=True)

    async def one(i: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        name = lab.node_names[i]
        await run_node(lab, agent_argv(opts, dd, i, kubeconfig, etcd_url, etcd_tls), name,
                       dd.log_dir / f"{name}.log", task_status=task_status)

    async with trio.open_nursery() as starting:
        for i, name in enumerate(lab.node_names):
            starting.start_soon(_start_one, nursery, one, i, name, progress)
    nodes = Informer(client, "Node")
    async with trio.open_nursery() as watch:
        await watch.start(nodes.run)
        with trio.fail_after(60):
            await nodes.wait_for(lambda inf: all((inf.get(n) or {}).get("spec", {}).get("podCIDR") for n in lab.node_names))
        watch.cancel_scope.cancel()
    return [
        NodeInfo(name=n, ip=node_ip(i), podCIDR=(nodes.get(n) or {})["spec"]["podCIDR"], netns=lab.names.node(n))
        for i, n in enumerate(lab.node_names)
    ]


async def _start_one(
    nursery: trio.Nursery, one: Callable[..., object], i: int, name: str, progress: Callable[[str], None],
) -> None:
    await nursery.start(one, i)
    progress(f"agent {name} running")
