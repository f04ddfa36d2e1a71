"""Decoding request bodies (JSON, YAML) into wire dicts, with every bound kube-apiserver has.

kube-apiserver decodes a body with Go's JSON decoder (``sigs.k8s.io/json``) or, for
YAML, with go-yaml v2 behind ``sigs.k8s.io/yaml``. What those do with hostile input
is what the API answers, and a Python decoder left alone does worse (a
``RecursionError`` on deep nesting, an ``inf`` from ``1e400``, a lone surrogate that
later fails to encode, an alias bomb that expands to gigabytes when encoded).
Here, before and while decoding:

* nesting is bounded by ``MAX_DEPTH`` levels, counted without recursion on the raw
  text (JSON) or on the parser's events (YAML). Go's JSON decoder stops at 10,000
  levels and go-yaml too; kmesh stops at 100, far deeper than any object it serves
  (the deepest kind, a Deployment, is 14 levels deep; managedFields add a few) and
  shallow enough that nothing downstream (copies, patches, validation) can recurse
  past Python's limit. The refusal uses upstream's words;
* YAML aliases may not expand beyond go-yaml's ratio (``yaml: document contains
  excessive aliasing``, go-yaml's fix for CVE-2019-11253);
* invalid UTF-8 and lone UTF-16 surrogates (``"\\ud800"``) become U+FFFD, as Go's
  decoder makes them; ``NaN``/``Infinity`` are not JSON and numbers beyond float64
  are refused, as Go refuses them;
* YAML values that are not JSON (timestamps, sets, binary) come out as go-yaml gives
  them to ``sigs.k8s.io/yaml``: strings and maps.

The size bounds (``MAX_OBJECT_BYTES``, the JSON patch limits) live here too, so the
registry checks a patched or expanded object against the same limit as a body.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

import yaml

MAX_DEPTH = 100
"""How deeply a decoded document may nest (objects and arrays)."""

MAX_OBJECT_BYTES = 3 * 1024 * 1024
"""kube-apiserver's ``MaxRequestBodyBytes``: the largest body, and here also the largest object to store."""

MAX_JSON_PATCH_OPERATIONS = 10_000
"""kube-apiserver's ``maxJSONPatchOperations``."""

MAX_JSON_PATCH_COPY_BYTES = 3 * 1024 * 1024
"""kube-apiserver's ``JSONPatchMaxCopyBytes``: what the ``copy`` operations of one patch may add in total."""


class DecodeError(ValueError):
    """A body that cannot be decoded; the message is the decoder's (upstream's words where it has them)."""


# ---------------------------------------------------------------- JSON

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_ESCAPES = re.compile(
    r"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|(\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
)


def json_depth(data: bytes) -> tuple[int, str]:
    """How deeply JSON ``data`` nests (strings skipped), and the bracket that first went too deep; no recursion."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS).decode("ascii")
    opened = brackets.count("[") + brackets.count("{")
    if opened <= MAX_DEPTH:
        return opened, ""
    steps = accumulate(map(_STEP.__getitem__, brackets))
    deepest = max(steps, default=0)
    if deepest <= MAX_DEPTH:
        return deepest, ""
    at = next(i for i, depth in enumerate(accumulate(map(_STEP.__getitem__, brackets))) if depth > MAX_DEPTH)
    return deepest, brackets[at]


def _replace_lone_surrogates(text: str) -> str:
    """``\\ud800`` escapes without their pair become ``\\ufffd``, as Go's decoder decodes them."""
    if not _MAYBE_SURROGATE.search(text):
        return text
    return _ESCAPES.sub(lambda m: "\\ufffd" if m.group(1) else m.group(0), text)


def _constant(name: str) -> Any:
    raise DecodeError(f"invalid character '{name[0] if name[0] != '-' else name[1]}' looking for beginning of value")


def _float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise DecodeError(f"json: cannot unmarshal number {literal} into Go value of type float64")
    return value


_DECODER = json.JSONDecoder(parse_float=_float, parse_constant=_constant)


def loads_json(data: bytes | str) -> Any:
    """Decode a JSON document with Go's decoder's bounds and replacements; ``DecodeError`` if it cannot be."""
    if isinstance(data, str):
        text, raw = data, data.encode("utf-8", errors="surrogatepass")
    else:
        raw = bytes(data)
        text = raw.decode("utf-8", errors="replace")
    depth, bracket = json_depth(raw)
    if depth > MAX_DEPTH:
        raise DecodeError(f"invalid character '{bracket}' exceeded max depth")
    text = _replace_lone_surrogates(text)
    try:
        return _DECODER.decode(text)
    except DecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, an int of more than 4300 digits
        raise DecodeError(str(exc)) from None


