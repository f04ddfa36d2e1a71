"""The routing table: host kinds, path kinds (segment-wise prefix), headers, query, method, list order."""

from __future__ import annotations

import pytest

from kmesh.l7.model import HeaderMatch, HostMatch, Match, PathMatch, QueryMatch, RouteEntry, Rule
from kmesh.l7.table import Request, RouteTable, host_matches, normalize_host


def entry(name: str, host: HostMatch = HostMatch(), **match: object) -> RouteEntry:
    return RouteEntry(host, Match(**match), Rule(name=name))  # type: ignore[arg-type]


def lookup(table: RouteTable, host: str, target: str, method: str = "GET",
           headers: tuple[tuple[bytes, bytes], ...] = ()) -> str | None:
    path, _, query = target.partition("?")
    found = table.lookup(normalize_host(host), Request(method, path, query, list(headers)))
    return found.rule.name if found else None


@pytest.mark.parametrize("raw,host", [
    ("Example.COM:8080", "example.com"), ("example.com.", "example.com"), ("[::1]:80", "[::1]"),
    ("", ""), ("a.b", "a.b"),
])
def test_normalize_host(raw: str, host: str) -> None:
    assert normalize_host(raw) == host


@pytest.mark.parametrize("match,host,ok", [
    (HostMatch("exact", "foo.example.com"), "foo.example.com", True),
    (HostMatch("exact", "foo.example.com"), "bar.example.com", False),
    (HostMatch("wildcard", "*.example.com"), "foo.example.com", True),
    (HostMatch("wildcard", "*.example.com"), "a.b.example.com", True),
    (HostMatch("wildcard", "*.example.com"), "example.com", False),
    (HostMatch("wildcard", "*.example.com"), "fooexample.com", False),
    (HostMatch("wildcard-one", "*.example.com"), "foo.example.com", True),
    (HostMatch("wildcard-one", "*.example.com"), "a.b.example.com", False),
    (HostMatch("wildcard-one", "*.example.com"), "example.com", False),
    (HostMatch("any"), "whatever", True),
    (HostMatch("any"), "", True),
])
def test_host_kinds(match: HostMatch, host: str, ok: bool) -> None:
    assert host_matches(match, host) is ok


@pytest.mark.parametrize("kind,value,path,ok", [
    ("Exact", "/foo", "/foo", True),
    ("Exact", "/foo", "/foo/", False),
    ("Exact", "/foo", "/foobar", False),
    ("PathPrefix", "/foo", "/foo", True),
    ("PathPrefix", "/foo", "/foo/", True),
    ("PathPrefix", "/foo", "/foo/bar", True),
    ("PathPrefix", "/foo", "/foobar", False),
    ("PathPrefix", "/foo/", "/foo", True),
    ("PathPrefix", "/foo/", "/foo/bar", True),
    ("PathPrefix", "/foo/", "/foobar", False),
    ("PathPrefix", "/", "/anything/at/all", True),
    ("PathPrefix", "/", "/", True),
    ("RegularExpression", "/v[0-9]+/.*", "/v12/x", True),
    ("RegularExpression", "/v[0-9]+", "/v12/x", False),  # must match the whole path
    ("RegularExpression", "/v[0-9]+", "/v1", True),
])
def test_path_kinds(kind: str, value: str, path: str, ok: bool) -> None:
    table = RouteTable([entry("r", path=PathMatch(kind, value))])  # type: ignore[arg-type]
    assert (lookup(table, "h", path + "?q=1") == "r") is ok


def test_headers_query_method_and_order() -> None:
    table = RouteTable([
        entry("exact-host", HostMatch("exact", "a.example.com"), path=PathMatch("Exact", "/x")),
        entry("hdr", headers=(HeaderMatch("Version", "two"),)),
        entry("hdr-re", headers=(HeaderMatch("x-multi", "1,2"), HeaderMatch("X-Re", "ab+c", "RegularExpression"))),
        entry("query", query=(QueryMatch("animal", "whale"),)),
        entry("query-re", query=(QueryMatch("n", "[0-9]+", "RegularExpression"),)),
        entry("post", method="POST"),
        entry("wild", HostMatch("wildcard", "*.example.com")),
        entry("prefix-v1", path=PathMatch("PathPrefix", "/v1")),
    ])
    assert lookup(table, "a.example.com", "/x") == "exact-host"
    assert lookup(table, "a.example.com", "/y") == "wild"
    assert lookup(table, "b.example.com", "/x", headers=((b"version", b"two"),)) == "hdr"
    assert lookup(table, "b.example.com", "/x", headers=((b"VERSION", b"three"),)) == "wild"
    assert lookup(table, "other", "/x", headers=((b"X-Multi", b"1"), (b"x-multi", b"2"), (b"x-re", b"abbbc"))) \
        == "hdr-re"
    assert lookup(table, "other", "/x", headers=((b"X-Multi", b"1"), (b"x-re", b"abbbc"))) is None
    assert lookup(table, "other", "/x?animal=whale&animal=dolphin") == "query"
    assert lookup(table, "other", "/x?animal=dolphin&animal=whale") is None  # the first value counts
    assert lookup(table, "other", "/x?n=42") == "query-re"
    assert lookup(table, "other", "/x?n=4x") is None
    assert lookup(table, "other", "/x", method="POST") == "post"
    assert lookup(table, "other", "/v1/a") == "prefix-v1"
    assert lookup(table, "other", "/v10") is None
    # the first matching entry wins even when a later one is more specific
    table = RouteTable([entry("broad"), entry("narrow", path=PathMatch("Exact", "/x"))])
    assert lookup(table, "h", "/x") == "broad"


def test_host_cache_is_bounded() -> None:
    table = RouteTable([entry("wild", HostMatch("wildcard", "*.example.com"))])
    for i in range(5000):
        assert lookup(table, f"h{i}.example.com", "/") == "wild"
    assert len(table._by_host) <= 4096
