"""The three patch formats kube-apiserver accepts, applied to wire JSON dicts.

* ``merge_patch``: RFC 7386 JSON merge patch
  (``application/merge-patch+json``).
* ``json_patch``: RFC 6902 JSON patch (``application/json-patch+json``),
  failing like kube-apiserver (which uses evanphx/json-patch): a malformed
  patch is 400 BadRequest, an operation that does not apply is 422 Invalid
  carrying the library's message as a cause.
* ``strategic_merge_patch``: Kubernetes strategic merge patch
  (``application/strategic-merge-patch+json``, what ``kubectl apply`` and
  ``kubectl patch`` send), after ``k8s.io/apimachinery/pkg/util/strategicpatch``.

Strategic merge needs to know, for each list, whether it is merged by a key
or replaced whole. Upstream reads that from Go struct tags
(``patchStrategy:"merge" patchMergeKey:"name"``); here it is the data table
``STRUCTS``: every struct that leads to a merged list, and the lists. Any
field not in the table behaves like an untagged Go field: maps merge key by
key, lists are replaced.

None of the functions modifies its arguments; each returns a new object.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Mapping

from kmesh.api.errors import APIError, bad_request
from kmesh.api.kinds import Kind

__all__ = [
    "merge_patch",
    "json_patch",
    "strategic_merge_patch",
    "ListSpec",
    "STRUCTS",
    "KIND_ROOTS",
    "lookup",
]

JSON = Any

# --------------------------------------------------------------------------
# RFC 7386


def merge_patch(target: JSON, patch: JSON) -> JSON:
    """Apply an RFC 7386 JSON merge patch: objects merge, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# --------------------------------------------------------------------------
# RFC 6902


def _unprocessable(message: str) -> APIError:
    """422 as kube-apiserver reports a JSON patch that does not apply."""
    return APIError(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
        causes=[{"reason": "UnexpectedServerResponse", "message": message}],
    )


def _json_equal(a: JSON, b: JSON) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _pointer(path: Any, op: str, what: str = "path") -> list[str]:
    if not isinstance(path, str):
        raise _unprocessable(f"{op} operation failed to decode {what}")
    if path == "":
        return []
    if not path.startswith("/"):
        raise _unprocessable(f"{op} operation failed to decode {what}: invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(key: str, size: int, path: str, *, adding: bool = False) -> int:
    if not key or not (key.isdigit() or (key[0] == "-" and key[1:].isdigit())) or (
        len(key) > 1 and key[0] == "0"
    ):
        raise _unprocessable(f"value was not a proper array index: '{key}'")
    idx = int(key)
    limit = size + 1 if adding else size
    if idx >= limit or idx < -limit:
        raise _unprocessable(f"Unable to access invalid index: {idx}: invalid index referenced")
    return idx + limit if idx < 0 else idx


def _parent(doc: JSON, parts: list[str], op: str, path: str) -> JSON:
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list):
            try:
                cur = cur[_index(p, len(cur), path)]
            except APIError:
                raise _unprocessable(f'{op} operation does not apply: doc is missing path: "{path}": missing value')
        else:
            raise _unprocessable(f'{op} operation does not apply: doc is missing path: "{path}": missing value')
    if not isinstance(cur, (dict, list)):
        raise _unprocessable(f'{op} operation does not apply: doc is missing path: "{path}": missing value')
    return cur


def _get_at(doc: JSON, parts: list[str], op: str, path: str) -> JSON:
    if not parts:
        return doc
    parent = _parent(doc, parts, op, path)
    key = parts[-1]
    if isinstance(parent, dict):
        if key not in parent:
            raise _unprocessable(f'{op} operation does not apply: doc is missing path: "{path}": missing value')
        return parent[key]
    return parent[_index(key, len(parent), path)]


def _add(doc: JSON, parts: list[str], value: JSON, op: str, path: str) -> JSON:
    if not parts:
        return value
    parent = _parent(doc, parts, op, path)
    key = parts[-1]
    if isinstance(parent, dict):
        parent[key] = value
    elif key == "-":
        parent.append(value)
    else:
        parent.insert(_index(key, len(parent), path, adding=True), value)
    return doc


