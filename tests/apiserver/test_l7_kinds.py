"""Secrets, ServiceAccounts, Ingresses and the Gateway API kinds, driven with the real kubectl."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import yaml

from tests.support.cluster import Cluster

MANIFESTS = Path(__file__).parent / "data" / "gateway-conformance-base.yaml"


def contains(stored: Any, given: Any) -> bool:
    """Whether everything ``given`` says is in ``stored`` (defaults may add more)."""
    if isinstance(given, dict):
        return isinstance(stored, dict) and all(k in stored and contains(stored[k], v) for k, v in given.items())
    if isinstance(given, list):
        return isinstance(stored, list) and len(stored) == len(given) and all(
            contains(s, g) for s, g in zip(stored, given))
    return stored == given


async def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads((await cluster.kubectl("get", *args, "-o", "json")).stdout)


async def test_conformance_base_manifests_apply_unchanged(cluster: Cluster) -> None:
    text = MANIFESTS.read_text().replace("{GATEWAY_CLASS_NAME}", "kmesh")
    await cluster.kubectl("apply", "-f", "-", stdin=text)
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert {d["kind"] for d in docs} >= {"Namespace", "Gateway", "Service", "Deployment"}
    for doc in docs:
        md = doc["metadata"]
        group_version = doc["apiVersion"]
        resource = doc["kind"].lower() + ("." + group_version.split("/")[0] if "/" in group_version else "")
        args = [resource, md["name"]] + (["-n", md["namespace"]] if md.get("namespace") else [])
        stored = await get_json(cluster, *args)
        doc = {k: v for k, v in doc.items() if k != "apiVersion"}
        assert contains(stored, doc), (doc, stored)
    # Applied again: nothing changes (kubectl sends a merge patch with the listeners list where defaults filled
    # in tls.mode; applied to the stored object and defaulted again, it is the same spec: no new generation).
    again = (await cluster.kubectl("apply", "-f", "-", stdin=text)).stdout.splitlines()
    assert len(again) == len(docs)
    assert [x for x in again if not x.endswith(" unchanged")] == [
        "gateway.gateway.networking.k8s.io/same-namespace-with-https-listener configured"]
    https = await get_json(cluster, "gateway", "same-namespace-with-https-listener", "-n", "gateway-conformance-infra")
    assert https["metadata"]["generation"] == 1
    assert https["spec"]["listeners"][0]["tls"]["mode"] == "Terminate"
    # v1beta1 Gateways are stored as v1 and read back in either version
    gw = await get_json(cluster, "gateways.v1.gateway.networking.k8s.io", "all-namespaces", "-n",
                        "gateway-conformance-infra")
    assert gw["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert gw["metadata"]["generation"] == 1
    assert [c["type"] for c in gw["status"]["conditions"]] == ["Accepted", "Programmed"]
    assert {c["reason"] for c in gw["status"]["conditions"]} == {"Pending"}
    beta = await get_json(cluster, "gateways.v1beta1.gateway.networking.k8s.io", "all-namespaces", "-n",
                          "gateway-conformance-infra")
    assert beta["apiVersion"] == "gateway.networking.k8s.io/v1beta1" and beta["spec"] == gw["spec"]
    watched = (await cluster.kubectl(
        "get", "--raw", "/apis/gateway.networking.k8s.io/v1beta1/namespaces/gateway-conformance-infra/gateways"
        "?watch=1&timeoutSeconds=1")).stdout.splitlines()
    events = [json.loads(line) for line in watched]
    assert len(events) == 4 and {e["object"]["apiVersion"] for e in events} == {"gateway.networking.k8s.io/v1beta1"}
    out = (await cluster.kubectl("get", "gateways", "-n", "gateway-conformance-infra")).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"]
    row = next(line.split() for line in lines if line.startswith("same-namespace "))
    assert row[1] == "kmesh" and row[2] == "Unknown"  # no address yet: an empty cell


GATEWAY_CLASS = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: kmesh
spec:
  controllerName: kmesh.io/gateway-controller
  description: the kmesh lab's gateway
"""

ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: default
spec:
  parentRefs:
  - name: gw
  hostnames: ["web.example.com", "*.example.org"]
  rules:
  - backendRefs:
    - name: web
      port: 80
  - matches:
    - headers:
      - name: x-canary
        value: "yes"
      queryParams:
      - name: v
        value: "2"
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add: [{name: x-via, value: kmesh}]
    backendRefs:
    - name: web-canary
      port: 8080
      weight: 10
  - matches:
    - path: {type: Exact, value: /old}
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}}
"""


async def test_gateway_class_and_route_defaults_columns_and_status(cluster: Cluster) -> None:
    await cluster.kubectl("apply", "-f", "-", stdin=GATEWAY_CLASS)
    gc = await get_json(cluster, "gatewayclass", "kmesh")
    assert gc["status"]["conditions"] == [{"type": "Accepted", "status": "Unknown", "reason": "Pending",
                                           "message": "Waiting for controller",
                                           "lastTransitionTime": "1970-01-01T00:00:00Z"}]
    out = (await cluster.kubectl("get", "gc")).stdout.splitlines()
    assert out[0].split() == ["NAME", "CONTROLLER", "ACCEPTED", "AGE"]
    assert out[1].split()[:3] == ["kmesh", "kmesh.io/gateway-controller", "Unknown"]
    wide = (await cluster.kubectl("get", "gc", "-o", "wide")).stdout.splitlines()
    assert wide[0].split() == ["NAME", "CONTROLLER", "ACCEPTED", "AGE", "DESCRIPTION"]
    assert wide[1].endswith("the kmesh lab's gateway")

    await cluster.kubectl("apply", "-f", "-", stdin=ROUTE)
    route = await get_json(cluster, "httproute", "web")
    spec = route["spec"]
    assert spec["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}]
    prefix = {"path": {"type": "PathPrefix", "value": "/"}}
    r0, r1, r2 = spec["rules"]
    assert r0["matches"] == [prefix]
    assert r0["backendRefs"] == [{"group": "", "kind": "Service", "name": "web", "port": 80, "weight": 1}]
    assert r1["matches"] == [{"headers": [{"name": "x-canary", "type": "Exact", "value": "yes"}],
                              "queryParams": [{"name": "v", "type": "Exact", "value": "2"}], **prefix}]
    assert r1["backendRefs"][0]["weight"] == 10
    assert r2["matches"] == [{"path": {"type": "Exact", "value": "/old"}}]
    assert "status" not in route  # HTTPRoute's schema has no status default
    out = (await cluster.kubectl("get", "httproutes")).stdout.splitlines()
    assert out[0].split() == ["NAME", "HOSTNAMES", "AGE"]
    assert out[1].split()[:2] == ["web", '["web.example.com","*.example.org"]']

    # a spec change bumps the generation; a status write does not, and cannot change the spec
    await cluster.kubectl("patch", "httproute", "web", "--type=merge", "-p", '{"spec":{"hostnames":["a.example"]}}')
    route = await get_json(cluster, "httproute", "web")
    assert route["metadata"]["generation"] == 2
    status = {"parents": [{"parentRef": {"name": "gw"}, "controllerName": "kmesh.io/gateway-controller",
                           "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                                           "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2}]}]}
    await cluster.kubectl("patch", "httproute", "web", "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": status, "spec": {"hostnames": ["evil.example"]}}))
    route = await get_json(cluster, "httproute", "web")
    assert route["metadata"]["generation"] == 2 and route["spec"]["hostnames"] == ["a.example"]
    assert route["status"]["parents"][0]["parentRef"] == {
        "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}  # defaulted on status writes too

    # the controller name never changes
    bad = await cluster.kubectl("patch", "gc", "kmesh", "--type=merge", "-p",
                                '{"spec":{"controllerName":"example.com/other"}}', check=False)
    assert bad.returncode != 0 and "spec.controllerName" in bad.stderr and "Value is immutable" in bad.stderr


BAD_GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: bad
  namespace: default
spec:
  gatewayClassName: kmesh
  listeners:
  - name: http
    port: 0
    protocol: HTTP
    hostname: "*.Example.com"
  - name: http
    port: 443
    protocol: HTTPS
    allowedRoutes:
      namespaces:
        from: Nowhere
"""


