"""How every backend turns objects into stored values and back.

A stored value is the object's compact JSON without
``metadata.resourceVersion``: the revision is the store's to say, so it is
set on the way out from the revision that wrote the value. Storing text
(even in memory) keeps callers from sharing mutable state with the store and
makes every backend accept and return exactly the same things.
"""

from __future__ import annotations

import json

from kmesh.store.base import Obj


def encode(obj: Obj) -> str:
    """The stored form of ``obj``: compact JSON without its resourceVersion."""
    if not isinstance(obj, dict):
        raise TypeError(f"a store object must be a dict, not {type(obj).__name__}")
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "resourceVersion" in meta:
        meta = {k: v for k, v in meta.items() if k != "resourceVersion"}
        obj = {**obj, "metadata": meta}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def decode(value: str | bytes, revision: int) -> Obj:
    """A fresh object from a stored value, its resourceVersion set to ``revision``."""
    obj = json.loads(value)
    if not isinstance(obj, dict):
        raise ValueError("stored value is not a JSON object")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    meta["resourceVersion"] = str(revision)
    return obj
