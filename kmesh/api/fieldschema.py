"""The field tree of every served kind: what ``kubectl explain`` shows and what strict field validation checks.

The structs are registered by their OpenAPI names (``io.k8s.api.core.v1.PodSpec``)
in ``STRUCTS``; ``KIND_STRUCTS`` maps each served group/version/kind to its
top-level struct. The tables themselves live in ``kmesh.api.schemas``. A field's
type is one of the scalar names below, ``ListOf``/``MapOf`` of a type, or
``Ref`` to a struct. ``ANY`` marks a value kmesh does not model further: it is
accepted as it is, so a gap in the tables can never reject a valid object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

STRING = "string"
INT32 = "int32"
INT64 = "int64"
BOOL = "boolean"
NUMBER = "number"
QUANTITY = "quantity"            # resource.Quantity: a string or a number
INT_OR_STRING = "int-or-string"  # intstr.IntOrString
TIME = "time"                    # RFC 3339 string
BYTES = "byte"                   # base64 string
ANY = "any"                      # anything, not checked below this point
SCALARS = (STRING, INT32, INT64, BOOL, NUMBER, QUANTITY, INT_OR_STRING, TIME, BYTES, ANY)


@dataclass(frozen=True)
class ListOf:
    """A JSON array of ``item``."""

    item: Spec


@dataclass(frozen=True)
class MapOf:
    """A JSON object with free keys and ``value`` values (labels, annotations, resource lists)."""

    value: Spec


@dataclass(frozen=True)
class Ref:
    """A struct registered under its full OpenAPI name."""

    name: str


Spec = Union[str, ListOf, MapOf, Ref]


@dataclass(frozen=True)
class Struct:
    """A JSON object with known fields (and which of them are required)."""

    fields: dict[str, Spec]
    required: tuple[str, ...] = ()
    description: str = ""


META = "io.k8s.apimachinery.pkg.apis.meta.v1."
STRUCTS: dict[str, Struct] = {}
KIND_STRUCTS: dict[tuple[str, str, str], str] = {}


def struct(name: str, fields: dict[str, Spec], required: tuple[str, ...] = (), description: str = "") -> Ref:
    """Register struct ``name`` (full OpenAPI name) and return a ``Ref`` to it."""
    if name in STRUCTS:
        raise ValueError(f"struct {name} registered twice")
    for f in required:
        if f not in fields:
            raise ValueError(f"{name}: required field {f} is not a field")
    STRUCTS[name] = Struct(dict(fields), tuple(required), description)
    return Ref(name)


def refs(package: str) -> Callable[[str], Ref]:
    """A maker of references to the structs of ``package`` (``refs(CORE)("PodSpec")``)."""
    return lambda name: Ref(package + name)


def top_level(fields: dict[str, Spec]) -> dict[str, Spec]:
    """The fields of a kind's top-level struct: type meta, object meta, then ``fields``."""
    return {"apiVersion": STRING, "kind": STRING, "metadata": Ref(META + "ObjectMeta"), **fields}


def kind(group: str, version: str, kind_name: str, name: str) -> None:
    """Say that struct ``name`` is the top level of ``group/version, Kind=kind_name``."""
    KIND_STRUCTS[(group, version, kind_name)] = name


def unknown_fields(group: str, version: str, kind_name: str, obj: Any, *, prune: bool = False) -> list[str]:
    """Dotted paths of the fields in ``obj`` that its kind does not have (upstream's strict decoding).

    With ``prune`` they are also removed from ``obj``, as decoding into upstream's types drops them.
    """
    load()
    name = KIND_STRUCTS.get((group, version, kind_name))
    if name is None:
        return []
    out: list[str] = []
    _walk(Ref(name), obj, "", out, prune)
    return out


