"""OpenAPI v2 (Swagger 2.0) documents in gnostic's protobuf form, which kubectl asks ``/openapi/v2`` for.

client-go fetches ``/openapi/v2`` with ``Accept:
application/com.github.proto-openapi.spec.v2@v1.0+protobuf`` and unmarshals the
body as gnostic's ``openapi.v2.Document`` message; kubectl then reads the
schemas for client-side validation (every kubectl before field validation moved
to the server, and any kubectl for a ``kind: List``), for the strategic merge
patch of ``kubectl apply`` and for ``kubectl explain``.

:func:`encode` turns the JSON document into that message and :func:`decode`
turns it back (for tests and tools). Both are driven by :data:`SPEC`, written
from gnostic's ``openapiv2/OpenAPIv2.proto``. Where the JSON holds a free value
(``default``, ``enum``, ``example`` and every ``x-`` vendor extension) gnostic
keeps its YAML text in ``Any.yaml``; JSON text is YAML, so that is what is
stored. The table covers Swagger 2.0 except security requirements and
definitions, which kmesh does not publish (its one bearer token is in the
kubeconfig); a key the table does not know raises ``ValueError`` rather than
being dropped. As in proto3, ``false``, ``0`` and ``""`` are not written, so
they decode as absent.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import yaml

from kmesh.api.protobuf import wire_fields

__all__ = ["CONTENT_TYPES", "SPEC", "decode", "encode"]

CONTENT_TYPES = (
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
)
"""The media types of the protobuf form: client-go asks for the first; Go's MIME parser refuses its "@",
so a response is labelled with the second, as upstream labels it."""

# One entry per message: "N jsonName type, ...". Types:
#   s string   b bool   d double   i int64   a free value (gnostic Any, YAML text in field 2)
#   x vendor extensions: every "x-..." key of the JSON object, as repeated NamedAny
#   [T] every other key of the JSON object, as repeated Named<T> {1 name, 2 value}
#   {T} a wrapper message whose field 1 is [T] (gnostic's Definitions, Properties, ...)
#   a message name; a trailing * marks a repeated field.
# Messages starting with "@" are oneofs: the alternative is chosen in code (see _ONEOFS).
# A JSON name "-" means the field has no key of its own (the x / [T] slots).
SPEC: dict[str, str] = {
    "Document": (
        "1 swagger s, 2 info Info, 3 host s, 4 basePath s, 5 schemes s*, 6 consumes s*,"
        " 7 produces s*, 8 paths Paths, 9 definitions {Schema}, 10 parameters {@Parameter},"
        " 11 responses {Response}, 14 tags Tag*, 15 externalDocs ExternalDocs, 16 - x"
    ),
    "Info": (
        "1 title s, 2 version s, 3 description s, 4 termsOfService s, 5 contact Contact,"
        " 6 license License, 7 - x"
    ),
    "Contact": "1 name s, 2 url s, 3 email s, 4 - x",
    "License": "1 name s, 2 url s, 3 - x",
    "ExternalDocs": "1 description s, 2 url s, 3 - x",
    "Tag": "1 name s, 2 description s, 3 externalDocs ExternalDocs, 4 - x",
    "Paths": "1 - x, 2 - [PathItem]",
    "PathItem": (
        "1 $ref s, 2 get Operation, 3 put Operation, 4 post Operation, 5 delete Operation,"
        " 6 options Operation, 7 head Operation, 8 patch Operation, 9 parameters @ParametersItem*,"
        " 10 - x"
    ),
    "Operation": (
        "1 tags s*, 2 summary s, 3 description s, 4 externalDocs ExternalDocs, 5 operationId s,"
        " 6 produces s*, 7 consumes s*, 8 parameters @ParametersItem*, 9 responses Responses,"
        " 10 schemes s*, 11 deprecated b, 13 - x"
    ),
    "JsonReference": "1 $ref s, 2 description s",
    "BodyParameter": "1 description s, 2 name s, 3 in s, 4 required b, 5 schema Schema, 6 - x",
    "QueryParameterSubSchema": (
        "1 required b, 2 in s, 3 description s, 4 name s, 5 allowEmptyValue b, 6 type s, 7 format s,"
        " 8 items PrimitivesItems, 9 collectionFormat s, 10 default a, 11 maximum d,"
        " 12 exclusiveMaximum b, 13 minimum d, 14 exclusiveMinimum b, 15 maxLength i, 16 minLength i,"
        " 17 pattern s, 18 maxItems i, 19 minItems i, 20 uniqueItems b, 21 enum a*, 22 multipleOf d,"
        " 23 - x"
    ),
    "PathParameterSubSchema": (
        "1 required b, 2 in s, 3 description s, 4 name s, 5 type s, 6 format s,"
        " 7 items PrimitivesItems, 8 collectionFormat s, 9 default a, 10 maximum d,"
        " 11 exclusiveMaximum b, 12 minimum d, 13 exclusiveMinimum b, 14 maxLength i, 15 minLength i,"
        " 16 pattern s, 17 maxItems i, 18 minItems i, 19 uniqueItems b, 20 enum a*, 21 multipleOf d,"
        " 22 - x"
    ),
    "PrimitivesItems": (
        "1 type s, 2 format s, 3 items PrimitivesItems, 4 collectionFormat s, 5 default a,"
        " 6 maximum d, 7 exclusiveMaximum b, 8 minimum d, 9 exclusiveMinimum b, 10 maxLength i,"
        " 11 minLength i, 12 pattern s, 13 maxItems i, 14 minItems i, 15 uniqueItems b, 16 enum a*,"
        " 17 multipleOf d, 18 - x"
    ),
    "Header": (
        "1 type s, 2 format s, 3 items PrimitivesItems, 4 collectionFormat s, 5 default a,"
        " 6 maximum d, 7 exclusiveMaximum b, 8 minimum d, 9 exclusiveMinimum b, 10 maxLength i,"
        " 11 minLength i, 12 pattern s, 13 maxItems i, 14 minItems i, 15 uniqueItems b, 16 enum a*,"
        " 17 multipleOf d, 18 description s, 19 - x"
    ),
    "Responses": "1 - [@ResponseValue], 2 - x",
    "Response": (
        "1 description s, 2 schema @SchemaItem, 3 headers {Header}, 4 examples {a}, 5 - x"
    ),
    "Schema": (
        "1 $ref s, 2 format s, 3 title s, 4 description s, 5 default a, 6 multipleOf d, 7 maximum d,"
        " 8 exclusiveMaximum b, 9 minimum d, 10 exclusiveMinimum b, 11 maxLength i, 12 minLength i,"
        " 13 pattern s, 14 maxItems i, 15 minItems i, 16 uniqueItems b, 17 maxProperties i,"
        " 18 minProperties i, 19 required s*, 20 enum a*, 21 additionalProperties @AdditionalPropertiesItem,"
        " 22 type @TypeItem, 23 items @ItemsItem, 24 allOf Schema*, 25 properties {Schema},"
        " 26 discriminator s, 27 readOnly b, 28 xml Xml, 29 externalDocs ExternalDocs, 30 example a,"
        " 31 - x"
    ),
    "FileSchema": (
        "1 format s, 2 title s, 3 description s, 4 default a, 5 required s*, 6 type s, 7 readOnly b,"
        " 8 externalDocs ExternalDocs, 9 example a, 10 - x"
    ),
    "Xml": "1 name s, 2 namespace s, 3 prefix s, 4 attribute b, 5 wrapped b, 6 - x",
}

# NonBodyParameter's alternatives, by the parameter's "in" (header and path share a
# layout, as do query and formData).
_PARAM_SUBSCHEMAS = {"header": 1, "formData": 2, "query": 3, "path": 4}


class Field(NamedTuple):
    """One field of a message: its number, JSON name and type."""

    number: int
    name: str
    kind: str  # s b d i a x, "[T]", "{T}", or a message name
    repeated: bool


def _parse(spec: dict[str, str]) -> dict[str, list[Field]]:
    table: dict[str, list[Field]] = {}
    for message, text in spec.items():
        fields: list[Field] = []
        for item in text.split(","):
            num, name, kind = item.split()
            repeated = kind.endswith("*")
            fields.append(Field(int(num), name, kind.rstrip("*"), repeated))
        if len({f.number for f in fields}) != len(fields):
            raise AssertionError(f"{message}: a field number twice")
        table[message] = fields
    return table


MESSAGES = _parse(SPEC)

# ---------------------------------------------------------------- encoding


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s are ten bytes of two's complement
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


def _any(value: Any) -> bytes:
    """gnostic's ``Any`` with the value's YAML text (JSON, which YAML parsers read) in field 2."""
    return _bytes(2, json.dumps(value, sort_keys=True).encode())


def _named_fields(number: int, kind: str, items: list[tuple[str, Any]], where: str) -> bytes:
    out = bytearray()
    for name, value in items:
        entry = _bytes(1, name.encode()) + _bytes(2, _value(kind, value, f"{where}.{name}"))
        out += _bytes(number, entry)
    return bytes(out)


def _value(kind: str, value: Any, where: str) -> bytes:
    """The payload of one length-delimited value of ``kind`` (a message, a string or an Any)."""
    if kind == "s":
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value.encode()
    if kind == "a":
        return _any(value)
    if kind.startswith("@"):
        return _ONEOFS[kind][0](value, where)
    if kind.startswith("{"):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {value!r}")
        return _named_fields(1, kind[1:-1], list(value.items()), where)
    return _message(kind, value, where)


def _message(message: str, obj: Any, where: str) -> bytes:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: {message} must be an object, got {obj!r}")
    fields = MESSAGES[message]
    by_name = {f.name: f for f in fields if f.name != "-"}
    ext = next((f for f in fields if f.kind == "x"), None)
    rest = next((f for f in fields if f.kind.startswith("[")), None)
    out = bytearray()
    for f in fields:
        if f.name == "-" or f.name not in obj:
            continue
        value = obj[f.name]
        at = f"{where}.{f.name}"
        values = value if f.repeated else [value]
        if f.repeated and not isinstance(value, list):
            raise ValueError(f"{at}: expected a list, got {value!r}")
        for v in values:
            if f.kind == "b":
                if not isinstance(v, bool):
                    raise ValueError(f"{at}: expected a boolean, got {v!r}")
                if v:
                    out += _tag(f.number, 0) + _varint(1)
            elif f.kind == "i":
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ValueError(f"{at}: expected an integer, got {v!r}")
                if v:
                    out += _tag(f.number, 0) + _varint(v)
            elif f.kind == "d":
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError(f"{at}: expected a number, got {v!r}")
                if v:
                    out += _tag(f.number, 1) + struct.pack("<d", float(v))
            elif f.kind == "s" and v == "" and not f.repeated:
                continue  # proto3 does not write an empty string
            else:
                out += _bytes(f.number, _value(f.kind, v, at))
    extras = [(k, v) for k, v in obj.items() if k not in by_name]
    if ext is not None:
        out += _named_fields(ext.number, "a", [(k, v) for k, v in extras if k.startswith("x-")], where)
        extras = [(k, v) for k, v in extras if not k.startswith("x-")]
    if rest is not None:
        out += _named_fields(rest.number, rest.kind[1:-1], extras, where)
        extras = []
    if extras:
        raise ValueError(f"{where}: {message} has no field {extras[0][0]!r}")
    return bytes(out)


def _enc_parameters_item(p: Any, where: str) -> bytes:
    if isinstance(p, dict) and "$ref" in p:
        return _bytes(2, _message("JsonReference", p, where))
    return _bytes(1, _enc_parameter(p, where))


def _enc_parameter(p: Any, where: str) -> bytes:
    if not isinstance(p, dict):
        raise ValueError(f"{where}: a parameter must be an object, got {p!r}")
    where_in = p.get("in")
    if where_in == "body":
        return _bytes(1, _message("BodyParameter", p, where))
    if where_in not in _PARAM_SUBSCHEMAS:
        raise ValueError(f"{where}: parameter location {where_in!r} is not one of Swagger's")
    sub = "QueryParameterSubSchema" if where_in in ("query", "formData") else "PathParameterSubSchema"
    return _bytes(2, _bytes(_PARAM_SUBSCHEMAS[where_in], _message(sub, p, where)))


def _enc_response_value(r: Any, where: str) -> bytes:
    if isinstance(r, dict) and "$ref" in r:
        return _bytes(2, _message("JsonReference", r, where))
    return _bytes(1, _message("Response", r, where))


def _enc_schema_item(s: Any, where: str) -> bytes:
    if isinstance(s, dict) and s.get("type") == "file":
        return _bytes(2, _message("FileSchema", s, where))
    return _bytes(1, _message("Schema", s, where))


def _enc_additional(v: Any, where: str) -> bytes:
    if isinstance(v, bool):
        return _tag(2, 0) + _varint(int(v))
    return _bytes(1, _message("Schema", v, where))


def _enc_type(v: Any, where: str) -> bytes:
    names = [v] if isinstance(v, str) else v
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{where}: type must be a string or a list of strings, got {v!r}")
    return b"".join(_bytes(1, n.encode()) for n in names)


def _enc_items(v: Any, where: str) -> bytes:
    schemas = v if isinstance(v, list) else [v]
    return b"".join(_bytes(1, _message("Schema", s, where)) for s in schemas)


# ---------------------------------------------------------------- decoding


def _dec_any(data: bytes) -> Any:
    for number, _, value in wire_fields(data):
        if number == 2:
            return yaml.safe_load(value.decode())
    return None


def _dec_named(kind: str, data: bytes) -> tuple[str, Any]:
    name, value = "", b""
    for number, _, raw in wire_fields(data):
        if number == 1:
            name = raw.decode()
        elif number == 2:
            value = raw
    return name, _dec_value(kind, value)


def _dec_value(kind: str, data: bytes) -> Any:
    if kind == "s":
        return data.decode()
    if kind == "a":
        return _dec_any(data)
    if kind.startswith("@"):
        return _ONEOFS[kind][1](data)
    if kind.startswith("{"):
        return dict(_dec_named(kind[1:-1], raw) for number, _, raw in wire_fields(data) if number == 1)
    return _dec_message(kind, data)


def _dec_message(message: str, data: bytes) -> dict[str, Any]:
    fields = {f.number: f for f in MESSAGES[message]}
    out: dict[str, Any] = {}
    for number, _, raw in wire_fields(data):
        f = fields.get(number)
        if f is None:
            raise ValueError(f"{message}: unknown field {number}")
        if f.kind == "x":
            out.update([_dec_named("a", raw)])
            continue
        if f.kind.startswith("["):
            out.update([_dec_named(f.kind[1:-1], raw)])
            continue
        if f.kind == "b":
            value: Any = bool(raw)
        elif f.kind == "i":
            value = raw - (1 << 64) if raw >= 1 << 63 else raw
        elif f.kind == "d":
            value = struct.unpack("<d", raw.to_bytes(8, "little"))[0]
        else:
            value = _dec_value(f.kind, raw)
        if f.repeated:
            out.setdefault(f.name, []).append(value)
        else:
            out[f.name] = value
    return out


def _only(data: bytes) -> tuple[int, bytes]:
    """The one field set in a oneof message."""
    found = [(number, raw) for number, _, raw in wire_fields(data)]
    if len(found) != 1:
        raise ValueError(f"a oneof with {len(found)} fields set")
    return found[0]


def _dec_parameters_item(data: bytes) -> Any:
    number, raw = _only(data)
    return _dec_message("JsonReference", raw) if number == 2 else _dec_parameter(raw)


def _dec_parameter(data: bytes) -> Any:
    number, raw = _only(data)
    if number == 1:
        return _dec_message("BodyParameter", raw)
    where, sub = _only(raw)
    return _dec_message("QueryParameterSubSchema" if where in (2, 3) else "PathParameterSubSchema", sub)


def _dec_response_value(data: bytes) -> Any:
    number, raw = _only(data)
    return _dec_message("JsonReference" if number == 2 else "Response", raw)


def _dec_schema_item(data: bytes) -> Any:
    number, raw = _only(data)
    return _dec_message("FileSchema" if number == 2 else "Schema", raw)


def _dec_additional(data: bytes) -> Any:
    number, raw = _only(data)
    return bool(raw) if number == 2 else _dec_message("Schema", raw)


def _dec_type(data: bytes) -> Any:
    names = [raw.decode() for _, _, raw in wire_fields(data)]
    return names[0] if len(names) == 1 else names


def _dec_items(data: bytes) -> Any:
    schemas = [_dec_message("Schema", raw) for _, _, raw in wire_fields(data)]
    return schemas[0] if len(schemas) == 1 else schemas


_ONEOFS: dict[str, tuple[Callable[[Any, str], bytes], Callable[[bytes], Any]]] = {
    "@ParametersItem": (_enc_parameters_item, _dec_parameters_item),
    "@Parameter": (_enc_parameter, _dec_parameter),
    "@ResponseValue": (_enc_response_value, _dec_response_value),
    "@SchemaItem": (_enc_schema_item, _dec_schema_item),
    "@AdditionalPropertiesItem": (_enc_additional, _dec_additional),
    "@TypeItem": (_enc_type, _dec_type),
    "@ItemsItem": (_enc_items, _dec_items),
}


def encode(doc: dict[str, Any]) -> bytes:
    """The gnostic ``openapi.v2.Document`` message of a Swagger 2.0 JSON document."""
    return _message("Document", doc, "$")


def decode(data: bytes) -> dict[str, Any]:
    """The Swagger 2.0 JSON document of a gnostic ``openapi.v2.Document`` message (inverse of :func:`encode`)."""
    return _dec_message("Document", data)
