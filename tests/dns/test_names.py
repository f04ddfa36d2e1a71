"""The name grammar and address/label conversions (pure functions)."""

from __future__ import annotations

import pytest

from kmesh.dns.names import Kind, dashed, parse, reverse_ip, reverse_name, undashed

Z = "cluster.local"


@pytest.mark.parametrize("name,kind,fields", [
    (Z, Kind.APEX, {}),
    (f"dns-version.{Z}", Kind.VERSION, {}),
    (f"ns.dns.{Z}", Kind.NS_HOST, {}),
    (f"svc.{Z}", Kind.SVC_ROOT, {}),
    (f"pod.{Z}", Kind.SVC_ROOT, {}),
    (f"default.svc.{Z}", Kind.NAMESPACE, {"namespace": "default"}),
    (f"web.default.svc.{Z}", Kind.SERVICE, {"service": "web", "namespace": "default"}),
    (f"h.web.default.svc.{Z}", Kind.SERVICE, {"endpoint": "h", "service": "web"}),
    (f"_http._tcp.web.default.svc.{Z}", Kind.SERVICE, {"port": "http", "protocol": "tcp", "service": "web"}),
    (f"a.b.c.d.web.default.svc.{Z}", Kind.INVALID, {}),
    (f"web.default.other.{Z}", Kind.INVALID, {}),
    (f"10-1-2-3.default.pod.{Z}", Kind.POD, {"pod": "10-1-2-3", "namespace": "default"}),
    ("4.3.2.1.in-addr.arpa", Kind.REVERSE, {"ip": "1.2.3.4"}),
    ("3.2.1.in-addr.arpa", Kind.OUTSIDE, {}),
    ("example.org", Kind.OUTSIDE, {}),
    ("notcluster.local", Kind.OUTSIDE, {}),
])
def test_parse(name: str, kind: Kind, fields: dict[str, str]) -> None:
    req = parse(name, Z)
    assert req.kind is kind
    for k, v in fields.items():
        assert getattr(req, k) == v


def test_address_labels() -> None:
    assert dashed("10.244.1.5") == "10-244-1-5"
    assert dashed("fd00::1") == "fd00--1"
    assert dashed("fd00::") == "fd00--0"  # a trailing '-' gets a 0
    assert undashed("10-244-1-5") == "10.244.1.5"
    assert undashed("fd00--1") == "fd00::1"
    assert undashed("nope") == ""
    assert reverse_ip(reverse_name("fd00::1")) == "fd00::1"
    assert reverse_ip(reverse_name("10.96.0.10")) == "10.96.0.10"
    assert reverse_ip("1.1.1.1.1.in-addr.arpa") == ""