def _remove(doc: JSON, parts: list[str], op: str, path: str) -> tuple[JSON, JSON]:
    if not parts:
        raise _unprocessable(f'{op} operation does not apply: doc is missing path: "{path}": missing value')
    parent = _parent(doc, parts, op, path)
    key = parts[-1]
    if isinstance(parent, dict):
        if key not in parent:
            raise _unprocessable(f"Unable to remove nonexistent key: {key}: missing value")
        return doc, parent.pop(key)
    return doc, parent.pop(_index(key, len(parent), path))


def json_patch(target: JSON, ops: Any, *, max_copy_bytes: int | None = None) -> JSON:
    """Apply an RFC 6902 JSON patch (add, remove, replace, move, copy, test).

    JSON pointers use ``~0``/``~1`` escapes, ``-`` appends to an array, and
    (as in evanphx/json-patch, which kube-apiserver uses) negative indices
    count from the end. A patch that is not a list of operation objects is
    400 BadRequest; an operation that does not apply (a failed ``test``, a
    missing path, a bad index) is 422 Invalid. With ``max_copy_bytes``, the
    ``copy`` operations may add at most that many bytes (of JSON) in total
    (evanphx's ``AccumulatedCopySizeLimit``, which kube-apiserver sets to 3 MiB),
    else 422.
    """
    if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)
    copied = 0
    for operation in ops:
        op = operation.get("op")
        path = operation.get("path")
        if op in ("add", "replace", "test") and "value" not in operation:
            raise _unprocessable(f"{op} operation does not apply: missing value")
        if op == "add":
            parts = _pointer(path, op)
            doc = _add(doc, parts, copy.deepcopy(operation["value"]), op, path)
        elif op == "remove":
            doc, _ = _remove(doc, _pointer(path, op), op, path)
        elif op == "replace":
            parts = _pointer(path, op)
            if not parts:
                doc = copy.deepcopy(operation["value"])
                continue
            parent = _parent(doc, parts, op, path)
            key = parts[-1]
            if isinstance(parent, dict):
                if key not in parent:
                    raise _unprocessable(f"replace operation does not apply: doc is missing key: {path}: missing value")
                parent[key] = copy.deepcopy(operation["value"])
            else:
                parent[_index(key, len(parent), path)] = copy.deepcopy(operation["value"])
        elif op == "move":
            src = operation.get("from")
            src_parts = _pointer(src, op, "from")
            dst_parts = _pointer(path, op)
            if dst_parts[: len(src_parts)] == src_parts and len(dst_parts) > len(src_parts):
                raise _unprocessable(f'move operation does not apply: cannot move "{src}" into its own child "{path}"')
            try:
                doc, value = _remove(doc, src_parts, op, src)
            except APIError:
                raise _unprocessable(f'move operation does not apply: doc is missing from path: "{src}": missing value')
            doc = _add(doc, dst_parts, value, op, path)
        elif op == "copy":
            src = operation.get("from")
            try:
                value = _get_at(doc, _pointer(src, op, "from"), op, src)
            except APIError:
                raise _unprocessable(f'copy operation does not apply: doc is missing from path: "{src}": missing value')
            if max_copy_bytes is not None:
                copied += len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
                if copied > max_copy_bytes:
                    raise _unprocessable(
                        "Unable to complete the copy, the accumulated size increase of copy is "
                        f"{copied}, exceeding the limit {max_copy_bytes}"
                    )
            doc = _add(doc, _pointer(path, op), copy.deepcopy(value), op, path)
        elif op == "test":
            parts = _pointer(path, op)
            try:
                have = _get_at(doc, parts, op, path)
            except APIError:
                if operation["value"] is None:
                    continue
                raise _unprocessable(f"testing value {path} failed: test failed")
            if not _json_equal(have, operation["value"]):
                raise _unprocessable(f"testing value {path} failed: test failed")
        else:
            raise _unprocessable(f"Unexpected kind: {op}")
    return doc


