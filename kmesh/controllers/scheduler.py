"""A small default-scheduler: binds pending pods to Ready, schedulable nodes, fewest pods first.

Filters as kube-scheduler's NodeUnschedulable, TaintToleration (NoSchedule
and NoExecute), NodeName, NodeSelector / required node affinity and the
node's Ready condition; scores by the number of pods already on the node
(pods it bound but the cache has not shown yet count too, like the
scheduler's "assumed" pods); ties are broken at random. A pod that fits
nowhere gets ``PodScheduled=False`` (reason Unschedulable, upstream's
"0/N nodes are available: ..." message) and a FailedScheduling event, and is
tried again whenever a node changes.

Metrics (kube-scheduler's, on the scheduler's own registry): attempts and
their duration by result (scheduled, unschedulable, error), attempts per
scheduled pod, pods pending by queue (active: queued; backoff: waiting to
be retried after an error; unschedulable: tried, fitting nowhere, waiting
for a node to change) and the cache's size.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections import Counter

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.client.api import Client
from kmesh.client.informer import Change, Key, key_of
from kmesh.controllers import podutil
from kmesh.controllers.base import Controller
from kmesh.controllers.events import EventRecorder
from kmesh.controllers.informers import InformerFactory, by_node
from kmesh.controllers.metrics import (
    ATTEMPT_DURATION,
    INCOMING_PODS,
    POD_ATTEMPTS,
    SCHEDULE_ATTEMPTS,
    SCHEDULER,
    track_scheduler,
)

log = logging.getLogger("kmesh.controllers.scheduler")
DEFAULT_SCHEDULER = "default-scheduler"


def tolerates(tolerations: list[Obj], taint: Obj) -> bool:
    """Whether any toleration matches the taint (key, operator Equal/Exists, value, effect)."""
    for t in tolerations or []:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        op = t.get("operator") or "Equal"
        if not t.get("key"):
            if op == "Exists":
                return True
            continue
        if t.get("key") != taint.get("key"):
            continue
        if op == "Exists" or (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _expr_matches(expr: Obj, labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and values:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def _affinity_matches(pod: Obj, node: Obj) -> bool:
    spec = pod.get("spec") or {}
    labels = podutil.labels(node)
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    req = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
           .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if not req:
        return True
    fields = {"metadata.name": podutil.md(node).get("name", "")}
    for term in req.get("nodeSelectorTerms") or []:
        exprs = term.get("matchExpressions") or []
        fexprs = term.get("matchFields") or []
        if not exprs and not fexprs:
            continue
        if all(_expr_matches(e, labels) for e in exprs) and all(_expr_matches(e, fields) for e in fexprs):
            return True
    return False


def node_ready(node: Obj) -> bool:
    """The node's Ready condition is True."""
    return podutil.condition_true(node, "Ready")


def why_not(pod: Obj, node: Obj) -> str | None:
    """None when the pod fits the node, else the reason counted in the Unschedulable message."""
    spec = node.get("spec") or {}
    if not node_ready(node):
        return "node(s) were not ready"
    if spec.get("unschedulable") and not tolerates((pod.get("spec") or {}).get("tolerations") or [],
                                                   {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}):
        return "node(s) were unschedulable"
    for taint in spec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and \
                not tolerates((pod.get("spec") or {}).get("tolerations") or [], taint):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"
    if not _affinity_matches(pod, node):
        return "node(s) didn't match Pod's node affinity/selector"
    return None


def unschedulable_message(total: int, reasons: Counter[str]) -> str:
    """kube-scheduler's FitError message."""
    parts = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    msg = f"0/{total} nodes are available"
    msg += f": {parts}." if parts else "."
    return msg + f" preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling."


