"""Node lifecycle: a node whose agent stopped renewing its Lease becomes NotReady, its pods not ready.

Signs of life are a change of the Lease ``kube-node-lease/<node>``'s
renewTime or of the Ready condition's lastHeartbeatTime, timed on trio's
clock when this controller sees them (as upstream, which never compares
the node's clock with its own). After ``grace_period`` (40 s, upstream's
node-monitor-grace-period) without one, the node's conditions become
Unknown ("Kubelet stopped posting node status."), it is tainted
``node.kubernetes.io/unreachable`` (NoSchedule and NoExecute) and every pod
on it gets Ready=False, so its endpoints turn not ready. When the Lease is
renewed again the taints go; the agent reports its node and pods itself.

Nodes are judged only on what this controller could have seen. While its
Node or Lease watch is broken (the API server is away) nobody could write
a Lease and nothing is judged; once the watch is back every node gets a
fresh grace period, counted from then. The same holds when this process
itself was not running (stopped with SIGSTOP, or its loop blocked): the
monitor wakes at least every ``grace_period / 8``, and waking more than
``grace_period / 4`` late restarts every node's grace too. Upstream gets
the same effect from its in-memory probe timestamps: a controller-manager
that lost the API loses its leader lease, restarts, and starts every node
at "now".
"""

from __future__ import annotations

import copy
import logging
import math

import trio

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer
from kmesh.controllers import podutil
from kmesh.controllers.base import Controller, Retry
from kmesh.controllers.events import EventRecorder
from kmesh.controllers.informers import InformerFactory, by_node

log = logging.getLogger("kmesh.controllers.nodelifecycle")
LEASE_NAMESPACE = "kube-node-lease"
UNREACHABLE = "node.kubernetes.io/unreachable"
CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")


def _heartbeat(node: Obj) -> str:
    c = podutil.condition(node, "Ready")
    return str((c or {}).get("lastHeartbeatTime") or "")


def has_unreachable_taint(node: Obj) -> bool:
    """The node carries one of the unreachable taints."""
    return any(t.get("key") == UNREACHABLE for t in (node.get("spec") or {}).get("taints") or [])


