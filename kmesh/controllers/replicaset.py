"""The ReplicaSet controller: keeps ``spec.replicas`` active pods from the template, reports status.

Pods are created from the template (``generateName: <rs>-``, a controller
ownerReference) in slow-start batches of 1, 2, 4...; surplus pods are deleted
in upstream's order of preference: unscheduled, pending, not ready, doubled
up on a node, ready for less time, restarted more, newer. Expectations keep a
sync from acting on a cache that has not seen its own creates and deletes.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections import Counter
from typing import Any

import trio

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.client.api import Client
from kmesh.client.informer import Change, key_of
from kmesh.controllers import podutil
from kmesh.controllers.base import Controller, Retry
from kmesh.controllers.events import EventRecorder
from kmesh.controllers.expectations import Expectations
from kmesh.controllers.informers import (
    InformerFactory, LabelQuery, SelectorIndex, by_controller_uid, workload_selector,
)
from kmesh.controllers.refmanager import claim

log = logging.getLogger("kmesh.controllers.replicaset")
Key = tuple[str, str]
BURST_REPLICAS = 500
# A pod's status changes (bound, IP, ready) reach the ReplicaSet's status at most this late. Each sync
# claims and counts all the set's pods, so one sync per pod update made a rollout of N pods cost O(N²):
# a fifth of the control plane's CPU at 600 pods. Pod adds and deletes (expectations) stay immediate.
POD_UPDATE_BATCH = 0.5
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def pod_from_template(rs: Obj) -> Obj:
    """A new pod for ``rs``: the template's labels, annotations and spec, owned by the ReplicaSet."""
    tmpl = (rs.get("spec") or {}).get("template") or {}
    tmd = tmpl.get("metadata") or {}
    m = podutil.md(rs)
    meta: Obj = {"generateName": f"{m.get('name')}-", "namespace": m.get("namespace"),
                 "ownerReferences": [podutil.owner_reference(rs)]}
    for f in ("labels", "annotations", "finalizers"):
        if tmd.get(f):
            meta[f] = copy.deepcopy(tmd[f])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(tmpl.get("spec") or {})}


def _deletion_rank(pod: Obj, doubled: Counter[str]) -> tuple[Any, ...]:
    """Sort key: pods that sort first are deleted first (upstream's ActivePodsWithRanks)."""
    spec = pod.get("spec") or {}
    node = spec.get("nodeName") or ""
    phase = (pod.get("status") or {}).get("phase") or "Unknown"
    ready = podutil.is_ready(pod)
    cost = (podutil.md(pod).get("annotations") or {}).get("controller.kubernetes.io/pod-deletion-cost", "0")
    try:
        cost_n = int(cost)
    except ValueError:
        cost_n = 0
    since = podutil.ready_since(pod) or 0.0
    created = podutil.parse_time(podutil.md(pod).get("creationTimestamp")) or 0.0
    return (
        1 if node else 0,
        _PHASE_RANK.get(phase, 1),
        1 if ready else 0,
        cost_n,
        -doubled[node] if node else 0,
        -since if ready else 0.0,  # ready more recently first
        -podutil.restart_count(pod),
        -created,  # newer first
    )


def pods_to_delete(pods: list[Obj], n: int) -> list[Obj]:
    """The ``n`` pods upstream would delete first."""
    doubled = Counter((p.get("spec") or {}).get("nodeName") or "" for p in pods)
    return sorted(pods, key=functools.partial(_deletion_rank, doubled=doubled))[:n]


