"""The controller-manager's and the scheduler's Prometheus metrics, with upstream's names.

Upstream runs kube-controller-manager and kube-scheduler as two binaries,
each with its own ``/metrics`` (ports 10257 and 10259); kmesh runs both in
one manager, so each has a registry of its own, served on its own port:

- ``CONTROLLER_MANAGER``: ``workqueue_*{name}`` of every controller's queue
  (upstream's queue names: ``endpoint``, ``endpoint_slice``, ``replicaset``,
  ``deployment``, ``garbage_collector_attempt_to_delete``,
  ``cidrallocator_node``, ``node_lifecycle_controller``) and ``process_*``;
- ``SCHEDULER``: ``scheduler_schedule_attempts_total{result,profile}``,
  ``scheduler_scheduling_attempt_duration_seconds{result,profile}``,
  ``scheduler_pod_scheduling_attempts``, ``scheduler_pending_pods{queue}``,
  ``scheduler_queue_incoming_pods_total{queue,event}``,
  ``scheduler_scheduler_cache_size{type}``, the scheduler queue's
  ``workqueue_*{name="scheduler"}`` and ``process_*``;
- both, with leader election on: client-go's
  ``leader_election_master_status{name}`` (1 while leading), ``name`` being
  the Lease (``kube-controller-manager``, ``kube-scheduler``).

The registries are per process, as upstream's legacy registry is: managers
started side by side in one process (tests) add into the same numbers.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric

from kmesh.client.workqueue_metrics import WorkqueueMetrics

CONTROLLER_MANAGER_PORT = 10257  # upstream kube-controller-manager --secure-port
SCHEDULER_PORT = 10259  # upstream kube-scheduler --secure-port


def _component_registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    ProcessCollector(registry=reg)
    return reg


CONTROLLER_MANAGER = WorkqueueMetrics(_component_registry())
SCHEDULER = WorkqueueMetrics(_component_registry())

SCHEDULE_ATTEMPTS = Counter(
    "scheduler_schedule_attempts",
    "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, "
    "while 'error' means an internal scheduler problem.", ["result", "profile"], registry=SCHEDULER.registry)
ATTEMPT_DURATION = Histogram(
    "scheduler_scheduling_attempt_duration_seconds",
    "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
    ["result", "profile"], buckets=tuple(0.001 * 2**i for i in range(15)), registry=SCHEDULER.registry)
POD_ATTEMPTS = Histogram(
    "scheduler_pod_scheduling_attempts", "Number of attempts to successfully schedule a pod.",
    buckets=(1, 2, 4, 8, 16), registry=SCHEDULER.registry)
INCOMING_PODS = Counter(
    "scheduler_queue_incoming_pods", "Number of pods added to scheduling queues by event and queue type.",
    ["queue", "event"], registry=SCHEDULER.registry)


class SchedulerState(Protocol):
    """What the scheduler reports at scrape time."""

    def pending(self) -> dict[str, int]:
        """Pods waiting, by upstream's queue name (active, backoff, unschedulable, gated)."""

    def cache_size(self) -> dict[str, int]:
        """Cache entries by type (nodes, pods, assumed_pods)."""


_SCHEDULERS: weakref.WeakSet[SchedulerState] = weakref.WeakSet()  # type: ignore[type-var]


def track_scheduler(s: SchedulerState) -> None:
    """Report ``s`` in ``scheduler_pending_pods`` and ``scheduler_scheduler_cache_size`` while it lives."""
    _SCHEDULERS.add(s)


class _SchedulerCollector:
    def collect(self) -> Iterator[Metric]:
        pending = {"active": 0, "backoff": 0, "unschedulable": 0, "gated": 0}
        cache = {"nodes": 0, "pods": 0, "assumed_pods": 0}
        for s in list(_SCHEDULERS):
            for k, v in s.pending().items():
                pending[k] = pending.get(k, 0) + v
            for k, v in s.cache_size().items():
                cache[k] = cache.get(k, 0) + v
        p = GaugeMetricFamily(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' means "
            "number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods that the scheduler "
            "attempted to schedule and failed; 'gated' is the number of unschedulable pods that the scheduler never "
            "attempted to schedule because they are gated.", labels=["queue"])
        for k, v in pending.items():
            p.add_metric([k], v)
        yield p
        c = GaugeMetricFamily(
            "scheduler_scheduler_cache_size", "Number of nodes, pods, and assumed (bound) pods in the scheduler cache.",
            labels=["type"])
        for k, v in cache.items():
            c.add_metric([k], v)
        yield c


SCHEDULER.registry.register(_SchedulerCollector())  # type: ignore[arg-type]


class LeaderState(Protocol):
    """What a leader elector reports at scrape time."""

    @property
    def name(self) -> str:
        """The Lease's name."""

    @property
    def leading(self) -> bool:
        """Whether it leads now."""


class LeaderElectionMetrics:
    """``leader_election_master_status{name}`` of the electors tracked in one registry (electors of one
    name in one process add up, as the other families do: tests run managers side by side)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._electors: weakref.WeakSet[LeaderState] = weakref.WeakSet()  # type: ignore[type-var]
        registry.register(self)  # type: ignore[arg-type]

    def track(self, elector: LeaderState) -> None:
        """Report ``elector`` while it lives."""
        self._electors.add(elector)

    def collect(self) -> Iterator[Metric]:
        """The gauge, one sample per Lease name tracked here."""
        status: dict[str, int] = {}
        for e in list(self._electors):
            status[e.name] = status.get(e.name, 0) + (1 if e.leading else 0)
        g = GaugeMetricFamily(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates "
            "master. 'name' is the string used to identify the lease. Please make sure to group by name.",
            labels=["name"])
        for name in sorted(status):
            g.add_metric([name], status[name])
        yield g


CONTROLLER_MANAGER_ELECTION = LeaderElectionMetrics(CONTROLLER_MANAGER.registry)
SCHEDULER_ELECTION = LeaderElectionMetrics(SCHEDULER.registry)
