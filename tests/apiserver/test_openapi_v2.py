"""The /openapi/v2 document itself: complete, self-consistent, and the same in JSON and in gnostic's protobuf."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kmesh.api import fieldschema as F
from kmesh.api import patch
from kmesh.api.kinds import KINDS
from kmesh.apiserver import gnostic, openapi
from tests.support.cluster import Cluster

PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"  # what client-go asks for


async def _get(cluster: Cluster, path: str, **headers: str) -> httpx.Response:
    pki = cluster.server.pki
    ctx = ssl.create_default_context(cadata=pki.ca_pem().decode())
    async with httpx.AsyncClient(base_url=cluster.server.url, verify=ctx, trust_env=False, timeout=30) as http:
        return await http.get(path, headers={"Authorization": f"Bearer {pki.token}", **headers})


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


async def test_json_document_has_every_kind_and_every_ref_resolves(cluster: Cluster) -> None:
    resp = await _get(cluster, "/openapi/v2")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    doc = resp.json()
    assert doc["swagger"] == "2.0" and doc["info"]["version"].startswith("v1.")
    defs = doc["definitions"]
    refs = list(_refs(doc))
    assert refs
    for ref in refs:
        assert ref.startswith("#/definitions/") and ref.removeprefix("#/definitions/") in defs, ref

    F.load()
    by_gvk = {(g["group"], g["version"], g["kind"]): name
              for name, d in defs.items() for g in d.get("x-kubernetes-group-version-kind", [])}
    patch_ops = {json.dumps(op["x-kubernetes-group-version-kind"], sort_keys=True): op
                 for item in doc["paths"].values() for verb, op in item.items() if verb == "patch"}
    for k in KINDS:
        gvk = (k.group, k.version, k.kind)
        assert by_gvk[gvk] == F.KIND_STRUCTS[gvk]
        op = patch_ops[json.dumps({"group": k.group, "version": k.version, "kind": k.kind}, sort_keys=True)]
        assert {"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": True} in op["parameters"]

    # The same trees as /openapi/v3, field for field.
    v3 = openapi.gv_document("", "v1")
    assert v3 is not None
    for name, schema in v3["components"]["schemas"].items():
        if "properties" in schema:
            assert defs[name]["properties"].keys() == schema["properties"].keys(), name
            assert defs[name].get("required") == schema.get("required"), name
    assert defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] == {"type": "string", "format": "int-or-string"}
    pod_list = defs["io.k8s.api.core.v1.PodList"]
    assert pod_list["x-kubernetes-group-version-kind"] == [{"group": "", "version": "v1", "kind": "PodList"}]
    assert pod_list["properties"]["items"]["items"] == {"$ref": "#/definitions/io.k8s.api.core.v1.Pod"}


async def test_no_custom_resource_definitions(cluster: Cluster) -> None:
    """kubectl lists CRDs before validating a kind without a PATCH operation; there are none."""
    resp = await _get(cluster, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    assert resp.status_code == 200
    assert resp.json()["kind"] == "CustomResourceDefinitionList" and resp.json()["items"] == []
    assert (await _get(cluster, "/apis/apiextensions.k8s.io/v1")).status_code == 404  # not in discovery


async def test_protobuf_form_decodes_to_the_json_document(cluster: Cluster) -> None:
    resp = await _get(cluster, "/openapi/v2", accept=PROTOBUF)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    assert resp.content[:5] == b"\x0a\x032.0"  # Document.swagger (field 1) = "2.0"
    assert gnostic.decode(resp.content) == openapi.v2_document() == (await _get(cluster, "/openapi/v2")).json()
    # JSON first in the Accept list gets JSON.
    resp = await _get(cluster, "/openapi/v2", accept=f"application/json, {PROTOBUF}")
    assert resp.headers["content-type"] == "application/json"


async def test_unchanged_document_is_not_sent_again(cluster: Cluster) -> None:
    first = await _get(cluster, "/openapi/v2", accept=PROTOBUF)
    etag = first.headers["etag"]
    again = await _get(cluster, "/openapi/v2", accept=PROTOBUF, **{"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    other = await _get(cluster, "/openapi/v2", **{"if-none-match": etag})  # the JSON form has its own tag
    assert other.status_code == 200 and other.headers["etag"] != etag
    assert openapi.v2_body(True) is openapi.v2_body(True)  # encoded once


def test_patch_strategies_are_the_servers() -> None:
    """The extensions kubectl builds an apply patch from say what kmesh.api.patch merges by."""
    v3 = openapi.gv_document("", "v1")
    assert v3 is not None
    for doc in (openapi.v2_document()["definitions"], v3["components"]["schemas"]):
        containers = doc["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
        assert containers["x-kubernetes-patch-merge-key"] == "name"
        assert containers["x-kubernetes-patch-strategy"] == "merge"
        volumes = doc["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"]
        assert volumes["x-kubernetes-patch-strategy"] == "merge,retainKeys"
        tolerations = doc["io.k8s.api.core.v1.PodSpec"]["properties"]["tolerations"]
        assert not any(k.startswith("x-kubernetes-patch") for k in tolerations)  # atomic, on both sides
        ports = doc["io.k8s.api.core.v1.Container"]["properties"]["ports"]
        assert ports["x-kubernetes-patch-merge-key"] == "containerPort"
        assert doc["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"]["x-kubernetes-patch-merge-key"] == "port"
    spec = patch.lookup("Deployment", "spec.template.spec.containers")
    assert isinstance(spec, patch.ListSpec) and spec.key == ("name",)


# ---------------------------------------------------------------- the encoder, byte for byte


def test_encoder_writes_gnostic_field_numbers() -> None:
    """Known answers worked out by hand from gnostic's OpenAPIv2.proto, independent of the decoder."""
    assert gnostic.encode({"swagger": "2.0"}) == b"\x0a\x032.0"
    # definitions (9) -> NamedSchema (1) {name (1), value (2) Schema {type (22) TypeItem {value (1)}}}
    schema = b"\xb2\x01\x08\x0a\x06string"  # field 22, length 8: TypeItem{1: "string"}
    named = b"\x0a\x01Q" + b"\x12" + bytes([len(schema)]) + schema
    definitions = b"\x0a" + bytes([len(named)]) + named
    assert gnostic.encode({"definitions": {"Q": {"type": "string"}}}) == b"\x4a" + bytes([len(definitions)]) + definitions
    # A vendor extension on a schema (31): NamedAny {name, Any {yaml (2)}}
    any_ = b"\x12\x04true"
    ext = b"\x0a\x03x-a" + b"\x12" + bytes([len(any_)]) + any_
    schema = b"\xfa\x01" + bytes([len(ext)]) + ext
    named = b"\x0a\x01Q" + b"\x12" + bytes([len(schema)]) + schema
    definitions = b"\x0a" + bytes([len(named)]) + named
    assert gnostic.encode({"definitions": {"Q": {"x-a": True}}}) == b"\x4a" + bytes([len(definitions)]) + definitions


