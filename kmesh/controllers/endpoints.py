"""The EndpointSlice controller and the legacy Endpoints controller.

Both keep, for every Service with a selector, objects listing the pods that
back it. A pod change reaches only the Services that select it (a reverse
index of Service selectors by label pair), and a Service's pods come from a
label index, so the cost of a change does not grow with the cluster. Slices
are written only when their content changes; the EndpointSlice tracker
remembers the generation of every slice this controller wrote, so a sync
never runs on a cache that has not seen its own last writes yet.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import trio

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.api.wellknown import ZONE_LABEL
from kmesh.client.api import Client
from kmesh.client.informer import Change
from kmesh.controllers import podutil
from kmesh.controllers.base import Controller
from kmesh.controllers.endpoint_model import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MAX_ENDPOINTS_PER_SLICE,
    OVER_CAPACITY_ANNOTATION,
    SERVICE_NAME_LABEL,
    TRIGGER_ANNOTATION,
    Key,
    TriggerTimes,
    desired_groups,
    endpoint_fingerprint,
    endpoints_labels,
    endpoints_subsets,
    plan_slices,
    svc_key,
)
from kmesh.controllers.events import EventRecorder
from kmesh.controllers.informers import (
    InformerFactory,
    LabelQuery,
    SelectorIndex,
    service_selector,
)
from kmesh.controllers.topology_hints import (
    apply_hints,
    auto_hints,
    topology_fingerprint,
)

log = logging.getLogger("kmesh.controllers.endpoints")
DELETED = -1


class _ServicePods:
    """Shared wiring of both controllers: Services, their pods, and which Services a pod change touches."""

    def __init__(self, factory: InformerFactory, queue_add: Any) -> None:
        self.services = factory.informer("Service")
        self.pods = LabelQuery(factory, "Pod")
        self.selecting = SelectorIndex(factory, "Service", service_selector)
        self.nodes = factory.informer("Node")
        self._add = queue_add
        self.services.add_handler(self._on_service)
        self.pods.informer.add_handler(self._on_pod)

    def _on_service(self, ch: Change) -> None:
        self._add(svc_key(ch.obj))

    def _on_pod(self, ch: Change) -> None:
        if ch.old is not None and ch.new is not None and endpoint_fingerprint(ch.old) == endpoint_fingerprint(ch.new):
            return
        keys: set[Key] = set()
        for pod in (ch.old, ch.new):
            if pod is not None:
                ns = podutil.md(pod).get("namespace") or ""
                for svc in self.selecting.selecting(ns, podutil.labels(pod)):
                    keys.add(svc_key(svc))
        for k in keys:
            self._add(k)

    def pods_of(self, svc: Obj) -> list[Obj]:
        """The pods the Service selects."""
        ns = podutil.md(svc).get("namespace") or ""
        return self.pods.matching_map(ns, (svc.get("spec") or {}).get("selector"))

    def zone_of(self, node: str) -> str | None:
        """The zone label of a node."""
        obj = self.nodes.get(node)
        return podutil.labels(obj).get(ZONE_LABEL) if obj is not None else None


class SliceTracker:
    """Generations of the slices this controller wrote (or deleted), per Service, until the cache shows them."""

    def __init__(self, timeout: float = 30.0) -> None:
        self._gens: dict[Key, dict[str, int]] = {}
        self._since: dict[tuple[Key, str], float] = {}
        self.timeout = timeout

    def expect(self, svc: Key, obj: Obj) -> None:
        """We wrote ``obj``; the cache is stale until it shows this generation."""
        name = podutil.md(obj).get("name", "")
        self._gens.setdefault(svc, {})[name] = int(podutil.md(obj).get("generation") or 0)
        self._since[(svc, name)] = trio.current_time()

    def expect_deleted(self, svc: Key, name: str) -> None:
        """We deleted slice ``name``."""
        self._gens.setdefault(svc, {})[name] = DELETED
        self._since[(svc, name)] = trio.current_time()

    def stale(self, svc: Key, cached: dict[str, Obj]) -> bool:
        """Whether the cache misses one of our writes for this Service (satisfied ones are dropped)."""
        gens = self._gens.get(svc, {})
        now = trio.current_time()
        stale = False
        for name, gen in list(gens.items()):
            cur = cached.get(name)
            if gen == DELETED:
                waiting = cur is not None
            else:
                waiting = cur is None or int(podutil.md(cur).get("generation") or 0) < gen
            if waiting and now - self._since.get((svc, name), now) < self.timeout:
                stale = True
            else:
                del gens[name]
                self._since.pop((svc, name), None)
        if not gens:
            self._gens.pop(svc, None)
        return stale

    def observe(self, svc: Key, obj: Obj, deleted: bool) -> bool:
        """Note a slice event; True when it is exactly one of our own writes."""
        gens = self._gens.get(svc)
        name = podutil.md(obj).get("name", "")
        if not gens or name not in gens:
            return False
        want = gens[name]
        gen = int(podutil.md(obj).get("generation") or 0)
        own = (want == DELETED) == deleted and (deleted or gen == want)
        if deleted or (want != DELETED and gen >= want):
            del gens[name]
            self._since.pop((svc, name), None)
            if not gens:
                del self._gens[svc]
        return own

    def forget(self, svc: Key) -> None:
        """Drop a deleted Service's expectations."""
        for name in self._gens.pop(svc, {}):
            self._since.pop((svc, name), None)