def encoded_size(obj: Any) -> int:
    """The size in bytes of ``obj`` encoded as compact JSON: what is checked against ``MAX_OBJECT_BYTES``."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8", errors="surrogatepass"))


def check_depth(obj: Any, limit: int = MAX_DEPTH) -> None:
    """``DecodeError`` if an already decoded value (e.g. from protobuf) nests deeper than ``limit``; no recursion."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            raise DecodeError(f"invalid character '{'{' if isinstance(value, dict) else '['}' exceeded max depth")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


# ---------------------------------------------------------------- YAML

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """YAML 1.1 as go-yaml v2 hands it to ``sigs.k8s.io/yaml``: timestamps stay strings, sets are maps."""


def _as_text(loader: Any, node: yaml.ScalarNode) -> str:
    return str(node.value)


def _binary(loader: Any, node: yaml.ScalarNode) -> str:
    raw = loader.construct_yaml_binary(node)
    return raw.decode("utf-8", errors="replace")


def _set(loader: Any, node: yaml.MappingNode) -> Any:
    data: dict[Any, Any] = {}
    yield data
    data.update(loader.construct_mapping(node))


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _as_text)
_Loader.add_constructor("tag:yaml.org,2002:binary", _binary)
_Loader.add_constructor("tag:yaml.org,2002:set", _set)


def _allowed_alias_ratio(decoded: int) -> float:
    """go-yaml's ``allowedAliasRatio``: 99 % of the decoded nodes may come from aliases, down to 10 % for huge documents."""
    low, high = 400_000, 4_000_000
    if decoded <= low:
        return 0.99
    if decoded >= high:
        return 0.10
    return 0.99 - 0.89 * (decoded - low) / (high - low)


def _check_yaml_events(data: bytes | str) -> bool:
    """Walk the parser's events (no composing, no recursion): depth and alias expansion within bounds.

    Counts nodes as go-yaml's decoder does, each alias as the nodes it expands to,
    and fails where go-yaml fails. Returns whether the document has aliases.
    """
    depth = decoded = aliased = 0
    sizes: dict[str, int] = {}
    open_nodes: list[tuple[str | None, int]] = []
    for event in yaml.parse(data, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise DecodeError(f"yaml: exceeded max depth of {MAX_DEPTH}")
            decoded += 1
            open_nodes.append((event.anchor, decoded - 1))
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            anchor, start = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = decoded - start
        elif isinstance(event, yaml.ScalarEvent):
            decoded += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in {a for a, _ in open_nodes}:
                raise DecodeError(f"yaml: anchor '{event.anchor}' value contains itself")
            if event.anchor not in sizes:
                raise DecodeError(f"yaml: unknown anchor '{event.anchor}' referenced")
            decoded += sizes[event.anchor]
            aliased += sizes[event.anchor]
        else:
            continue
        if aliased > 100 and decoded > 1000 and aliased / decoded > _allowed_alias_ratio(decoded):
            raise DecodeError("yaml: document contains excessive aliasing")
    return aliased > 0


def loads_yaml(data: bytes | str) -> Any:
    """Decode one YAML document to JSON values with go-yaml's bounds; ``DecodeError`` if it cannot be.

    The result is what the JSON of the same document decodes to: no shared
    (aliased) sub-objects, no values JSON does not have.
    """
    try:
        has_aliases = _check_yaml_events(data)
        obj = yaml.load(data, Loader=_Loader)  # a safe loader (SafeLoader's constructors)
    except (yaml.YAMLError, ValueError, TypeError) as exc:  # ValueError: an int of more than 4300 digits
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"yaml: {exc}") from None
    try:
        text = json.dumps(obj, ensure_ascii=True, allow_nan=False)
    except ValueError:  # .inf/.nan: Go's JSON encoder refuses them as well
        raise DecodeError("json: unsupported value: a YAML .inf or .nan (JSON has no such number)") from None
    except TypeError as exc:
        raise DecodeError(f"yaml: {exc}") from None
    if has_aliases or _MAYBE_SURROGATE.search(text):
        return loads_json(text)
    return obj


# ---------------------------------------------------------------- messages


def summarize(data: bytes, max_length: int = 30) -> str:
    """apimachinery's ``summarizeData``: the start of a body as kube-apiserver quotes it in decoding errors."""
    if not data:
        return "<empty>"
    if data[:1] == b"{":
        text = data[:max_length].decode("utf-8", errors="replace")
        return text + " ..." if len(data) > max_length else text
    hexed = data[:max_length].hex()
    return hexed + " ..." if len(data) > max_length else hexed
