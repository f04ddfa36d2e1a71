"""``kmesh bench lb --during 'link down NODE'``: a partition under load, and how long the Service took to converge.

A steady load (``rate`` requests per second, a new connection each) goes
through the Service's ClusterIP. After ``after`` seconds of baseline the
node is cut off the underlay by the very code ``kmesh link down`` runs
(``kmesh.lab.links.partition``). Its agent can no longer renew its Lease;
the node lifecycle controller marks it NotReady after its grace period
(40 s, upstream's node-monitor-grace-period; ``kmesh up
--node-grace-period``), sets its pods not ready, the EndpointSlice
controller marks their endpoints not ready and every kube-proxy stops
sending to them. Until then each request the proxy sends to an endpoint on
the cut node times out: the grace period *is* the error window.

Watches on the Node and on the Service's EndpointSlices time each step. The
load goes on until the errors have stopped for ``settle`` seconds (or
``max_wait`` ran out); then the node comes back (``kmesh link up``) unless
told not to, and the load goes on until the Node is Ready and its endpoints
are ready again, and ``settle`` seconds more.

``parse_during`` is pure, for tests (the load and its accounting —
``Record``, ``error_windows``, ``timeline`` — are kmesh.bench.load's, shared
with ``bench churn``); ``run_partition`` does the experiment.

Not every failure after the endpoints turned not ready is the proxy's: a
new connection that leaves from the source port of one that failed during
the cut meets that one's conntrack entry (unanswered, still NATed to the
cut node's endpoint) and follows it, as on a real cluster, where kube-proxy
clears stale conntrack entries of UDP only. Each record keeps its source
port; ``portReused`` counts those failures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from kmesh.bench.lb import Plan, UsageError, backends_from_slices, probe_once
from kmesh.bench.load import (
    LoadRecords,
    Record,
    ended_by,
    errors_by_kind,
    leaves,
    longest,
    port_reused,
    quiet_started,
    steady_load,
    timeline,
)
from kmesh.lab.datadir import DataDir
from kmesh.proxy.convert import SERVICE_NAME_LABEL

DEFAULT_GRACE = 40.0  # the controllers' default node grace period (ControllerConfig.node_grace_period)
DURING_FORMS = "'link down NODE'"


# ------------------------------------------------------------------ what to do during the load


@dataclass(frozen=True)
class During:
    """The disruption: ``link down NODE`` (a partition)."""

    action: str  # "down"
    node: str

    def __str__(self) -> str:
        return f"link {self.action} {self.node}"


def parse_during(text: str, nodes: Sequence[str] | None = None) -> During:
    """``link down NODE`` (whitespace-separated, nothing else); ``UsageError`` naming ``--during`` otherwise.

    ``nodes``: the lab's nodes, when known: NODE must be one of them."""
    words = text.split()
    if len(words) != 3 or words[0] != "link" or words[1] != "down":
        if len(words) >= 2 and words[0] == "link" and words[1] in ("up", "set", "reset", "show"):
            why = f"'link {words[1]}' is not a disruption bench lb can time"
        else:
            why = f"{text!r} is not of the form {DURING_FORMS}"
        raise UsageError("--during", f"{why}; give {DURING_FORMS} (the node comes back by itself at the end, "
                                     "unless --no-restore)")
    node = words[2]
    if nodes is not None and node not in nodes:
        raise UsageError("--during", f"no node {node!r} in the lab (nodes: {', '.join(nodes) or 'none'})")
    return During("down", node)


# ------------------------------------------------------------------ the grace period in force


def grace_in_force(dd: DataDir) -> tuple[float, str]:
    """(seconds, where that comes from): the lab's ``kmesh up --node-grace-period`` (recorded in D/up.json),
    else the controllers' default."""
    try:
        doc = json.loads(dd.config_file.read_text())
    except (OSError, ValueError):
        doc = {}
    value = doc.get("node_grace_period") if isinstance(doc, dict) else None
    if isinstance(value, (int, float)) and value > 0:
        return float(value), "kmesh up --node-grace-period (D/up.json)"
    return DEFAULT_GRACE, "the controllers' default (kmesh up --node-grace-period)"


# ------------------------------------------------------------------ the experiment


