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

With ``leader_elect`` several managers (one per control-plane server) share
the work as kube-controller-manager and kube-scheduler do with
``--leader-elect``: the informers run everywhere (warm standby caches), but
the controllers run only while this process holds the Lease
``kube-system/kube-controller-manager`` and the scheduler only while it
holds ``kube-system/kube-scheduler`` (``kmesh.controllers.leaderelection``).
Each term builds its controllers afresh over the shared informers, as a new
upstream process would, so nothing a previous term left (expectations,
assumed pods, half-done keys) carries over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from kmesh.api.wellknown import CLUSTER_CIDR, SERVICE_CIDR
from kmesh.client.api import Client
from kmesh.client.informer import Change, Handler, Informer
from kmesh.controllers.base import Controller
from kmesh.controllers.deployment import DeploymentController
from kmesh.controllers.endpoint_model import MAX_ENDPOINTS_PER_SLICE
from kmesh.controllers.endpoints import EndpointsController, EndpointSliceController
from kmesh.controllers.events import EventRecorder
from kmesh.controllers.gc import GarbageCollector
from kmesh.controllers.informers import Index, InformerFactory
from kmesh.controllers.lbipam import LoadBalancerIPAM
from kmesh.controllers.leaderelection import (
    CONTROLLER_MANAGER_LEASE, SCHEDULER_LEASE, LeaderElectionConfig, LeaderElector, default_identity,
)
from kmesh.controllers.meshca import DEFAULT_TRUST_DOMAIN, DEFAULT_TTL, MeshCAController
from kmesh.controllers.metrics import CONTROLLER_MANAGER, CONTROLLER_MANAGER_ELECTION, SCHEDULER, SCHEDULER_ELECTION
from kmesh.controllers.nodeipam import NodeIPAM
from kmesh.controllers.nodelifecycle import NodeLifecycle
from kmesh.controllers.replicaset import ReplicaSetController
from kmesh.controllers.scheduler import DEFAULT_SCHEDULER, Scheduler
from kmesh.controllers.serviceaccounts import ServiceAccountsController
from kmesh.net.sockets import OpenSocket

__all__ = ["ALL_CONTROLLERS", "ControllerConfig", "ControllerManager", "InformerFactory", "run_controllers"]

log = logging.getLogger("kmesh.controllers")

ALL_CONTROLLERS = (
    "endpointslice", "endpoint", "replicaset", "deployment", "garbagecollector",
    "scheduler", "nodeipam", "nodelifecycle", "service-lb-ipam", "serviceaccount", "mesh-ca",
)


@dataclass
class ControllerConfig:
    """What the controllers need: address ranges, timings, concurrency, which ones run."""

    cluster_cidr: str = CLUSTER_CIDR  # pod subnets are cut from it (sim runtime: 127.244.0.0/16)
    node_cidr_mask: int = 24  # one /24 per node
    service_cidr: str = SERVICE_CIDR  # kept out of node subnets
    node_grace_period: float = 40.0  # seconds without a lease renewal before a node is NotReady
    lb_range: str | None = None  # LoadBalancer Service addresses (kmesh.controllers.lbipam); None: none given
    workers: int = 5  # workers of each busy controller (endpoints, slices, replicasets, deployments, gc)
    controllers: tuple[str, ...] = ("*",)  # names from ALL_CONTROLLERS, "*" for all, "-name" to leave one out
    events: bool = True  # record Events (Scheduled, ScalingReplicaSet, ...)
    max_endpoints_per_slice: int = MAX_ENDPOINTS_PER_SLICE
    scheduler_name: str = DEFAULT_SCHEDULER
    # The mesh CA (kmesh.controllers.meshca): SPIFFE trust domain and the longest workload certificate, seconds
    # (a lab may set it short to exercise rotation).
    mesh_trust_domain: str = DEFAULT_TRUST_DOMAIN
    mesh_cert_max_ttl: float = DEFAULT_TTL
    metrics_host: str = "127.0.0.1"  # where both /metrics endpoints listen
    metrics_port: int | None = None  # controller-manager /metrics (upstream 10257); 0: a free port; None: off
    scheduler_metrics_port: int | None = None  # scheduler /metrics (upstream 10259); 0: a free port; None: off
    metrics_any_port_if_taken: bool = False  # a port in use: take a free one instead of failing (labs)
    # Leader election (kube-controller-manager's and kube-scheduler's --leader-elect*): see run_controllers.
    leader_elect: bool = False
    leader_identity: str = ""  # spec.holderIdentity; "": <hostname>_<uuid4>, one per manager
    leader_elect_lease_duration: float = 15.0
    leader_elect_renew_deadline: float = 10.0
    leader_elect_retry_period: float = 2.0
    leader_elect_release_on_cancel: bool = True  # stopped cleanly: hand the leases over at once

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
    # With leader election: the elector of each Lease (kube-controller-manager, kube-scheduler); ``controllers``
    # and ``recorders`` then hold only those of the terms this process leads now.
    electors: dict[str, LeaderElector] = field(default_factory=dict)