def _slice_service(obj: Obj) -> Key | None:
    lbl = podutil.labels(obj)
    if lbl.get(MANAGED_BY_LABEL) != MANAGED_BY or not lbl.get(SERVICE_NAME_LABEL):
        return None
    return (podutil.md(obj).get("namespace") or "", lbl[SERVICE_NAME_LABEL])


class EndpointSliceController(Controller[Key]):
    """Keeps ``endpointslice-controller.k8s.io`` slices for every Service with a selector."""

    name = "endpointslice"
    queue_name = "endpoint_slice"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 5,
                 max_per_slice: int = MAX_ENDPOINTS_PER_SLICE, events: EventRecorder | None = None) -> None:
        super().__init__(workers)
        self.client = client
        self.events = events
        self.max_per_slice = max_per_slice
        self.sp = _ServicePods(factory, self.queue.add)
        self.slices = factory.informer("EndpointSlice")
        self.by_service = factory.index("EndpointSlice", "service", lambda o: [k] if (k := _slice_service(o)) else [])
        self.slices.add_handler(self._on_slice)
        self.sp.nodes.add_handler(self._on_node)
        self.tracker = SliceTracker()
        self.triggers = TriggerTimes()
        self._waiting: set[Key] = set()
        self._auto: dict[Key, str] = {}  # Services with the topology annotation: "" hints set, else why not

    def _on_slice(self, ch: Change) -> None:
        key = _slice_service(ch.obj)
        if key is None:
            return
        own = self.tracker.observe(key, ch.obj, ch.new is None)
        if not own or key in self._waiting:
            self.queue.add(key)

    def _on_node(self, ch: Change) -> None:
        # Proportional hints depend on every node's zone, CPU and readiness (upstream: SetNodes, then
        # the overloaded Services are queued; here every Service with the annotation is re-allocated).
        if topology_fingerprint(ch.old) == topology_fingerprint(ch.new):
            return
        for svc in self.sp.services.list():
            if auto_hints(svc):
                self.queue.add(svc_key(svc))

    async def sync(self, key: Key) -> None:
        """Bring the slices of one Service in line with its pods."""
        self._waiting.discard(key)
        svc = self.sp.services.get(key[1], key[0])
        if svc is None:
            # Slices carry an ownerReference: the garbage collector removes them.
            self.tracker.forget(key)
            self.triggers.forget(key)
            self._auto.pop(key, None)
            return
        spec = svc.get("spec") or {}
        if not spec.get("selector") or spec.get("type") == "ExternalName":
            return  # left to the user's own slices (ExternalName: no endpoints, as upstream)
        existing = self.by_service.objects(key)
        if self.tracker.stale(key, {podutil.md(s)["name"]: s for s in existing}):
            self._waiting.add(key)
            self.queue.add_after(key, 1.0)  # a lost event must not stall the Service
            return
        pods = self.sp.pods_of(svc)
        groups = desired_groups(svc, pods, self.sp.zone_of)
        why = apply_hints(svc, [ep for g in groups.values() for ep in g.endpoints.values()], self.sp.nodes.cache.values())
        trigger = self.triggers.compute(svc, pods)
        plan = plan_slices(svc, groups, existing, max_per_slice=self.max_per_slice, trigger=trigger)
        if not plan:
            self._hint_events(key, svc, why)
            return
        try:
            async with trio.open_nursery() as nursery:
                for body in plan.create:
                    nursery.start_soon(self._create, key, body)
                for body in plan.update:
                    nursery.start_soon(self._update, key, body)
                for body in plan.delete:
                    nursery.start_soon(self._delete, key, body)
        except BaseException:
            self.triggers.forget(key)  # the next try reports this change's time again
            raise
        self._hint_events(key, svc, why)

    def _hint_events(self, key: Key, svc: Obj, why: str) -> None:
        """Upstream's TopologyAwareHintsEnabled / TopologyAwareHintsDisabled events, once per change of state."""
        prev = self._auto.get(key)
        cur = why if auto_hints(svc) else None
        if cur == prev:
            return
        if cur is None:
            del self._auto[key]
        else:
            self._auto[key] = cur
        if cur:
            log.info("%s/%s: topology hints removed: %s", key[0], key[1], cur)
        if self.events is None or (cur is None and prev != ""):
            return
        if cur == "":
            self.events.event(svc, "Normal", "TopologyAwareHintsEnabled",
                              "Topology Aware Hints enabled, addressType: IPv4")
        else:
            what = cur or "the topology annotation was removed or changed"
            self.events.event(svc, "Warning", "TopologyAwareHintsDisabled", f"hints removed: {what}, addressType: IPv4")

    async def _create(self, key: Key, body: Obj) -> None:
        self.tracker.expect(key, await self.client.create(body))

    async def _update(self, key: Key, body: Obj) -> None:
        self.tracker.expect(key, await self.client.update(body))

    async def _delete(self, key: Key, body: Obj) -> None:
        m = podutil.md(body)
        try:
            await self.client.delete("EndpointSlice", m["name"], m.get("namespace"), uid=m.get("uid"))
        except E.APIError as exc:
            if exc.code != 404:
                raise
        self.tracker.expect_deleted(key, m["name"])


