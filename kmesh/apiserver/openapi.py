"""The OpenAPI v3 and v2 documents kubectl reads: field validation, apply patches and ``kubectl explain``.

kubectl asks ``/openapi/v3`` whether each kind's PATCH operation takes the
``fieldValidation`` query parameter; if it does, kubectl leaves validation to
the server instead of checking itself. Each group/version document lists one
path per kind with that parameter, and under ``components.schemas`` the
kinds' field trees (``kmesh.api.fieldschema``) with upstream's schema names,
which is what ``kubectl explain`` walks. Descriptions are not carried.

``/openapi/v2`` carries the same trees in Swagger 2.0 form (JSON, or gnostic's
protobuf, which is what client-go asks for): kubectl before 1.24 validates
and explains with it, and every kubectl validates a ``kind: List`` file with
it and computes ``kubectl apply``'s strategic merge patch from its
``x-kubernetes-patch-*`` extensions. Both versions carry those extensions,
taken from the table the server merges patches with (``kmesh.api.patch``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kmesh.api import fieldschema as F
from kmesh.api import patch
from kmesh.api.kinds import GROUPS, KINDS, Kind
from kmesh.apiserver import gnostic
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


_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.Time"


@dataclass(frozen=True)
class _Flavour:
    """How one OpenAPI version writes the same field tree."""

    prefix: str                               # where references point
    scalars: dict[str, dict[str, Any]]        # field type -> schema (a reference for named scalars)
    named: dict[str, dict[str, Any]]          # the named scalars' own schemas
    wrap_refs: bool                           # v3: {"allOf": [ref]} (room for siblings); v2: the bare ref


def _scalar_refs(prefix: str, any_schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        F.STRING: {"type": "string"},
        F.INT32: {"type": "integer", "format": "int32"},
        F.INT64: {"type": "integer", "format": "int64"},
        F.BOOL: {"type": "boolean"},
        F.NUMBER: {"type": "number", "format": "double"},
        F.QUANTITY: {"$ref": prefix + _QUANTITY},
        F.INT_OR_STRING: {"$ref": prefix + _INT_OR_STRING},
        F.TIME: {"$ref": prefix + _TIME},
        F.BYTES: {"type": "string", "format": "byte"},
        F.ANY: any_schema,
    }


_V3 = _Flavour(
    prefix="#/components/schemas/",
    scalars=_scalar_refs("#/components/schemas/", {"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
    named={
        _QUANTITY: {"oneOf": [{"type": "string"}, {"type": "number"}]},
        _INT_OR_STRING: {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True},
        _TIME: {"type": "string", "format": "date-time"},
    },
    wrap_refs=True,
)
# v2 as upstream's /openapi/v2 writes it: bare references (Swagger 2.0 ignores a
# reference's siblings) and named scalars as strings with a format. An
# unmodelled value has no type at all, which every client-go schema parser reads
# as "anything" (some read a bare {"type": "object"} as a map missing its values).
_V2 = _Flavour(
    prefix="#/definitions/",
    scalars=_scalar_refs("#/definitions/", {}),
    named={
        _QUANTITY: {"type": "string"},
        _INT_OR_STRING: {"type": "string", "format": "int-or-string"},
        _TIME: {"type": "string", "format": "date-time"},
    },
    wrap_refs=False,
)


def _schema(spec: F.Spec, refs: list[str], fl: _Flavour) -> dict[str, Any]:
    """The OpenAPI form of one field type; struct names met are appended to ``refs``."""
    if isinstance(spec, str):
        out = dict(fl.scalars[spec])
        if "$ref" in out:
            refs.append(out["$ref"].rsplit("/", 1)[1])
            return {"allOf": [out]} if fl.wrap_refs else out
        return out
    if isinstance(spec, F.ListOf):
        return {"type": "array", "items": _schema(spec.item, refs, fl)}
    if isinstance(spec, F.MapOf):
        return {"type": "object", "additionalProperties": _schema(spec.value, refs, fl)}
    refs.append(spec.name)
    ref = {"$ref": fl.prefix + spec.name}
    return {"allOf": [ref], "default": {}} if fl.wrap_refs else ref


@functools.cache
def _patch_lists() -> dict[tuple[str, str], patch.ListSpec]:
    """(struct, field) -> how strategic merge treats that list, from the table the server merges with.

    kubectl computes an apply patch from the schema's ``x-kubernetes-patch-*``
    extensions; they must say what ``kmesh.api.patch`` does with the patch, or
    a container removed from a manifest would stay (its list sent whole and
    merged by name).
    """
    F.load()
    out: dict[tuple[str, str], patch.ListSpec] = {}
    seen: set[tuple[str, str]] = set()

    def walk(name: str, table: str, fields: Mapping[str, str | patch.ListSpec]) -> None:
        if (name, table) in seen:
            return
        seen.add((name, table))
        st = F.STRUCTS[name]
        for field, how in fields.items():
            spec = st.fields.get(field)
            if isinstance(how, patch.ListSpec):
                if not isinstance(spec, F.ListOf):
                    continue
                out[(name, field)] = how
                if how.item and isinstance(spec.item, F.Ref):
                    walk(spec.item.name, how.item, patch.STRUCTS.get(how.item, {}))
            elif isinstance(spec, F.Ref):
                walk(spec.name, how, patch.STRUCTS.get(how, {}))

    for (_, _, kind), name in F.KIND_STRUCTS.items():
        walk(name, "kind " + kind, {"metadata": "ObjectMeta", **patch.KIND_ROOTS.get(kind, {})})
    return out


def _patch_extensions(how: patch.ListSpec) -> dict[str, Any]:
    if how.strategy != "merge":
        return {}
    out: dict[str, Any] = {"x-kubernetes-patch-strategy": "merge,retainKeys" if how.retain_keys else "merge"}
    if how.key:
        out["x-kubernetes-patch-merge-key"] = how.key[0]
    return out


def _list_schema(k: Kind, item: str, refs: list[str], fl: _Flavour) -> dict[str, Any]:
    """``<Kind>List`` (what ``kubectl get -o yaml`` of one type could print, and a file may hold)."""
    return {
        "type": "object",
        "properties": {
            "apiVersion": _schema(F.STRING, refs, fl),
            "items": _schema(F.ListOf(F.Ref(item)), refs, fl),
            "kind": _schema(F.STRING, refs, fl),
            "metadata": _schema(F.Ref(F.META + "ListMeta"), refs, fl),
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": [{"group": k.group, "version": k.version, "kind": k.list_kind}],
    }


def _schemas(kinds: list[Kind], fl: _Flavour) -> dict[str, Any]:
    """Every schema reachable from ``kinds``' top-level structs."""
    F.load()
    gvk: dict[str, list[dict[str, str]]] = {}
    todo: list[str] = []
    out: dict[str, Any] = {}
    for k in kinds:
        name = F.KIND_STRUCTS.get((k.group, k.version, k.kind))
        if name:
            gvk.setdefault(name, []).append({"group": k.group, "version": k.version, "kind": k.kind})
            todo.append(name)
            out[name + "List"] = _list_schema(k, name, todo, fl)
    lists = _patch_lists()
    while todo:
        name = todo.pop()
        if name in out:
            continue
        if name in fl.named:
            out[name] = fl.named[name]
            continue
        st = F.STRUCTS[name]
        refs: list[str] = []
        props: dict[str, Any] = {}
        for field, spec in st.fields.items():
            props[field] = _schema(spec, refs, fl)
            if (name, field) in lists:
                props[field].update(_patch_extensions(lists[(name, field)]))
        doc: dict[str, Any] = {"type": "object", "properties": props}
        if st.required:
            doc["required"] = list(st.required)
        if st.description:
            doc["description"] = st.description
        if name in gvk:
            doc["x-kubernetes-group-version-kind"] = gvk[name]
        out[name] = doc
        todo += refs
    return dict(sorted(out.items()))


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
        "components": {"schemas": _schemas(kinds, _V3)},
    }