def build(client: Client, config: ControllerConfig) -> ControllerManager:
    """Create the enabled controllers (they register their informers and indexes with the factory)."""
    mgr = ControllerManager(InformerFactory(client))
    mgr.controllers, mgr.recorders = _make(client, config, mgr.factory, _enabled(config))
    return mgr


def _enabled(config: ControllerConfig) -> tuple[str, ...]:
    return tuple(n for n in ALL_CONTROLLERS if config.enabled(n))


def _make(client: Client, config: ControllerConfig, f: InformerFactory,
          names: tuple[str, ...]) -> tuple[dict[str, Controller[Any]], list[EventRecorder]]:
    """The controllers named (and the event recorders they use) over the informers of ``f``."""
    recorders: list[EventRecorder] = []

    def recorder(component: str) -> EventRecorder:
        r = EventRecorder(client, component, enabled=config.events)
        recorders.append(r)
        return r

    c: dict[str, Controller[Any]] = {}
    w = config.workers
    if "endpointslice" in names:
        c["endpointslice"] = EndpointSliceController(client, f, workers=w, max_per_slice=config.max_endpoints_per_slice,
                                                     events=recorder("endpoint-slice-controller"))
    if "endpoint" in names:
        c["endpoint"] = EndpointsController(client, f, workers=w)
    if "replicaset" in names:
        c["replicaset"] = ReplicaSetController(client, f, workers=w, events=recorder("replicaset-controller"))
    if "deployment" in names:
        c["deployment"] = DeploymentController(client, f, workers=w, events=recorder("deployment-controller"))
    if "garbagecollector" in names:
        c["garbagecollector"] = GarbageCollector(client, f, workers=w)
    if "scheduler" in names:
        c["scheduler"] = Scheduler(client, f, scheduler_name=config.scheduler_name,
                                   events=recorder(config.scheduler_name))
    if "nodeipam" in names:
        c["nodeipam"] = NodeIPAM(client, f, config.cluster_cidr, mask=config.node_cidr_mask,
                                 service_cidr=config.service_cidr, events=recorder("cidrAllocator"))
    if "nodelifecycle" in names:
        c["nodelifecycle"] = NodeLifecycle(client, f, grace_period=config.node_grace_period,
                                           events=recorder("node-controller"))
    if "serviceaccount" in names:
        c["serviceaccount"] = ServiceAccountsController(client, f)
    if "service-lb-ipam" in names and config.lb_range:
        c["service-lb-ipam"] = LoadBalancerIPAM(client, f, config.lb_range, events=recorder("lb-ipam-controller"))
    if "mesh-ca" in names:
        c["mesh-ca"] = MeshCAController(client, f, trust_domain=config.mesh_trust_domain,
                                        max_ttl=config.mesh_cert_max_ttl, events=recorder("mesh-ca"))
    return c, recorders