def calculate_status(rs: Obj, pods: list[Obj], manage_error: str | None, scaling_up: bool) -> Obj:
    """The ReplicaSet status these active pods give."""
    spec = rs.get("spec") or {}
    tlabels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    mrs = int(spec.get("minReadySeconds") or 0)
    now = time.time()
    old = rs.get("status") or {}
    status: Obj = {
        "replicas": len(pods),
        "fullyLabeledReplicas": sum(1 for p in pods if all(podutil.labels(p).get(k) == v for k, v in tlabels.items())),
        "readyReplicas": sum(1 for p in pods if podutil.is_ready(p)),
        "availableReplicas": sum(1 for p in pods if podutil.is_available(p, mrs, now)),
        "observedGeneration": podutil.md(rs).get("generation", 0),
    }
    conds = [c for c in old.get("conditions") or [] if c.get("type") != "ReplicaFailure"]
    if manage_error is not None:
        prev = next((c for c in old.get("conditions") or [] if c.get("type") == "ReplicaFailure"), None)
        reason = "FailedCreate" if scaling_up else "FailedDelete"
        if prev is not None and prev.get("reason") == reason and prev.get("message") == manage_error:
            conds.append(prev)
        else:
            conds.append({"type": "ReplicaFailure", "status": "True", "lastTransitionTime": podutil.format_time(),
                          "reason": reason, "message": manage_error})
    if conds:
        status["conditions"] = conds
    return status