def test_encoder_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(ValueError, match="bogus"):
        gnostic.encode({"swagger": "2.0", "bogus": 1})
    with pytest.raises(ValueError, match="parameter location"):
        gnostic.encode({"paths": {"/x": {"get": {"parameters": [{"name": "n", "in": "cookie"}]}}}})


def test_round_trip_of_the_rarer_shapes() -> None:
    doc = {
        "swagger": "2.0",
        "info": {"title": "t", "version": "1", "x-info": {"a": [1, 2]}},
        "paths": {
            "x-paths": "yes",
            "/p/{id}": {
                "parameters": [{"$ref": "#/parameters/id"}],
                "get": {
                    "parameters": [
                        {"name": "body", "in": "body", "required": True, "schema": {"$ref": "#/definitions/S"}},
                        {"name": "h", "in": "header", "type": "integer", "minimum": -3, "maximum": 2.5},
                        {"name": "f", "in": "formData", "type": "array", "items": {"type": "string"},
                         "collectionFormat": "csv", "enum": [["a"], ["b"]]},
                    ],
                    "responses": {"200": {"description": "ok", "schema": {"type": "file"},
                                          "headers": {"X-N": {"type": "integer", "default": 7}}},
                                  "404": {"$ref": "#/responses/nf"}},
                    "deprecated": True,
                },
            },
        },
        "definitions": {
            "S": {"properties": {"m": {"type": "object", "additionalProperties": False},
                                 "n": {"type": "object", "additionalProperties": {"type": "integer", "format": "int64"}},
                                 "t": {"type": ["string", "null"], "maxLength": 9, "default": "d"},
                                 "u": {"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
                                 "e": {"properties": {}}},
                  "required": ["m"], "allOf": [{"$ref": "#/definitions/S"}], "x-kubernetes-list": None},
        },
    }
    assert gnostic.decode(gnostic.encode(doc)) == doc
