"""The OpenAPI v3 documents kubectl reads: field validation on the server, and the schemas for ``kubectl explain``.

kubectl asks ``/openapi/v3`` whether each kind's PATCH operation takes the
``fieldValidation`` query parameter; if it does, kubectl leaves validation to
the server instead of checking itself. Each group/version document lists one
path per kind with that parameter, and under ``components.schemas`` the
kinds' field trees (``kmesh.api.fieldschema``) with upstream's schema names,
which is what ``kubectl explain`` walks. Descriptions are not carried.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from kmesh.api import fieldschema as F
from kmesh.api.kinds import GROUPS, KINDS, Kind
from kmesh.apiserver.discovery import KUBE_MAJOR, KUBE_MINOR

QUERY_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "force")


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _item_path(k: Kind) -> str:
    base = "/" + _gv_path(k.group, k.version)
    if k.namespaced:
        base += "/namespaces/{namespace}"
    return f"{base}/{k.plural}/{{name}}"


def _operation(k: Kind) -> dict[str, Any]:
    return {
        "operationId": f"patch{k.kind}",
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {"group": k.group, "version": k.version, "kind": k.kind},
        "parameters": [{"name": p, "in": "query", "schema": {"type": "string"}} for p in QUERY_PARAMS],
        "responses": {"200": {"description": "OK"}},
    }


_SCALARS: dict[str, dict[str, Any]] = {
    F.STRING: {"type": "string"},
    F.INT32: {"type": "integer", "format": "int32"},
    F.INT64: {"type": "integer", "format": "int64"},
    F.BOOL: {"type": "boolean"},
    F.NUMBER: {"type": "number", "format": "double"},
    F.QUANTITY: {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.api.resource.Quantity"},
    F.INT_OR_STRING: {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.util.intstr.IntOrString"},
    F.TIME: {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Time"},
    F.BYTES: {"type": "string", "format": "byte"},
    F.ANY: {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
}
_SCALAR_SCHEMAS: dict[str, dict[str, Any]] = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"oneOf": [{"type": "string"}, {"type": "number"}]},
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"anyOf": [{"type": "integer"}, {"type": "string"}],
                                                         "x-kubernetes-int-or-string": True},
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": {"type": "string", "format": "date-time"},
}


def _schema(spec: F.Spec, refs: list[str]) -> dict[str, Any]:
    """The OpenAPI form of one field type; struct names met are appended to ``refs``."""
    if isinstance(spec, str):
        out = dict(_SCALARS[spec])
        if "$ref" in out:
            refs.append(out["$ref"].rsplit("/", 1)[1])
            return {"allOf": [out]}
        return out
    if isinstance(spec, F.ListOf):
        return {"type": "array", "items": _schema(spec.item, refs)}
    if isinstance(spec, F.MapOf):
        return {"type": "object", "additionalProperties": _schema(spec.value, refs)}
    refs.append(spec.name)
    return {"allOf": [{"$ref": f"#/components/schemas/{spec.name}"}], "default": {}}


def _schemas(kinds: list[Kind]) -> dict[str, Any]:
    """Every schema reachable from ``kinds``' top-level structs."""
    F.load()
    gvk: dict[str, list[dict[str, str]]] = {}
    todo: list[str] = []
    for k in kinds:
        name = F.KIND_STRUCTS.get((k.group, k.version, k.kind))
        if name:
            gvk.setdefault(name, []).append({"group": k.group, "version": k.version, "kind": k.kind})
            todo.append(name)
    out: dict[str, Any] = {}
    while todo:
        name = todo.pop()
        if name in out:
            continue
        if name in _SCALAR_SCHEMAS:
            out[name] = _SCALAR_SCHEMAS[name]
            continue
        st = F.STRUCTS[name]
        refs: list[str] = []
        doc: dict[str, Any] = {"type": "object", "properties": {f: _schema(t, refs) for f, t in st.fields.items()}}
        if st.required:
            doc["required"] = list(st.required)
        if st.description:
            doc["description"] = st.description
        if name in gvk:
            doc["x-kubernetes-group-version-kind"] = gvk[name]
        out[name] = doc
        todo += refs
    return out


@functools.cache
def gv_document(group: str, version: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group/version, or None if not served."""
    kinds = [k for k in KINDS if k.group == group and k.version == version]
    if not kinds:
        return None
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": f"v{KUBE_MAJOR}.{KUBE_MINOR}.0"},
        "paths": {_item_path(k): {"patch": _operation(k)} for k in kinds},
        "components": {"schemas": _schemas(kinds)},
    }


def _hash(doc: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()


@functools.cache
def index() -> dict[str, Any]:
    """The ``/openapi/v3`` root: where each group/version's document is."""
    paths: dict[str, Any] = {}
    for group, version in (("", "v1"), *GROUPS):
        doc = gv_document(group, version)
        assert doc is not None
        gv = _gv_path(group, version)
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={_hash(doc)}"}
    return {"paths": paths}