# --------------------------------------------------------------------------
# strategic merge patch: the schema, as data


@dataclass(frozen=True)
class ListSpec:
    """How strategic merge treats one list field.

    ``strategy`` is ``"merge"`` (merge items by ``key``; a list of scalars
    with no key is merged as a set) or ``"replace"`` (atomic). ``key`` may
    name several fields: items then match on every key field the patch item
    carries (upstream has one key; the first one must be present).
    ``item`` names the struct of the items, when items lead to more merged
    lists. ``retain_keys`` records ``patchStrategy:"merge,retainKeys"``.
    """

    strategy: str = "merge"
    key: tuple[str, ...] = ()
    item: str | None = None
    retain_keys: bool = False


def _merge(*key: str, item: str | None = None, retain_keys: bool = False) -> ListSpec:
    return ListSpec("merge", tuple(key), item, retain_keys)


ATOMIC = ListSpec("replace")

# Struct name -> field -> nested struct name (str) or ListSpec. Lists not
# named here are atomic; maps not named here merge key by key. Atomic lists
# that matter to users are listed anyway, to say so.
STRUCTS: dict[str, dict[str, str | ListSpec]] = {
    "ObjectMeta": {
        "finalizers": _merge(),
        "ownerReferences": _merge("uid"),
        "managedFields": ATOMIC,
    },
    "LabelSelector": {"matchExpressions": ATOMIC},
    "PodTemplateSpec": {"metadata": "ObjectMeta", "spec": "PodSpec"},
    "PodSpec": {
        "volumes": _merge("name", retain_keys=True),
        "initContainers": _merge("name", item="Container"),
        "containers": _merge("name", item="Container"),
        "ephemeralContainers": _merge("name", item="Container"),
        "imagePullSecrets": _merge("name"),
        "hostAliases": _merge("ip"),
        "topologySpreadConstraints": _merge("topologyKey", "whenUnsatisfiable"),
        "schedulingGates": _merge("name"),
        "resourceClaims": _merge("name", retain_keys=True),
        "tolerations": ATOMIC,
        "readinessGates": ATOMIC,
    },
    "Container": {
        "ports": _merge("containerPort"),
        "env": _merge("name"),
        "volumeMounts": _merge("mountPath"),
        "volumeDevices": _merge("devicePath"),
        "args": ATOMIC,
        "command": ATOMIC,
        "envFrom": ATOMIC,
    },
    "PodStatus": {
        "conditions": _merge("type"),
        "podIPs": _merge("ip"),
        "hostIPs": _merge("ip"),
        "resourceClaimStatuses": _merge("name", retain_keys=True),
        "containerStatuses": ATOMIC,
        "initContainerStatuses": ATOMIC,
        "ephemeralContainerStatuses": ATOMIC,
    },
    "ServiceSpec": {"ports": _merge("port"), "clusterIPs": ATOMIC, "externalIPs": ATOMIC},
    "ServiceStatus": {"conditions": _merge("type")},
    "NodeSpec": {"podCIDRs": _merge(), "taints": ATOMIC},
    "NodeStatus": {"addresses": _merge("type"), "conditions": _merge("type")},
    "NamespaceSpec": {"finalizers": ATOMIC},
    "NamespaceStatus": {"conditions": _merge("type")},
    "DeploymentSpec": {"template": "PodTemplateSpec", "selector": "LabelSelector"},
    "ReplicaSetSpec": {"template": "PodTemplateSpec", "selector": "LabelSelector"},
    "WorkloadStatus": {"conditions": _merge("type")},
    "Endpoints": {"subsets": ATOMIC},
    "EndpointSlice": {"endpoints": ATOMIC, "ports": ATOMIC},
}