@dataclass
class Events:
    """When things happened, seconds since the load began (None: not seen)."""

    cut: float | None = None
    node_not_ready: float | None = None
    endpoints_not_ready: float | None = None
    restored: float | None = None
    node_ready: float | None = None
    endpoints_ready: float | None = None
    lease_renewed: float | None = None  # the node's last Lease renewal before the cut (wall clock, made relative)
    node_states: list[tuple[float, str]] = field(default_factory=list)  # (t, Ready condition status)
    endpoint_states: list[tuple[float, str]] = field(default_factory=list)  # (t, "ready 2/2")


@dataclass(frozen=True)
class PartitionOptions:
    """How the partition experiment runs."""

    during: During
    rate: float = 20.0  # requests per second
    after: float = 5.0  # seconds of baseline before the cut
    settle: float = 5.0  # seconds of steady success that end a window (and the experiment's phases)
    max_wait: float = 120.0  # at most this long after the cut (and after the restore) for convergence
    restore: bool = True


@dataclass
class PartitionResult(LoadRecords):
    """What the experiment saw."""

    plan: Plan
    options: PartitionOptions
    records: list[Record]
    events: Events
    grace: float
    grace_source: str
    endpoints_on_node: int
    converged: bool
    back: bool | None  # None: not restored (--no-restore)
    duration: float

    @property
    def passed(self) -> bool:
        return self.converged and self.back is not False

    def since_cut(self, t: float | None) -> float | None:
        if t is None or self.events.cut is None:
            return None
        return round(t - self.events.cut, 3)

    def since_restore(self, t: float | None) -> float | None:
        if t is None or self.events.restored is None:
            return None
        return round(t - self.events.restored, 3)

    def reason(self) -> str:
        ev, node = self.events, self.options.during.node
        if ev.node_not_ready is None:
            return f"node {node} did not go NotReady within {self.options.max_wait:g} s of the cut"
        if ev.endpoints_not_ready is None and self.endpoints_on_node:
            return f"the endpoints on {node} did not turn not ready within {self.options.max_wait:g} s of the cut"
        if not self.converged:
            return f"errors did not stop for {self.options.settle:g} s within {self.options.max_wait:g} s of the cut"
        if self.back is False:
            return f"node {node} or its endpoints were not back within {self.options.max_wait:g} s of link up"
        w = longest(self.windows)
        span = f"errors for {w.seconds:.1f} s" if w else "no errors"
        return f"converged: {span}, node NotReady {self.since_cut(ev.node_not_ready):.1f} s after the cut"

    def events_list(self) -> list[dict[str, Any]]:
        ev, node = self.events, self.options.during.node
        rows = [("cut", ev.cut, f"link down {node}"), ("nodeNotReady", ev.node_not_ready, f"Node {node} NotReady"),
                ("endpointsNotReady", ev.endpoints_not_ready, f"endpoints on {node} not ready"),
                ("restored", ev.restored, f"link up {node}"), ("nodeReady", ev.node_ready, f"Node {node} Ready"),
                ("endpointsReady", ev.endpoints_ready, f"endpoints on {node} ready")]
        return [{"event": k, "at": round(t, 3), "sinceCut": self.since_cut(t), "what": what}
                for k, t, what in rows if t is not None]

    def as_dict(self) -> dict[str, Any]:
        ev, probe, o = self.events, self.plan.probe, self.options
        w = longest(self.windows)
        return {
            "service": str(self.plan.target), "target": f"{probe.host}:{probe.port}", "protocol": probe.protocol,
            "source": self.plan.source.description, "during": str(o.during), "node": o.during.node,
            "rate": o.rate, "timeout": probe.timeout, "after": o.after, "settle": o.settle, "maxWait": o.max_wait,
            "restore": o.restore, "duration": round(self.duration, 3),
            "gracePeriod": {"seconds": self.grace, "source": self.grace_source},
            "endpointsOnNode": self.endpoints_on_node,
            "cutAt": None if ev.cut is None else round(ev.cut, 3),
            "leaseRenewedBeforeCut": self.since_cut(ev.lease_renewed),
            "nodeNotReadyAfter": self.since_cut(ev.node_not_ready),
            "endpointsNotReadyAfter": self.since_cut(ev.endpoints_not_ready),
            "restoredAfter": self.since_cut(ev.restored),
            "nodeReadyAfterRestore": self.since_restore(ev.node_ready),
            "endpointsReadyAfterRestore": self.since_restore(ev.endpoints_ready),
            "events": self.events_list(),
            "requests": len(self.records), "failed": self.failed, "errors": errors_by_kind(self.records),
            "portReused": len(port_reused(self.records)),
            "errorWindow": None if w is None else w.as_dict(),
            "windows": [x.as_dict() for x in self.windows],
            "converged": self.converged, "back": self.back, "passed": self.passed, "reason": self.reason(),
            "nodeStates": [{"at": round(t, 3), "ready": s} for t, s in ev.node_states],
            "endpointStates": [{"at": round(t, 3), "state": s} for t, s in ev.endpoint_states],
            "timeline": timeline(self.records),
            "records": [r.as_dict() for r in self.records],
        }