async def test_bad_gateway_objects_are_refused_naming_the_field(cluster: Cluster) -> None:
    bad = await cluster.kubectl("apply", "-f", "-", stdin=BAD_GATEWAY, check=False)
    assert bad.returncode != 0
    err = bad.stderr
    assert 'The Gateway "bad" is invalid' in err
    for piece in ("spec.listeners[0].port: Invalid value: 0: spec.listeners[0].port in body should be greater than "
                  "or equal to 1",
                  "spec.listeners[0].hostname: Invalid value: \"*.Example.com\"",
                  'spec.listeners[1].allowedRoutes.namespaces.from: Unsupported value: "Nowhere": supported values: '
                  '"All", "Selector", "Same"',
                  "spec.listeners[1].tls: Forbidden: must be set for protocol HTTPS",
                  'spec.listeners: Invalid value: "array": Listener name must be unique within the Gateway',
                  "spec.listeners[1]: Duplicate value"):
        assert piece in err, piece
    assert (await cluster.kubectl("get", "gateway", "bad", check=False)).returncode != 0  # nothing stored

    route = ROUTE.replace("- type: RequestHeaderModifier\n", "- type: RequestHeaderModifier\n      urlRewrite: {}\n")
    route = route.replace("weight: 10", "weight: 1000001")
    route = route.replace("replaceFullPath: /new}}", "replaceFullPath: /new}}\n    - type: URLRewrite\n"
                                                     "      urlRewrite: {hostname: example.com}")
    route = route.replace("value: /old", "value: old")
    bad = await cluster.kubectl("apply", "-f", "-", stdin=route, check=False)
    assert bad.returncode != 0
    for piece in ("spec.rules[1].filters[0]: Invalid value: \"object\": filter.urlRewrite must be nil if the "
                  "filter.type is not URLRewrite",
                  "spec.rules[1].backendRefs[0].weight: Invalid value: 1000001",
                  "spec.rules[2].filters: Invalid value: \"array\": May specify either httpRouteFilterRequestRedirect "
                  "or httpRouteFilterRequestRewrite, but not both",
                  "spec.rules[2].matches[0].path: Invalid value: \"object\": value must be an absolute path"):
        assert piece in bad.stderr, piece
    prefix_rewrite = ROUTE.replace("replaceFullPath: /new}}", "replacePrefixMatch: /new}}").replace(
        "type: ReplaceFullPath", "type: ReplacePrefixMatch")
    bad = await cluster.kubectl("apply", "-f", "-", stdin=prefix_rewrite, check=False)
    assert "When using RequestRedirect filter with path.replacePrefixMatch, exactly one PathPrefix match" in bad.stderr
    slow = ROUTE.replace("  - backendRefs:\n", "  - timeouts: {request: 1s, backendRequest: 2m}\n    backendRefs:\n")
    bad = await cluster.kubectl("apply", "-f", "-", stdin=slow, check=False)
    assert "spec.rules[0].timeouts" in bad.stderr and "backendRequest timeout cannot be longer" in bad.stderr