# Kind -> its top-level fields that lead into STRUCTS.
KIND_ROOTS: dict[str, dict[str, str | ListSpec]] = {
    "Pod": {"spec": "PodSpec", "status": "PodStatus"},
    "Service": {"spec": "ServiceSpec", "status": "ServiceStatus"},
    "Node": {"spec": "NodeSpec", "status": "NodeStatus"},
    "Namespace": {"spec": "NamespaceSpec", "status": "NamespaceStatus"},
    "Deployment": {"spec": "DeploymentSpec", "status": "WorkloadStatus"},
    "ReplicaSet": {"spec": "ReplicaSetSpec", "status": "WorkloadStatus"},
    "Endpoints": {"subsets": ATOMIC},
    "EndpointSlice": {"endpoints": ATOMIC, "ports": ATOMIC},
}


def _fields(struct: str | None, kind: str | None = None) -> Mapping[str, str | ListSpec]:
    if kind is not None:
        return {"metadata": "ObjectMeta", **KIND_ROOTS.get(kind, {})}
    return STRUCTS.get(struct or "", {})


def lookup(kind: Kind | str, path: str) -> str | ListSpec | None:
    """What the schema says about a dotted field path of a kind (for tests and tools).

    ``lookup("Deployment", "spec.template.spec.containers")`` gives the
    containers ``ListSpec``; a struct path gives its struct name; unknown is None.
    """
    fields = _fields(None, kind.kind if isinstance(kind, Kind) else kind)
    found: str | ListSpec | None = None
    for part in path.split("."):
        found = fields.get(part)
        if found is None:
            return None
        if isinstance(found, ListSpec):
            fields = _fields(found.item)
        else:
            fields = _fields(found)
    return found


# --------------------------------------------------------------------------
# strategic merge patch: the algorithm

_DIRECTIVE = "$patch"
_RETAIN = "$retainKeys"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList"
_SET_ORDER = "$setElementOrder"


class _SMPError(Exception):
    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


def _is_directive_key(k: str) -> bool:
    return k in (_DIRECTIVE, _RETAIN) or k.startswith(_DELETE_PRIMITIVE + "/") or k.startswith(_SET_ORDER + "/")


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _same(a: Any, b: Any) -> bool:
    """Scalar equality as Go's ``==`` on decoded JSON (no bool/number mixing)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _key_matches(item: Any, probe: Any, key: tuple[str, ...]) -> bool:
    """Whether list item ``item`` has the merge key of ``probe``.

    The first key field must be present in the probe; further key fields
    count only when the probe carries them.
    """
    if not isinstance(item, dict) or not isinstance(probe, dict):
        return False
    for i, k in enumerate(key):
        if k not in probe:
            if i == 0:
                return False
            continue
        if k not in item or not _same(item[k], probe[k]):
            return False
    return True


def _require_key(item: Any, key: tuple[str, ...]) -> None:
    if not isinstance(item, dict):
        raise _SMPError(f"invalid element in merging list: {item!r} is not a map")
    if key[0] not in item:
        raise _SMPError(f"map: {_go_map(item)} does not contain declared merge key: {key[0]}")


def _go_map(m: Any) -> str:
    if isinstance(m, dict):
        return "map[" + " ".join(f"{k}:{_go_map(m[k])}" for k in sorted(m)) + "]"
    if isinstance(m, list):
        return "[" + " ".join(_go_map(v) for v in m) + "]"
    if m is None:
        return "<nil>"
    if isinstance(m, bool):
        return "true" if m else "false"
    return str(m)


def _hkey(value: Any) -> Any:
    """A hashable stand-in for a scalar, equal exactly where ``_same`` is true; None for a map or list."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("0", None)
    return None


