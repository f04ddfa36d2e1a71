"""Defaults, checks and table rows of Secrets, Ingresses and the Gateway API kinds, without a server."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any

import pytest

from kmesh.api import defaults, meta, tables, validation
from kmesh.api.validation.gateway import duration_ms

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def admitted(kind: str, obj: dict[str, Any], ns: str | None = "default") -> dict[str, Any]:
    """``obj`` as the API server would store it on create (defaults, then the create strategy)."""
    obj = copy.deepcopy(obj)
    obj.setdefault("metadata", {}).setdefault("name", "x")
    defaults.apply_defaults(kind, obj)
    meta.prepare_create(kind, obj, ns)
    return obj


def causes(kind: str, obj: dict[str, Any], ns: str | None = "default") -> list[tuple[str, str]]:
    return [(c["field"], c["message"]) for c in validation.validate(kind, admitted(kind, obj, ns))]


def fields(kind: str, obj: dict[str, Any], ns: str | None = "default") -> set[str]:
    return {f for f, _ in causes(kind, obj, ns)}


# ---------------------------------------------------------------- Gateway API defaults


def test_httproute_defaults_are_the_crd_defaults() -> None:
    route = admitted("HTTPRoute", {"spec": {"parentRefs": [{"name": "gw", "sectionName": "http"}]}})
    assert route["spec"] == {
        "parentRefs": [{"name": "gw", "sectionName": "http", "group": "gateway.networking.k8s.io", "kind": "Gateway"}],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}],
    }
    assert route["metadata"]["generation"] == 1 and "status" not in route
    route = admitted("HTTPRoute", {"spec": {"rules": [{
        "matches": [{"path": {"type": "Exact"}}, {"method": "GET"}],
        "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "m", "port": 80},
                                                                  "fraction": {"numerator": 1}}},
                    {"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}],
        "backendRefs": [{"name": "b", "port": 80, "filters": [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "a", "value": "b"}]}}]}],
    }]}})
    rule = route["spec"]["rules"][0]
    assert rule["matches"] == [{"path": {"type": "Exact", "value": "/"}},
                               {"method": "GET", "path": {"type": "PathPrefix", "value": "/"}}]
    assert rule["filters"][0]["requestMirror"] == {"backendRef": {"name": "m", "port": 80, "group": "", "kind": "Service"},
                                                   "fraction": {"numerator": 1, "denominator": 100}}
    assert rule["filters"][1]["requestRedirect"] == {"scheme": "https", "statusCode": 302}
    assert rule["backendRefs"] == [{"name": "b", "port": 80, "group": "", "kind": "Service", "weight": 1,
                                    "filters": [{"type": "RequestHeaderModifier",
                                                 "requestHeaderModifier": {"set": [{"name": "a", "value": "b"}]}}]}]
    assert "parentRefs" not in route["spec"]  # no default: a route attached to nothing


def test_gateway_and_class_defaults_and_pending_status() -> None:
    gw = admitted("Gateway", {"spec": {"gatewayClassName": "kmesh", "addresses": [{"value": "192.168.56.240"}],
                                       "listeners": [
        {"name": "http", "port": 80, "protocol": "HTTP"},
        {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "*.example.com",
         "tls": {"certificateRefs": [{"name": "cert"}]},
         "allowedRoutes": {"kinds": [{"kind": "HTTPRoute"}], "namespaces": {"from": "All"}}},
    ]}, "status": {"addresses": [{"value": "1.2.3.4"}]}})
    http, https = gw["spec"]["listeners"]
    assert http == {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Same"}}}
    assert https["tls"] == {"certificateRefs": [{"name": "cert", "group": "", "kind": "Secret"}], "mode": "Terminate"}
    assert https["allowedRoutes"] == {"kinds": [{"kind": "HTTPRoute", "group": "gateway.networking.k8s.io"}],
                                      "namespaces": {"from": "All"}}
    assert gw["spec"]["addresses"] == [{"type": "IPAddress", "value": "192.168.56.240"}]
    pending = {"status": "Unknown", "reason": "Pending", "message": "Waiting for controller",
               "lastTransitionTime": "1970-01-01T00:00:00Z"}
    assert gw["status"] == {"conditions": [{"type": "Accepted", **pending}, {"type": "Programmed", **pending}]}
    assert validation.validate("Gateway", gw) == []
    gc = admitted("GatewayClass", {"spec": {"controllerName": "kmesh.io/gateway-controller"}}, None)
    assert gc["status"] == {"conditions": [{"type": "Accepted", **pending}]}
    assert validation.validate("GatewayClass", gc) == []


def test_status_writes_are_defaulted_and_spec_kept() -> None:
    old = admitted("Gateway", {"spec": {"gatewayClassName": "k", "listeners": [
        {"name": "h", "port": 80, "protocol": "HTTP"}]}})
    old["metadata"]["resourceVersion"] = "5"
    new = copy.deepcopy(old)
    new["spec"]["gatewayClassName"] = "changed"
    new["status"] = {"listeners": [{"name": "h", "attachedRoutes": 0, "conditions": [],
                                    "supportedKinds": [{"kind": "HTTPRoute"}]}]}
    meta.prepare_update("Gateway", new, old, "status")
    assert new["spec"] == old["spec"]
    assert new["status"]["listeners"][0]["supportedKinds"] == [{"kind": "HTTPRoute", "group": "gateway.networking.k8s.io"}]
    assert [c["type"] for c in new["status"]["conditions"]] == ["Accepted", "Programmed"]
    # a main-resource write keeps the status and bumps the generation only when the spec changes
    again = copy.deepcopy(old)
    again["metadata"]["labels"] = {"a": "b"}
    meta.prepare_update("Gateway", again, old)
    assert again["metadata"]["generation"] == 1
    again["spec"]["listeners"][0]["port"] = 8080
    meta.prepare_update("Gateway", again, old)
    assert again["metadata"]["generation"] == 2


# ---------------------------------------------------------------- Gateway API checks


LISTENER = {"name": "h", "port": 80, "protocol": "HTTP"}


@pytest.mark.parametrize(("spec", "field", "text"), [
    ({"listeners": []}, "spec.listeners", "should have at least 1 items"),
    ({"listeners": [{**LISTENER, "port": 65536}]}, "spec.listeners[0].port", "less than or equal to 65535"),
    ({"listeners": [{**LISTENER, "hostname": "a..b"}]}, "spec.listeners[0].hostname", "should match"),
    ({"listeners": [{**LISTENER, "protocol": "HTTPS"}]}, "spec.listeners[0].tls", "must be set for protocol HTTPS"),
    ({"listeners": [{**LISTENER, "tls": {"certificateRefs": [{"name": "c"}]}}]}, "spec.listeners",
     "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']"),
    ({"listeners": [{**LISTENER, "protocol": "HTTPS", "tls": {"mode": "Passthrough"}}]}, "spec.listeners",
     "tls mode must be Terminate for protocol HTTPS"),
    ({"listeners": [{**LISTENER, "protocol": "HTTPS", "tls": {}}]}, "spec.listeners[0].tls",
     "certificateRefs or options must be specified when mode is Terminate"),
    ({"listeners": [LISTENER, {**LISTENER, "name": "i"}]}, "spec.listeners",
     "Combination of port, protocol and hostname must be unique for each listener"),
    ({"listeners": [LISTENER], "addresses": [{"value": "1.1.1.1"}, {"value": "1.1.1.1"}]}, "spec.addresses",
     "IPAddress values must be unique"),
    ({"listeners": [LISTENER], "addresses": [{"value": "1.2.3.4:8080"}]}, "spec.addresses[0].value",
     "spec.addresses[0].value in body must be of type ipv4"),
    ({"listeners": [LISTENER], "addresses": [{"type": "Hostname", "value": "*foo/bar"}]}, "spec.addresses[0]",
     "Hostname value must be empty or contain only valid characters"),
    ({"listeners": [{**LISTENER, "protocol": "TCP", "hostname": "a.example"}]}, "spec.listeners",
     "hostname must not be specified for protocols ['TCP', 'UDP']"),
    ({"listeners": [{**LISTENER, "allowedRoutes": {"kinds": [{"kind": ""}]}}]},
     "spec.listeners[0].allowedRoutes.kinds[0].kind", "should be at least 1 chars long"),
])
def test_gateway_checks(spec: dict[str, Any], field: str, text: str) -> None:
    found = causes("Gateway", {"spec": {"gatewayClassName": "k", **spec}})
    assert any(f == field and text in m for f, m in found), found


def route(rule: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"spec": {"parentRefs": [{"name": "gw"}], "rules": [rule], **spec}}


@pytest.mark.parametrize(("obj", "field", "text"), [
    (route({"backendRefs": [{"name": "s"}]}), "spec.rules[0].backendRefs[0]", "Must have port for Service reference"),
    (route({"backendRefs": [{"name": "s", "port": 1, "weight": -1}]}), "spec.rules[0].backendRefs[0].weight",
     "greater than or equal to 0"),
    (route({"matches": [{"path": {"type": "PathPrefix", "value": "/a/../b"}}]}), "spec.rules[0].matches[0].path",
     "must not contain '/../'"),
    (route({"matches": [{"path": {"type": "Regex", "value": "/"}}]}), "spec.rules[0].matches[0].path.type",
     'Unsupported value: "Regex"'),
    (route({"matches": [{"path": {"type": "Regex", "value": "/"}}]}), "spec.rules[0].matches[0].path",
     "type must be one of ['Exact', 'PathPrefix', 'RegularExpression']"),
    (route({"matches": [{"headers": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]}]}),
     "spec.rules[0].matches[0].headers[1]", 'Duplicate value: map[string]interface {}{"name":"a"}'),
    (route({"filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch",
                                                                      "replacePrefixMatch": "/x"}}}],
            "matches": [{"path": {"type": "Exact", "value": "/a"}}]}), "spec.rules[0]",
     "When using URLRewrite filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified"),
    (route({"filters": [{"type": "RequestRedirect", "requestRedirect": {}}], "backendRefs": [{"name": "s", "port": 1}]}),
     "spec.rules[0]", "RequestRedirect filter must not be used together with backendRefs"),
    (route({"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {}}] * 2}), "spec.rules[0].filters",
     "RequestHeaderModifier filter cannot be repeated"),
    (route({"filters": [{"type": "RequestRedirect", "requestRedirect": {"path": {"type": "ReplaceFullPath"}}}]}),
     "spec.rules[0].filters[0].requestRedirect.path",
     "replaceFullPath must be specified when type is set to 'ReplaceFullPath'"),
    (route({"timeouts": {"request": "10x"}}), "spec.rules[0].timeouts.request", "should match"),
    (route({"retry": {"attempts": 0}}), "spec.rules[0].retry.attempts", "greater than or equal to 1"),
    (route({"retry": {"codes": [500, 600]}}), "spec.rules[0].retry.codes[1]", "less than or equal to 599"),
    (route({"retry": {"codes": [500, 500]}}), "spec.rules[0].retry.codes[1]", "Duplicate value"),
    (route({"retry": {"backoff": "1 s"}}), "spec.rules[0].retry.backoff", "should match"),
    (route({}, parentRefs=[{"name": "gw"}, {"name": "gw", "sectionName": "a"}]), "spec.parentRefs",
     "sectionName must be specified when parentRefs includes 2 or more references to the same parent"),
    (route({}, hostnames=["10.0.0.1.", "*"]), "spec.hostnames[1]", "should match"),
    ({"spec": {"rules": [{"matches": [{}] * 64}, {"matches": [{}] * 64}, {"matches": [{}]}]}}, "spec.rules",
     "the total number of matches across all rules in a route must be less than 128"),
])
def test_httproute_checks(obj: dict[str, Any], field: str, text: str) -> None:
    found = causes("HTTPRoute", obj)
    assert any(f == field and text in m for f, m in found), found


def test_good_routes_and_grants_pass() -> None:
    ok = route({"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST",
                             "queryParams": [{"name": "q", "type": "RegularExpression", "value": "^a"}]}],
                "filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "x.example",
                                                                  "path": {"type": "ReplacePrefixMatch",
                                                                           "replacePrefixMatch": "/"}}}],
                "backendRefs": [{"name": "s", "port": 8080, "weight": 0}],
                "timeouts": {"request": "10s", "backendRequest": "500ms"},
                "retry": {"codes": [500, 503], "attempts": 3, "backoff": "100ms"}}, hostnames=["*.example.com"])
    assert causes("HTTPRoute", ok) == []
    grant = {"spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "a"}],
                      "to": [{"group": "", "kind": "Service"}]}}
    assert causes("ReferenceGrant", grant) == []
    assert fields("ReferenceGrant", {"spec": {"from": [], "to": [{"kind": "Service"}]}}) == {"spec.from", "spec.to[0].group"}


def test_durations() -> None:
    assert duration_ms("1h30m") == 5_400_000 and duration_ms("500ms") == 500 and duration_ms("1m1s1ms") == 61_001


# ---------------------------------------------------------------- Secrets, ServiceAccounts, Pods


def test_secret_string_data_and_types() -> None:
    s = admitted("Secret", {"data": {"a": "MQ=="}, "stringData": {"a": "2", "b": "x"}})
    assert s["type"] == "Opaque" and "stringData" not in s and s["data"] == {"a": "Mg==", "b": "eA=="}
    assert fields("Secret", {"type": "kubernetes.io/tls", "data": {"tls.crt": ""}}) == {"data[tls.key]"}
    assert fields("Secret", {"type": "kubernetes.io/basic-auth"}) == {"data[username]", "data[password]"}
    assert fields("Secret", {"type": "kubernetes.io/ssh-auth"}) == {"data[ssh-privatekey]"}
    assert fields("Secret", {"type": "kubernetes.io/service-account-token"}) == {
        "metadata.annotations[kubernetes.io/service-account.name]"}
    assert fields("Secret", {"type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": "{}"}}) == set()
    assert fields("Secret", {"type": "example.com/anything", "data": {"a b": ""}}) == {"data[a b]"}


def test_secret_updates() -> None:
    old = admitted("Secret", {"type": "Opaque", "data": {"a": "MQ=="}, "immutable": True})
    new = copy.deepcopy(old)
    new["type"] = "kubernetes.io/tls"
    new["data"] = {"tls.crt": "", "tls.key": ""}
    got = {(c["field"], c["reason"]) for c in validation.validate_update("Secret", new, old)}
    assert got == {("type", "FieldValueInvalid"), ("data", "FieldValueForbidden")}


def test_pods_name_their_service_account() -> None:
    pod = admitted("Pod", {"spec": {"containers": [{"name": "c", "image": "kmesh/echo"}]}})
    assert pod["spec"]["serviceAccountName"] == "default" and pod["spec"]["serviceAccount"] == "default"
    pod = admitted("Pod", {"spec": {"serviceAccount": "old", "containers": [{"name": "c", "image": "kmesh/echo"}]}})
    assert pod["spec"]["serviceAccountName"] == "old"
    d = admitted("Deployment", {"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
        "metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    assert "serviceAccountName" not in d["spec"]["template"]["spec"]  # templates are not admitted


# ---------------------------------------------------------------- Ingress, IngressClass


def backend(**port: Any) -> dict[str, Any]:
    return {"service": {"name": "web", "port": port}}


def test_ingress_checks() -> None:
    ok = {"spec": {"defaultBackend": backend(number=80), "rules": [
        {"host": "*.example.com", "http": {"paths": [{"path": "/a", "pathType": "Exact", "backend": backend(name="http")}]}},
        {"http": {"paths": [{"pathType": "ImplementationSpecific", "backend": {"resource": {"kind": "Bucket",
                                                                                          "name": "b"}}}]}}],
        "tls": [{"hosts": ["*.example.com"], "secretName": "tls"}]}}
    assert causes("Ingress", ok) == []
    bad = {"spec": {"rules": [
        {"host": "a.*.com", "http": {"paths": [
            {"path": "/a//b", "pathType": "Prefix", "backend": backend()},
            {"path": "/", "pathType": "Regex", "backend": {"service": {"name": "Web", "port": {"number": 70000}},
                                                           "resource": {"kind": "K", "name": "n"}}},
        ]}},
        {"host": "b.com", "http": {"paths": []}}], "tls": [{"hosts": ["1_2"], "secretName": "Bad"}],
        "ingressClassName": "A"}}
    assert fields("Ingress", bad) == {
        "spec.rules[0].host", "spec.rules[0].http.paths[0].path", "spec.rules[0].http.paths[0].backend",
        "spec.rules[0].http.paths[1].pathType", "spec.rules[0].http.paths[1].backend", "spec.rules[1].http.paths",
        "spec.tls[0].hosts[0]", "spec.tls[0].secretName", "spec.ingressClassName"}


def test_ingress_class_checks_and_defaults() -> None:
    ic = admitted("IngressClass", {"spec": {"controller": "kmesh.io/ingress", "parameters": {"kind": "K", "name": "n"}}},
                  None)
    assert ic["spec"]["parameters"]["scope"] == "Cluster" and ic["metadata"]["generation"] == 1
    assert validation.validate("IngressClass", ic) == []
    assert fields("IngressClass", {"spec": {"controller": "nodomain"}}, None) == {"spec.controller"}
    assert fields("IngressClass", {"spec": {"controller": "a.io/x", "parameters": {
        "kind": "K", "name": "n", "scope": "Namespace"}}}, None) == {"spec.parameters.namespace"}
    new = copy.deepcopy(ic)
    new["spec"]["controller"] = "kmesh.io/other"
    assert [c["field"] for c in validation.validate_update("IngressClass", new, ic)] == ["spec.controller"]


# ---------------------------------------------------------------- tables


def table_cells(kind: str, obj: dict[str, Any]) -> list[Any]:
    obj = copy.deepcopy(obj)
    obj.setdefault("metadata", {}).update(name="x", creationTimestamp="2025-12-31T23:59:00Z")
    return tables.table_row(kind, obj, now=NOW)["cells"]


def test_table_rows() -> None:
    assert table_cells("Secret", {"type": "Opaque", "data": {"a": "", "b": ""}}) == ["x", "Opaque", 2, "60s"]
    assert table_cells("ServiceAccount", {}) == ["x", 0, "60s"]
    rules = [{"host": h} for h in ("a", "b", "", "c", "d")]
    assert table_cells("Ingress", {"spec": {"rules": rules, "tls": [{}]}}) == [
        "x", "<none>", "a,b,c + 2 more...", "", "80, 443", "60s"]
    assert table_cells("Ingress", {"spec": {"ingressClassName": "k", "defaultBackend": {}}, "status": {
        "loadBalancer": {"ingress": [{"ip": "192.168.56.240"}, {"hostname": "lb.example.com"}]}}})[1:5] == [
        "k", "*", "192.168.56.24...", "80"]
    assert table_cells("IngressClass", {"spec": {"controller": "c/d", "parameters": {
        "apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"}}})[1:3] == [
        "c/d", "IngressParameters.k8s.example.com/p"]
    gw = {"spec": {"gatewayClassName": "kmesh"}, "status": {
        "addresses": [{"type": "IPAddress", "value": "192.168.56.240"}, {"value": "b"}],
        "conditions": [{"type": "Accepted", "status": "True"}, {"type": "Programmed", "status": "False"}]}}
    assert table_cells("Gateway", gw) == ["x", "kmesh", "192.168.56.240", "False", "60s"]
    assert table_cells("Gateway", {"spec": {"gatewayClassName": "kmesh"}}) == ["x", "kmesh", None, None, "60s"]
    assert table_cells("GatewayClass", {"spec": {"controllerName": "a/b", "description": "d"}}) == [
        "x", "a/b", None, "60s", "d"]
    assert table_cells("HTTPRoute", {"spec": {"hostnames": ["a.example", "b"]}}) == ["x", '["a.example","b"]', "60s"]
    assert table_cells("ReferenceGrant", {}) == ["x", "60s"]
    assert [c["name"] for c in tables.column_definitions("GatewayClass")] == [
        "Name", "Controller", "Accepted", "Age", "Description"]
    assert tables.column_definitions("GatewayClass")[-1]["priority"] == 1