def _without_status(rs: Obj) -> Obj:
    """The ReplicaSet without what a status write changes (status, resourceVersion, managedFields)."""
    md = {k: v for k, v in (rs.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}
    return {**{k: v for k, v in rs.items() if k != "status"}, "metadata": md}


class ReplicaSetController(Controller[Key]):
    """Creates and deletes pods so every ReplicaSet has ``spec.replicas`` of them."""

    name = "replicaset"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 5,
                 events: EventRecorder | None = None, burst: int = BURST_REPLICAS,
                 pod_update_batch: float = POD_UPDATE_BATCH) -> None:
        super().__init__(workers)
        self.client = client
        self.burst = burst
        self.pod_update_batch = pod_update_batch
        self.events = events
        self.sets = factory.informer("ReplicaSet")
        self.pods = LabelQuery(factory, "Pod")
        self.pods_by_controller = factory.index("Pod", "controller", by_controller_uid)
        self.sets_by_uid = factory.index("ReplicaSet", "uid", lambda o: [podutil.uid(o)])
        self.selecting = SelectorIndex(factory, "ReplicaSet", workload_selector)
        self.expectations = Expectations()
        self.sets.add_handler(self._on_set)
        self.pods.informer.add_handler(self._on_pod)

    # ------------------------------------------------------------ handlers

    def _on_set(self, ch: Change) -> None:
        if ch.old is not None and ch.new is not None and _without_status(ch.old) == _without_status(ch.new):
            return  # only its status moved (this controller's own write): the sync that wrote it saw it all
        self.queue.add(key_of(ch.obj))

    def _owner(self, pod: Obj) -> Obj | None:
        ref = podutil.controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return None
        return podutil.first(self.sets_by_uid.objects(ref.get("uid")))

    def _enqueue_selecting(self, pod: Obj) -> None:
        ns = podutil.md(pod).get("namespace") or ""
        for rs in self.selecting.selecting(ns, podutil.labels(pod)):
            self.queue.add(key_of(rs))

    def _on_pod(self, ch: Change) -> None:
        pk = key_of(ch.obj)
        if ch.new is None:
            rs = self._owner(ch.obj)
            if rs is not None:
                self.expectations.deletion_observed(key_of(rs), pk)
                self.queue.add(key_of(rs))
            return
        new, old = ch.new, ch.old
        rs = self._owner(new)
        if old is None:
            if rs is not None:
                if podutil.is_terminating(new):
                    self.expectations.deletion_observed(key_of(rs), pk)
                else:
                    self.expectations.creation_observed(key_of(rs))
                if self.expectations.satisfied(key_of(rs)):
                    self.queue.add(key_of(rs))
                else:  # more of its creates are on their way: a sync now could only count them
                    self.queue.add_after(key_of(rs), self.pod_update_batch)
            else:
                self._enqueue_selecting(new)
            return
        if podutil.is_terminating(new) and not podutil.is_terminating(old) and rs is not None:
            self.expectations.deletion_observed(key_of(rs), pk)
        old_rs = self._owner(old)
        if old_rs is not None and (rs is None or podutil.uid(old_rs) != podutil.uid(rs)):
            self.queue.add(key_of(old_rs))
        if rs is not None:
            same_owner = old_rs is not None and podutil.uid(old_rs) == podutil.uid(rs)
            if same_owner and not podutil.is_terminating(new):
                self.queue.add_after(key_of(rs), self.pod_update_batch)
            else:
                self.queue.add(key_of(rs))
        elif podutil.labels(old) != podutil.labels(new) or podutil.controller_ref(old) is not None:
            self._enqueue_selecting(new)

    # ----------------------------------------------------------------- sync

    async def sync(self, key: Key) -> None:
        """Reconcile one ReplicaSet's pods and status."""
        rs = self.sets.get(key[1], key[0])
        if rs is None:
            self.expectations.delete(key)
            return
        needs_sync = self.expectations.satisfied(key) and not podutil.is_terminating(rs)
        sel = (rs.get("spec") or {}).get("selector")
        candidates = self.pods.matching(key[0], sel) + self.pods_by_controller.objects(podutil.uid(rs))
        owned = await claim(self.client, rs, candidates)
        active = [p for p in owned if podutil.is_active(p)]
        error: str | None = None
        want = int((rs.get("spec") or {}).get("replicas", 1))
        if needs_sync:
            error = await self._manage(rs, key, active, want)
        status = calculate_status(rs, active, error, len(active) < want)
        if status != (rs.get("status") or {}):
            new = copy.deepcopy(rs)
            new["status"] = status
            await self.client.update_status(new)
        self._requeue_for_availability(rs, key, active, status)
        if error is not None:
            raise Retry(error)

    def _requeue_for_availability(self, rs: Obj, key: Key, pods: list[Obj], status: Obj) -> None:
        mrs = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
        if mrs <= 0 or status["availableReplicas"] == status["readyReplicas"]:
            return
        waits = [w for w in (podutil.available_in(p, mrs) for p in pods) if w]
        if waits:
            self.queue.add_after(key, min(waits) + 0.05)

    async def _manage(self, rs: Obj, key: Key, active: list[Obj], want: int) -> str | None:
        diff = len(active) - want
        if diff < 0:
            return await self._create(rs, key, min(-diff, self.burst))
        if diff > 0:
            return await self._delete(rs, key, pods_to_delete(active, min(diff, self.burst)))
        return None

    async def _create(self, rs: Obj, key: Key, n: int) -> str | None:
        self.expectations.expect_creations(key, n)
        body = pod_from_template(rs)
        errors: list[str] = []
        done = 0
        batch = 1
        while done < n and not errors:
            size = min(batch, n - done)

            async def one() -> None:
                try:
                    pod = await self.client.create(copy.deepcopy(body))
                except E.APIError as exc:
                    self.expectations.creation_observed(key)
                    errors.append(exc.message)
                    if self.events:
                        self.events.event(rs, "Warning", "FailedCreate", f"Error creating: {exc.message}")
                else:
                    if self.events:
                        self.events.event(rs, "Normal", "SuccessfulCreate", f"Created pod: {podutil.md(pod)['name']}")

            async with trio.open_nursery() as nursery:
                for _ in range(size):
                    nursery.start_soon(one)
            done += size
            batch *= 2
        for _ in range(n - done):
            self.expectations.creation_observed(key)  # never sent
        return errors[0] if errors else None

    async def _delete(self, rs: Obj, key: Key, victims: list[Obj]) -> str | None:
        self.expectations.expect_deletions(key, [key_of(p) for p in victims])
        errors: list[str] = []

        async def one(pod: Obj) -> None:
            m = podutil.md(pod)
            try:
                await self.client.delete("Pod", m["name"], m.get("namespace"), uid=m.get("uid"))
            except E.APIError as exc:
                self.expectations.deletion_observed(key, key_of(pod))
                if exc.code != 404:
                    errors.append(exc.message)
                return
            if self.events:
                self.events.event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {m['name']}")

        async with trio.open_nursery() as nursery:
            for pod in victims:
                nursery.start_soon(one, pod)
        return errors[0] if errors else None