class _Positions:
    """Where items stand in a list, found through a hash of their merge key (or value) instead of a scan.

    A patch may carry hundreds of thousands of list items (3 MiB of finalizers);
    scanning the list for each of them would hold the server for hours.
    """

    def __init__(self, order: list[Any], key: tuple[str, ...]) -> None:
        self.order, self.key = order, key
        self.buckets: dict[Any, list[int]] = {}
        for i, o in enumerate(order):
            h = self._lookup(o)
            if h is not None:
                self.buckets.setdefault(h, []).append(i)

    def _lookup(self, value: Any) -> Any:
        if self.key:
            if not isinstance(value, dict) or self.key[0] not in value:
                return None
            value = value[self.key[0]]
        return _hkey(value)

    def index(self, item: Any) -> int:
        """The first position whose item matches ``item`` (by merge key, or equal), or -1."""
        key = self.key
        h = self._lookup(item)
        if h is None:
            if key and (not isinstance(item, dict) or key[0] not in item):
                return -1  # no merge key: it matches nothing
            candidates: Any = range(len(self.order))  # a map or list as the value: look at every item
        else:
            candidates = self.buckets.get(h, ())
        for i in candidates:
            o = self.order[i]
            if (_key_matches(o, item, key) or _key_matches(item, o, key)) if key else _same(o, item):
                return i
        return -1


def _index_in(order: list[Any], item: Any, key: tuple[str, ...]) -> int:
    return _Positions(order, key).index(item)


def _sort_by(items: list[Any], order: list[Any], key: tuple[str, ...]) -> list[Any]:
    """Stable sort of ``items`` by position in ``order`` (items not there keep their place first)."""
    positions = _Positions(order, key)
    ranked = [(positions.index(it), n, it) for n, it in enumerate(items)]
    ranked.sort(key=lambda r: (r[0], r[1]))
    return [it for _, _, it in ranked]


def _normalize_order(
    patch_items: list[Any], server_only: list[Any], patch_order: list[Any], server_order: list[Any], key: tuple[str, ...]
) -> list[Any]:
    """Upstream ``normalizeElementOrder``: patch items in patch order, server-only items
    in live order, interleaved by live order where both are known, patch items first otherwise."""
    right = _sort_by(patch_items, patch_order, key)
    left = _sort_by(server_only, server_order, key)
    server = _Positions(server_order, key)
    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if i >= len(left):
            out.append(right[j])
            j += 1
        elif j >= len(right):
            out.append(left[i])
            i += 1
        else:
            li = server.index(left[i])
            ri = server.index(right[j])
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def _partition(merged: list[Any], by: list[Any], key: tuple[str, ...]) -> tuple[list[Any], list[Any]]:
    inside, outside = [], []
    positions = _Positions(by, key)
    for it in merged:
        (inside if positions.index(it) >= 0 else outside).append(it)
    return inside, outside