class EndpointsController(Controller[Key]):
    """Keeps the legacy ``v1/Endpoints`` object of every Service with a selector."""

    name = "endpoint"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 5) -> None:
        super().__init__(workers)
        self.client = client
        self.sp = _ServicePods(factory, self.queue.add)
        self.endpoints = factory.informer("Endpoints")
        self.triggers = TriggerTimes()
        self._synced_once = False

    def enqueue_leftovers(self) -> None:
        """Queue Endpoints whose Service is gone (upstream's checkLeftoverEndpoints, at start)."""
        for ep in self.endpoints.list():
            m = podutil.md(ep)
            if self.sp.services.get(m.get("name", ""), m.get("namespace")) is None:
                self.queue.add((m.get("namespace") or "", m.get("name") or ""))

    async def sync(self, key: Key) -> None:
        """Write the Endpoints of one Service (or delete them with it)."""
        ns, name = key
        svc = self.sp.services.get(name, ns)
        cur = self.endpoints.get(name, ns)
        if svc is None:
            self.triggers.forget(key)
            if cur is not None:
                try:
                    await self.client.delete("Endpoints", name, ns, uid=podutil.uid(cur))
                except E.APIError as exc:
                    if exc.code not in (404, 409):
                        raise
            return
        if not (svc.get("spec") or {}).get("selector"):
            return
        pods = self.sp.pods_of(svc)
        subsets, truncated = endpoints_subsets(svc, pods)
        labels = endpoints_labels(svc)
        trigger = self.triggers.compute(svc, pods)
        if cur is not None:
            ann = podutil.md(cur).get("annotations") or {}
            if (cur.get("subsets") or []) == subsets and (podutil.md(cur).get("labels") or {}) == labels \
                    and (ann.get(OVER_CAPACITY_ANNOTATION) == "truncated") == truncated:
                return
            body = copy.deepcopy(cur)
        else:
            body = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns}}
        md_ = body["metadata"]
        md_["labels"] = labels
        ann = md_.setdefault("annotations", {})
        if trigger:
            ann[TRIGGER_ANNOTATION] = trigger
        if truncated:
            ann[OVER_CAPACITY_ANNOTATION] = "truncated"
        else:
            ann.pop(OVER_CAPACITY_ANNOTATION, None)
        if not ann:
            md_.pop("annotations")
        body["subsets"] = subsets
        try:
            if cur is None:
                await self.client.create(body)
            else:
                await self.client.update(body)
        except BaseException:
            self.triggers.forget(key)
            raise
