"""Upstream's comparison of a conformance case with what the client got (conformance/utils/http), as kmesh's
tests apply it to replies from the loopback rig and from a lab."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.gateway.conformance_cases import Case
from tests.gateway.rig import Reply


def check(case: Case, reply: Reply) -> None:
    """Fail the test unless ``reply`` is what upstream expects for ``case``."""
    want = case.status
    assert reply.status == want or (want == 504 and reply.status == 408), (case, reply.status, reply.body[:300])
    if case.redirect is not None:
        scheme, host, port, path = case.redirect
        loc = urlsplit(reply.headers.get("location", ""))
        assert loc.scheme == (scheme or "http"), (case, loc)
        if host:
            assert loc.hostname == host, (case, loc)
        default = 443 if loc.scheme == "https" else 80
        assert (loc.port or default) == (port or default), (case, loc)
        assert loc.path == (path or case.path.split("?")[0]), (case, loc)
        return
    for name, value in case.response_headers:
        assert reply.headers.get(name.lower()) == value, (case, reply.headers)
    for name in case.absent_response_headers:
        assert name.lower() not in reply.headers, (case, reply.headers)
    if reply.status != 200:
        return
    echo = reply.echo
    assert echo is not None, (case, reply.body[:300])
    assert str(echo["pod"]).startswith(case.backend), (case, echo["pod"])
    if case.namespace:
        assert echo["namespace"] == case.namespace, (case, echo["namespace"])
    assert echo["path"] == (case.seen_path if case.seen_path is not None else case.path), (case, echo["path"])
    assert echo["method"] == case.method or case.seen_path is not None, (case, echo["method"])
    if case.seen_host is not None:
        assert echo["host"] == case.seen_host, (case, echo["host"])
    headers = {k.lower(): ",".join(v) for k, v in echo["headers"].items()}
    for name, value in case.seen_headers:
        assert headers.get(name.lower()) == value, (case, name, headers)
    for name in case.absent_headers:
        assert name.lower() not in headers, (case, name, headers)


