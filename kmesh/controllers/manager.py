"""The controller manager: every controller in one nursery over one set of shared informers.

``run_controllers(client, config)`` builds the enabled controllers, each of
which asks the :class:`InformerFactory` for the informers and indexes it
needs (so every kind is listed and watched once), starts the informers,
and reports ``started`` once all of them have listed; then the controllers'
workers run until cancelled.

With ``metrics_port`` / ``scheduler_metrics_port`` set it also serves the
controller-manager's and the scheduler's ``/metrics`` (plain HTTP; upstream's
ports 10257 and 10259 serve HTTPS with authentication), see
``kmesh.controllers.metrics``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from kmesh.api.wellknown import CLUSTER_CIDR, SERVICE_CIDR
from kmesh.client.api import Client
from kmesh.controllers.base import Controller
from kmesh.controllers.deployment import DeploymentController
from kmesh.controllers.endpoint_model import MAX_ENDPOINTS_PER_SLICE
from kmesh.controllers.endpoints import EndpointsController, EndpointSliceController
from kmesh.controllers.events import EventRecorder
from kmesh.controllers.gc import GarbageCollector
from kmesh.controllers.informers import InformerFactory
from kmesh.controllers.metrics import CONTROLLER_MANAGER, SCHEDULER
from kmesh.controllers.nodeipam import NodeIPAM
from kmesh.controllers.nodelifecycle import NodeLifecycle
from kmesh.controllers.replicaset import ReplicaSetController
from kmesh.controllers.scheduler import DEFAULT_SCHEDULER, Scheduler
from kmesh.net.sockets import OpenSocket

__all__ = ["ALL_CONTROLLERS", "ControllerConfig", "ControllerManager", "InformerFactory", "run_controllers"]

log = logging.getLogger("kmesh.controllers")

ALL_CONTROLLERS = (
    "endpointslice", "endpoint", "replicaset", "deployment", "garbagecollector",
    "scheduler", "nodeipam", "nodelifecycle",
)


@dataclass
class ControllerConfig:
    """What the controllers need: address ranges, timings, concurrency, which ones run."""

    cluster_cidr: str = CLUSTER_CIDR  # pod subnets are cut from it (sim runtime: 127.244.0.0/16)
    node_cidr_mask: int = 24  # one /24 per node
    service_cidr: str = SERVICE_CIDR  # kept out of node subnets
    node_grace_period: float = 40.0  # seconds without a lease renewal before a node is NotReady
    workers: int = 5  # workers of each busy controller (endpoints, slices, replicasets, deployments, gc)
    controllers: tuple[str, ...] = ("*",)  # names from ALL_CONTROLLERS, "*" for all, "-name" to leave one out
    events: bool = True  # record Events (Scheduled, ScalingReplicaSet, ...)
    max_endpoints_per_slice: int = MAX_ENDPOINTS_PER_SLICE
    scheduler_name: str = DEFAULT_SCHEDULER
    metrics_host: str = "127.0.0.1"  # where both /metrics endpoints listen
    metrics_port: int | None = None  # controller-manager /metrics (upstream 10257); 0: a free port; None: off
    scheduler_metrics_port: int | None = None  # scheduler /metrics (upstream 10259); 0: a free port; None: off
    metrics_any_port_if_taken: bool = False  # a port in use: take a free one instead of failing (labs)

    def enabled(self, name: str) -> bool:
        """Whether controller ``name`` runs (kube-controller-manager's --controllers syntax)."""
        if f"-{name}" in self.controllers:
            return False
        return "*" in self.controllers or name in self.controllers


@dataclass
class ControllerManager:
    """Handed to ``task_status`` once the informers have synced: what runs, for callers and tests."""

    factory: InformerFactory
    controllers: dict[str, Controller[Any]] = field(default_factory=dict)
    recorders: list[EventRecorder] = field(default_factory=list)
    metrics_port: int | None = None  # where the controller-manager's /metrics listens (None: not served)
    scheduler_metrics_port: int | None = None  # where the scheduler's /metrics listens (None: not served)


def build(client: Client, config: ControllerConfig) -> ControllerManager:
    """Create the enabled controllers (they register their informers and indexes with the factory)."""
    mgr = ControllerManager(InformerFactory(client))
    f = mgr.factory

    def recorder(component: str) -> EventRecorder:
        r = EventRecorder(client, component, enabled=config.events)
        mgr.recorders.append(r)
        return r

    c = mgr.controllers
    w = config.workers
    if config.enabled("endpointslice"):
        c["endpointslice"] = EndpointSliceController(client, f, workers=w, max_per_slice=config.max_endpoints_per_slice,
                                                     events=recorder("endpoint-slice-controller"))
    if config.enabled("endpoint"):
        c["endpoint"] = EndpointsController(client, f, workers=w)
    if config.enabled("replicaset"):
        c["replicaset"] = ReplicaSetController(client, f, workers=w, events=recorder("replicaset-controller"))
    if config.enabled("deployment"):
        c["deployment"] = DeploymentController(client, f, workers=w, events=recorder("deployment-controller"))
    if config.enabled("garbagecollector"):
        c["garbagecollector"] = GarbageCollector(client, f, workers=w)
    if config.enabled("scheduler"):
        c["scheduler"] = Scheduler(client, f, scheduler_name=config.scheduler_name,
                                   events=recorder(config.scheduler_name))
    if config.enabled("nodeipam"):
        c["nodeipam"] = NodeIPAM(client, f, config.cluster_cidr, mask=config.node_cidr_mask,
                                 service_cidr=config.service_cidr, events=recorder("cidrAllocator"))
    if config.enabled("nodelifecycle"):
        c["nodelifecycle"] = NodeLifecycle(client, f, grace_period=config.node_grace_period,
                                           events=recorder("node-controller"))
    return mgr


async def run_controllers(
    client: Client,
    config: ControllerConfig | None = None,
    *,
    open_socket: OpenSocket | None = None,
    task_status: trio.TaskStatus[ControllerManager] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run every enabled controller until cancelled; ``task_status`` fires once all informers synced.

    ``open_socket`` makes the metrics listeners' sockets (the netns lab: in the root namespace)."""
    config = config or ControllerConfig()
    mgr = build(client, config)
    async with trio.open_nursery() as nursery:
        mgr.metrics_port, mgr.scheduler_metrics_port = await _serve_metrics(nursery, config, open_socket)
        await nursery.start(mgr.factory.run)
        for r in mgr.recorders:
            nursery.start_soon(r.run)
        ep = mgr.controllers.get("endpoint")
        if isinstance(ep, EndpointsController):
            ep.enqueue_leftovers()
        for ctl in mgr.controllers.values():
            nursery.start_soon(ctl.run)
        log.info("controllers running: %s", ", ".join(mgr.controllers))
        task_status.started(mgr)


async def _serve_metrics(nursery: trio.Nursery, config: ControllerConfig,
                         open_socket: OpenSocket | None) -> tuple[int | None, int | None]:
    """Start the two /metrics endpoints that are configured; their bound ports."""
    from functools import partial

    from kmesh.net.metrics import serve_metrics

    ports: list[int | None] = []
    for registry, port in ((CONTROLLER_MANAGER.registry, config.metrics_port),
                           (SCHEDULER.registry, config.scheduler_metrics_port)):
        if port is None:
            ports.append(None)
            continue
        ports.append(await nursery.start(partial(
            serve_metrics, registry, config.metrics_host, port, open_socket=open_socket,
            any_port_if_taken=config.metrics_any_port_if_taken)))
    return ports[0], ports[1]