def _hash(data: bytes) -> str:
    """Upstream's content hash of a served document: the v3 index's ``?hash=``, the v2 ``ETag``."""
    return hashlib.sha512(data).hexdigest()[:64].upper()


@functools.cache
def index() -> dict[str, Any]:
    """The ``/openapi/v3`` root: where each group/version's document is."""
    paths: dict[str, Any] = {}
    for group, version in (("", "v1"), *GROUPS):
        doc = gv_document(group, version)
        assert doc is not None
        gv = _gv_path(group, version)
        digest = _hash(json.dumps(doc, sort_keys=True).encode())
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
    return {"paths": paths}


# ---------------------------------------------------------------- /openapi/v2

V2_JSON = "application/json"
V2_PROTOBUF = gnostic.CONTENT_TYPES[1]


def _v2_path_item(k: Kind) -> dict[str, Any]:
    """One kind's item path: the PATCH operation kubectl's older field-validation check looks for."""
    gvk = {"group": k.group, "version": k.version, "kind": k.kind}
    params = [{"name": "name", "in": "path", "required": True, "type": "string", "uniqueItems": True}]
    if k.namespaced:
        params.append({"name": "namespace", "in": "path", "required": True, "type": "string", "uniqueItems": True})
    return {
        "parameters": params,
        "patch": {
            "operationId": f"patch{k.kind}",
            "consumes": ["application/json-patch+json", "application/merge-patch+json",
                         "application/strategic-merge-patch+json"],
            "produces": ["application/json", "application/yaml"],
            "schemes": ["https"],
            "parameters": [{"name": p, "in": "query", "type": "string", "uniqueItems": True} for p in QUERY_PARAMS],
            "responses": {"200": {"description": "OK", "schema": {"$ref": _V2.prefix + F.KIND_STRUCTS[
                (k.group, k.version, k.kind)]}}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
        },
    }


@functools.cache
def v2_document() -> dict[str, Any]:
    """The ``/openapi/v2`` (Swagger 2.0) document: every served kind's schemas under ``definitions``.

    What kubectl 1.20–1.23 validates manifests and runs ``explain`` with, what
    every kubectl validates a ``kind: List`` with (field validation is asked of
    the server per kind, and ``List`` is no kind the server serves), and what
    ``kubectl apply`` reads patch strategies from.
    """
    F.load()
    kinds = [k for k in KINDS if (k.group, k.version, k.kind) in F.KIND_STRUCTS]
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": f"v{KUBE_MAJOR}.{KUBE_MINOR}.0"},
        "paths": {_item_path(k): _v2_path_item(k) for k in kinds},
        "definitions": _schemas(kinds, _V2),
    }


