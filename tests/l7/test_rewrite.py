"""Path rewrites, redirect Locations (the Gateway API's port rules) and header modification."""

from __future__ import annotations

import pytest

from kmesh.l7.model import HeaderModifier, PathMatch, PathModifier, RequestRedirect
from kmesh.l7.rewrite import modify_headers, redirect_location, rewrite_path

PREFIX = PathMatch("PathPrefix", "/prefix/one")


@pytest.mark.parametrize("path,value,out", [
    ("/prefix/one/two", "/one", "/one/two"),
    ("/prefix/one", "/one", "/one"),
    ("/prefix/one/", "/one", "/one/"),
    ("/prefix/one/two", "/", "/two"),
    ("/prefix/one", "/", "/"),
    ("/prefix/one/two", "/new/", "/new/two"),
    ("/prefix/one", "", "/"),
])
def test_replace_prefix_match(path: str, value: str, out: str) -> None:
    assert rewrite_path(path, PathModifier("ReplacePrefixMatch", value), PREFIX) == out


def test_replace_full_path() -> None:
    assert rewrite_path("/prefix/one/two", PathModifier("ReplaceFullPath", "/one"), PREFIX) == "/one"


@pytest.mark.parametrize("redirect,listener_port,scheme,location", [
    (RequestRedirect(hostname="example.org"), 80, "http", "http://example.org/a?q=1"),
    (RequestRedirect(hostname="example.org"), 8080, "http", "http://example.org:8080/a?q=1"),
    (RequestRedirect(scheme="https"), 80, "http", "https://h.example/a?q=1"),
    (RequestRedirect(scheme="https"), 8080, "http", "https://h.example/a?q=1"),
    (RequestRedirect(scheme="https", port=8443), 80, "http", "https://h.example:8443/a?q=1"),
    (RequestRedirect(port=443), 80, "http", "http://h.example:443/a?q=1"),
    (RequestRedirect(port=80), 8080, "http", "http://h.example/a?q=1"),
    (RequestRedirect(path=PathModifier("ReplaceFullPath", "/b"), status_code=301), 80, "http",
     "http://h.example/b?q=1"),
    (RequestRedirect(), 443, "https", "https://h.example/a?q=1"),
])
def test_redirect_location(redirect: RequestRedirect, listener_port: int, scheme: str, location: str) -> None:
    assert redirect_location(redirect, scheme, "h.example", "/a", "q=1", listener_port,
                             PathMatch("PathPrefix", "/")) == location


def test_modify_headers() -> None:
    headers = [(b"X-Keep", b"1"), (b"X-Set", b"old"), (b"x-set", b"old2"), (b"X-Gone", b"x"), (b"X-Add", b"a")]
    mod = HeaderModifier(set=(("X-Set", "new"),), add=(("X-Add", "b"), ("X-New", "c")), remove=("x-gone",))
    assert modify_headers(headers, mod) == [
        (b"X-Keep", b"1"), (b"X-Add", b"a"), (b"X-Set", b"new"), (b"X-Add", b"b"), (b"X-New", b"c")]