async def test_explain_and_discovery(cluster: Cluster) -> None:
    out = (await cluster.kubectl("explain", "gateway.spec.listeners")).stdout
    assert "GROUP:      gateway.networking.k8s.io" in out and "KIND:       Gateway" in out
    for field in ("allowedRoutes\t<AllowedRoutes>", "name\t<string> -required-", "port\t<integer> -required-",
                  "tls\t<ListenerTLSConfig>"):
        assert field in out, field
    out = (await cluster.kubectl("explain", "httproute.spec.rules.backendRefs")).stdout
    assert "weight\t<integer>" in out
    out = (await cluster.kubectl("explain", "ingress.spec.rules.http.paths")).stdout
    assert "pathType\t<string> -required-" in out
    res = (await cluster.kubectl("api-resources")).stdout
    for line in ("gatewayclasses   gc  gateway.networking.k8s.io/v1  false  GatewayClass",
                 "gateways  gtw  gateway.networking.k8s.io/v1  true  Gateway",
                 "referencegrants  refgrant  gateway.networking.k8s.io/v1  true  ReferenceGrant",
                 "ingresses  ing  networking.k8s.io/v1  true  Ingress",
                 "ingressclasses  networking.k8s.io/v1  false  IngressClass",
                 "serviceaccounts  sa  v1  true  ServiceAccount",
                 "secrets  v1  true  Secret"):
        assert any(row.split() == line.split() for row in res.splitlines()), line
    versions = (await cluster.kubectl("api-versions")).stdout.split()
    assert {"gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1", "networking.k8s.io/v1"} <= set(
        versions)
    await cluster.kubectl("create", "-f", "-", stdin="""\
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-routes, namespace: default}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: other}]
  to: [{group: "", kind: Service}]
""")
    out = (await cluster.kubectl("get", "gateway-api")).stdout
    assert "referencegrant.gateway.networking.k8s.io/from-routes" in out