async def run_controllers(
    client: Client,
    config: ControllerConfig | None = None,
    *,
    open_socket: OpenSocket | None = None,
    task_status: trio.TaskStatus[ControllerManager] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run every enabled controller until cancelled; ``task_status`` fires once all informers synced.

    ``open_socket`` makes the metrics listeners' sockets (the netns lab: in the root namespace).

    With ``config.leader_elect`` ``task_status`` still fires once the informers
    synced, leader or not (a standby server starts); the controller-manager's
    controllers then run only while this process holds the Lease
    ``kube-system/kube-controller-manager``, the scheduler only while it holds
    ``kube-system/kube-scheduler``, and neither writes while it does not.
    Losing a lease cancels its controllers and campaigns again: upstream's
    components exit and their supervisor restarts them, kmesh runs in a
    supervisor of its own and stops them cleanly instead. Cancelling the
    manager releases the leases it holds (``leader_elect_release_on_cancel``)
    once its controllers have stopped, so a standby takes over at once."""
    config = config or ControllerConfig()
    if config.leader_elect:
        await _run_elected(client, config, open_socket, task_status)
        return
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


async def _run_elected(client: Client, config: ControllerConfig, open_socket: OpenSocket | None,
                       task_status: trio.TaskStatus[ControllerManager]) -> None:
    """``run_controllers`` with leader election: informers always, each group of controllers while leading."""
    mgr = ControllerManager(InformerFactory(client))
    names = _enabled(config)
    # Register every informer and index the controllers use before the factory starts; each term builds
    # its own controllers over them (see _Term), so these first ones are dropped at once.
    _Term(client, config, mgr.factory, names).detach()
    groups = {CONTROLLER_MANAGER_LEASE: tuple(n for n in names if n != "scheduler"),
              SCHEDULER_LEASE: tuple(n for n in names if n == "scheduler")}
    identity = config.leader_identity or default_identity()
    async with trio.open_nursery() as nursery:
        mgr.metrics_port, mgr.scheduler_metrics_port = await _serve_metrics(nursery, config, open_socket)
        await nursery.start(mgr.factory.run)
        for lease, group in groups.items():
            if not group:
                continue
            component = "kube-controller-manager" if lease == CONTROLLER_MANAGER_LEASE else config.scheduler_name
            events = EventRecorder(client, component, enabled=config.events)
            nursery.start_soon(events.run)
            elector = LeaderElector(client, LeaderElectionConfig(
                lease, identity, lease_duration=config.leader_elect_lease_duration,
                renew_deadline=config.leader_elect_renew_deadline, retry_period=config.leader_elect_retry_period,
                release_on_cancel=config.leader_elect_release_on_cancel), events=events)
            (CONTROLLER_MANAGER_ELECTION if lease == CONTROLLER_MANAGER_LEASE else SCHEDULER_ELECTION).track(elector)
            mgr.electors[lease] = elector
            nursery.start_soon(elector.run, partial(_lead, client, config, mgr, group))
        log.info("informers synced; controllers run while %s leads %s", identity, ", ".join(mgr.electors))
        task_status.started(mgr)


async def _lead(client: Client, config: ControllerConfig, mgr: ControllerManager, names: tuple[str, ...]) -> None:
    """One leadership term: fresh controllers over the running informers, until cancelled (the lease lost)."""
    term = _Term(client, config, mgr.factory, names)
    await term.replay()
    mgr.controllers.update(term.controllers)
    mgr.recorders.extend(term.recorders)
    try:
        async with trio.open_nursery() as nursery:
            for r in term.recorders:
                nursery.start_soon(r.run)
            ep = term.controllers.get("endpoint")
            if isinstance(ep, EndpointsController):
                ep.enqueue_leftovers()
            for ctl in term.controllers.values():
                nursery.start_soon(ctl.run)
            log.info("leading: %s", ", ".join(term.controllers))
    finally:
        term.detach()
        for name, ctl in term.controllers.items():
            if mgr.controllers.get(name) is ctl:
                del mgr.controllers[name]
        mgr.recorders[:] = [r for r in mgr.recorders if r not in term.recorders]
        await term.drain()


class _TermFactory(InformerFactory):
    """The shared factory as one term's controllers see it: its informers and indexes, with a note of
    each informer's handlers before the term's controllers added theirs."""

    def __init__(self, shared: InformerFactory) -> None:
        super().__init__(shared.client)
        self.shared = shared
        self.before: dict[int, tuple[Informer, list[Handler]]] = {}

    def informer(self, kind: Any) -> Informer:
        inf = self.shared.informer(kind)
        self.before.setdefault(id(inf), (inf, list(inf.handlers)))
        return inf

    def index(self, kind: Any, name: str, fn: Any) -> Index:
        self.informer(kind)
        return self.shared.index(kind, name, fn)


class _Term:
    """The controllers of one leadership term over shared, running informers.

    A controller registers its informer handlers when it is built; built after
    the informers synced, it is handed their caches as adds (``replay``, what
    client-go does for a handler added to a started informer), and when the
    term ends its handlers are removed (``detach``) and its queue emptied
    (``drain``, so ``workqueue_depth`` does not keep what no one will work on).
    Index handlers stay: the indexes are the factory's, shared by every term."""

    def __init__(self, client: Client, config: ControllerConfig, shared: InformerFactory,
                 names: tuple[str, ...]) -> None:
        f = _TermFactory(shared)
        self.controllers, self.recorders = _make(client, config, f, names)
        self.handlers: list[tuple[Informer, list[Handler]]] = []
        for inf, before in f.before.values():
            added = [h for h in inf.handlers
                     if not any(h is b for b in before) and not isinstance(getattr(h, "__self__", None), Index)]
            if added:
                self.handlers.append((inf, added))

    async def replay(self) -> None:
        """Hand every cached object to this term's handlers as an add."""
        for inf, handlers in self.handlers:
            for key, obj in list(inf.cache.items()):
                if inf.cache.get(key) is not obj:
                    continue  # changed meanwhile: the handlers saw the change itself
                change = Change(inf.kind, None, obj)
                for h in handlers:
                    res = h(change)
                    if res is not None:
                        await res

    def detach(self) -> None:
        """Remove this term's handlers from the informers (a new list: an ongoing hand-out keeps the old one)."""
        for inf, handlers in self.handlers:
            inf.handlers = [h for h in inf.handlers if not any(h is x for x in handlers)]

    async def drain(self) -> None:
        """Take every key off the stopped controllers' queues (no worker will)."""
        with trio.CancelScope(shield=True):
            for ctl in self.controllers.values():
                while len(ctl.queue):
                    ctl.queue.done(await ctl.queue.get())


async def _serve_metrics(nursery: trio.Nursery, config: ControllerConfig,
                         open_socket: OpenSocket | None) -> tuple[int | None, int | None]:
    """Start the two /metrics endpoints that are configured; their bound ports."""
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
