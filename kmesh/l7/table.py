"""A listener's routing table compiled for lookup: host, path, header, query and method conditions.

The controllers hand over an ordered tuple of :class:`~kmesh.l7.model.RouteEntry`;
the first entry whose conditions all hold serves the request. Compiling turns
each condition into a small predicate once, and lookups remember which entries
a given host can reach (a bounded cache), so a request only runs the path and
header checks of the entries for its host.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl

from kmesh.l7.model import HostMatch, PathMatch, RouteEntry

HOST_CACHE_SIZE = 4096
"""How many distinct Host values a table remembers the candidate entries of."""


_normalized: dict[bytes | str, str] = {}


def normalize_host(raw: bytes | str | None) -> str:
    """The host a request names (Host header or authority): lower case, port and trailing dot dropped."""
    if not raw:
        return ""
    found = _normalized.get(raw)
    if found is None:
        found = _normalize(raw)
        if len(_normalized) >= HOST_CACHE_SIZE:
            _normalized.clear()
        _normalized[raw] = found
    return found


def _normalize(raw: bytes | str) -> str:
    host = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        host = host[: end + 1] if end > 0 else host
    else:
        colon = host.rfind(":")
        if colon >= 0:
            host = host[:colon]
    return host.rstrip(".")


def host_matches(match: HostMatch, host: str) -> bool:
    """Whether ``host`` (normalized) is one ``match`` serves."""
    kind = match.kind
    if kind == "any":
        return True
    if kind == "exact":
        return host == match.value.lower().rstrip(".")
    suffix = match.value.lower().rstrip(".")
    if suffix.startswith("*"):
        suffix = suffix[1:]  # ".example.com"
    if not host.endswith(suffix) or len(host) <= len(suffix):
        return False
    head = host[: -len(suffix)]
    if kind == "wildcard-one":
        return "." not in head
    return True


def path_predicate(match: PathMatch) -> Callable[[str], bool]:
    """A function telling whether a request path (no query) satisfies ``match``."""
    if match.kind == "Exact":
        value = match.value
        return lambda path: path == value
    if match.kind == "RegularExpression":
        rx = re.compile(match.value)
        return lambda path: rx.fullmatch(path) is not None
    prefix = match.value.rstrip("/")
    if not prefix:
        return lambda path: True
    slashed = prefix + "/"
    return lambda path: path == prefix or path.startswith(slashed)


def _value_predicate(kind: str, value: str) -> Callable[[str], bool]:
    if kind == "RegularExpression":
        rx = re.compile(value)
        return lambda v: rx.fullmatch(v) is not None
    return lambda v: v == value


class Request:
    """What matching looks at, with headers and query parsed only when a condition needs them."""

    __slots__ = ("method", "path", "query", "raw_headers", "_headers", "_query")

    def __init__(self, method: str, path: str, query: str, raw_headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.raw_headers = raw_headers
        self._headers: dict[str, str] | None = None
        self._query: dict[str, str] | None = None

    def header(self, name: str) -> str | None:
        """A header's values joined with ``,`` (name case-insensitive), or None when absent."""
        if self._headers is None:
            joined: dict[str, str] = {}
            for k, v in self.raw_headers:
                key = k.decode("latin-1").lower()
                val = v.decode("latin-1")
                joined[key] = joined[key] + "," + val if key in joined else val
            self._headers = joined
        return self._headers.get(name.lower())

    def query_param(self, name: str) -> str | None:
        """The first value of a query parameter, or None when absent."""
        if self._query is None:
            params: dict[str, str] = {}
            for k, v in parse_qsl(self.query, keep_blank_values=True):
                params.setdefault(k, v)
            self._query = params
        return self._query.get(name)


class _Compiled:
    __slots__ = ("entry", "host", "path", "headers", "query", "method")

    def __init__(self, entry: RouteEntry) -> None:
        self.entry = entry
        self.host = entry.host
        m = entry.match
        self.path = path_predicate(m.path)
        self.headers = tuple((h.name.lower(), _value_predicate(h.kind, h.value)) for h in m.headers)
        self.query = tuple((q.name, _value_predicate(q.kind, q.value)) for q in m.query)
        self.method = m.method.upper() if m.method else None

    def matches(self, req: Request) -> bool:
        if self.method is not None and req.method != self.method:
            return False
        if not self.path(req.path):
            return False
        for name, pred in self.headers:
            value = req.header(name)
            if value is None or not pred(value):
                return False
        for name, pred in self.query:
            value = req.query_param(name)
            if value is None or not pred(value):
                return False
        return True


class RouteTable:
    """An ordered, compiled list of route entries; ``lookup`` returns the first entry a request matches."""

    def __init__(self, entries: Sequence[RouteEntry]) -> None:
        self.entries = tuple(entries)
        self._compiled = [_Compiled(e) for e in self.entries]
        self._by_host: dict[str, list[_Compiled]] = {}

    def _candidates(self, host: str) -> list[_Compiled]:
        found = self._by_host.get(host)
        if found is None:
            found = [c for c in self._compiled if host_matches(c.host, host)]
            if len(self._by_host) >= HOST_CACHE_SIZE:
                self._by_host.clear()
            self._by_host[host] = found
        return found

    def lookup(self, host: str, req: Request) -> RouteEntry | None:
        """The first entry serving ``host`` whose match holds for ``req``; None means 404."""
        for c in self._candidates(host):
            if c.matches(req):
                return c.entry
        return None
