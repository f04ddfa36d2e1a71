"""ReferenceGrant: whether an object in one namespace may refer to an object in another."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

GATEWAY_GROUP = "gateway.networking.k8s.io"


def permitted(grants: Iterable[dict[str, Any]], *, from_group: str, from_kind: str, from_namespace: str,
              to_group: str, to_kind: str, to_namespace: str, to_name: str) -> bool:
    """Whether a reference from a ``from_kind`` in ``from_namespace`` to ``to_namespace/to_name`` is allowed.

    Same-namespace references always are; others need a ReferenceGrant in the
    target namespace whose ``from`` lists the referrer's group, kind and
    namespace and whose ``to`` lists the target's group and kind (and its name,
    when the entry names one).
    """
    if from_namespace == to_namespace:
        return True
    for g in grants:
        if (g.get("metadata") or {}).get("namespace") != to_namespace:
            continue
        spec = g.get("spec") or {}
        froms = spec.get("from") or []
        if not any((f.get("group") or "") == from_group and f.get("kind") == from_kind
                   and f.get("namespace") == from_namespace for f in froms):
            continue
        for t in spec.get("to") or []:
            if (t.get("group") or "") == to_group and t.get("kind") == to_kind and t.get("name") in (None, "", to_name):
                return True
    return False
