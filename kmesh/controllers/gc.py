"""Garbage collection by ownerReferences, with background propagation.

An object whose every owner is gone (no object of that kind and name with
the referenced UID) is deleted; one that still has some owner loses only
the dangling references. The informer caches answer "is the owner there";
before anything is deleted a live GET confirms the owner is really gone, so
a cache that lags behind a fresh owner never costs a dependent. Owner kinds
kmesh does not serve are left alone.
"""

from __future__ import annotations

import copy
import logging

from kmesh.api import errors as E
from kmesh.api.kinds import by_kind, get as kind_named
from kmesh.api.obj import Obj
from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer
from kmesh.controllers import podutil
from kmesh.controllers.base import Controller
from kmesh.controllers.informers import Index, InformerFactory, by_owner_uid

log = logging.getLogger("kmesh.controllers.gc")
GCKey = tuple[str, str, str]  # (kind, namespace, name)

# Kinds whose objects may have owners (and be owners); Node only owns (its Lease).
DEPENDENT_KINDS = ("Pod", "ReplicaSet", "Deployment", "EndpointSlice", "Endpoints", "Service", "ConfigMap", "Lease")
OWNER_ONLY_KINDS = ("Node",)

PRESENT, ABSENT, UNKNOWN = "present", "absent", "unknown"


class GarbageCollector(Controller[GCKey]):
    """Deletes objects whose owners are all gone; drops references to owners that are gone."""

    name = "garbagecollector"
    queue_name = "garbage_collector_attempt_to_delete"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 5) -> None:
        super().__init__(workers)
        self.client = client
        self.informers: dict[str, Informer] = {}
        self.dependents: dict[str, Index] = {}
        for kind in DEPENDENT_KINDS + OWNER_ONLY_KINDS:
            inf = factory.informer(kind)
            self.informers[kind] = inf
            inf.add_handler(self._on_change)
            if kind in DEPENDENT_KINDS:
                self.dependents[kind] = factory.index(kind, "owners", by_owner_uid)

    def _on_change(self, ch: Change) -> None:
        kind = ch.kind.kind
        if ch.new is None:
            gone = podutil.uid(ch.old or {})
            for dep_kind, idx in self.dependents.items():
                for obj in idx.objects(gone):
                    self.queue.add((dep_kind, podutil.md(obj).get("namespace") or "", podutil.md(obj)["name"]))
            return
        refs = podutil.md(ch.new).get("ownerReferences")
        if kind in self.dependents and refs:
            old_refs = podutil.md(ch.old).get("ownerReferences") if ch.old is not None else None
            if ch.old is None or refs != old_refs:
                self.queue.add((kind, podutil.md(ch.new).get("namespace") or "", podutil.md(ch.new)["name"]))

    async def _owner_state(self, ref: Obj, namespace: str) -> str:
        k = by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
        if k is None or not ref.get("uid") or not ref.get("name"):
            return UNKNOWN
        if k.namespaced and not namespace:
            return UNKNOWN  # a cluster-scoped object cannot have a namespaced owner
        owner_ns = namespace if k.namespaced else None
        inf = self.informers.get(k.kind)
        if inf is not None:
            cached = inf.get(ref["name"], owner_ns)
            if cached is not None and podutil.uid(cached) == ref["uid"]:
                return PRESENT
        try:
            live = await self.client.get(k, ref["name"], owner_ns)
        except E.APIError as exc:
            if exc.code == 404:
                return ABSENT
            raise
        return PRESENT if podutil.uid(live) == ref["uid"] else ABSENT

    async def sync(self, key: GCKey) -> None:
        """Check one dependent's owners and act."""
        kind, ns, name = key
        obj = self.informers[kind].get(name, ns or None)
        if obj is None or podutil.is_terminating(obj):
            return
        refs = podutil.md(obj).get("ownerReferences") or []
        if not refs:
            return
        states = [await self._owner_state(r, ns) for r in refs]
        absent = [r for r, s in zip(refs, states) if s == ABSENT]
        if not absent:
            return
        if len(absent) == len(refs):
            log.info("deleting %s %s/%s: its owners are gone", kind, ns, name)
            try:
                await self.client.delete(kind_named(kind), name, ns or None, uid=podutil.uid(obj))
            except E.APIError as exc:
                if exc.code not in (404, 409):
                    raise
            return
        gone = {r.get("uid") for r in absent}
        new = copy.deepcopy(obj)
        new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") not in gone]
        try:
            await self.client.update(new)
        except E.APIError as exc:
            if exc.code != 404:
                raise
