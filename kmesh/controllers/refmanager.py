"""Adoption and release of dependents by a controller (upstream's ControllerRefManager).

A ReplicaSet owns the pods whose controller ownerReference names its UID. An
orphan that matches its selector is adopted; an owned object whose labels
stopped matching is released. Nothing is adopted or released while either
side is being deleted.
"""

from __future__ import annotations

import copy

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.client.api import Client
from kmesh.client.informer import key_of
from kmesh.controllers import podutil



async def claim(client: Client, owner: Obj, candidates: list[Obj]) -> list[Obj]:
    """The candidates ``owner`` controls after adopting matching orphans and releasing non-matching ones."""
    owner_uid = podutil.uid(owner)
    selector = (owner.get("spec") or {}).get("selector")
    owner_ns = podutil.md(owner).get("namespace")
    seen: set[tuple[str, str]] = set()
    out: list[Obj] = []
    for obj in candidates:
        k = key_of(obj)
        if k in seen or podutil.md(obj).get("namespace") != owner_ns:
            continue
        seen.add(k)
        matches = podutil.selector_matches(selector, podutil.labels(obj))
        ref = podutil.controller_ref(obj)
        if ref is not None:
            if ref.get("uid") != owner_uid:
                continue
            if matches or podutil.is_terminating(owner) or podutil.is_terminating(obj):
                out.append(obj)
                continue
            await _set_refs(client, obj, [r for r in podutil.md(obj).get("ownerReferences") or []
                                          if r.get("uid") != owner_uid])
            continue
        if not matches or podutil.is_terminating(owner) or podutil.is_terminating(obj):
            continue
        refs = [*(podutil.md(obj).get("ownerReferences") or []), podutil.owner_reference(owner)]
        adopted = await _set_refs(client, obj, refs)
        if adopted is not None:
            out.append(adopted)
    return out


async def _set_refs(client: Client, obj: Obj, refs: list[Obj]) -> Obj | None:
    new = copy.deepcopy(obj)
    new["metadata"]["ownerReferences"] = refs
    if not refs:
        new["metadata"].pop("ownerReferences")
    try:
        return await client.update(new)
    except E.APIError as exc:
        if exc.code == 404:
            return None
        raise
