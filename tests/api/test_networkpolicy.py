"""NetworkPolicies (networking.k8s.io/v1) without a server: validation, defaults, generation, table rows, protobuf.

The validation cases are upstream's (``pkg/apis/networking/validation/validation_test.go``:
``TestValidateNetworkPolicy`` and ``TestValidateNetworkPolicyUpdate``), which only count errors there; here
each bad case names the field paths and messages kube-apiserver 1.32's ``ValidateNetworkPolicySpec`` gives.
The defaulting cases follow ``pkg/apis/networking/v1/defaults_test.go``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest

from kmesh.api import defaults, meta, protobuf, tables, validation
from kmesh.api.kinds import by_resource, get
from tests.api.test_protobuf import envelope, f_entry, f_int, f_ios, f_msg, f_str
from tests.api.test_protobuf import meta as pb_meta

KIND = "NetworkPolicy"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
Obj = dict[str, Any]
Tweak = Callable[[Obj], None]


# ---------------------------------------------------------------- upstream's builders, on JSON


def make(*tweaks: Tweak) -> Obj:
    """``makeNetworkPolicyCustom``: policy foo/bar selecting a=b, then the tweaks."""
    np: Obj = {"apiVersion": "networking.k8s.io/v1", "kind": KIND, "metadata": {"name": "foo", "namespace": "bar"},
               "spec": {"podSelector": {"matchLabels": {"a": "b"}}}}
    for tweak in tweaks:
        tweak(np)
    return np


def port(protocol: str | None, number: int | str | None, end: int | None = None) -> Obj:
    """``makePort``: port 0 or "" means no port, endPort 0 none."""
    out: Obj = {}
    if protocol is not None:
        out["protocol"] = protocol
    if number not in (None, 0, "", "0"):
        out["port"] = number
    if end:
        out["endPort"] = end
    return out


def _rule(np: Obj, rules: str) -> Obj:
    spec = np["spec"]
    if not spec.get(rules):
        spec[rules] = [{}]
    return spec[rules][0]


def _peer(np: Obj, rules: str, peers: str) -> Obj:
    rule = _rule(np, rules)
    if not rule.get(peers):
        rule[peers] = [{}]
    return rule[peers][0]


def ingress_empty(np: Obj) -> None:
    np["spec"]["ingress"] = [{}]


def ingress_from_empty(np: Obj) -> None:
    _rule(np, "ingress")["from"] = [{}]


def ingress_empty_ports(np: Obj) -> None:
    np["spec"]["ingress"] = [{"ports": [{}]}]


def ingress_ports(*ports: Obj) -> Tweak:
    return lambda np: _rule(np, "ingress").__setitem__("ports", list(ports))


def egress_ports(*ports: Obj) -> Tweak:
    return lambda np: _rule(np, "egress").__setitem__("ports", list(ports))


def ingress_from_pod(k: str, v: str) -> Tweak:
    return lambda np: _peer(np, "ingress", "from").__setitem__("podSelector", {"matchLabels": {k: v}})


def ingress_from_ns(np: Obj) -> None:
    _peer(np, "ingress", "from")["namespaceSelector"] = {"matchLabels": {"c": "d"}}


def egress_to_ns(np: Obj) -> None:
    _peer(np, "egress", "to")["namespaceSelector"] = {"matchLabels": {"c": "d"}}


def egress_to_pod(np: Obj) -> None:
    _peer(np, "egress", "to")["podSelector"] = {"matchLabels": {"c": "d"}}


V4 = {"cidr": "192.168.0.0/16", "except": ["192.168.3.0/24", "192.168.4.0/24"]}
V6 = {"cidr": "fd00:192:168::/48", "except": ["fd00:192:168:3::/64", "fd00:192:168:4::/64"]}


def ingress_ip(block: Obj) -> Tweak:
    return lambda np: _peer(np, "ingress", "from").__setitem__("ipBlock", copy.deepcopy(block))


def egress_ip(block: Obj) -> Tweak:
    return lambda np: _peer(np, "egress", "to").__setitem__("ipBlock", copy.deepcopy(block))


def policy_types(*types: str) -> Tweak:
    return lambda np: np["spec"].__setitem__("policyTypes", list(types))


def ip_block(**block: Any) -> Tweak:
    """Replace the first ingress peer's ipBlock (or parts of it)."""
    def tweak(np: Obj) -> None:
        _peer(np, "ingress", "from").setdefault("ipBlock", {}).update(block)
    return tweak