TLS_SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: tls
  namespace: default
type: kubernetes.io/tls
data:
  tls.crt: {crt}
stringData:
  tls.key: the key
"""


async def test_secrets(cluster: Cluster) -> None:
    crt = base64.b64encode(b"the cert").decode()
    await cluster.kubectl("apply", "-f", "-", stdin=TLS_SECRET.format(crt=crt))
    secret = await get_json(cluster, "secret", "tls")
    assert secret["type"] == "kubernetes.io/tls" and "stringData" not in secret
    assert secret["data"] == {"tls.crt": crt, "tls.key": base64.b64encode(b"the key").decode()}
    out = (await cluster.kubectl("get", "secrets")).stdout.splitlines()
    assert out[0].split() == ["NAME", "TYPE", "DATA", "AGE"] and out[1].split()[:3] == ["tls", "kubernetes.io/tls", "2"]

    # kubectl's own generators (protobuf bodies), and stringData winning over data
    await cluster.kubectl("create", "secret", "generic", "plain", "--from-literal=a=1")
    assert (await get_json(cluster, "secret", "plain"))["type"] == "Opaque"
    await cluster.kubectl("patch", "secret", "plain", "--type=merge", "-p", '{"data":{"a":"MQ=="},"stringData":{"a":"2"}}')
    assert (await get_json(cluster, "secret", "plain"))["data"]["a"] == base64.b64encode(b"2").decode()

    missing = await cluster.kubectl("create", "-f", "-", check=False, stdin=TLS_SECRET.format(crt=crt).replace(
        "stringData:\n  tls.key: the key\n", "").replace("name: tls", "name: tls2"))
    assert 'data[tls.key]: Required value' in missing.stderr
    bad_key = await cluster.kubectl("create", "secret", "generic", "k", "--from-literal=bad key=1", check=False)
    assert bad_key.returncode != 0
    retype = await cluster.kubectl("patch", "secret", "plain", "--type=merge", "-p", '{"type":"kubernetes.io/tls"}',
                                   check=False)
    assert "type: Invalid value" in retype.stderr and "field is immutable" in retype.stderr
    await cluster.kubectl("patch", "secret", "plain", "--type=merge", "-p", '{"immutable":true}')
    frozen = await cluster.kubectl("patch", "secret", "plain", "--type=merge", "-p", '{"data":{"b":"MQ=="}}',
                                   check=False)
    assert "data: Forbidden: field is immutable when `immutable` is set" in frozen.stderr
    docker = await cluster.kubectl("create", "-f", "-", check=False, stdin="""\
apiVersion: v1
kind: Secret
metadata: {name: reg, namespace: default}
type: kubernetes.io/dockerconfigjson
stringData: {.dockerconfigjson: "not json"}
""")
    assert "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\"" in docker.stderr
    big = await cluster.kubectl("create", "-f", "-", check=False, stdin=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "big", "namespace": "default"},
        "data": {"a": base64.b64encode(b"x" * (600 << 10)).decode(), "b": base64.b64encode(b"y" * (600 << 10)).decode()}}))
    assert "data: Too long: may not be more than 1048576 bytes" in big.stderr


INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: default
spec:
  tls:
  - hosts: [web.example.com]
    secretName: tls
  rules:
  - host: web.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: web, port: {number: 80}}
  - host: "*.example.org"
    http:
      paths:
      - pathType: ImplementationSpecific
        backend:
          service: {name: web, port: {name: http}}
"""


