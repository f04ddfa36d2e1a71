"""A minimal OpenAPI v3 index: enough for kubectl to see that the server validates fields itself.

kubectl asks ``/openapi/v3`` whether each kind's PATCH operation takes the
``fieldValidation`` query parameter; if it does, kubectl leaves validation to
the server instead of downloading schemas. kmesh publishes exactly that:
one path per kind with its group/version/kind and the parameter.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

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


def gv_document(group: str, version: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group/version, or None if not served."""
    kinds = [k for k in KINDS if k.group == group and k.version == version]
    if not kinds:
        return None
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": f"v{KUBE_MAJOR}.{KUBE_MINOR}.0"},
        "paths": {_item_path(k): {"patch": _operation(k)} for k in kinds},
        "components": {"schemas": {}},
    }


def _hash(doc: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()


def index() -> dict[str, Any]:
    """The ``/openapi/v3`` root: where each group/version's document is."""
    paths: dict[str, Any] = {}
    for group, version in (("", "v1"), *GROUPS):
        doc = gv_document(group, version)
        assert doc is not None
        gv = _gv_path(group, version)
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={_hash(doc)}"}
    return {"paths": paths}