def stored(obj: Obj) -> Obj:
    """What the API server validates on create: defaults, then the create strategy."""
    obj = copy.deepcopy(obj)
    defaults.apply_defaults(KIND, obj)
    meta.prepare_create(KIND, obj, obj["metadata"].get("namespace"))
    return obj


def causes(obj: Obj) -> list[tuple[str, str]]:
    return [(c["field"], c["message"]) for c in validation.validate(KIND, stored(obj))]


# ---------------------------------------------------------------- validation: upstream's cases

SUCCESS = [
    make(ingress_empty),
    make(ingress_from_empty, ingress_empty_ports),
    make(ingress_ports(port(None, 80), port("TCP", 0), port("TCP", 443), port("UDP", "dns"), port("SCTP", 7777))),
    make(ingress_from_pod("c", "d")),
    make(ingress_from_ns),
    make(ingress_from_pod("e", "f"), ingress_from_ns),
    make(egress_to_ns, ingress_ip(V4)),
    make(ingress_ip(V4)),
    make(egress_ip(V4), policy_types("Egress")),
    make(egress_ip(V4), policy_types("Ingress", "Egress")),
    make(egress_ports(port(None, 80), port("TCP", 0), port("TCP", 443), port("UDP", "dns"), port("SCTP", 7777))),
    make(egress_to_ns, ingress_ip(V6)),
    make(ingress_ip(V6)),
    make(egress_ip(V6), policy_types("Egress")),
    make(egress_ip(V6), policy_types("Ingress", "Egress")),
    make(egress_ports(port(None, 32000, 32768), port("UDP", "dns"))),
    make(egress_to_ns, egress_ports(port(None, 30000, 32768), port(None, 32000, 32768)), ingress_from_pod("e", "f"),
         ingress_ports(port("TCP", 32768, 32768))),
]


@pytest.mark.parametrize("obj", SUCCESS)
def test_upstream_success_cases(obj: Obj) -> None:
    assert causes(obj) == []