def _walk(spec: Spec, value: Any, path: str, out: list[str], prune: bool = False) -> None:
    if isinstance(spec, str) or value is None:
        return
    if isinstance(spec, ListOf):
        if isinstance(value, list):
            for i, item in enumerate(value):
                _walk(spec.item, item, f"{path}[{i}]", out, prune)
        return
    if isinstance(spec, MapOf):
        if isinstance(value, dict):
            for k, v in value.items():
                _walk(spec.value, v, f"{path}[{k}]" if path else k, out, prune)
        return
    st = STRUCTS[spec.name]
    if not isinstance(value, dict):
        return  # a type error is the validator's (or the decoder's) business, not an unknown field
    for k in list(value):
        sub = st.fields.get(k)
        where = f"{path}.{k}" if path else k
        if sub is None:
            out.append(where)
            if prune:
                del value[k]
        else:
            _walk(sub, value[k], where, out, prune)


_GO_SCALARS = {
    STRING: "string", INT32: "int32", INT64: "int64", BOOL: "bool", NUMBER: "float64",
    QUANTITY: "resource.Quantity", INT_OR_STRING: "intstr.IntOrString", TIME: "v1.Time", BYTES: "[]uint8",
    ANY: "interface {}",
}
_INT_RANGES = {INT32: (-(1 << 31), (1 << 31) - 1), INT64: (-(1 << 63), (1 << 63) - 1)}
QUANTITY_FORMAT = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


def go_type(spec: Spec) -> str:
    """The Go type of a field as Go's decoder names it in errors (``int32``, ``[]v1.Container``, ``map[string]string``)."""
    if isinstance(spec, str):
        return _GO_SCALARS[spec]
    if isinstance(spec, ListOf):
        return "[]" + go_type(spec.item)
    if isinstance(spec, MapOf):
        return "map[string]" + go_type(spec.value)
    parts = spec.name.split(".")
    return f"{parts[-2]}.{parts[-1]}"


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, in Go's words (``cannot unmarshal <kind> into ...``)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return "array"


def _number(value: Any) -> str:
    return "number " + (repr(value) if isinstance(value, float) else str(value))


def _mismatch(spec: Spec, value: Any) -> tuple[str, bool] | None:
    """What Go's decoder says of ``value`` in a field of ``spec``: (the JSON value's description, or a whole message
    of a type with its own unmarshaller; whether it is such a whole message), or None if it decodes."""
    if isinstance(spec, (Ref, MapOf)):
        return None if isinstance(value, dict) else (json_kind(value), False)
    if isinstance(spec, ListOf):
        return None if isinstance(value, list) else (json_kind(value), False)
    if spec == ANY:
        return None
    if spec == STRING:
        return None if isinstance(value, str) else (json_kind(value), False)
    if spec == BYTES:
        if not isinstance(value, str):
            return json_kind(value), False
        bad = base64_error(value)
        return None if bad is None else (f"illegal base64 data at input byte {bad}", True)
    if spec == BOOL:
        return None if isinstance(value, bool) else (json_kind(value), False)
    if spec in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return json_kind(value), False
        low, high = _INT_RANGES[spec]
        if isinstance(value, float) or not low <= value <= high:
            return _number(value), False
        return None
    if spec == NUMBER:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else (json_kind(value), False)
    if spec == QUANTITY:
        ok = isinstance(value, (str, int, float)) and not isinstance(value, bool)
        return None if ok else (QUANTITY_FORMAT, True)
    if spec == INT_OR_STRING:
        if isinstance(value, str):
            return None
        if isinstance(value, int) and not isinstance(value, bool) and -(1 << 31) <= value <= (1 << 31) - 1:
            return None
        what = _number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else json_kind(value)
        return f"json: cannot unmarshal {what} into Go value of type int32", True
    if spec == TIME:
        return None if isinstance(value, str) else (
            f"json: cannot unmarshal {json_kind(value)} into Go value of type string", True)
    return None