class Scheduler(Controller[Key]):
    """Binds pods without a node to the least loaded node they fit."""

    name = "scheduler"
    workqueue_metrics = SCHEDULER

    def __init__(self, client: Client, factory: InformerFactory, *, scheduler_name: str = DEFAULT_SCHEDULER,
                 events: EventRecorder | None = None) -> None:
        super().__init__(workers=1)  # one binder: counts stay exact
        self.client = client
        self.scheduler_name = scheduler_name
        self.events = events
        self.pods = factory.informer("Pod")
        self.nodes = factory.informer("Node")
        self.running_on = factory.index("Pod", "node-unfinished",
                                        lambda p: [] if podutil.is_terminal(p) else by_node(p))
        self.assumed: dict[Key, str] = {}  # bound by us, not yet seen bound in the cache
        self.unschedulable: set[Key] = set()
        self.attempts: Counter[Key] = Counter()  # attempts so far of each pod not yet scheduled
        self.pods.add_handler(self._on_pod)
        self.nodes.add_handler(self._on_node)
        track_scheduler(self)

    def pending(self) -> dict[str, int]:
        """Pods waiting, by kube-scheduler's queue names (for scheduler_pending_pods)."""
        waiting = sum(1 for k in self.unschedulable if not self.queue.waiting(k))
        return {"active": len(self.queue), "backoff": self.queue.delayed(), "unschedulable": waiting, "gated": 0}

    def cache_size(self) -> dict[str, int]:
        """Nodes, pods and assumed pods in the cache (for scheduler_scheduler_cache_size)."""
        return {"nodes": len(self.nodes.list()), "pods": len(self.pods.list()), "assumed_pods": len(self.assumed)}

    def _wants(self, pod: Obj) -> bool:
        spec = pod.get("spec") or {}
        return (not spec.get("nodeName") and (spec.get("schedulerName") or DEFAULT_SCHEDULER) == self.scheduler_name
                and podutil.is_active(pod))

    def _on_pod(self, ch: Change) -> None:
        k = key_of(ch.obj)
        if ch.new is None or not self._wants(ch.new):
            self.assumed.pop(k, None)
            self.unschedulable.discard(k)
            self.attempts.pop(k, None)
            return
        if ch.old is None or (ch.old.get("spec") or {}) != (ch.new.get("spec") or {}) or k not in self.unschedulable:
            if not self.queue.waiting(k):
                INCOMING_PODS.labels("active", "PodAdd" if ch.old is None else "PodUpdate").inc()
            self.queue.add(k)

    def _on_node(self, ch: Change) -> None:
        if ch.old is not None and ch.new is not None and \
                (ch.old.get("spec"), podutil.labels(ch.old), node_ready(ch.old)) == \
                (ch.new.get("spec"), podutil.labels(ch.new), node_ready(ch.new)):
            return
        event = "NodeAdd" if ch.old is None else "NodeDelete" if ch.new is None else "NodeUpdate"
        for k in list(self.unschedulable):
            if not self.queue.waiting(k):
                INCOMING_PODS.labels("active", event).inc()
            self.queue.add(k)

    def _load(self, node: str) -> int:
        on = self.running_on.keys(node)
        return len(on) + sum(1 for k, where in self.assumed.items() if where == node and k not in on)

    async def sync(self, key: Key) -> None:
        """Schedule one pod (one attempt, counted by its result)."""
        pod = self.pods.get(key[1], key[0])
        if pod is None or not self._wants(pod) or key in self.assumed:
            return
        self.attempts[key] += 1
        started = time.perf_counter()
        try:
            result = await self._attempt(pod, key)
        except Exception:
            self._count("error", started)
            INCOMING_PODS.labels("backoff", "ScheduleAttemptFailure").inc()
            raise
        if result == "unschedulable":
            self._count(result, started)
            INCOMING_PODS.labels("unschedulable", "ScheduleAttemptFailure").inc()
        elif result == "scheduled":
            self._count(result, started)
            POD_ATTEMPTS.observe(self.attempts.pop(key, 1))
        else:
            self.attempts.pop(key, None)

    def _count(self, result: str, started: float) -> None:
        SCHEDULE_ATTEMPTS.labels(result, self.scheduler_name).inc()
        ATTEMPT_DURATION.labels(result, self.scheduler_name).observe(time.perf_counter() - started)

    async def _attempt(self, pod: Obj, key: Key) -> str:
        """Filter, score, bind: "scheduled", "unschedulable", or "gone" (not an attempt after all)."""
        nodes = self.nodes.list()
        reasons: Counter[str] = Counter()
        fits: list[Obj] = []
        for node in nodes:
            why = why_not(pod, node)
            if why is None:
                fits.append(node)
            else:
                reasons[why] += 1
        if not fits:
            await self._unschedulable(pod, key, unschedulable_message(len(nodes), reasons))
            return "unschedulable"
        loads = {podutil.md(n)["name"]: self._load(podutil.md(n)["name"]) for n in fits}
        least = min(loads.values())
        target = random.choice(sorted(name for name, n in loads.items() if n == least))
        self.assumed[key] = target  # before the await: the bound pod may show up before bind returns
        try:
            await self.client.bind(key[0], key[1], target, uid=podutil.uid(pod))
        except BaseException as exc:
            self.assumed.pop(key, None)
            if isinstance(exc, E.APIError) and exc.code in (404, 409):
                return "gone"  # gone, or bound by someone else meanwhile
            raise
        cur = self.pods.get(key[1], key[0])
        if cur is None or not self._wants(cur):
            self.assumed.pop(key, None)  # the cache already shows it bound
        self.unschedulable.discard(key)
        if self.events:
            self.events.event(pod, "Normal", "Scheduled", f"Successfully assigned {key[0]}/{key[1]} to {target}")
        return "scheduled"

    async def _unschedulable(self, pod: Obj, key: Key, message: str) -> None:
        self.unschedulable.add(key)
        cond = podutil.condition(pod, "PodScheduled")
        if cond is not None and cond.get("status") == "False" and cond.get("message") == message:
            return
        new = copy.deepcopy(pod)
        status = new.setdefault("status", {})
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                      "lastTransitionTime": podutil.format_time(), "reason": "Unschedulable", "message": message})
        status["conditions"] = conds
        try:
            await self.client.update_status(new)
        except E.APIError as exc:
            if exc.code == 404:
                return
            raise
        if self.events:
            self.events.event(pod, "Warning", "FailedScheduling", message)