BAD_KEY = {"NoUppercaseOrSpecialCharsLike=Equals": "b"}
KEY_MSG = (
    'Invalid value: "NoUppercaseOrSpecialCharsLike=Equals": name part must consist of alphanumeric characters, '
    "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
    "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
IP0 = "spec.ingress[0].from[0].ipBlock"
PORT_RANGE = "must be between 1 and 65535, inclusive"
BOTH = "Forbidden: may not specify both ipBlock and another peer"
NO_PEER = "Required value: must specify a peer"
ICMP = 'Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"'
NAME_MSGS = ['Invalid value: "!@#$": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)',
             'Invalid value: "!@#$": must contain at least one letter (a-z)']


def _set_selector(np: Obj, rules: str, peers: str, key: str) -> None:
    np["spec"][rules] = [{peers: [{key: {"matchLabels": dict(BAD_KEY)}}]}]


ERRORS: dict[str, tuple[Obj, list[tuple[str, str]]]] = {
    "namespaceSelector and ipBlock": (make(ingress_from_ns, ingress_ip(V4)), [("spec.ingress[0].from[0]", BOTH)]),
    "podSelector and ipBlock": (make(egress_to_pod, egress_ip(V4)), [("spec.egress[0].to[0]", BOTH)]),
    "missing from and to type": (
        make(ingress_from_empty, lambda np: np["spec"].__setitem__("egress", [{"to": [{}]}])),
        [("spec.ingress[0].from[0]", NO_PEER), ("spec.egress[0].to[0]", NO_PEER)]),
    "invalid spec.podSelector": (
        make(lambda np: np.__setitem__("spec", {"podSelector": {"matchLabels": dict(BAD_KEY)}})),
        [("spec.podSelector.matchLabels", KEY_MSG)]),
    "invalid ingress.ports.protocol": (make(ingress_ports(port("ICMP", 80))), [("spec.ingress[0].ports[0].protocol", ICMP)]),
    "invalid ingress.ports.port (int)": (
        make(ingress_ports(port("TCP", 123456789))),
        [("spec.ingress[0].ports[0].port", f"Invalid value: 123456789: {PORT_RANGE}")]),
    "invalid ingress.ports.port (str)": (
        make(ingress_ports(port("TCP", "!@#$"))), [("spec.ingress[0].ports[0].port", m) for m in NAME_MSGS]),
    "invalid ingress.from.podSelector": (
        make(lambda np: _set_selector(np, "ingress", "from", "podSelector")),
        [("spec.ingress[0].from[0].podSelector.matchLabels", KEY_MSG)]),
    "invalid egress.to.podSelector": (
        make(lambda np: _set_selector(np, "egress", "to", "podSelector")),
        [("spec.egress[0].to[0].podSelector.matchLabels", KEY_MSG)]),
    "invalid egress.ports.protocol": (make(egress_ports(port("ICMP", 80))), [("spec.egress[0].ports[0].protocol", ICMP)]),
    "invalid egress.ports.port (int)": (
        make(egress_ports(port("TCP", 123456789))),
        [("spec.egress[0].ports[0].port", f"Invalid value: 123456789: {PORT_RANGE}")]),
    "invalid egress.ports.port (str)": (
        make(egress_ports(port("TCP", "!@#$"))), [("spec.egress[0].ports[0].port", m) for m in NAME_MSGS]),
    "invalid ingress.from.namespaceSelector": (
        make(lambda np: _set_selector(np, "ingress", "from", "namespaceSelector")),
        [("spec.ingress[0].from[0].namespaceSelector.matchLabels", KEY_MSG)]),
    "missing cidr field": (make(ingress_ip(V4), ip_block(cidr="")), [(IP0 + ".cidr", "Required value")]),
    "invalid cidr format": (
        make(ingress_ip(V4), ip_block(cidr="192.168.5.6")),
        [(IP0 + ".cidr", 'Invalid value: "192.168.5.6": not a valid CIDR')]),
    "invalid ipv6 cidr format": (
        make(ingress_ip(V6), ip_block(cidr="fd00:192:168::")),
        [(IP0 + ".cidr", 'Invalid value: "fd00:192:168::": not a valid CIDR')]),
    "except field is an empty string": (
        make(ingress_ip(V4), ip_block(**{"except": [""]})),
        [(IP0 + ".except[0]", 'Invalid value: "": not a valid CIDR')]),
    "except field is an space string": (
        make(ingress_ip(V4), ip_block(**{"except": [" "]})),
        [(IP0 + ".except[0]", 'Invalid value: " ": not a valid CIDR')]),
    "except field is an invalid ip": (
        make(ingress_ip(V4), ip_block(**{"except": ["300.300.300.300"]})),
        [(IP0 + ".except[0]", 'Invalid value: "300.300.300.300": not a valid CIDR')]),
    "except IP is outside of CIDR range": (
        make(ingress_ip({"cidr": "192.168.8.0/24", "except": ["192.168.9.1/24"]})),
        [(IP0 + ".except[0]", 'Invalid value: "192.168.9.1/24": must be a strict subset of `cidr`')]),
    "except IP is not strictly within CIDR range": (
        make(ingress_ip({"cidr": "192.168.0.0/24", "except": ["192.168.0.0/24"]})),
        [(IP0 + ".except[0]", 'Invalid value: "192.168.0.0/24": must be a strict subset of `cidr`')]),
    "except IPv6 is outside of CIDR range": (
        make(ingress_ip({"cidr": "fd00:192:168:1::/64", "except": ["fd00:192:168:2::/64"]})),
        [(IP0 + ".except[0]", 'Invalid value: "fd00:192:168:2::/64": must be a strict subset of `cidr`')]),
    "invalid policyTypes": (
        make(egress_ip(V4), policy_types("foo", "bar")),
        [("spec.policyTypes[0]", 'Unsupported value: "foo": supported values: "Ingress", "Egress"'),
         ("spec.policyTypes[1]", 'Unsupported value: "bar": supported values: "Ingress", "Egress"')]),
    "too many policyTypes": (
        make(egress_ip(V4), policy_types("foo", "bar", "baz")),
        [("spec.policyTypes",
          'Invalid value: []networking.PolicyType{"foo", "bar", "baz"}: may not specify more than two policyTypes')]),
    "multiple ports defined, one port range is invalid": (
        make(egress_to_ns, egress_ports(port("UDP", 35000, 32768), port(None, 32000, 32768))),
        [("spec.egress[0].ports[0].endPort", "Invalid value: 32768: must be greater than or equal to `port`")]),
    "endPort defined with named/string port": (
        make(egress_to_ns, egress_ports(port("UDP", "dns", 32768), port(None, 32000, 32768))),
        [("spec.egress[0].ports[0].endPort", "Invalid value: 32768: may not be specified when `port` is non-numeric")]),
    "endPort defined without port defined": (
        make(egress_to_ns, egress_ports(port("TCP", 0, 32768))),
        [("spec.egress[0].ports[0].endPort",
          "Invalid value: 32768: may not be specified when `port` is not specified")]),
    "port is greater than endPort": (
        make(egress_to_ns, egress_ports(port("SCTP", 35000, 32768))),
        [("spec.egress[0].ports[0].endPort", "Invalid value: 32768: must be greater than or equal to `port`")]),
    "multiple invalid port ranges defined": (
        make(egress_to_ns, egress_ports(port("UDP", 35000, 32768), port("TCP", 0, 32768), port("TCP", "https", 32768))),
        [("spec.egress[0].ports[0].endPort", "Invalid value: 32768: must be greater than or equal to `port`"),
         ("spec.egress[0].ports[1].endPort",
          "Invalid value: 32768: may not be specified when `port` is not specified"),
         ("spec.egress[0].ports[2].endPort",
          "Invalid value: 32768: may not be specified when `port` is non-numeric")]),
    "invalid endport range defined": (
        make(egress_to_ns, egress_ports(port("TCP", 30000, 65537))),
        [("spec.egress[0].ports[0].endPort", f"Invalid value: 65537: {PORT_RANGE}")]),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_upstream_error_cases_with_their_fields_and_messages(name: str) -> None:
    obj, expected = ERRORS[name]
    assert causes(obj) == expected


def test_more_port_and_peer_edges() -> None:
    # A JSON port 0 is a numeric port (not "unset"), a quoted number is a port name, as IntOrString decodes them.
    assert causes(make(ingress_ports({"port": 0}))) == [
        ("spec.ingress[0].ports[0].port", f"Invalid value: 0: {PORT_RANGE}")]
    assert causes(make(ingress_ports({"port": "80"}))) == [
        ("spec.ingress[0].ports[0].port", 'Invalid value: "80": must contain at least one letter (a-z)')]
    # An empty protocol is no missing protocol: it is not defaulted, and it is refused.
    assert causes(make(ingress_ports({"protocol": "", "port": 80}))) == [
        ("spec.ingress[0].ports[0].protocol", 'Unsupported value: "": supported values: "TCP", "UDP", "SCTP"')]
    # endPort ranges are checked in port's own range too: both errors, the order is upstream's.
    assert causes(make(ingress_ports({"port": 70000, "endPort": 80}))) == [
        ("spec.ingress[0].ports[0].port", f"Invalid value: 70000: {PORT_RANGE}"),
        ("spec.ingress[0].ports[0].endPort", "Invalid value: 80: must be greater than or equal to `port`")]
    # A pod selector and a namespace selector together are one peer (pods in those namespaces).
    both = make(ingress_from_pod("role", "client"), ingress_from_ns)
    assert causes(both) == []
    # All three: one Forbidden for the peer.
    three = make(ingress_from_pod("role", "client"), ingress_from_ns, ingress_ip(V4))
    assert causes(three) == [("spec.ingress[0].from[0]", BOTH)]
    # An empty selector is a peer (it selects everything); an empty ipBlock is one, without a cidr.
    assert causes(make(lambda np: np["spec"].__setitem__("egress", [{"to": [{"podSelector": {}}]}]))) == []
    assert causes(make(lambda np: np["spec"].__setitem__("ingress", [{"from": [{"ipBlock": {}}]}]))) == [
        (IP0 + ".cidr", "Required value")]
    # Upstream checks no duplicates in policyTypes.
    assert causes(make(policy_types("Ingress", "Ingress"))) == []


def test_ip_block_edges() -> None:
    # Host bits may be set (ParseCIDRSloppy), and IPv4 octets may have leading zeros.
    assert causes(make(ingress_ip({"cidr": "10.1.2.3/8", "except": ["10.1.0.0/16", "010.2.0.0/16"]}))) == []
    # The first unparsable except entry ends the checks (1.32's ValidateIPBlock returns there).
    assert causes(make(ingress_ip({"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16", "nope", "12.0.0.0/16"]}))) == [
        (IP0 + ".except[0]", 'Invalid value: "11.0.0.0/16": must be a strict subset of `cidr`'),
        (IP0 + ".except[1]", 'Invalid value: "nope": not a valid CIDR')]
    # A bad cidr skips the except entries; an IPv6 except is never inside an IPv4 cidr.
    assert causes(make(ingress_ip({"cidr": "10.0.0.0/33", "except": ["x"]}))) == [
        (IP0 + ".cidr", 'Invalid value: "10.0.0.0/33": not a valid CIDR')]
    assert causes(make(ingress_ip({"cidr": "0.0.0.0/0", "except": ["::/64"]}))) == [
        (IP0 + ".except[0]", 'Invalid value: "::/64": must be a strict subset of `cidr`')]


def test_metadata_and_selector_expressions() -> None:
    assert causes(make(lambda np: np["metadata"].__setitem__("name", "Not_A_Name"))) == [(
        "metadata.name",
        ('Invalid value: "Not_A_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
         "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
         "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"))]
    expr = make(lambda np: np["spec"].__setitem__("podSelector", {"matchExpressions": [
        {"key": "app", "operator": "In"}, {"key": "tier", "operator": "Maybe", "values": ["x"]}]}))
    assert causes(expr) == [
        ("spec.podSelector.matchExpressions[0].values",
         "Required value: must be specified when `operator` is 'In' or 'NotIn'"),
        ("spec.podSelector.matchExpressions[1].operator", 'Invalid value: "Maybe": not a valid selector operator')]


# ---------------------------------------------------------------- updates and generation


def updated(old: Obj, new: Obj) -> tuple[Obj, list[tuple[str, str]]]:
    new = copy.deepcopy(new)
    defaults.apply_defaults(KIND, new)
    new = meta.prepare_update(KIND, new, old)
    return new, [(c["field"], c["message"]) for c in validation.validate_update(KIND, new, old)]


def test_update_cases_and_generation() -> None:
    old = stored(make(ingress_empty))
    old["metadata"].update(resourceVersion="1", uid="u-1")
    assert old["metadata"]["generation"] == 1

    # No change: valid, same generation (upstream's "no change").
    same, errs = updated(old, make(ingress_empty))
    assert errs == [] and same["metadata"]["generation"] == 1
    # A label is no spec change.
    labelled, errs = updated(old, make(ingress_empty, lambda np: np["metadata"].__setitem__("labels", {"x": "y"})))
    assert errs == [] and labelled["metadata"]["generation"] == 1
    # "change spec": valid, the generation moves on.
    changed, errs = updated(old, make(ingress_empty, lambda np: np["spec"].__setitem__("podSelector", {})))
    assert errs == [] and changed["metadata"]["generation"] == 2
    # "change name": refused.
    _, errs = updated(old, make(ingress_empty, lambda np: np["metadata"].__setitem__("name", "baz")))
    assert ("metadata.name", 'Invalid value: "baz": field is immutable') in errs
    # The create checks apply to updates too, each error once (upstream lists spec errors twice, kubectl shows
    # them once).
    _, errs = updated(old, make(ingress_ip({"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]})))
    assert errs == [(IP0 + ".except[0]", 'Invalid value: "10.0.0.0/8": must be a strict subset of `cidr`')]


def test_update_of_a_policy_with_an_invalid_selector_value_keeps_allowing_such_values() -> None:
    bad_value = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["not valid!"]}]}
    msg = ("Invalid value: \"not valid!\": a valid label must be an empty string or consist of alphanumeric "
           "characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
           "'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
    new = make(lambda np: np["spec"].__setitem__("podSelector", bad_value))
    assert causes(new) == [("spec.podSelector.matchExpressions[0].values[0]", msg)]
    # Stored by an older server: updates may keep the value (AllowInvalidLabelValueInSelector), not bad keys.
    old = copy.deepcopy(new)
    defaults.apply_defaults(KIND, old)
    old["metadata"].update(generation=1, resourceVersion="1", uid="u-1", creationTimestamp="2026-01-01T00:00:00Z")
    _, errs = updated(old, new)
    assert errs == []
    _, errs = updated(old, make(lambda np: np["spec"].__setitem__("podSelector", {
        "matchExpressions": [{"key": "bad key", "operator": "In", "values": ["not valid!"]}]})))
    assert [f for f, _ in errs] == ["spec.podSelector.matchExpressions[0].key"]


# ---------------------------------------------------------------- defaults


def defaulted(spec: Any) -> Any:
    obj = {"apiVersion": "networking.k8s.io/v1", "kind": KIND, "metadata": {"name": "p"}, "spec": spec}
    defaults.apply_defaults(KIND, obj)
    return obj["spec"]


def test_policy_types_default_as_upstream() -> None:
    assert defaulted({"podSelector": {}}) == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert defaulted({"podSelector": {}, "ingress": [{}]})["policyTypes"] == ["Ingress"]
    assert defaulted({"podSelector": {}, "ingress": [{}], "egress": [{}]})["policyTypes"] == ["Ingress", "Egress"]
    assert defaulted({"podSelector": {}, "egress": [{}]})["policyTypes"] == ["Ingress", "Egress"]
    # Given types are kept, whatever the rules say.
    assert defaulted({"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]})["policyTypes"] == ["Egress"]
    assert defaulted({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})["policyTypes"] == ["Ingress", "Egress"]
    # Empty egress rules are no egress rules.
    assert defaulted({"podSelector": {}, "egress": [], "policyTypes": []}) == {
        "podSelector": {}, "policyTypes": ["Ingress"]}
    # No spec, no selector: Go's zero spec, written as JSON writes it (podSelector is no pointer).
    assert defaulted(None) == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert defaulted({}) == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_port_protocol_defaults_to_tcp_and_empty_fields_are_dropped() -> None:
    spec = defaulted({
        "podSelector": {},
        "ingress": [{"ports": [{"port": 80}, {"protocol": "UDP", "port": "dns"}, {}, {"protocol": None}],
                     "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": []}, "podSelector": None}]}],
        "egress": [{"ports": [], "to": []}, None],
    })
    assert spec["ingress"][0]["ports"] == [{"port": 80, "protocol": "TCP"}, {"protocol": "UDP", "port": "dns"},
                                           {"protocol": "TCP"}, {"protocol": "TCP"}]
    assert spec["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    assert spec["egress"] == [{}, {}]
    assert spec["policyTypes"] == ["Ingress", "Egress"]


# ---------------------------------------------------------------- kind, table, protobuf


def test_kind_is_served_as_upstream() -> None:
    k = get(KIND)
    assert (k.group, k.version, k.plural, k.singular, k.namespaced) == (
        "networking.k8s.io", "v1", "networkpolicies", "networkpolicy", True)
    assert k.short_names == ("netpol",) and k.subresources == () and k.categories == ()
    assert by_resource("networking.k8s.io", "networkpolicies") is k


def test_table_columns_and_rows() -> None:
    k = get(KIND)
    assert [c["name"] for c in tables.column_definitions(k)] == ["Name", "Pod-Selector", "Age"]

    def row(selector: Any) -> list[Any]:
        obj = {"metadata": {"name": "p", "creationTimestamp": "2025-12-31T23:00:00Z"}, "spec": {"podSelector": selector}}
        return tables.table_row(k, obj, now=NOW)["cells"]

    assert row({}) == ["p", "<none>", "60m"]
    assert row({"matchLabels": {"app": "web", "tier": "front"}}) == ["p", "app=web,tier=front", "60m"]
    assert row({"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "env", "operator": "NotIn", "values": ["dev", "test"]}, {"key": "canary", "operator": "DoesNotExist"}]}
    ) == ["p", "app=web,!canary,env notin (dev,test)", "60m"]  # requirements sorted by key


def test_protobuf_body_decodes_with_upstream_field_numbers() -> None:
    # Field numbers from k8s.io/api/networking/v1/generated.proto, written out here independently of the table.
    labels = f_entry(1, "app", "web")  # LabelSelector.matchLabels
    ns_selector = f_msg(2, f_entry(1, "team", "a"))  # NetworkPolicyPeer.namespaceSelector
    block = f_msg(3, f_str(1, "10.0.0.0/8"), f_str(2, "10.1.0.0/16"))  # NetworkPolicyPeer.ipBlock
    port_a = f_msg(1, f_str(1, "TCP"), f_ios(2, 32000), f_int(3, 32768))  # rule.ports
    port_b = f_msg(1, f_str(1, "UDP"), f_ios(2, "dns"))
    ingress = f_msg(2, port_a, f_msg(2, ns_selector), f_msg(2, block))  # spec.ingress: ports, from
    egress = f_msg(3, port_b, f_msg(2, f_msg(1)))  # spec.egress: ports, to: [{podSelector: {}}]
    spec = f_msg(2, f_msg(1, labels), ingress, egress, f_str(4, "Ingress"), f_str(4, "Egress"))
    body = envelope("networking.k8s.io/v1", KIND, pb_meta("p", namespace="default") + spec)
    obj = protobuf.decode(body)
    assert obj["spec"] == {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}],
                     "from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}},
                              {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}],
        "egress": [{"ports": [{"protocol": "UDP", "port": "dns"}], "to": [{"podSelector": {}}]}],
        "policyTypes": ["Ingress", "Egress"],
    }
    assert validation.validate(KIND, stored(obj)) == []