def v2_wants_protobuf(accept: str) -> bool:
    """Whether an Accept header asks for gnostic's protobuf form first (else JSON is answered)."""
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in gnostic.CONTENT_TYPES:
            return True
        if media in ("application/json", "application/*", "*/*"):
            return False
    return False


@functools.cache
def v2_body(protobuf: bool) -> tuple[bytes, str, str]:
    """The encoded ``/openapi/v2`` document, once per form: (body, content type, ETag)."""
    doc = v2_document()
    body = gnostic.encode(doc) if protobuf else json.dumps(doc, separators=(",", ":")).encode()
    return body, V2_PROTOBUF if protobuf else V2_JSON, f'"{_hash(body)}"'


CRD_LIST_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def crd_list() -> dict[str, Any]:
    """The (empty) list of CustomResourceDefinitions at :data:`CRD_LIST_PATH`.

    kmesh serves no CRDs, but kubectl lists them to tell a custom kind from a
    kind it has no schema for (a ``PodList`` file, say, whose kind has no PATCH
    operation); a 404 there fails its validation, where upstream says "none".
    """
    return {
        "kind": "CustomResourceDefinitionList",
        "apiVersion": "apiextensions.k8s.io/v1",
        "metadata": {"resourceVersion": "0"},
        "items": [],
    }
