"""Tests for kmesh.api.validation: Kubernetes' rules, field paths and messages."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any, Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kmesh.api import defaults, meta, validation as v
from kmesh.api.errors import APIError
from kmesh.api.kinds import KINDS, get

LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end "
    "with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, "
    "and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
    "'[a-z]([-a-z0-9]*[a-z0-9])?')"
)
QNAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
    "character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
PORT_RANGE = "must be between 1 and 65535, inclusive"


# ---------------------------------------------------------------- helpers


def ready(kind: str, obj: dict, namespace: str | None = "default") -> dict:
    """An object as kube-apiserver would validate it on create: defaulted and prepared."""
    defaults.apply_defaults(kind, obj)
    return meta.prepare_create(kind, obj, namespace if get(kind).namespaced else None)


def causes(kind: str, obj: dict, **kw: Any) -> list[tuple[str, str]]:
    return [(c["field"], c["message"]) for c in v.validate(kind, obj, **kw)]


def fields(kind: str, obj: dict, **kw: Any) -> list[str]:
    return [c["field"] for c in v.validate(kind, obj, **kw)]


def update_causes(kind: str, old: dict, change: Callable[[dict], Any], **kw: Any) -> list[tuple[str, str]]:
    new = copy.deepcopy(old)
    change(new)
    defaults.apply_defaults(kind, new)
    meta.prepare_update(kind, new, old, kw.get("subresource"))
    return [(c["field"], c["message"]) for c in v.validate_update(kind, new, old, **kw)]


def stored(kind: str, obj: dict) -> dict:
    out = ready(kind, obj)
    out["metadata"]["resourceVersion"] = "1"
    return out


def pod(**spec: Any) -> dict:
    base: dict[str, Any] = {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80, "name": "http"}]}]}
    base.update(spec)
    return ready("Pod", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "labels": {"app": "web"}}, "spec": base})


def service(**spec: Any) -> dict:
    base: dict[str, Any] = {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    base.update(spec)
    return ready("Service", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": base})


def deployment(labels: dict | None = None, selector: Any = "same", **spec: Any) -> dict:
    labels = {"app": "web"} if labels is None else labels
    base: dict[str, Any] = {
        "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
        }
    }
    if selector == "same":
        base["selector"] = {"matchLabels": dict(labels)}
    elif selector is not None:
        base["selector"] = selector
    base.update(spec)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": base}


# ---------------------------------------------------------------- string formats


def test_regex_error_format_matches_upstream() -> None:
    assert v.is_dns1123_label("My_Name") == [LABEL_MSG]
    assert v.is_dns1123_subdomain("Bad_Name") == [SUBDOMAIN_MSG]
    assert v.is_dns1035_label("1abc") == [DNS1035_MSG]


def test_dns1123_label_dots_and_length() -> None:
    assert v.is_dns1123_label("a.b") == ["must not contain dots"]
    assert v.is_dns1123_label("a" * 63) == []
    assert v.is_dns1123_label("a" * 64) == ["must be no more than 63 characters"]
    assert v.is_dns1123_subdomain("a" * 254)[0] == "must be no more than 253 characters"


label_strategy = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@given(label_strategy)
def test_generated_labels_are_valid_everywhere(label: str) -> None:
    assert v.is_dns1123_label(label) == []
    assert v.is_dns1123_subdomain(label) == []
    assert v.is_dns1123_subdomain(label + "." + label) == []
    assert v.is_qualified_name(label) == []
    assert v.is_label_value(label) == []
    assert v.name_is_dns_subdomain(label) == []


@given(st.text(max_size=70))
def test_label_validity_matches_the_definition(text: str) -> None:
    ok = (
        0 < len(text) <= 63
        and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in text)
        and text[0] != "-"
        and text[-1] != "-"
    )
    assert (v.is_dns1123_label(text) == []) is ok


@given(st.text(max_size=70))
def test_dns1035_needs_a_leading_letter(text: str) -> None:
    if v.is_dns1035_label(text) == []:
        assert text[0] in "abcdefghijklmnopqrstuvwxyz"
        assert v.is_dns1123_label(text) == []


@given(label_strategy)
def test_generate_name_prefix_may_end_in_dash(label: str) -> None:
    assert v.name_is_dns_subdomain(label + "-", True) == []
    assert v.name_is_dns_label(label + "-", True) == []
    assert v.name_is_dns_subdomain(label + "-", False) != []


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        ("app", []),
        ("example.com/app", []),
        ("app.kubernetes.io/name", []),
        ("/app", ["prefix part must be non-empty"]),
        ("example.com/", ["name part must be non-empty", QNAME_MSG]),
        ("a/b/c", ["a qualified name " + QNAME_MSG.removeprefix("name part ") + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]),
        ("Example.com/app", ["prefix part " + SUBDOMAIN_MSG]),
        ("-app", [QNAME_MSG]),
        ("a" * 64, ["name part must be no more than 63 characters"]),
    ],
)
def test_qualified_names(value: str, errors: list[str]) -> None:
    assert v.is_qualified_name(value) == errors


@pytest.mark.parametrize(("value", "ok"), [("", True), ("a", True), ("A-b_c.d", True), ("-a", False), ("a b", False), ("a" * 64, False)])
def test_label_values(value: str, ok: bool) -> None:
    assert (v.is_label_value(value) == []) is ok
    if not ok and len(value) <= 63:
        assert v.is_label_value(value) == [LABEL_VALUE_MSG]


@pytest.mark.parametrize(
    ("name", "errors"),
    [
        ("http", []),
        ("http-alt", []),
        ("HTTP", ["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)", "must contain at least one letter (a-z)"]),
        ("8080", ["must contain at least one letter (a-z)"]),
        ("a--b", ["must not contain consecutive hyphens"]),
        ("-ab", ["must not begin or end with a hyphen"]),
        ("abcdefghijklmnop", ["must be no more than 15 characters"]),
    ],
)
def test_port_names(name: str, errors: list[str]) -> None:
    assert v.is_valid_port_name(name) == errors


@pytest.mark.parametrize(("port", "ok"), [(1, True), (65535, True), (0, False), (65536, False), (-1, False), (None, False), (True, False)])
def test_port_numbers(port: Any, ok: bool) -> None:
    assert (v.is_valid_port_num(port) == []) is ok


@pytest.mark.parametrize(
    ("key", "errors"),
    [
        ("a.b-c_D", []),
        (".", ["must not be '.'"]),
        ("..", ["must not be '..'"]),
        ("..a", ["must not start with '..'"]),
        ("a b", ["a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"]),
    ],
)
def test_config_map_keys(key: str, errors: list[str]) -> None:
    assert v.is_config_map_key(key) == errors


def test_percent_and_env_names() -> None:
    assert v.is_valid_percent("25%") == []
    assert v.is_valid_percent("25") != []
    assert v.is_relaxed_env_var_name("MY_VAR.1-x") == []
    assert v.is_relaxed_env_var_name("1abc") == []  # relaxed names allow a leading digit
    assert v.is_relaxed_env_var_name("A=B") == [v.RELAXED_ENV_ERR]
    assert v.is_relaxed_env_var_name("é") == [v.RELAXED_ENV_ERR]


@given(st.ip_addresses())
def test_parse_ip_reads_every_canonical_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    parsed = v.parse_ip(str(ip))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        assert parsed == ip.ipv4_mapped
    else:
        assert parsed == ip


@pytest.mark.parametrize(("text", "ok"), [("010.001.0.1", True), ("256.1.1.1", False), ("1.2.3", False), ("fe80::1%eth0", False), ("", False), ("10.0.0.1/8", False), (" 10.0.0.1", False)])
def test_parse_ip_is_sloppy_like_go(text: str, ok: bool) -> None:
    assert (v.parse_ip(text) is not None) is ok


def test_go_value_printing() -> None:
    assert v.go_value("a\"b\n") == '"a\\"b\\n"'
    assert v.go_value(None) == "null"
    assert v.go_value(True) == "true"
    assert v.go_value(8080) == "8080"
    assert v.go_value({"b": "2", "a": "1"}) == 'map[string]string{"a":"1", "b":"2"}'
    assert v.go_value(["10.0.0.1"]) == '[]string{"10.0.0.1"}'
    assert v.go_value(v.intstr("25%")) == "25%"
    assert v.go_label_selector({"matchLabels": {"app": "web"}}) == (
        'v1.LabelSelector{MatchLabels:map[string]string{"app":"web"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}'
    )


# ---------------------------------------------------------------- object metadata


def test_valid_objects_of_every_kind_pass() -> None:
    assert causes("Pod", pod()) == []
    assert causes("Service", service()) == []
    assert causes("Deployment", ready("Deployment", deployment())) == []
    assert causes("Namespace", ready("Namespace", {"metadata": {"name": "lab"}})) == []
    assert causes("ConfigMap", ready("ConfigMap", {"metadata": {"name": "cfg"}, "data": {"a.conf": "x"}})) == []


def test_missing_name() -> None:
    cm = ready("ConfigMap", {"metadata": {}})
    assert causes("ConfigMap", cm) == [("metadata.name", "Required value: name or generateName is required")]
    assert v.validate("ConfigMap", cm)[0]["reason"] == "FieldValueRequired"


@pytest.mark.parametrize("kind", ["Pod", "ConfigMap", "Deployment", "ReplicaSet", "Endpoints", "EndpointSlice", "Lease"])
def test_subdomain_names(kind: str) -> None:
    obj = {"metadata": {"name": "Bad_Name", "namespace": "default"}}
    assert ("metadata.name", f'Invalid value: "Bad_Name": {SUBDOMAIN_MSG}') in causes(kind, obj)
    good = {"metadata": {"name": "a.b-c", "namespace": "default"}}
    assert "metadata.name" not in fields(kind, good)


def test_namespace_names_are_labels() -> None:
    assert causes("Namespace", {"metadata": {"name": "My_NS"}}) == [("metadata.name", f'Invalid value: "My_NS": {LABEL_MSG}')]
    assert causes("Namespace", {"metadata": {"name": "a.b"}}) == [("metadata.name", 'Invalid value: "a.b": must not contain dots')]


def test_service_names_are_dns1035_labels() -> None:
    svc = service()
    svc["metadata"]["name"] = "1web"
    assert ("metadata.name", f'Invalid value: "1web": {DNS1035_MSG}') in causes("Service", svc)


def test_node_names_are_subdomains() -> None:
    assert causes("Node", {"metadata": {"name": "node-1.lab"}}) == []
    assert fields("Node", {"metadata": {"name": "Node_1"}}) == ["metadata.name"]


def test_event_names_only_avoid_path_characters() -> None:
    ev = {"metadata": {"name": "Web.17c3A_x", "namespace": "default"}, "involvedObject": {"namespace": "default"}}
    assert causes("Event", ev) == []
    ev["metadata"]["name"] = "a/b"
    assert causes("Event", ev) == [("metadata.name", "Invalid value: \"a/b\": may not contain '/'")]
    ev["metadata"]["name"] = ".."
    assert causes("Event", ev) == [("metadata.name", "Invalid value: \"..\": may not be '..'")]


def test_generate_name_is_validated_as_a_prefix() -> None:
    obj = {"metadata": {"name": "web-abcde", "generateName": "Web-", "namespace": "default"}}
    assert causes("ConfigMap", obj) == [("metadata.generateName", f'Invalid value: "Web-": {SUBDOMAIN_MSG}')]
    obj["metadata"]["generateName"] = "web-"
    assert causes("ConfigMap", obj) == []


def test_namespace_required_for_namespaced_kinds_and_forbidden_otherwise() -> None:
    assert causes("ConfigMap", {"metadata": {"name": "a"}}) == [("metadata.namespace", "Required value")]
    assert causes("ConfigMap", {"metadata": {"name": "a", "namespace": "Bad"}}) == [("metadata.namespace", f'Invalid value: "Bad": {LABEL_MSG}')]
    assert causes("Node", {"metadata": {"name": "a", "namespace": "default"}}) == [("metadata.namespace", "Forbidden: not allowed on this type")]


def test_labels_and_annotations() -> None:
    obj = {"metadata": {"name": "a", "namespace": "d", "labels": {"-bad": "ok", "good": "bad value"}}}
    assert causes("ConfigMap", obj) == [
        ("metadata.labels", f'Invalid value: "-bad": {QNAME_MSG}'),
        ("metadata.labels", f'Invalid value: "bad value": {LABEL_VALUE_MSG}'),
    ]
    obj = {"metadata": {"name": "a", "namespace": "d", "annotations": {"Example.COM/Key": "x", "k": "x" * (256 * 1024)}}}
    assert causes("ConfigMap", obj) == [("metadata.annotations", "Too long: may not be more than 262144 bytes")]
    obj["metadata"]["annotations"] = {"a b": "x"}
    assert fields("ConfigMap", obj) == ["metadata.annotations"]


def test_finalizers_and_owner_references() -> None:
    obj = {"metadata": {"name": "a", "namespace": "d", "finalizers": ["kubernetes", "custom", "example.com/x"]}}
    assert causes("ConfigMap", obj) == [
        ("metadata.finalizers[1]", 'Invalid value: "custom": name is neither a standard finalizer name nor is it fully qualified')
    ]
    obj = {"metadata": {"name": "a", "namespace": "d", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r"}]}}
    assert causes("ConfigMap", obj) == [("metadata.ownerReferences.uid", 'Invalid value: "": must not be empty')]
    two = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "1", "controller": True}
    obj["metadata"]["ownerReferences"] = [two, {**two, "name": "s", "uid": "2"}]
    msgs = causes("ConfigMap", obj)
    assert msgs[0][0] == "metadata.ownerReferences"
    assert msgs[0][1].endswith('Only one reference can have Controller set to true. Found "true" in references for ReplicaSet/r and ReplicaSet/s')


def test_negative_generation() -> None:
    assert causes("ConfigMap", {"metadata": {"name": "a", "namespace": "d", "generation": -1}}) == [
        ("metadata.generation", "Invalid value: -1: must be greater than or equal to 0")
    ]


# ---------------------------------------------------------------- metadata updates


def test_identity_metadata_is_immutable() -> None:
    old = stored("ConfigMap", {"metadata": {"name": "cm"}, "data": {}})
    new = copy.deepcopy(old)
    new["metadata"].update(name="other", namespace="elsewhere", uid="u2", creationTimestamp="2020-01-01T00:00:00Z")
    got = {c["field"]: c["message"] for c in v.validate_update("ConfigMap", new, old)}
    assert got["metadata.name"] == 'Invalid value: "other": field is immutable'
    assert got["metadata.namespace"] == 'Invalid value: "elsewhere": field is immutable'
    assert got["metadata.uid"] == 'Invalid value: "u2": field is immutable'
    assert got["metadata.creationTimestamp"] == "Invalid value: 2020-01-01 00:00:00 +0000 UTC: field is immutable"


def test_update_labels_may_change_and_are_validated() -> None:
    old = stored("ConfigMap", {"metadata": {"name": "cm"}})
    assert update_causes("ConfigMap", old, lambda o: o["metadata"].update(labels={"a": "b"})) == []
    assert update_causes("ConfigMap", old, lambda o: o["metadata"].update(labels={"a": "-"})) == [
        ("metadata.labels", f'Invalid value: "-": {LABEL_VALUE_MSG}')
    ]


def test_generation_may_not_go_back_and_finalizers_freeze_on_deletion() -> None:
    old = {"metadata": {"name": "a", "namespace": "d", "generation": 3, "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["example.com/a"]}}
    new = copy.deepcopy(old)
    new["metadata"]["generation"] = 2
    new["metadata"]["finalizers"] = ["example.com/a", "example.com/b"]
    got = dict((c["field"], c["message"]) for c in v.validate_object_meta_update(new["metadata"], old["metadata"]))
    assert got["metadata.generation"] == "Invalid value: 2: must not be decremented"
    assert got["metadata.finalizers"] == (
        'Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{"example.com/b"}'
    )


# ---------------------------------------------------------------- Services


def test_service_port_errors() -> None:
    svc = service(ports=[{"port": 0}])
    assert causes("Service", svc) == [
        ("spec.ports[0].port", f"Invalid value: 0: {PORT_RANGE}"),
        ("spec.ports[0].targetPort", f"Invalid value: 0: {PORT_RANGE}"),
    ]
    svc = service(ports=[{"port": 70000, "targetPort": 80, "protocol": "HTTP"}])
    assert causes("Service", svc) == [
        ("spec.ports[0].port", f"Invalid value: 70000: {PORT_RANGE}"),
        ("spec.ports[0].protocol", 'Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"'),
    ]


def test_service_port_names_required_and_unique_when_several() -> None:
    svc = service(ports=[{"port": 80}, {"name": "a", "port": 81}, {"name": "a", "port": 82}, {"name": "Bad", "port": 83}])
    assert causes("Service", svc) == [
        ("spec.ports[0].name", "Required value"),
        ("spec.ports[2].name", 'Duplicate value: "a"'),
        ("spec.ports[3].name", f'Invalid value: "Bad": {LABEL_MSG}'),
    ]
    assert causes("Service", service(ports=[{"port": 80}])) == []


def test_service_target_port_names() -> None:
    assert causes("Service", service(ports=[{"port": 80, "targetPort": "http"}])) == []
    assert causes("Service", service(ports=[{"port": 80, "targetPort": "8080"}])) == [
        ("spec.ports[0].targetPort", 'Invalid value: "8080": must contain at least one letter (a-z)')
    ]
    assert causes("Service", service(ports=[{"port": 80, "targetPort": 99999}])) == [
        ("spec.ports[0].targetPort", f"Invalid value: 99999: {PORT_RANGE}")
    ]


def test_service_duplicate_ports() -> None:
    svc = service(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}, {"name": "c", "port": 80, "protocol": "UDP"}])
    assert causes("Service", svc) == [
        (
            "spec.ports[1]",
            'Duplicate value: core.ServicePort{Name:"", Protocol:"TCP", AppProtocol:(*string)(nil), Port:80, '
            'TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}',
        )
    ]


def test_service_ports_required_unless_headless_or_external_name() -> None:
    assert causes("Service", service(ports=[])) == [("spec.ports", "Required value")]
    assert causes("Service", service(ports=[], clusterIP="None")) == []
    assert causes("Service", service(ports=[], type="ExternalName", externalName="db.example.com", selector=None)) == []


def test_service_type_enum() -> None:
    assert ("spec.type", 'Unsupported value: "Ingress": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"') in causes(
        "Service", service(type="Ingress")
    )


def test_external_name_services() -> None:
    assert causes("Service", service(type="ExternalName")) == [("spec.externalName", "Required value")]
    assert causes("Service", service(type="ExternalName", externalName="db.example.com.")) == []
    assert causes("Service", service(type="ExternalName", externalName="Bad_Host")) == [
        ("spec.externalName", f'Invalid value: "Bad_Host": {SUBDOMAIN_MSG}')
    ]
    assert ("spec.clusterIPs", "Forbidden: may not be set for ExternalName services") in causes(
        "Service", service(type="ExternalName", externalName="x.example", clusterIP="10.96.0.5")
    )


def test_service_selector_and_affinity() -> None:
    assert causes("Service", service(selector={"app": "bad value"})) == [
        ("spec.selector", f'Invalid value: "bad value": {LABEL_VALUE_MSG}')
    ]
    assert causes("Service", service(sessionAffinity="Sticky")) == [
        ("spec.sessionAffinity", 'Unsupported value: "Sticky": supported values: "ClientIP", "None"')
    ]
    assert causes("Service", service(sessionAffinity="ClientIP")) == []
    bad = service(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}})
    assert causes("Service", bad) == [
        ("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "Invalid value: 0: must be greater than 0 and less than 86400")
    ]


def test_service_cluster_ips() -> None:
    assert causes("Service", service(clusterIP="10.96.0.300")) == [
        ("spec.clusterIPs[0]", 'Invalid value: "10.96.0.300": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)')
    ]
    assert causes("Service", service(clusterIP="10.96.0.5", clusterIPs=["10.96.0.6"])) == [
        ("spec.clusterIPs", 'Invalid value: []string{"10.96.0.6"}: first value must match `clusterIP`')
    ]
    assert causes("Service", service(clusterIP="10.96.0.5", clusterIPs=["10.96.0.5", "10.96.0.6"])) == [
        ("spec.clusterIPs", 'Invalid value: []string{"10.96.0.5", "10.96.0.6"}: may specify no more than one IP for each IP family')
    ]
    assert causes("Service", service(clusterIP="10.96.0.5", clusterIPs=["10.96.0.5", "fd00::5"], ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="PreferDualStack")) == []
    assert causes("Service", service(clusterIP="10.96.0.5", ipFamilies=["IPv6"])) == [
        ("spec.clusterIPs[0]", 'Invalid value: "10.96.0.5": expected an IPv6 value as indicated by `ipFamilies[0]`')
    ]
    assert causes("Service", service(type="NodePort", clusterIP="None")) == [
        ("spec.clusterIPs[0]", "Invalid value: \"None\": may not be set to 'None' for NodePort services")
    ]


def test_node_ports() -> None:
    assert causes("Service", service(ports=[{"port": 80, "nodePort": 30080}])) == [
        ("spec.ports[0].nodePort", "Forbidden: may not be used when `type` is 'ClusterIP'")
    ]
    nodeport = service(type="NodePort", ports=[{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81, "nodePort": 30080}])
    assert causes("Service", nodeport) == [("spec.ports[1].nodePort", "Duplicate value: 30080")]
    assert causes("Service", service(type="NodePort", ports=[{"port": 80, "nodePort": 70000}])) == [
        ("spec.ports[0].nodePort", f"Invalid value: 70000: {PORT_RANGE}")
    ]


def test_traffic_policies() -> None:
    assert causes("Service", service(externalTrafficPolicy="Local")) == [
        ("spec.externalTrafficPolicy", 'Invalid value: "Local": may only be set for externally-accessible services')
    ]
    assert causes("Service", service(type="NodePort", externalTrafficPolicy="Nearest")) == [
        ("spec.externalTrafficPolicy", 'Unsupported value: "Nearest": supported values: "Cluster", "Local"')
    ]
    assert causes("Service", service(internalTrafficPolicy="Nearest")) == [
        ("spec.internalTrafficPolicy", 'Unsupported value: "Nearest": supported values: "Cluster", "Local"')
    ]
    assert causes("Service", service(type="LoadBalancer", externalTrafficPolicy="Local")) == []
    assert causes("Service", service(healthCheckNodePort=31000)) == [
        ("spec.healthCheckNodePort", "Invalid value: 31000: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")
    ]


def test_load_balancer_fields() -> None:
    assert causes("Service", service(loadBalancerSourceRanges=["10.0.0.0/8"])) == [
        ("spec.LoadBalancerSourceRanges", "Forbidden: may only be used when `type` is 'LoadBalancer'")
    ]
    assert causes("Service", service(type="LoadBalancer", loadBalancerSourceRanges=["10.0.0.0/33"])) == [
        ("spec.LoadBalancerSourceRanges[0]", 'Invalid value: "10.0.0.0/33": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)')
    ]
    assert causes("Service", service(allocateLoadBalancerNodePorts=True)) == [
        ("spec.allocateLoadBalancerNodePorts", "Forbidden: may only be used when `type` is 'LoadBalancer'")
    ]
    assert causes("Service", service(externalIPs=["127.0.0.1"])) == [
        ("spec.externalIPs[0]", 'Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)')
    ]


def test_service_missing_defaults_are_reported() -> None:
    raw = {"metadata": {"name": "s", "namespace": "d"}, "spec": {"ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}}
    assert fields("Service", raw) == ["spec.sessionAffinity", "spec.type"]


def test_cluster_ip_is_immutable() -> None:
    old = stored("Service", {"metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.5", "ports": [{"port": 80}]}})
    assert update_causes("Service", old, lambda o: o["spec"].update(clusterIP="10.96.0.6")) == [
        ("spec.clusterIPs[0]", 'Invalid value: []string{"10.96.0.6"}: may not change once set')
    ]
    # Leaving it out keeps the allocated one.
    assert update_causes("Service", old, lambda o: (o["spec"].pop("clusterIP"), o["spec"].pop("clusterIPs"))) == []
    # To and from ExternalName is allowed.
    assert update_causes("Service", old, lambda o: o["spec"].update(type="ExternalName", externalName="db.example.com")) == []


def test_service_update_validates_new_object() -> None:
    old = stored("Service", {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})
    assert update_causes("Service", old, lambda o: o["spec"]["ports"][0].update(port=0, targetPort=80)) == [
        ("spec.ports[0].port", f"Invalid value: 0: {PORT_RANGE}")
    ]


def test_service_status_update() -> None:
    old = stored("Service", {"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    ok = lambda o: o.update(status={"loadBalancer": {"ingress": [{"ip": "192.168.56.200", "ipMode": "VIP"}]}})  # noqa: E731
    assert update_causes("Service", old, ok, subresource="status") == []
    bad = lambda o: o.update(status={"loadBalancer": {"ingress": [{"ip": "x", "ipMode": "VIP"}]}})  # noqa: E731
    assert [f for f, _ in update_causes("Service", old, bad, subresource="status")] == ["status.loadBalancer.ingress[0].ip"]


# ---------------------------------------------------------------- Pods


def test_pod_containers_required() -> None:
    assert causes("Pod", pod(containers=[])) == [("spec.containers", "Required value")]


def test_container_name_image_and_duplicates() -> None:
    p = pod(containers=[{"name": "Web", "image": ""}, {"name": "web2", "image": "x"}, {"name": "web2", "image": "y"}])
    assert causes("Pod", p) == [
        ("spec.containers[0].name", f'Invalid value: "Web": {LABEL_MSG}'),
        ("spec.containers[0].image", "Required value"),
        ("spec.containers[2].name", 'Duplicate value: "web2"'),
    ]


def test_container_ports() -> None:
    p = pod(containers=[{"name": "c", "image": "i", "ports": [
        {"containerPort": 0},
        {"containerPort": 70000, "name": "web_http"},
        {"containerPort": 80, "name": "http", "protocol": "ICMP"},
        {"containerPort": 81, "name": "http", "hostPort": 99999},
    ]}])
    assert causes("Pod", p) == [
        ("spec.containers[0].ports[0].containerPort", "Required value"),
        ("spec.containers[0].ports[1].name", 'Invalid value: "web_http": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)'),
        ("spec.containers[0].ports[1].containerPort", f"Invalid value: 70000: {PORT_RANGE}"),
        ("spec.containers[0].ports[2].protocol", 'Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"'),
        ("spec.containers[0].ports[3].name", 'Duplicate value: "http"'),
        ("spec.containers[0].ports[3].hostPort", f"Invalid value: 99999: {PORT_RANGE}"),
    ]


def test_host_port_conflicts() -> None:
    p = pod(containers=[
        {"name": "a", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]},
        {"name": "b", "image": "i", "ports": [{"containerPort": 81, "hostPort": 8080}]},
    ])
    assert causes("Pod", p) == [("spec.containers[1].ports[0].hostPort", 'Duplicate value: "TCP//8080"')]


def test_probes() -> None:
    c = {
        "name": "c",
        "image": "i",
        "livenessProbe": {"httpGet": {"port": 80}, "tcpSocket": {"port": 80}, "successThreshold": 2},
        "readinessProbe": {"periodSeconds": -1},
        "startupProbe": {"exec": {"command": []}, "terminationGracePeriodSeconds": 0},
    }
    assert causes("Pod", pod(containers=[c])) == [
        ("spec.containers[0].livenessProbe.tcpSocket", "Forbidden: may not specify more than 1 handler type"),
        ("spec.containers[0].livenessProbe.successThreshold", "Invalid value: 2: must be 1"),
        ("spec.containers[0].readinessProbe", "Required value: must specify a handler type"),
        ("spec.containers[0].readinessProbe.periodSeconds", "Invalid value: -1: must be greater than or equal to 0"),
        ("spec.containers[0].startupProbe.exec.command", "Required value"),
        ("spec.containers[0].startupProbe.terminationGracePeriodSeconds", "Invalid value: 0: must be greater than 0"),
    ]


def test_probe_ports_and_schemes() -> None:
    c = {"name": "c", "image": "i", "livenessProbe": {"httpGet": {"port": "Web", "scheme": "FTP"}}, "readinessProbe": {"tcpSocket": {"port": 0}}}
    assert causes("Pod", pod(containers=[c])) == [
        ("spec.containers[0].livenessProbe.httpGet.port", 'Invalid value: "Web": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)'),
        ("spec.containers[0].livenessProbe.httpGet.scheme", 'Unsupported value: "FTP": supported values: "HTTP", "HTTPS"'),
        ("spec.containers[0].readinessProbe.tcpSocket.port", f"Invalid value: 0: {PORT_RANGE}"),
    ]


def test_lifecycle_sleep() -> None:
    c = {"name": "c", "image": "i", "lifecycle": {"preStop": {"sleep": {"seconds": 60}}}}
    assert causes("Pod", pod(containers=[c])) == [
        ("spec.containers[0].lifecycle.preStop.sleep", "Invalid value: 60: must be greater than 0 and less than terminationGracePeriodSeconds (30). Enable AllowPodLifecycleSleepActionZeroValue feature gate for zero sleep.")
    ]


def test_pod_level_enums_and_fields() -> None:
    assert causes("Pod", pod(restartPolicy="Sometimes")) == [
        ("spec.restartPolicy", 'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"')
    ]
    assert causes("Pod", pod(dnsPolicy="Cluster")) == [
        ("spec.dnsPolicy", 'Unsupported value: "Cluster": supported values: "ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"')
    ]
    assert causes("Pod", pod(dnsPolicy="None")) == [("spec.dnsConfig", "Required value: must provide `dnsConfig` when `dnsPolicy` is None")]
    assert causes("Pod", pod(dnsPolicy="None", dnsConfig={"nameservers": ["10.96.0.10"], "searches": ["svc.cluster.local."]})) == []
    assert causes("Pod", pod(activeDeadlineSeconds=0)) == [
        ("spec.activeDeadlineSeconds", "Invalid value: 0: must be between 1 and 2147483647, inclusive")
    ]
    assert causes("Pod", pod(nodeName="Node_1")) == [("spec.nodeName", f'Invalid value: "Node_1": {SUBDOMAIN_MSG}')]
    assert causes("Pod", pod(hostname="web.1")) == [("spec.hostname", 'Invalid value: "web.1": must not contain dots')]
    assert causes("Pod", pod(nodeSelector={"kubernetes.io/os": "linux"})) == []


def test_host_network_ports_must_match() -> None:
    p = pod(hostNetwork=True, containers=[{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}])
    assert causes("Pod", p) == [("spec.containers[0].ports[0].hostPort", "Invalid value: 8080: must match `containerPort` when `hostNetwork` is true")]


def test_volumes_and_mounts() -> None:
    p = pod(
        volumes=[{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}}, {"name": "two", "emptyDir": {}, "hostPath": {"path": "/x"}},
                 {"name": "cm", "configMap": {}}, {"name": "up", "hostPath": {"path": "/a/../b"}}],
        containers=[{"name": "c", "image": "i", "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "nope", "mountPath": "/data"}]}],
    )
    assert causes("Pod", p) == [
        ("spec.volumes[1].name", 'Duplicate value: "data"'),
        ("spec.volumes[2].hostPath", "Forbidden: may not specify more than 1 volume type"),
        ("spec.volumes[3].configMap.name", "Required value"),
        ("spec.volumes[4].hostPath.path", "Invalid value: \"/a/../b\": must not contain '..'"),
        ("spec.containers[0].volumeMounts[1].name", 'Not found: "nope"'),
        ("spec.containers[0].volumeMounts[1].mountPath", 'Invalid value: "/data": must be unique'),
    ]


def test_env() -> None:
    env = [
        {"name": "A=B", "value": "x"},
        {"name": "", "value": "x"},
        {"name": "C", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "D", "valueFrom": {}},
        {"name": "E", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}, "secretKeyRef": {"name": "s", "key": "k"}}},
    ]
    assert causes("Pod", pod(containers=[{"name": "c", "image": "i", "env": env}])) == [
        ("spec.containers[0].env[0].name", f'Invalid value: "A=B": {v.RELAXED_ENV_ERR}'),
        ("spec.containers[0].env[1].name", "Required value"),
        ("spec.containers[0].env[2].valueFrom", 'Invalid value: "": may not be specified when `value` is not empty'),
        ("spec.containers[0].env[3].valueFrom", 'Invalid value: "": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`'),
        ("spec.containers[0].env[4].valueFrom", 'Invalid value: "": may not have more than one field specified at a time'),
    ]


def test_resources() -> None:
    c = {"name": "c", "image": "i", "resources": {"limits": {"cpu": "500m", "gpu": "1"}, "requests": {"cpu": "1", "memory": "lots"}}}
    assert causes("Pod", pod(containers=[c])) == [
        ("spec.containers[0].resources.limits[gpu]", 'Invalid value: "gpu": must be a standard resource for containers'),
        ("spec.containers[0].resources.requests", 'Invalid value: "1": must be less than or equal to cpu limit of 500m'),
        ("spec.containers[0].resources.requests[memory]", "Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
        # requests were defaulted from limits, so the bad name shows up twice, as upstream
        ("spec.containers[0].resources.requests[gpu]", 'Invalid value: "gpu": must be a standard resource for containers'),
    ]
    ok = {"name": "c", "image": "i", "resources": {"limits": {"example.com/gpu": "1", "hugepages-2Mi": "2Mi", "memory": "1Gi"}}}
    assert causes("Pod", pod(containers=[ok])) == []


def test_security_contexts() -> None:
    p = pod(securityContext={"runAsUser": -1, "supplementalGroups": [5, -2]}, containers=[{"name": "c", "image": "i", "securityContext": {"runAsGroup": 2**33}}])
    assert causes("Pod", p) == [
        ("spec.containers[0].securityContext.runAsGroup", "Invalid value: 8589934592: must be between 0 and 4294967295, inclusive"),
        ("spec.securityContext.runAsUser", "Invalid value: -1: must be between 0 and 4294967295, inclusive"),
        ("spec.securityContext.supplementalGroups[1]", "Invalid value: -2: must be between 0 and 4294967295, inclusive"),
    ]


def test_tolerations() -> None:
    tol = [
        {"key": "a", "operator": "Equal", "value": "b", "effect": "NoSchedule"},
        {"operator": "Equal", "value": "x"},
        {"key": "a", "operator": "Exists", "value": "x"},
        {"key": "a", "operator": "Near"},
        {"key": "a", "effect": "Evict"},
        {"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5},
    ]
    got = causes("Pod", pod(tolerations=tol))
    assert got == [
        ("spec.tolerations[1].operator", 'Invalid value: "Equal": operator must be Exists when `key` is empty, which means "match all values and all keys"'),
        ("spec.tolerations[2].operator", "Invalid value: \"x\": value must be empty when `operator` is 'Exists'"),
        ("spec.tolerations[3].operator", 'Unsupported value: "Near": supported values: "Equal", "Exists"'),
        ("spec.tolerations[4].effect", 'Unsupported value: "Evict": supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"'),
        ("spec.tolerations[5].effect", "Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set"),
    ]


def test_init_containers() -> None:
    p = pod(initContainers=[
        {"name": "web", "image": "i"},
        {"name": "init", "image": "i", "readinessProbe": {"exec": {"command": ["true"]}}},
        {"name": "side", "image": "i", "restartPolicy": "Always", "readinessProbe": {"exec": {"command": ["true"]}}},
        {"name": "bad", "image": "i", "restartPolicy": "Never"},
    ])
    assert causes("Pod", p) == [
        ("spec.initContainers[0].name", 'Duplicate value: "web"'),
        ("spec.initContainers[1].readinessProbe", "Forbidden: may not be set for init containers without restartPolicy=Always"),
        ("spec.initContainers[3].restartPolicy", 'Unsupported value: "Never": supported values: "Always"'),
    ]


def test_pod_only_checks() -> None:
    p = pod(containers=[{"name": "c", "image": " nginx"}])
    assert causes("Pod", p) == [("spec.containers[0].image", 'Invalid value: " nginx": must not have leading or trailing whitespace')]
    p = pod(ephemeralContainers=[{"name": "debug", "image": "busybox"}])
    assert ("spec.ephemeralContainers", "Forbidden: cannot be set on create") in causes("Pod", p)


def test_pod_without_defaults_reports_required_fields() -> None:
    raw = {"metadata": {"name": "p", "namespace": "d"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    assert fields("Pod", raw) == [
        "spec.terminationGracePeriodSeconds",
        "spec.containers[0].terminationMessagePolicy",
        "spec.containers[0].imagePullPolicy",
        "spec.restartPolicy",
        "spec.dnsPolicy",
    ]


def stored_pod(**spec: Any) -> dict:
    p = pod(**spec)
    p["metadata"]["resourceVersion"] = "1"
    return p


def test_pod_update_allows_image_labels_and_deadline() -> None:
    old = stored_pod()

    def change(o: dict) -> None:
        o["spec"]["containers"][0]["image"] = "nginx:1.28"
        o["spec"]["activeDeadlineSeconds"] = 300
        o["metadata"]["labels"]["version"] = "2"

    assert update_causes("Pod", old, change) == []


def test_pod_update_forbids_other_spec_changes() -> None:
    old = stored_pod()
    got = update_causes("Pod", old, lambda o: o["spec"].update(restartPolicy="Never"))
    assert len(got) == 1
    field, message = got[0]
    assert field == "spec"
    assert message.startswith(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
        "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
        "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"
    )
    assert '"restartPolicy": "Never"' in message


def test_pod_update_containers_count() -> None:
    old = stored_pod()
    got = update_causes("Pod", old, lambda o: o["spec"]["containers"].append({"name": "side", "image": "busybox"}))
    assert got == [("spec.containers", "Forbidden: pod updates may not add or remove containers")]


def test_pod_update_image_still_required() -> None:
    old = stored_pod()
    assert update_causes("Pod", old, lambda o: o["spec"]["containers"][0].update(image="")) == [
        ("spec.containers[0].image", "Required value")
    ]


def test_pod_update_active_deadline_rules() -> None:
    old = stored_pod(activeDeadlineSeconds=100)
    assert update_causes("Pod", old, lambda o: o["spec"].update(activeDeadlineSeconds=50)) == []
    assert update_causes("Pod", old, lambda o: o["spec"].update(activeDeadlineSeconds=200)) == [
        ("spec.activeDeadlineSeconds", "Invalid value: 200: must be less than or equal to previous value")
    ]
    assert update_causes("Pod", old, lambda o: o["spec"].pop("activeDeadlineSeconds")) == [
        ("spec.activeDeadlineSeconds", "Invalid value: null: must not update from a positive integer to nil value")
    ]


def test_pod_update_tolerations_only_additions() -> None:
    old = stored_pod()
    add = {"key": "dedicated", "operator": "Equal", "value": "lab", "effect": "NoSchedule"}
    assert update_causes("Pod", old, lambda o: o["spec"]["tolerations"].append(add)) == []
    assert update_causes("Pod", old, lambda o: o["spec"]["tolerations"][0].update(tolerationSeconds=60)) == []
    assert update_causes("Pod", old, lambda o: o["spec"]["tolerations"].pop(0)) == [
        ("spec.tolerations", "Forbidden: existing toleration can not be modified except its tolerationSeconds")
    ]


def test_pod_status_update() -> None:
    old = stored_pod()
    assert update_causes("Pod", old, lambda o: o.update(status={"phase": "Running", "podIP": "10.244.1.5", "qosClass": "BestEffort"}), subresource="status") == []
    got = update_causes("Pod", old, lambda o: o.update(status={"phase": "Running", "podIPs": [{"ip": "nope"}], "qosClass": "Burstable"}), subresource="status")
    assert ("status.qosClass", 'Invalid value: "Burstable": field is immutable') in got
    assert ("status.podIPs[0]", 'Invalid value: "nope": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)') in got


# ---------------------------------------------------------------- Deployments and ReplicaSets


def test_deployment_selector_required() -> None:
    d = ready("Deployment", deployment(selector=None))
    assert causes("Deployment", d) == [
        ("spec.selector", "Required value"),
        ("spec.template.metadata.labels", 'Invalid value: map[string]string{"app":"web"}: `selector` does not match template `labels`'),
    ]


def test_deployment_selector_must_match_template() -> None:
    d = ready("Deployment", deployment(selector={"matchLabels": {"app": "other"}}))
    assert causes("Deployment", d) == [
        ("spec.template.metadata.labels", 'Invalid value: map[string]string{"app":"web"}: `selector` does not match template `labels`')
    ]
    expr = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}, {"key": "tier", "operator": "DoesNotExist"}]}
    assert causes("Deployment", ready("Deployment", deployment(selector=expr))) == []
    no_labels = ready("Deployment", deployment(labels={}, selector={"matchLabels": {"app": "web"}}))
    assert causes("Deployment", no_labels) == [
        ("spec.template.metadata.labels", "Invalid value: map[string]string{}: `selector` does not match template `labels`")
    ]


def test_deployment_empty_and_invalid_selectors() -> None:
    empty = ready("Deployment", deployment(selector={}))
    assert causes("Deployment", empty) == [
        ("spec.selector", "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment")
    ]
    bad = ready("Deployment", deployment(selector={"matchExpressions": [{"key": "app", "operator": "Like", "values": ["x"]}]}))
    bad["spec"]["template"]["spec"]["containers"][0]["image"] = ""  # not reported: the template is skipped
    got = causes("Deployment", bad)
    assert [f for f, _ in got] == ["spec.selector.matchExpressions[0].operator", "spec.selector"]
    assert got[0][1] == 'Invalid value: "Like": not a valid selector operator'
    assert got[1][1].endswith(": invalid label selector")
    missing_values = ready("Deployment", deployment(selector={"matchExpressions": [{"key": "app", "operator": "In"}]}))
    assert ("spec.selector.matchExpressions[0].values", "Required value: must be specified when `operator` is 'In' or 'NotIn'") in causes("Deployment", missing_values)


def test_deployment_replicas_and_deadlines() -> None:
    d = ready("Deployment", deployment(replicas=-1, minReadySeconds=700))
    assert causes("Deployment", d) == [
        ("spec.replicas", "Invalid value: -1: must be greater than or equal to 0"),
        ("spec.progressDeadlineSeconds", "Invalid value: 600: must be greater than minReadySeconds"),
    ]


@pytest.mark.parametrize(
    ("rolling", "expected"),
    [
        ({"maxSurge": 0, "maxUnavailable": 0}, [("spec.strategy.rollingUpdate.maxUnavailable", "Invalid value: 0: may not be 0 when `maxSurge` is 0")]),
        ({"maxSurge": "0%", "maxUnavailable": "0%"}, [("spec.strategy.rollingUpdate.maxUnavailable", "Invalid value: 0%: may not be 0 when `maxSurge` is 0")]),
        ({"maxSurge": 1, "maxUnavailable": 0}, []),
        ({"maxSurge": "20Percent"}, [("spec.strategy.rollingUpdate.maxSurge", "Invalid value: 20Percent: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")]),
        ({"maxUnavailable": "110%"}, [("spec.strategy.rollingUpdate.maxUnavailable", "Invalid value: 110%: must not be greater than 100%")]),
        ({"maxUnavailable": -1}, [("spec.strategy.rollingUpdate.maxUnavailable", "Invalid value: -1: must be greater than or equal to 0")]),
    ],
)
def test_rolling_update_parameters(rolling: dict, expected: list) -> None:
    d = ready("Deployment", deployment(strategy={"type": "RollingUpdate", "rollingUpdate": rolling}))
    assert causes("Deployment", d) == expected


def test_strategy_types() -> None:
    d = ready("Deployment", deployment(strategy={"type": "BlueGreen"}))
    assert causes("Deployment", d) == [
        ("spec.strategy", 'Unsupported value: apps.DeploymentStrategy{Type:"BlueGreen", RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}: supported values: "Recreate", "RollingUpdate"')
    ]
    d = ready("Deployment", deployment(strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}))
    assert causes("Deployment", d) == [("spec.strategy.rollingUpdate", "Forbidden: may not be specified when strategy `type` is 'Recreate'")]


def test_template_rules() -> None:
    d = deployment()
    d["spec"]["template"]["spec"].update(restartPolicy="Never", activeDeadlineSeconds=10)
    d["spec"]["template"]["spec"]["containers"][0]["image"] = ""
    d["spec"]["template"]["metadata"]["annotations"] = {"bad key!": "x"}
    got = causes("Deployment", ready("Deployment", d))
    assert [f for f, _ in got] == [
        "spec.template.annotations",
        "spec.template.spec.containers[0].image",
        "spec.template.spec.restartPolicy",
        "spec.template.spec.activeDeadlineSeconds",
    ]
    assert got[2][1] == 'Unsupported value: "Never": supported values: "Always"'
    assert got[3][1] == "Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported"


def test_deployment_selector_is_immutable() -> None:
    old = stored("Deployment", deployment())

    def change(o: dict) -> None:
        o["spec"]["selector"] = {"matchLabels": {"app": "web", "v": "2"}}
        o["spec"]["template"]["metadata"]["labels"]["v"] = "2"

    assert update_causes("Deployment", old, change) == [
        ("spec.selector", 'Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web", "v":"2"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable')
    ]
    assert update_causes("Deployment", old, lambda o: o["spec"].update(replicas=5)) == []
    assert update_causes("Deployment", old, lambda o: o["spec"]["template"]["metadata"]["labels"].update(extra="x")) == []


def test_replicaset_validation() -> None:
    rs = deployment()
    rs["kind"] = "ReplicaSet"
    rs = ready("ReplicaSet", rs)
    assert causes("ReplicaSet", rs) == []
    rs["spec"]["replicas"] = -2
    rs["spec"]["selector"] = {"matchLabels": {"app": "x"}}
    assert causes("ReplicaSet", rs) == [
        ("spec.replicas", "Invalid value: -2: must be greater than or equal to 0"),
        ("spec.template.metadata.labels", 'Invalid value: map[string]string{"app":"web"}: `selector` does not match template `labels`'),
    ]
    old = stored("ReplicaSet", {**deployment(), "kind": "ReplicaSet"})
    assert [f for f, _ in update_causes("ReplicaSet", old, lambda o: o["spec"].update(selector={"matchLabels": {"app": "web", "x": "y"}}))] == [
        "spec.template.metadata.labels",
        "spec.selector",
    ]


def test_workload_status_update() -> None:
    old = stored("Deployment", deployment())
    ok = lambda o: o.update(status={"replicas": 2, "readyReplicas": 2, "availableReplicas": 1, "observedGeneration": 1})  # noqa: E731
    assert update_causes("Deployment", old, ok, subresource="status") == []
    bad = lambda o: o.update(status={"replicas": 1, "readyReplicas": 2, "availableReplicas": -1})  # noqa: E731
    assert update_causes("Deployment", old, bad, subresource="status") == [
        ("status.availableReplicas", "Invalid value: -1: must be greater than or equal to 0"),
        ("status.readyReplicas", "Invalid value: 2: cannot be greater than status.replicas"),
    ]


# ---------------------------------------------------------------- Endpoints and EndpointSlices


def slice_(address_type: str = "IPv4", endpoints: list | None = None, ports: list | None = None) -> dict:
    obj = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-abcde", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": address_type,
        "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}, "nodeName": "node-1"}] if endpoints is None else endpoints,
        "ports": [{"name": "http", "port": 8080}] if ports is None else ports,
    }
    return ready("EndpointSlice", obj)


def test_endpointslice_valid() -> None:
    assert causes("EndpointSlice", slice_()) == []
    assert causes("EndpointSlice", slice_("FQDN", [{"addresses": ["db.example.com"]}])) == []
    assert causes("EndpointSlice", slice_("IPv6", [{"addresses": ["fd00::5"]}])) == []


def test_endpointslice_address_type() -> None:
    assert causes("EndpointSlice", slice_("", [])) == [("addressType", "Required value")]
    assert causes("EndpointSlice", slice_("IP", [])) == [("addressType", 'Unsupported value: "IP": supported values: "FQDN", "IPv4", "IPv6"')]
    old = slice_()
    old["metadata"]["resourceVersion"] = "1"
    assert update_causes("EndpointSlice", old, lambda o: o.update(addressType="IPv6", endpoints=[])) == [
        ("addressType", 'Invalid value: "IPv6": field is immutable')
    ]


def test_endpointslice_addresses() -> None:
    eps = slice_(endpoints=[
        {"addresses": []},
        {"addresses": ["fd00::1"]},
        {"addresses": ["10.0.0.256"]},
        {"addresses": ["127.0.0.5"], "hostname": "Web"},
        {"addresses": ["169.254.1.1"]},
    ])
    assert causes("EndpointSlice", eps) == [
        ("endpoints[0].addresses", "Required value: must contain at least 1 address"),
        ("endpoints[1].addresses[0]", 'Invalid value: "fd00::1": must be a valid IPv4 address'),
        ("endpoints[2].addresses[0]", 'Invalid value: "10.0.0.256": must be a valid IPv4 address'),
        ("endpoints[2].addresses[0]", 'Invalid value: "10.0.0.256": must be a valid IP address'),
        ("endpoints[3].addresses[0]", 'Invalid value: "127.0.0.5": may not be in the loopback range (127.0.0.0/8, ::1/128)'),
        ("endpoints[3].hostname", f'Invalid value: "Web": {LABEL_MSG}'),
        ("endpoints[4].addresses[0]", 'Invalid value: "169.254.1.1": may not be in the link-local range (169.254.0.0/16, fe80::/10)'),
    ]


def test_endpointslice_loopback_allowed_for_sim_runtime() -> None:
    eps = slice_(endpoints=[{"addresses": ["127.244.0.7"]}])
    assert fields("EndpointSlice", eps) == ["endpoints[0].addresses[0]"]
    assert causes("EndpointSlice", eps, loopback_ok=True) == []


def test_endpointslice_limits_and_ports() -> None:
    many = slice_(endpoints=[{"addresses": [f"10.244.{i // 250}.{i % 250 + 1}"]} for i in range(1001)])
    assert causes("EndpointSlice", many) == [("endpoints", "Too many: 1001: must have at most 1000 items")]
    ports = slice_(ports=[{"port": 80}, {"port": 81}, {"name": "Bad", "port": 82, "protocol": "HTTP"}])
    assert causes("EndpointSlice", ports) == [
        ("ports[1].name", 'Duplicate value: ""'),
        ("ports[2].name", f'Invalid value: "Bad": {LABEL_MSG}'),
        ("ports[2].protocol", 'Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"'),
    ]


def test_endpointslice_zone_hints() -> None:
    from kmesh.api.validation import is_label_value

    def hinted(*zones: str) -> dict:
        return slice_(endpoints=[{"addresses": ["10.244.1.5"], "hints": {"forZones": [{"name": z} for z in zones]}}])

    assert causes("EndpointSlice", hinted("zone-a")) == []
    assert causes("EndpointSlice", hinted(*"abcdefghi")) == [
        ("endpoints[0].hints.forZones", "Too many: 9: must have at most 8 items")]
    assert causes("EndpointSlice", hinted("a", "a", "b c")) == [
        ("endpoints[0].hints.forZones[1].name", 'Duplicate value: "a"'),
        *[("endpoints[0].hints.forZones[2].name", f'Invalid value: "b c": {m}') for m in is_label_value("b c")],
    ]


def test_endpointslice_update_accepts_legacy_ip_type() -> None:
    old = slice_()
    old["addressType"] = "IP"
    old["metadata"]["resourceVersion"] = "1"
    assert update_causes("EndpointSlice", old, lambda o: None) == []


def endpoints(subsets: list) -> dict:
    return ready("Endpoints", {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"}, "subsets": subsets})


def test_endpoints() -> None:
    good = endpoints([{"addresses": [{"ip": "10.244.1.5", "nodeName": "node-1", "targetRef": {"kind": "Pod", "name": "p"}}], "ports": [{"port": 8080}]}])
    assert causes("Endpoints", good) == []
    bad = endpoints([
        {"ports": [{"port": 80}]},
        {"addresses": [{"ip": "nope", "hostname": "a.b"}], "notReadyAddresses": [{"ip": "0.0.0.0"}], "ports": [{"port": 80}, {"name": "b", "port": 0, "protocol": "X"}]},
    ])
    assert causes("Endpoints", bad) == [
        ("subsets[0]", "Required value: must specify `addresses` or `notReadyAddresses`"),
        ("subsets[1].addresses[0].ip", 'Invalid value: "nope": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)'),
        ("subsets[1].addresses[0].hostname", 'Invalid value: "a.b": must not contain dots'),
        ("subsets[1].addresses[0].ip", 'Invalid value: "nope": must be a valid IP address'),
        ("subsets[1].notReadyAddresses[0].ip", 'Invalid value: "0.0.0.0": may not be unspecified (0.0.0.0)'),
        ("subsets[1].ports[0].name", "Required value"),
        ("subsets[1].ports[1].port", f"Invalid value: 0: {PORT_RANGE}"),
        ("subsets[1].ports[1].protocol", 'Unsupported value: "X": supported values: "SCTP", "TCP", "UDP"'),
    ]
    sim = endpoints([{"addresses": [{"ip": "127.244.0.9"}], "ports": [{"port": 80}]}])
    assert causes("Endpoints", sim, loopback_ok=True) == []
    assert fields("Endpoints", sim) == ["subsets[0].addresses[0].ip"]


# ---------------------------------------------------------------- ConfigMaps


def configmap(**body: Any) -> dict:
    return ready("ConfigMap", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, **body})


def test_configmap_keys() -> None:
    cm = configmap(data={"good.key": "1", "bad key": "2", "..x": "3", "dup": "4"}, binaryData={"dup": "AAAA", "b/in": "AAAA"})
    got = causes("ConfigMap", cm)
    assert [f for f, _ in got] == ["data[bad key]", "data[..x]", "data[dup]", "binaryData[b/in]"]
    assert got[1][1] == "Invalid value: \"..x\": must not start with '..'"
    assert got[2][1] == 'Invalid value: "dup": duplicate of key present in binaryData'


def test_configmap_size() -> None:
    assert causes("ConfigMap", configmap(data={"a": "x" * (1024 * 1024 + 1)})) == [("", "Too long: may not be more than 1048576 bytes")]
    assert causes("ConfigMap", configmap(data={"a": "x" * (1024 * 1024)})) == []


def test_immutable_configmap() -> None:
    old = configmap(data={"a": "1"}, immutable=True)
    old["metadata"]["resourceVersion"] = "1"
    assert update_causes("ConfigMap", old, lambda o: o["metadata"].update(labels={"a": "b"})) == []
    assert update_causes("ConfigMap", old, lambda o: o.update(data={"a": "2"}, immutable=False)) == [
        ("immutable", "Forbidden: field is immutable when `immutable` is set"),
        ("data", "Forbidden: field is immutable when `immutable` is set"),
    ]


def test_update_includes_create_checks() -> None:
    old = configmap(data={"a": "1"})
    old["metadata"]["resourceVersion"] = "1"
    assert [f for f, _ in update_causes("ConfigMap", old, lambda o: o["data"].update({"bad key": "x"}))] == ["data[bad key]"]


# ---------------------------------------------------------------- Namespaces, Nodes, Events, Leases


def test_namespace_finalizers_and_status() -> None:
    ns = ready("Namespace", {"metadata": {"name": "lab"}, "spec": {"finalizers": ["custom"]}}, None)
    assert causes("Namespace", ns) == [
        ("spec.finalizers", 'Invalid value: "custom": name is neither a standard finalizer name nor is it fully qualified')
    ]
    old = ready("Namespace", {"metadata": {"name": "lab"}}, None)
    assert update_causes("Namespace", old, lambda o: o.update(status={"phase": "Terminating"}), subresource="status") == [
        ("status.Phase", "Invalid value: \"Terminating\": may only be 'Active' if `deletionTimestamp` is empty")
    ]


def node(**spec: Any) -> dict:
    return ready("Node", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}, "spec": spec,
                          "status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"}}}, None)


def test_node_validation() -> None:
    assert causes("Node", node(podCIDR="10.244.1.0/24")) == []
    assert causes("Node", node(podCIDR="10.244.1.0/33")) == [
        ("spec.podCIDRs[0]", 'Invalid value: "10.244.1.0/33": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)')
    ]
    assert causes("Node", node(taints=[{"key": "k", "effect": "Sometimes"}, {"key": "k", "effect": ""}])) == [
        ("metadata.taints[0].effect", 'Unsupported value: "Sometimes": supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"'),
        ("metadata.taints[1].effect", "Required value"),
    ]
    n = node()
    n["status"]["capacity"]["cpu"] = "-1"
    assert causes("Node", n) == [("status.capacity.cpu", 'Invalid value: "-1": must be greater than or equal to 0')]


def test_node_update() -> None:
    old = node()
    old["metadata"]["resourceVersion"] = "1"
    assert update_causes("Node", old, lambda o: o["spec"].update(podCIDR="10.244.3.0/24")) == []
    assigned = node(podCIDR="10.244.3.0/24")
    assigned["metadata"]["resourceVersion"] = "1"
    assert update_causes("Node", assigned, lambda o: o["spec"].update(podCIDR="10.244.4.0/24", podCIDRs=["10.244.4.0/24"])) == [
        ("spec.podCIDRs", 'Forbidden: node updates may not change podCIDR except from "" to valid')
    ]
    assert update_causes("Node", assigned, lambda o: o["spec"].update(unschedulable=True)) == []


def event(**body: Any) -> dict:
    base = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.17c3", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}, "reason": "Started", "message": "ok"}
    base.update(body)
    return base


def test_events() -> None:
    assert causes("Event", event()) == []
    assert causes("Event", event(involvedObject={"kind": "Pod", "namespace": "other"})) == [
        ("involvedObject.namespace", 'Invalid value: "other": does not match event.namespace')
    ]
    assert causes("Event", event(involvedObject={"kind": "Node", "name": "node-1"})) == []
    new_style = event(eventTime="2026-11-22T10:00:00.000000Z")
    assert causes("Event", new_style) == [
        ("reportingComponent", "Required value"),
        ("reportingComponent", 'Invalid value: "": name part must be non-empty'),
        ("reportingComponent", f'Invalid value: "": {QNAME_MSG}'),
        ("reportingInstance", "Required value"),
        ("action", "Required value"),
    ]
    complete = event(eventTime="2026-11-22T10:00:00.000000Z", reportingComponent="kmesh/agent", reportingInstance="node-1", action="Pulling")
    assert causes("Event", complete) == []


def test_leases() -> None:
    lease = ready("Lease", {"metadata": {"name": "node-1", "namespace": "kube-node-lease"},
                            "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}}, "kube-node-lease")
    assert causes("Lease", lease) == []
    lease["spec"].update(leaseDurationSeconds=0, leaseTransitions=-1)
    assert causes("Lease", lease) == [
        ("spec.leaseDurationSeconds", "Invalid value: 0: must be greater than 0"),
        ("spec.leaseTransitions", "Invalid value: -1: must be greater than or equal to 0"),
    ]


# ---------------------------------------------------------------- entry points


def test_check_raises_422_with_kubectl_message() -> None:
    svc = service(ports=[{"port": 0}])
    with pytest.raises(APIError) as info:
        v.check("Service", svc)
    err = info.value
    assert err.code == 422
    assert err.reason == "Invalid"
    assert err.message == (
        f'Service "web" is invalid: [spec.ports[0].port: Invalid value: 0: {PORT_RANGE}, '
        f"spec.ports[0].targetPort: Invalid value: 0: {PORT_RANGE}]"
    )
    status = err.status()
    assert status["details"]["causes"][0] == {"reason": "FieldValueInvalid", "message": f"Invalid value: 0: {PORT_RANGE}", "field": "spec.ports[0].port"}
    d = ready("Deployment", deployment(replicas=-1))
    with pytest.raises(APIError) as info:
        v.check(get("Deployment"), d)
    assert info.value.message == 'Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0'
    v.check("Service", service())  # no error


def test_check_on_update() -> None:
    old = stored("ConfigMap", {"metadata": {"name": "cm"}})
    new = copy.deepcopy(old)
    new["metadata"]["uid"] = "x"
    with pytest.raises(APIError):
        v.check("ConfigMap", new, old)


def test_unknown_kind_raises_key_error() -> None:
    with pytest.raises(KeyError):
        v.validate("StatefulSet", {})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 70000) | st.text(max_size=6) | st.sampled_from(["None", "10.0.0.1", "TCP", "Always", "25%"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["spec", "ports", "containers", "template", "metadata", "name", "namespace", "labels", "selector", "matchLabels",
         "matchExpressions", "type", "port", "targetPort", "image", "subsets", "addresses", "ip", "endpoints",
         "strategy", "rollingUpdate", "maxSurge", "clusterIP", "clusterIPs", "volumes", "env", "livenessProbe",
         "httpGet", "data", "annotations", "finalizers", "status", "addressType", "tolerations", "resources"]
    ), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from([k.kind for k in KINDS]),
    obj=st.dictionaries(st.sampled_from(["metadata", "spec", "status", "subsets", "ports", "endpoints", "data", "addressType"]), json_values, max_size=5),
    old=st.dictionaries(st.sampled_from(["metadata", "spec", "status"]), json_values, max_size=3),
)
def test_validation_never_crashes(kind: str, obj: dict, old: dict) -> None:
    for cause in v.validate(kind, obj):
        assert set(cause) == {"reason", "message", "field"}
        assert isinstance(cause["field"], str) and isinstance(cause["message"], str)
    v.validate_update(kind, obj, old)
    v.validate_update(kind, obj, old, subresource="status")


@settings(max_examples=100, deadline=None)
@given(name=label_strategy, port=st.integers(1, 65535), target=st.integers(1, 65535))
def test_generated_valid_services_pass(name: str, port: int, target: int) -> None:
    assume(name[0].isalpha())
    svc = ready("Service", {"metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": target}]}})
    assert v.validate("Service", svc) == []