class NodeLifecycle(Controller[str]):
    """Marks nodes whose agent went silent, and their pods."""

    name = "nodelifecycle"
    queue_name = "node_lifecycle_controller"

    def __init__(self, client: Client, factory: InformerFactory, *, grace_period: float = 40.0,
                 events: EventRecorder | None = None) -> None:
        super().__init__(workers=2)
        self.client = client
        self.grace_period = grace_period
        self.events = events
        self.nodes = factory.informer("Node")
        self.leases = factory.informer("Lease")
        self.pods_on = factory.index("Pod", "node", by_node)
        self.probe: dict[str, float] = {}
        self._renew: dict[str, str] = {}
        self._beat: dict[str, str] = {}
        self.unreachable: set[str] = set()
        self._wake = trio.Event()
        self.tick = grace_period / 8  # the monitor wakes at least this often
        self.stall = grace_period / 4  # waking later than planned by more: this process was not running
        self.sight = 0.0  # trio time since when this controller has been watching without a gap (set by run)
        self.blind: set[str] = set()  # informers whose watch is broken
        self._planned = math.inf  # when the monitor is due to wake next
        self.sight_regained = 0  # how often every node got a fresh grace period (watch back, stall)
        self.nodes.add_handler(self._on_node)
        self.leases.add_handler(self._on_lease)
        factory.informer("Pod").add_handler(self._on_pod)

    # ------------------------------------------------------------ signs of life

    def _alive(self, node: str) -> None:
        self.probe[node] = trio.current_time()
        self._wake.set()
        if node in self.unreachable:
            self.queue.add(node)

    def _on_node(self, ch: Change) -> None:
        name = podutil.md(ch.obj).get("name", "")
        if ch.new is None:
            for d in (self.probe, self._renew, self._beat):
                d.pop(name, None)
            self.unreachable.discard(name)
            return
        beat = _heartbeat(ch.new)
        ours = ((podutil.condition(ch.new, "Ready") or {}).get("reason")
                in ("NodeStatusUnknown", "NodeStatusNeverUpdated"))
        if name not in self.probe or (beat != self._beat.get(name) and not ours):
            self._beat[name] = beat
            self._alive(name)
        if has_unreachable_taint(ch.new) and name not in self.unreachable:
            self.queue.add(name)  # tainted by an earlier run: check it

    def _on_lease(self, ch: Change) -> None:
        if ch.new is None or podutil.md(ch.new).get("namespace") != LEASE_NAMESPACE:
            return
        name = podutil.md(ch.new).get("name", "")
        renew = str((ch.new.get("spec") or {}).get("renewTime") or "")
        if renew != self._renew.get(name):
            self._renew[name] = renew
            if self.nodes.get(name) is not None:
                self._alive(name)

    def _on_pod(self, ch: Change) -> None:
        if ch.new is None:
            return
        node = (ch.new.get("spec") or {}).get("nodeName")
        if node in self.unreachable and podutil.is_ready(ch.new):
            self.queue.add(node)

    # ----------------------------------------------------------------- loop

    async def run(self) -> None:
        """Workers, the monitor that notices expired nodes, and the watchers of the watches."""
        self.sight = trio.current_time()
        self._planned = self.sight + self.tick
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow, self.nodes)
            nursery.start_soon(self._follow, self.leases)
            nursery.start_soon(super().run)
            nursery.start_soon(self._monitor)

    def _regain_sight(self, why: str) -> None:
        """From now on this controller sees lease changes again: every node's grace starts anew."""
        self.sight = trio.current_time()
        self.sight_regained += 1
        if self.probe:
            log.info("%s: every node gets a fresh grace period of %.0f s", why, self.grace_period)
        self._wake.set()

    async def _follow(self, informer: Informer) -> None:
        """Keep ``blind`` current while ``informer``'s watch breaks and comes back."""
        kind = informer.kind.kind
        while True:
            if informer.connected:
                await informer.wait_for(lambda i: not i.connected)
                self.blind.add(kind)
                log.info("%s watch broken: judging no node until it is back", kind)
            else:
                self.blind.add(kind)
                await informer.wait_for(lambda i: i.connected)
                self.blind.discard(kind)
                self._regain_sight(f"{kind} watch back")

    def seeing(self) -> bool:
        """Every watch is up and this process kept running: silence now means a silent node."""
        return not self.blind and trio.current_time() - self._planned <= self.stall

    async def _monitor(self) -> None:
        while True:
            now = trio.current_time()
            if now - self._planned > self.stall:
                self._regain_sight(f"this controller was held up {now - self._planned:.1f} s")
            nxt = math.inf
            if not self.blind:
                for name, seen in list(self.probe.items()):
                    deadline = max(seen, self.sight) + self.grace_period
                    if deadline <= now:
                        if name not in self.unreachable:
                            self.queue.add(name)
                    else:
                        nxt = min(nxt, deadline)
            self._planned = min(nxt, now + self.tick)
            self._wake = trio.Event()
            with trio.move_on_at(self._planned):
                await self._wake.wait()

    def expired(self, name: str) -> bool:
        """No sign of life for the grace period, counted from when this controller could see one."""
        seen = self.probe.get(name)
        return (seen is not None and self.seeing()
                and trio.current_time() - max(seen, self.sight) >= self.grace_period)

    def heard_from(self, name: str) -> bool:
        """A sign of life within the grace period."""
        seen = self.probe.get(name)
        return seen is not None and trio.current_time() - seen < self.grace_period

    # ----------------------------------------------------------------- sync

    async def sync(self, key: str) -> None:
        """Mark one node (and its pods) unreachable, or lift the marks once it is back."""
        node = self.nodes.get(key)
        if node is None:
            return
        if self.expired(key):
            if key not in self.unreachable:
                log.warning("node %s: no lease renewal for %.0f s; marking it NotReady", key, self.grace_period)
                if self.events:
                    self.events.event(node, "Normal", "NodeNotReady", f"Node {key} status is now: NodeNotReady")
            self.unreachable.add(key)
            node = await self._mark_unknown(node)
            await self._set_taints(node, add=True)
            await self._pods_not_ready(key)
            return
        if not self.heard_from(key):
            return  # not judged now (a watch was broken), nor heard from: leave it as it is
        self.unreachable.discard(key)
        if has_unreachable_taint(node):
            log.info("node %s: lease renewed; removing the unreachable taints", key)
            await self._set_taints(node, add=False)

    async def _mark_unknown(self, node: Obj) -> Obj:
        new = copy.deepcopy(node)
        status = new.setdefault("status", {})
        conds = status.setdefault("conditions", [])
        now = podutil.format_time()
        changed = False
        for ctype in CONDITIONS:
            c = next((x for x in conds if x.get("type") == ctype), None)
            if c is None:
                conds.append({"type": ctype, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                              "message": "Kubelet never posted node status.",
                              "lastHeartbeatTime": podutil.md(node).get("creationTimestamp"),
                              "lastTransitionTime": now})
                changed = True
            elif c.get("status") != "Unknown":
                c.update(status="Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status.",
                         lastTransitionTime=now)
                changed = True
        if not changed:
            return node
        return await self.client.update_status(new)

    async def _set_taints(self, node: Obj, *, add: bool) -> None:
        spec = node.get("spec") or {}
        taints = [t for t in spec.get("taints") or [] if t.get("key") != UNREACHABLE]
        if add:
            have = {t.get("effect") for t in spec.get("taints") or [] if t.get("key") == UNREACHABLE}
            if have >= {"NoSchedule", "NoExecute"}:
                return
            taints += [{"key": UNREACHABLE, "effect": "NoSchedule"},
                       {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": podutil.format_time()}]
        elif not has_unreachable_taint(node):
            return
        new = copy.deepcopy(node)
        if taints:
            new.setdefault("spec", {})["taints"] = taints
        else:
            new.setdefault("spec", {}).pop("taints", None)
        await self.client.update(new)

    async def _pods_not_ready(self, node: str) -> None:
        failed = 0
        for pod in self.pods_on.objects(node):
            c = podutil.condition(pod, "Ready")
            if c is None or c.get("status") == "False":
                continue
            new = copy.deepcopy(pod)
            for cond in new["status"]["conditions"]:
                if cond.get("type") == "Ready":
                    cond["status"] = "False"
                    cond["lastTransitionTime"] = podutil.format_time()
            try:
                await self.client.update_status(new)
            except E.APIError as exc:
                if exc.code != 404:
                    failed += 1
        if failed:
            raise Retry(f"{failed} pods on {node} not marked yet")
