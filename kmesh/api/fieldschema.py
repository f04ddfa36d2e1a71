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


_loaded = False


def load() -> None:
    """Import the tables once (they register themselves)."""
    global _loaded
    if not _loaded:
        import kmesh.api.schemas  # noqa: F401

        _loaded = True