_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def base64_error(text: str) -> int | None:
    """Where Go's standard base64 decoder fails on ``text`` (the byte offset it reports), or None if it decodes.

    Go skips CR and LF; a quantum must be complete, padded with ``=`` only at the end.
    """
    chars = [(i, ch) for i, ch in enumerate(text) if ch not in "\r\n"]
    n = len(chars)
    for j, (i, ch) in enumerate(chars):
        if ch == "=":
            pad = n - j
            if j % 4 < 2 or pad > 2 or any(c != "=" for _, c in chars[j:]) or (j % 4 == 2 and pad != 2) or (
                    j % 4 == 3 and pad != 1):
                return i
            return None
        if ch not in _B64:
            return i
    if n % 4:
        return len(text) - (n % 4) if n % 4 == 1 else len(text)
    return None


def _scalar_ok(spec: str, value: Any) -> bool:
    """The fast path of ``_mismatch`` for the common scalars."""
    t = type(value)
    if spec == STRING:
        return t is str
    if spec == INT32:
        return t is int and -2147483648 <= value <= 2147483647
    if spec == INT64:
        return t is int and -9223372036854775808 <= value <= 9223372036854775807
    if spec == BOOL:
        return t is bool
    return _mismatch(spec, value) is None


def struct_decode_error(struct_name: str, obj: Any) -> str | None:
    """The error Go's JSON decoder gives decoding ``obj`` into struct ``struct_name``, or None if it decodes.

    The first value (in document order) whose JSON type does not fit its field's
    Go type, or an integer outside int32/int64, in Go's words: ``json: cannot
    unmarshal number 2147483648 into Go struct field DeploymentSpec.spec.replicas
    of type int32``. Unknown fields are not looked into (that is strict field
    validation's business), nulls always decode. No recursion: any depth is walked.
    """
    load()
    # (spec, value, trail): a trail is (parent trail, field name, owning struct) or None at the top.
    stack: list[tuple[Spec, Any, Any]] = [(Ref(struct_name), obj, None)]
    while stack:
        spec, value, trail = stack.pop()
        if type(spec) is str:
            if _scalar_ok(spec, value):
                continue
            return _decode_message(spec, value, trail)
        if _mismatch(spec, value) is not None:
            return _decode_message(spec, value, trail)
        if type(spec) is Ref:
            fields = STRUCTS[spec.name].fields
            name = spec.name.rsplit(".", 1)[-1]
            todo = []
            for k, v in value.items():
                sub = fields.get(k)
                if sub is None or v is None or sub == ANY:
                    continue
                if type(sub) is str and _scalar_ok(sub, v):
                    continue
                todo.append((sub, v, (trail, k, name)))
            stack.extend(reversed(todo))
        else:
            item = spec.item if type(spec) is ListOf else spec.value
            values = value if type(spec) is ListOf else list(value.values())
            if type(item) is str and all(v is None or _scalar_ok(item, v) for v in values):
                continue
            stack.extend((item, v, trail) for v in reversed(values) if v is not None)
    return None


def _decode_message(spec: Spec, value: Any, trail: Any) -> str:
    what, whole = _mismatch(spec, value) or ("value", False)
    if whole:
        return what
    if trail is None:
        return f"json: cannot unmarshal {what} into Go value of type {go_type(spec)}"
    owner = trail[2]
    path: list[str] = []
    while trail is not None:
        path.append(trail[1])
        trail = trail[0]
    return f"json: cannot unmarshal {what} into Go struct field {owner}.{'.'.join(reversed(path))} of type {go_type(spec)}"


def decode_error(group: str, version: str, kind_name: str, obj: Any) -> str | None:
    """``struct_decode_error`` for the top-level struct of a served kind (None for a kind without tables)."""
    load()
    name = KIND_STRUCTS.get((group, version, kind_name))
    return None if name is None else struct_decode_error(name, obj)


_loaded = False


def load() -> None:
    """Import the tables once (they register themselves)."""
    global _loaded
    if not _loaded:
        import kmesh.api.schemas  # noqa: F401

        _loaded = True