async def test_ingress_default_class_columns_and_validation(cluster: Cluster) -> None:
    await cluster.kubectl("create", "-f", "-", stdin="""\
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: kmesh
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec:
  controller: kmesh.io/ingress-controller
""")
    out = (await cluster.kubectl("get", "ingressclass")).stdout.splitlines()
    assert out[0].split() == ["NAME", "CONTROLLER", "PARAMETERS", "AGE"]
    assert out[1].split()[:3] == ["kmesh", "kmesh.io/ingress-controller", "<none>"]
    await cluster.kubectl("apply", "-f", "-", stdin=INGRESS)
    ing = await get_json(cluster, "ingress", "web")
    assert ing["spec"]["ingressClassName"] == "kmesh"  # DefaultIngressClass admission
    assert ing["status"] == {"loadBalancer": {}} and ing["metadata"]["generation"] == 1
    out = (await cluster.kubectl("get", "ing")).stdout.splitlines()
    assert out[0].split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert out[1].split()[:4] == ["web", "kmesh", "web.example.com,*.example.org", "80,"]
    # kubectl's generator (a protobuf body) and a class of its own
    await cluster.kubectl("create", "ingress", "simple", "--class=other", "--rule=a.example.com/=web:80")
    assert (await get_json(cluster, "ingress", "simple"))["spec"]["ingressClassName"] == "other"
    await cluster.kubectl("patch", "ingress", "web", "--subresource=status", "--type=merge",
                          "-p", '{"status":{"loadBalancer":{"ingress":[{"ip":"192.168.56.240"}]}}}')
    out = (await cluster.kubectl("get", "ing", "web")).stdout.splitlines()
    assert out[1].split()[3] == "192.168.56.240"

    bad = INGRESS.replace("web.example.com\n", "10.0.0.1\n").replace("path: /\n", "path: nope\n").replace(
        "port: {name: http}", "port: {name: http, number: 80}").replace("name: web\n", "name: bad\n", 1)
    res = await cluster.kubectl("apply", "-f", "-", stdin=bad, check=False)
    for piece in ('spec.rules[0].host: Invalid value: "10.0.0.1": must be a DNS name, not an IP address',
                  'spec.rules[0].http.paths[0].path: Invalid value: "nope": must be an absolute path',
                  'spec.rules[1].http.paths[0].backend: Invalid value: "": cannot set both port name & port number'):
        assert piece in res.stderr, piece
    empty = await cluster.kubectl("create", "-f", "-", check=False, stdin=json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "empty"}, "spec": {}}))
    assert "either `defaultBackend` or `rules` must be specified" in empty.stderr
    no_type = INGRESS.replace("        pathType: Prefix\n", "").replace("name: web\n", "name: notype\n", 1)
    res = await cluster.kubectl("apply", "-f", "-", stdin=no_type, check=False)
    assert "spec.rules[0].http.paths[0].pathType: Required value" in res.stderr


async def test_service_accounts_and_pods(cluster: Cluster) -> None:
    await cluster.kubectl("create", "serviceaccount", "builder")
    out = (await cluster.kubectl("get", "sa", "builder")).stdout.splitlines()
    assert out[0].split() == ["NAME", "SECRETS", "AGE"] and out[1].split()[:2] == ["builder", "0"]
    # a Pod names the account "default" (which need not exist yet), or the one it asks for
    await cluster.kubectl("run", "p1", "--image=kmesh/echo")
    pod = await get_json(cluster, "pod", "p1")
    assert pod["spec"]["serviceAccountName"] == "default" and pod["spec"]["serviceAccount"] == "default"
    await cluster.kubectl("create", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p2"},
        "spec": {"serviceAccount": "builder", "containers": [{"name": "c", "image": "kmesh/echo"}]}}))
    pod = await get_json(cluster, "pod", "p2")
    assert pod["spec"]["serviceAccountName"] == "builder" and pod["spec"]["serviceAccount"] == "builder"