def _ready_status(node: dict[str, Any] | None) -> str:
    for c in ((node or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("status") or "Unknown")
    return "Unknown"


class _Watch:
    """Node and EndpointSlice informers, turned into the experiment's events."""

    def __init__(self, client: Any, plan: Plan, node: str, clock: Callable[[], float], events: Events) -> None:
        from kmesh.client.informer import Informer

        self.plan, self.node, self.clock, self.events = plan, node, clock, events
        t = plan.target
        self.nodes = Informer(client, "Node")
        self.slices = Informer(client, "EndpointSlice", namespace=t.namespace,
                               label_selector=f"{SERVICE_NAME_LABEL}={t.name}")
        self.changed = trio.Event()
        self.nodes.add_handler(lambda ch: self._update())
        self.slices.add_handler(lambda ch: self._update())
        self.node_ready = ""
        self.eps = (0, 0)  # (ready, total) endpoints on the node

    def endpoints(self) -> tuple[int, int]:
        t = self.plan.target
        bs = [b for b in backends_from_slices(self.slices.list(), t.port_name, t.protocol) if b.node == self.node]
        return sum(b.ready for b in bs), len(bs)

    def _update(self) -> None:
        now, ev = self.clock(), self.events
        ready = _ready_status(self.nodes.get(self.node))
        if ready != self.node_ready:
            self.node_ready = ready
            ev.node_states.append((now, ready))
        eps = self.endpoints()
        if eps != self.eps:
            self.eps = eps
            ev.endpoint_states.append((now, f"ready {eps[0]}/{eps[1]}"))
        if ev.cut is not None and ev.restored is None:
            if ev.node_not_ready is None and ready != "True":
                ev.node_not_ready = now
            if ev.endpoints_not_ready is None and eps[0] == 0:
                ev.endpoints_not_ready = now
        if ev.restored is not None:
            if ev.node_ready is None and ready == "True":
                ev.node_ready = now
            if ev.endpoints_ready is None and eps[1] > 0 and eps[0] == eps[1]:
                ev.endpoints_ready = now
        self.changed.set()
        self.changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as n:
            await n.start(self.nodes.run)
            await n.start(self.slices.run)
            self._update()
            task_status.started()

    def refresh(self) -> None:
        """Re-judge now (after the cut or the restore was recorded)."""
        self._update()


async def pick_client(client: Any, info: Any, service: str, node: str, options: dict[str, Any]) -> str | None:
    """A running pod to send from that is not on ``node`` (the one cut off) and, if there is one, not an
    endpoint of the Service: ``NS/NAME``; None leaves the choice to ``plan_lb`` (which then refuses or not)."""
    from kmesh.bench.lb import _pod_netns, _running, resolve_service
    from kmesh.net import netns

    target = await resolve_service(client, options.get("namespace") or "default", service, options.get("port"),
                                   bool(options.get("udp")))
    backends = {b.ip for b in target.endpoints}
    pods, _ = await client.list_all("Pod")
    pool = [p for p in pods if _running(p) and not (p.get("spec") or {}).get("hostNetwork")
            and (p.get("spec") or {}).get("nodeName") != node and netns.exists(_pod_netns(info, p))]
    outside = [p for p in pool if p["status"]["podIP"] not in backends]
    best = sorted(outside or pool, key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"]))
    if not best:
        return None
    md = best[0]["metadata"]
    return f"{md.get('namespace') or 'default'}/{md['name']}"


async def _lease_renewed(client: Any, node: str) -> float | None:
    """The wall-clock time of the node's last Lease renewal (None when unknown)."""
    from kmesh.api import errors as E
    from kmesh.controllers.podutil import parse_time

    try:
        lease = await client.get("Lease", node, "kube-node-lease")
    except E.APIError:
        return None
    return parse_time((lease.get("spec") or {}).get("renewTime"))


async def run_partition(
    client: Any, dd: DataDir, plan: Plan, options: PartitionOptions,
    on_record: Callable[[Record], None] | None = None, on_event: Callable[[str], None] | None = None,
) -> PartitionResult:
    """The experiment: load, cut, watch, converge, restore, converge; the link always comes back unless
    ``options.restore`` is False (also when cancelled or on error)."""
    from kmesh.lab.links import open_lab, partition

    lab = open_lab(dd)  # NoLab / LinkUsage before anything starts
    node = options.during.node
    grace, grace_source = grace_in_force(dd)
    say = on_event or (lambda s: None)
    began = trio.current_time()

    def clock() -> float:
        return trio.current_time() - began

    events = Events()
    records: list[Record] = []
    watch = _Watch(client, plan, node, clock, events)
    converged = False
    back: bool | None = None
    cut_done = False
    stop, done = trio.Event(), trio.Event()
    try:
        async with trio.open_nursery() as n:
            await n.start(watch.run)
            endpoints_on_node = watch.eps[1]
            async def send() -> tuple[str | None, str | None, int | None]:
                out = await probe_once(plan.probe)
                return out.answer, out.error, out.port

            n.start_soon(steady_load, send, options.rate, clock, records, on_record, stop, done)
            await trio.sleep(options.after)  # the baseline: a span of time, not an event
            renewed = await _lease_renewed(client, node)
            wall_cut = time.time()
            say(f"link down {node}")
            cut_done = True  # from here on the link comes back whatever happens (up on an uncut node is harmless)
            await trio.to_thread.run_sync(partition, lab, node, False)
            events.cut = clock()
            if renewed is not None:
                events.lease_renewed = events.cut - (wall_cut - renewed)
            watch.refresh()
            converged = await _converge(watch, records, events, options, plan.probe.timeout, before_restore=True)
            if options.restore:
                say(f"link up {node}")
                await trio.to_thread.run_sync(partition, lab, node, True)
                cut_done = False
                events.restored = clock()
                watch.refresh()
                back = await _converge(watch, records, events, options, plan.probe.timeout, before_restore=False)
            stop.set()
            with trio.move_on_after(plan.probe.timeout + 1.0):
                await done.wait()  # the requests in flight end (each within its timeout)
            n.cancel_scope.cancel()  # and the watches
    except BaseExceptionGroup as eg:  # one failure (a refused link change, Ctrl-C) is raised as itself
        leaves = leaves(eg)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise
    finally:
        if cut_done and options.restore:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(partition, lab, node, True)
    return PartitionResult(plan, options, sorted(records, key=lambda r: r.start), events, grace, grace_source,
                           endpoints_on_node, converged, back, clock())


async def _converge(watch: _Watch, records: list[Record], events: Events, options: PartitionOptions, timeout: float,
                    *, before_restore: bool) -> bool:
    """Wait (at most ``max_wait``) until the phase's events were seen and the requests of ``settle`` seconds
    all succeeded — judged once every one of them has ended (``timeout`` after the last started), so a
    request still in flight cannot fail after the verdict."""
    since = events.cut if before_restore else events.restored
    assert since is not None
    with trio.move_on_after(options.max_wait):
        while True:
            if before_restore:
                seen = events.node_not_ready is not None and (
                    events.endpoints_not_ready is not None or watch.eps[1] == 0)
            else:
                seen = events.node_ready is not None and events.endpoints_ready is not None
            if seen and quiet_started(records, since, ended_by(watch.clock(), timeout), options.settle):
                return True
            # woken by a watch event, else checked again soon (the errors' quiet span is a matter of time)
            with trio.move_on_after(0.25):
                await watch.changed.wait()
    return False
