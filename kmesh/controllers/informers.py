"""Shared informers for the controllers: each kind is listed and watched once, indexed in memory.

``InformerFactory.informer(kind)`` hands every controller the same
:class:`~kmesh.client.informer.Informer`; ``index`` adds a secondary index
(namespace + label pairs, node name, owner UID...) kept current by the
informer's change stream, so a change touches only the objects it concerns
instead of a scan of the whole cache.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Hashable, Iterable, Mapping

import trio

from kmesh.api.kinds import Kind, get as kind_named
from kmesh.api.obj import Obj
from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer, Key, key_of
from kmesh.controllers import podutil

IndexFn = Callable[[Obj], Iterable[Hashable]]


class Index:
    """Keys of an informer's objects grouped by the values ``fn`` computes for each object."""

    def __init__(self, informer: Informer, fn: IndexFn) -> None:
        self.informer = informer
        self.fn = fn
        self._by: dict[Hashable, set[Key]] = defaultdict(set)
        informer.add_handler(self._on_change)

    def _on_change(self, ch: Change) -> None:
        if ch.old is not None:
            k = key_of(ch.old)
            for v in self.fn(ch.old):
                s = self._by.get(v)
                if s is not None:
                    s.discard(k)
                    if not s:
                        del self._by[v]
        if ch.new is not None:
            k = key_of(ch.new)
            for v in self.fn(ch.new):
                self._by[v].add(k)

    def keys(self, value: Hashable) -> set[Key]:
        """Keys of the objects indexed under ``value`` (do not modify)."""
        return self._by.get(value, _EMPTY)

    def objects(self, value: Hashable) -> list[Obj]:
        """The cached objects indexed under ``value``."""
        cache = self.informer.cache
        return [o for o in (cache.get(k) for k in self.keys(value)) if o is not None]


_EMPTY: set[Key] = set()


class InformerFactory:
    """One informer per kind (cluster-wide) and named indexes over them, started together."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._informers: dict[str, Informer] = {}
        self._indexes: dict[tuple[str, str], Index] = {}
        self.started = False

    def informer(self, kind: Kind | str) -> Informer:
        """The shared informer of ``kind`` (created on first use; before ``run``)."""
        k = kind if isinstance(kind, Kind) else kind_named(kind)
        inf = self._informers.get(k.kind)
        if inf is None:
            if self.started:
                raise RuntimeError(f"informer for {k.kind} requested after the factory started")
            inf = Informer(self.client, k)
            self._informers[k.kind] = inf
        return inf

    def index(self, kind: Kind | str, name: str, fn: IndexFn) -> Index:
        """The named index over ``kind`` (the first caller's ``fn`` defines it)."""
        inf = self.informer(kind)
        key = (inf.kind.kind, name)
        idx = self._indexes.get(key)
        if idx is None:
            idx = Index(inf, fn)
            self._indexes[key] = idx
        return idx

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every informer until cancelled; ``task_status`` fires once all have listed."""
        self.started = True
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as starting:
                for inf in self._informers.values():
                    starting.start_soon(nursery.start, inf.run)
            task_status.started()


# ------------------------------------------------------------------ common index functions


def by_namespace_and_labels(obj: Obj) -> Iterable[Hashable]:
    """``(ns,)`` plus ``(ns, key, value)`` per label: pods of a namespace, pods with a label."""
    ns = podutil.md(obj).get("namespace") or ""
    yield (ns,)
    for k, v in podutil.labels(obj).items():
        yield (ns, k, v)


def by_node(obj: Obj) -> Iterable[Hashable]:
    """The pod's ``spec.nodeName`` ("" when unscheduled)."""
    yield (obj.get("spec") or {}).get("nodeName") or ""


def by_owner_uid(obj: Obj) -> Iterable[Hashable]:
    """Every ownerReference UID."""
    for ref in podutil.md(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("uid"):
            yield ref["uid"]


def by_controller_uid(obj: Obj) -> Iterable[Hashable]:
    """The controller ownerReference's UID, or ``("orphan", ns)`` for objects without one."""
    ref = podutil.controller_ref(obj)
    if ref is not None and ref.get("uid"):
        yield ref["uid"]
    else:
        yield ("orphan", podutil.md(obj).get("namespace") or "")


class LabelQuery:
    """Objects of one kind in a namespace matching a label selector, via the label index."""

    def __init__(self, factory: InformerFactory, kind: str) -> None:
        self.informer = factory.informer(kind)
        self.index = factory.index(kind, "labels", by_namespace_and_labels)

    def matching_map(self, namespace: str, sel: Mapping[str, str] | None) -> list[Obj]:
        """Objects whose labels include every pair of ``sel`` (an empty map selects nothing)."""
        if not sel:
            return []
        sets = sorted((self.index.keys((namespace, k, v)) for k, v in sel.items()), key=len)
        keys = set(sets[0]).intersection(*sets[1:]) if len(sets) > 1 else sets[0]
        cache = self.informer.cache
        return [o for o in (cache.get(k) for k in keys) if o is not None]

    def matching(self, namespace: str, sel: Mapping[str, Any] | None) -> list[Obj]:
        """Objects matching a ``metav1.LabelSelector`` (``{}`` selects all, None nothing)."""
        if sel is None:
            return []
        ml = sel.get("matchLabels") or {}
        if ml:
            candidates = self.matching_map(namespace, ml)
        else:
            candidates = self.index.objects((namespace,))
        if not sel.get("matchExpressions"):
            return candidates
        return [o for o in candidates if podutil.selector_matches(sel, podutil.labels(o))]


class SelectorIndex:
    """Which objects of a selecting kind (Services, ReplicaSets, Deployments) select a label set."""

    def __init__(self, factory: InformerFactory, kind: str, selector_of: Callable[[Obj], Mapping[str, Any] | None]) -> None:
        self.informer = factory.informer(kind)
        self.selector_of = selector_of

        def values(obj: Obj) -> Iterable[Hashable]:
            sel = selector_of(obj)
            if sel is None:
                return
            ns = podutil.md(obj).get("namespace") or ""
            ml = sel.get("matchLabels") or {}
            if not ml:
                yield (ns, "*")
            for k, v in ml.items():
                yield (ns, k, v)

        self.index = factory.index(kind, "selects", values)

    def selecting(self, namespace: str, lbls: Mapping[str, str]) -> list[Obj]:
        """The objects whose selector matches ``lbls`` in ``namespace``."""
        keys: set[Key] = set(self.index.keys((namespace, "*")))
        for k, v in lbls.items():
            keys |= self.index.keys((namespace, k, v))
        out = []
        for key in keys:
            obj = self.informer.cache.get(key)
            if obj is not None and podutil.selector_matches(self.selector_of(obj), lbls):
                out.append(obj)
        return out


def service_selector(svc: Obj) -> Mapping[str, Any] | None:
    """A Service's selector as a LabelSelector object (None when it has none: it selects nothing)."""
    sel = (svc.get("spec") or {}).get("selector")
    return {"matchLabels": sel} if sel else None


def workload_selector(obj: Obj) -> Mapping[str, Any] | None:
    """A ReplicaSet's or Deployment's ``spec.selector``."""
    sel = (obj.get("spec") or {}).get("selector")
    return sel if isinstance(sel, dict) else None