def _dedupe(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    seen: set[Any] = set()
    others: list[Any] = []  # maps and lists: compared one by one
    for it in items:
        h = _hkey(it)
        if h is not None:
            if h not in seen:
                seen.add(h)
                out.append(it)
        elif not any(_same(it, o) for o in others):
            others.append(it)
            out.append(it)
    return out


def _without(values: list[Any], drop: list[Any]) -> list[Any]:
    """``values`` without those ``_same`` as one of ``drop``."""
    hashed = {h for h in map(_hkey, drop) if h is not None}
    others = [d for d in drop if _hkey(d) is None]
    return [v for v in values if not (_hkey(v) in hashed if _hkey(v) is not None else any(_same(v, d) for d in others))]


def _merge_value(orig: Any, patch: Any, spec: str | ListSpec | None) -> Any:
    if isinstance(patch, dict):
        struct = spec if isinstance(spec, str) else None
        return _merge_map(orig if isinstance(orig, dict) else None, patch, _fields(struct))
    if isinstance(patch, list):
        lspec = spec if isinstance(spec, ListSpec) else None
        if isinstance(orig, list) and lspec is not None and lspec.strategy == "merge":
            return _merge_list(orig, patch, lspec)
        if lspec is not None and lspec.strategy == "merge":
            return _merge_list([], patch, lspec)
        return copy.deepcopy(patch)
    return copy.deepcopy(patch)


def _apply_retain_keys(orig: dict[str, Any], patch: dict[str, Any]) -> None:
    retain = patch.pop(_RETAIN, None)
    if retain is None:
        return
    if not isinstance(retain, list):
        raise _SMPError("invalid patch format of retainKeys", 400)
    keep = set(r for r in retain if isinstance(r, str))
    for k, v in patch.items():
        if v is None or _is_directive_key(k):
            continue
        if k not in keep:
            raise _SMPError("patch content doesn't match retainKeys list")
    for k in list(orig):
        if k not in keep:
            del orig[k]


def _merge_map(orig: dict[str, Any] | None, patch: dict[str, Any], fields: Mapping[str, str | ListSpec]) -> dict[str, Any]:
    patch = dict(patch)
    directive = patch.get(_DIRECTIVE, _MISSING)
    if directive is not _MISSING:
        if directive == "replace":
            del patch[_DIRECTIVE]
            return _merge_map(None, patch, fields)
        if directive == "delete":
            return {}
        if directive == "merge":
            del patch[_DIRECTIVE]
        else:
            raise _SMPError(f"unknown patch type: {directive} in map: {_go_map(patch)}")
    out: dict[str, Any] = copy.deepcopy(orig) if orig is not None else {}
    _apply_retain_keys(out, patch)

    # $setElementOrder/<field>: merge that list with its patch now, then order it.
    for k in [k for k in patch if k.startswith(_SET_ORDER + "/")]:
        order = patch.pop(k)
        name = k[len(_SET_ORDER) + 1:]
        if not name:
            raise _SMPError("invalid patch format of setElementOrder list", 400)
        if not isinstance(order, list):
            raise _SMPError("invalid patch format of setElementOrder list", 400)
        spec = fields.get(name)
        lspec = spec if isinstance(spec, ListSpec) else _merge()
        key = lspec.key
        live = out.get(name) if isinstance(out.get(name), list) else []
        has_patch = name in patch
        plist = patch.pop(name, None)
        if has_patch and not isinstance(plist, list):
            raise _SMPError("invalid patch format of setElementOrder list", 400)
        plist = plist or []
        if key:
            for it in order:
                _require_key(it, key)
        _check_order(plist, order, key)
        if live and plist:
            merged = _merge_list(live, plist, lspec) if lspec.strategy == "merge" else copy.deepcopy(plist)
        elif plist:
            merged = _merge_list([], plist, lspec) if lspec.strategy == "merge" else copy.deepcopy(plist)
        elif live:
            merged = copy.deepcopy(live)
        else:
            if name not in out and not has_patch:
                continue
            merged = []
        inside, outside = _partition(merged, order, key)
        out[name] = _normalize_order(inside, outside, order, live, key)

    for k, pv in patch.items():
        if k.startswith(_DELETE_PRIMITIVE + "/"):
            name = k[len(_DELETE_PRIMITIVE) + 1:]
            if not name or not isinstance(pv, list):
                raise _SMPError("invalid patch format of primitive list", 400)
            if isinstance(out.get(name), list):
                out[name] = _without(out[name], pv)
            continue
        if pv is None:
            out.pop(k, None)
            continue
        spec = fields.get(k)
        if k not in out:
            out[k] = _strip_nulls_typed(pv, spec)
            continue
        ov = out[k]
        if isinstance(ov, dict) and isinstance(pv, dict):
            out[k] = _merge_value(ov, pv, spec)
        elif isinstance(ov, list) and isinstance(pv, list):
            out[k] = _merge_value(ov, pv, spec)
        else:
            out[k] = _strip_nulls_typed(pv, spec)
    return out


def _strip_nulls_typed(pv: Any, spec: str | ListSpec | None) -> Any:
    if isinstance(pv, (dict, list)):
        return _merge_value(None, pv, spec)
    return copy.deepcopy(pv)


def _check_order(plist: list[Any], order: list[Any], key: tuple[str, ...]) -> None:
    """Upstream ``validatePatchWithSetOrderList``: patch items appear in the order list, in its order."""
    items = [p for p in plist if not (isinstance(p, dict) and _DIRECTIVE in p)]
    pi = oi = 0
    while pi < len(items) and oi < len(order):
        if key:
            _require_key(items[pi], key)
            equal = _key_matches(order[oi], items[pi], key[:1])
        else:
            equal = _same(items[pi], order[oi])
        if equal:
            pi += 1
        oi += 1
    if pi < len(items):
        raise _SMPError(
            f"The order in patch list:\n{_go_map(plist)}\n doesn't match $setElementOrder list:\n{_go_map(order)}\n"
        )


def _merge_list(orig: list[Any], patch: list[Any], spec: ListSpec) -> list[Any]:
    orig = copy.deepcopy(orig)
    if not orig and not patch:
        return orig
    if any(isinstance(v, list) for v in orig + patch):
        raise _SMPError("lists of lists are not supported")
    maps = any(isinstance(v, dict) for v in orig + patch)
    key = spec.key
    if not maps:
        merged = _dedupe(orig + copy.deepcopy(patch))
        inside, outside = _partition(merged, patch, ())
        return _normalize_order(inside, outside, patch, orig, ())
    if not key:
        raise _SMPError("cannot merge lists without merge key")
    if not all(isinstance(v, dict) for v in orig + patch):
        raise _SMPError("list element types are not identical")
    # special elements: $patch: replace / delete / merge
    plain: list[dict[str, Any]] = []
    deletes: list[dict[str, Any]] = []
    replace = False
    for item in patch:
        d = item.get(_DIRECTIVE, _MISSING)
        if d is _MISSING:
            plain.append(item)
        elif d == "delete":
            _require_key(item, key)
            deletes.append(item)  # removed below, all at once: plain items are merged only after this loop
        elif d == "replace":
            replace = True
        elif d == "merge":
            rest = {k: v for k, v in item.items() if k != _DIRECTIVE}
            if rest:
                plain.append(rest)
        else:
            raise _SMPError(f"unknown patch type: {d} in map: {_go_map(item)}")
    if deletes:
        doomed = _Positions(deletes, key)
        orig = [o for o in orig if not _deleted(o, doomed)]
    if replace:
        orig = [_merge_map(None, p, _fields(spec.item)) for p in plain]
        plain = []
    server_order = list(orig)
    live = _Positions(orig, key)  # kept up to date as items are appended
    for item in plain:
        _require_key(item, key)
        h = live._lookup(item)
        candidates: Any = live.buckets.get(h, ()) if h is not None else range(len(orig))
        for n in candidates:
            if _key_matches(orig[n], item, key):
                orig[n] = _merge_map(orig[n], item, _fields(spec.item))
                break
        else:
            orig.append(_merge_map(None, item, _fields(spec.item)))
            if h is not None:
                live.buckets.setdefault(h, []).append(len(orig) - 1)
    inside, outside = _partition(orig, plain, key)
    return _normalize_order(inside, outside, plain, server_order, key)


def _deleted(item: Any, doomed: _Positions) -> bool:
    """Whether a ``$patch: delete`` element (in ``doomed``) names ``item`` by its merge key."""
    h = doomed._lookup(item)
    probes = doomed.buckets.get(h, ()) if h is not None else range(len(doomed.order))
    return any(_key_matches(item, doomed.order[i], doomed.key) for i in probes)


def strategic_merge_patch(target: dict[str, Any], patch: Any, kind: Kind | str) -> dict[str, Any]:
    """Apply a Kubernetes strategic merge patch to an object of ``kind``.

    Lists are merged by their patch merge key (see ``STRUCTS``) or replaced;
    ``null`` deletes a key; the directives ``$patch: replace|delete|merge``,
    ``$retainKeys``, ``$deleteFromPrimitiveList/<f>`` and
    ``$setElementOrder/<f>`` work as upstream. A malformed directive is
    400 BadRequest, a patch that cannot be merged (no merge key, list of
    lists, content outside ``$retainKeys``) is 422 Invalid.
    """
    if not isinstance(patch, dict):
        raise bad_request("json: cannot unmarshal patch into Go value of type map[string]interface {}")
    name = kind.kind if isinstance(kind, Kind) else kind
    try:
        return _merge_map(target if isinstance(target, dict) else None, patch, _fields(None, name))
    except _SMPError as e:
        if e.code == 400:
            raise bad_request(str(e)) from None
        raise APIError(422, "Invalid", str(e)) from None
