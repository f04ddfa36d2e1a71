"""The DefaultIngressClass admission plugin: a new Ingress without a class gets the default IngressClass.

As kube-apiserver's plugin: an Ingress created with no ``spec.ingressClassName``
and no ``kubernetes.io/ingress.class`` annotation gets the name of the
IngressClass annotated ``ingressclass.kubernetes.io/is-default-class: "true"``;
when several are so marked, the one created last (then the first by name)
wins; when none is, the Ingress stays without a class. Updates are left alone.
"""

from __future__ import annotations

from kmesh.api.kinds import Kind
from kmesh.api.kinds import get as kind_named
from kmesh.store.base import Obj, Store

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"


def default_class(classes: list[Obj]) -> str | None:
    """The name of the default class among ``classes`` (the newest of those marked default), or None."""
    marked = [c for c in classes
              if ((c.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"]
    if not marked:
        return None
    marked.sort(key=lambda c: c["metadata"].get("name", ""))
    marked.sort(key=lambda c: c["metadata"].get("creationTimestamp") or "", reverse=True)
    return marked[0]["metadata"].get("name")


class DefaultIngressClass:
    """Admission for Ingresses (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.classes = kind_named("IngressClass")

    async def on_create(self, kind: Kind, obj: Obj) -> None:
        """Name the default class in a new Ingress that names none."""
        spec = obj.setdefault("spec", {})
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if spec.get("ingressClassName") is not None or CLASS_ANNOTATION in annotations:
            return
        name = default_class((await self.store.list(self.classes.prefix(None))).items)
        if name is not None:
            spec["ingressClassName"] = name

    async def on_update(self, kind: Kind, new: Obj, old: Obj) -> None:
        """Updates keep the class they name."""

    async def on_delete(self, kind: Kind, obj: Obj) -> None:
        """Nothing to release."""

    async def on_create_failed(self, kind: Kind, obj: Obj) -> None:
        """Nothing to release."""
