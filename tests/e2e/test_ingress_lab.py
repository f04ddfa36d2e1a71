"""Traffic from outside in a netns lab, as a user drives it: the ingress controller and the Gateway API
controller the lab ships, reached from the machine through cluster.json's loopback forwards and from a pod
through the LoadBalancer address.

One lab (iptables mode, two nodes) for the module:
- Ingress: the default class, host and path rules, TLS with SNI from a Secret made with the real
  ``kubectl create secret tls``, status.loadBalancer, and a rule change under load with no failed request;
- Gateway API: upstream's conformance base manifests applied unchanged (class substituted), the Gateways
  Programmed with addresses, and a sample of upstream's HTTPRoute cases sent through the real path;
- ``kmesh bench lb --via``: a 90/10 canary split through a Gateway, per-request balancing over kept-alive
  connections beside kube-proxy's per-connection choice, and the ingress controller with a Host.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from kmesh.lab.topology import LabNames
from tests.e2e.labdriver import AGNHOST, KMESH, Lab, app, client_pods, running_lab
from tests.gateway.checks import check
from tests.gateway.conformance_cases import CASES, MANIFESTS, STATUSES
from tests.gateway.manifests import CONFORMANCE
from tests.gateway.rig import Reply
from tests.support.certs import CA, server_pair

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ECHO = "gcr.io/k8s-staging-gateway-api/echo-basic:v20231214-v1.0.0-140-gf544a46e"
ECHO_ENV = """        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
"""
NETEXEC = ["netexec", "--http-port=8080", "--udp-port=-1"]
APPS = (app("app-a", ECHO, [], 3000, ready_path="/health", env=ECHO_ENV)
        + app("app-b", ECHO, [], 3000, ready_path="/health", env=ECHO_ENV)
        + app("v1", AGNHOST, NETEXEC, 8080, replicas=2, ready_path="/healthz")
        + app("v2", AGNHOST, NETEXEC, 8080, ready_path="/healthz")
        + client_pods(1))

INGRESS = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  tls: [{hosts: [a.example], secretName: a-tls}]
  rules:
  - host: a.example
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: %(a_backend)s, port: {number: 80}}}}]
  - host: "*.b.example"
    http:
      paths: [{path: /b, pathType: Prefix, backend: {service: {name: app-b, port: {name: http}}}}]
"""

ROUTES = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: canary, namespace: default}
spec:
  gatewayClassName: kmesh
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: canary, namespace: default}
spec:
  parentRefs: [{name: canary}]
  rules:
  - backendRefs:
    - {name: v1, port: 80, weight: 90}
    - {name: v2, port: 80, weight: 10}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: v1, namespace: default}
spec:
  rules:
  - host: v1.example
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: v1, port: {number: 80}}}}]
"""


def load_balancer(lab: Lab, ns: str, name: str) -> tuple[str, dict[str, str]]:
    """The address of a LoadBalancer Service and its loopback forwards, once the Service has one and cluster.json
    lists it."""
    lab.kubectl("wait", "-n", ns, f"svc/{name}", "--for=jsonpath={.status.loadBalancer.ingress[0].ip}",
                "--timeout=120s")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the lab rewrites cluster.json right after the address appears
        entry = json.loads(lab.dd.cluster_json.read_text()).get("loadBalancers", {}).get(f"{ns}/{name}")
        if entry and entry.get("ports"):
            return entry["ip"], entry["ports"]
        time.sleep(0.2)
    raise AssertionError(f"cluster.json lists no loopback forward for {ns}/{name}")


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-s", "--max-time", "10", *args], capture_output=True, text=True, timeout=30)


def pod_of(body: str) -> str:
    return str(json.loads(body)["pod"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("ingress")
    with running_lab(root, LabNames(f"i{uuid.uuid4().hex[:5]}"), "iptables", nodes=2) as lab:
        lab.kubectl("apply", "-f", "-", stdin=APPS)
        for name in ("app-a", "app-b", "v1", "v2"):
            lab.kubectl("rollout", "status", f"deployment/{name}", "--timeout=120s")
        lab.kubectl("wait", "--for=condition=Ready", "pod/client-1", "--timeout=90s")
        lab.kubectl("apply", "-f", "-", stdin=ROUTES)
        lab.kubectl("wait", "gateway/canary", "--for=condition=Programmed", "--timeout=120s")
        lab.kubectl("rollout", "status", "deployment/canary-kmesh", "--timeout=120s")
        lab.kubectl("wait", "ingress/v1", "--for=jsonpath={.status.loadBalancer.ingress[0].ip}", "--timeout=60s")
        yield lab


@pytest.fixture(scope="module")
def ca(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tls")
    ca = CA.new("kmesh-ingress-test")
    crt, key = server_pair(ca, "a.example")
    (d / "a.crt").write_bytes(crt)
    (d / "a.key").write_bytes(key)
    (d / "ca.crt").write_bytes(ca.pem())
    lab.kubectl("create", "secret", "tls", "a-tls", f"--cert={d / 'a.crt'}", f"--key={d / 'a.key'}")
    return d / "ca.crt"


def test_ingress_hosts_paths_and_tls_from_the_machine_and_a_pod(lab: Lab, ca: Path) -> None:
    lab.kubectl("apply", "-f", "-", stdin=INGRESS % {"a_backend": "app-a"})
    ip, ports = load_balancer(lab, "kmesh-system", "kmesh-ingress-controller")
    lab.kubectl("wait", "ingress/web", "--for=jsonpath={.status.loadBalancer.ingress[0].ip}=" + ip, "--timeout=60s")
    assert "kmesh" in lab.kubectl("get", "ingress", "web")  # the default class was filled in
    http, https = ports["80"].split(":")[1], ports["443"].split(":")[1]
    r = curl("--resolve", f"a.example:{http}:127.0.0.1", f"http://a.example:{http}/x")
    assert pod_of(r.stdout).startswith("app-a-"), r
    r = curl("--resolve", f"x.b.example:{http}:127.0.0.1", f"http://x.b.example:{http}/b/c")
    assert pod_of(r.stdout).startswith("app-b-"), r
    r = curl("-o", "/dev/null", "-w", "%{http_code}", "--resolve", f"y.x.b.example:{http}:127.0.0.1",
             f"http://y.x.b.example:{http}/b")
    assert r.stdout == "404"  # a wildcard stands for one label
    r = curl("--cacert", str(ca), "--resolve", f"a.example:{https}:127.0.0.1", f"https://a.example:{https}/")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["pod"].startswith("app-a-") and doc["headers"]["X-Forwarded-Proto"] == ["https"], doc
    # from a pod, to the LoadBalancer address itself
    out = lab.exec("client-1", f"curl -s --max-time 5 -H 'Host: a.example' http://{ip}/")
    assert pod_of(out).startswith("app-a-"), out


def test_an_ingress_rule_change_fails_no_request(lab: Lab, ca: Path) -> None:
    lab.kubectl("apply", "-f", "-", stdin=INGRESS % {"a_backend": "app-a"})
    _, ports = load_balancer(lab, "kmesh-system", "kmesh-ingress-controller")
    port = int(ports["80"].split(":")[1])
    replies: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:  # keep-alive requests, one after another, until told to stop
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not stop.is_set():
            conn.request("GET", "/", headers={"Host": "a.example"})
            resp = conn.getresponse()
            body = resp.read().decode()
            replies.append((resp.status, pod_of(body) if resp.status == 200 else body))

    t = threading.Thread(target=load)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while len(replies) < 20 and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.05)
        lab.kubectl("apply", "-f", "-", stdin=INGRESS % {"a_backend": "app-b"})
        deadline = time.monotonic() + 30
        while not (replies and replies[-1][1].startswith("app-b-")) and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.05)
        n = len(replies)
        while len(replies) < n + 20 and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(timeout=30)
    assert [r for r in replies if r[0] != 200] == []
    pods = [p.split("-")[1] for _, p in replies]
    assert pods[0] == "a" and pods[-1] == "b", pods
    switch = pods.index("b")
    assert set(pods[switch:]) == {"b"}, pods  # once switched, every request goes to the new backend


def _conformance_objects() -> str:
    return (CONFORMANCE / "manifests.yaml").read_text().replace("{GATEWAY_CLASS_NAME}", "kmesh")


SAMPLE = ["HTTPRouteSimpleSameNamespace", "HTTPRouteMatching", "HTTPRouteRequestHeaderModifier",
          "HTTPRouteInvalidNonExistentBackendRef", "HTTPRouteCrossNamespace"]


def test_gateway_api_conformance_base_and_a_sample_of_routes(lab: Lab, tmp_path: Path) -> None:
    lab.kubectl("apply", "-f", "-", stdin=_conformance_objects())
    ca = CA.new("gateway-conformance")
    for name in ("tls-checks-certificate", "tls-validity-checks-certificate"):
        crt, key = server_pair(ca, "example.org", "*.example.org", "second-example.org", "*.wildcard.org")
        (tmp_path / f"{name}.crt").write_bytes(crt)
        (tmp_path / f"{name}.key").write_bytes(key)
        lab.kubectl("create", "secret", "tls", name, "-n", "gateway-conformance-infra",
                    f"--cert={tmp_path / name}.crt", f"--key={tmp_path / name}.key")
    for gw in ("same-namespace", "backend-namespaces", "all-namespaces", "same-namespace-with-https-listener"):
        lab.kubectl("wait", "-n", "gateway-conformance-infra", f"gateway/{gw}", "--for=condition=Programmed",
                    "--timeout=120s")
    for dep in ("infra-backend-v1", "infra-backend-v2", "infra-backend-v3"):
        lab.kubectl("rollout", "status", "-n", "gateway-conformance-infra", f"deployment/{dep}", "--timeout=120s")
    lab.kubectl("rollout", "status", "-n", "gateway-conformance-web-backend", "deployment/web-backend",
                "--timeout=120s")
    gateways = json.loads(lab.kubectl("get", "gateways", "-A", "-o", "json"))["items"]
    for gw in gateways:
        addrs = gw["status"].get("addresses") or []
        assert addrs and addrs[0]["type"] == "IPAddress", gw["status"]
    _, ports = load_balancer(lab, "gateway-conformance-infra", "same-namespace-kmesh")
    for test in SAMPLE:  # one test's manifests at a time, removed afterwards, as upstream's suite runs them
        manifest = str(CONFORMANCE / MANIFESTS[test])
        lab.kubectl("apply", "-f", manifest)
        try:
            _statuses_become(lab, test)
            for case in CASES[test]:
                if case.gateway == "gateway-conformance-infra/same-namespace":
                    _eventually(case, ports["80"])
        finally:
            lab.kubectl("delete", "-f", manifest, "--wait=true")


def _statuses_become(lab: Lab, test: str, timeout: float = 30.0) -> None:
    """Wait until every route condition upstream's test asserts is what it expects."""
    deadline = time.monotonic() + timeout
    while True:
        routes = {f"{r['metadata']['namespace']}/{r['metadata']['name']}": r
                  for r in json.loads(lab.kubectl("get", "httproutes", "-A", "-o", "json"))["items"]}
        wrong = []
        for route, gateway, ctype, status, reason in STATUSES.get(test, []):
            parents = ((routes.get(route) or {}).get("status") or {}).get("parents") or []
            conds = {(c["status"], c["reason"]) for p in parents if p["parentRef"]["name"] == gateway.split("/")[1]
                     for c in p["conditions"] if c["type"] == ctype}
            if conds != {(status, reason)}:
                wrong.append((route, ctype, conds))
        if not wrong:
            return
        assert time.monotonic() < deadline, (test, wrong)
        time.sleep(0.2)  # the controller's writes are the events; kubectl cannot wait on a nested condition


def _eventually(case: Any, target: str, timeout: float = 20.0) -> None:
    """Upstream's MakeRequestAndExpectEventuallyConsistentResponse, simplified: the case holds within the timeout
    (the proxies apply a change a moment after the API has it)."""
    deadline = time.monotonic() + timeout
    while True:
        args = ["-i", "-X", case.method] + [a for n, v in case.headers for a in ("-H", f"{n}: {v}")]
        if case.host:
            args += ["-H", f"Host: {case.host}"]
        r = curl(*args, f"http://{target}{case.path}")
        try:
            assert r.stdout, (case, r)
            check(case, _reply(r.stdout))
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def _reply(raw: str) -> Reply:
    head, _, body = raw.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    headers: dict[str, Any] = {}
    for line in lines[1:]:
        n, _, v = line.partition(":")
        k = n.strip().lower()
        headers[k] = headers[k] + "," + v.strip() if k in headers else v.strip()
    return Reply(int(lines[0].split()[1]), headers, body.encode())


# ---- kmesh bench lb through the Gateway and the ingress controller (per-request balancing, canary splits)

def bench(lab: Lab, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``kmesh bench lb --json --warmup 30 ARGS`` against the lab (ARGS may override the warm-up): the process and
    its JSON."""
    res = subprocess.run([*KMESH, "bench", "lb", "--json", "--warmup", "30", "--data-dir", str(lab.dd.root), *args],
                         capture_output=True, text=True, timeout=300)
    assert res.stdout.strip(), res.stderr
    return res, json.loads(res.stdout)


def pods_of(lab: Lab, app: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in lab.pods(f"app={app}"))


def test_canary_split_by_weights_through_the_gateway(lab: Lab, tmp_path: Path) -> None:
    png = tmp_path / "canary.png"
    res, doc = bench(lab, "v1,v2", "--via", "gateway/default/canary", "--expect", "weights:v1=90,v2=10",
                     "--alpha", "0.0001", "--plot", str(png))
    assert res.returncode == 0, res.stderr + res.stdout  # a 90/10 split rejected by chance 1 in 10000
    address = lab.kubectl("get", "gateway", "canary", "-o", "jsonpath={.status.addresses[0].value}")
    assert doc["via"] == "gateway/default/canary" and doc["target"] == f"{address}:80"
    assert (doc["host"], doc["path"], doc["protocol"]) == (address, "/hostname", "http")
    assert doc["cells"] == "services" and doc["passed"] and doc["errors"] == {}
    assert doc["chi_square"]["df"] == 1 and doc["chi_square"]["p_value"] >= 0.0001
    by_service = {s["name"]: s for s in doc["services"]}
    assert set(by_service) == {"v1", "v2"}
    assert (by_service["v1"]["expected"], by_service["v2"]["expected"]) == (pytest.approx(0.9), pytest.approx(0.1))
    assert (by_service["v1"]["endpoints"], by_service["v2"]["endpoints"]) == (2, 1)
    assert by_service["v1"]["count"] + by_service["v2"]["count"] == doc["requests"] == 300
    assert 0 < by_service["v2"]["count"] < by_service["v1"]["count"]
    # every pod of both Services is tallied by name, under its Service
    eps = {e["name"]: e for e in doc["endpoints"]}
    assert sorted(eps) == sorted(pods_of(lab, "v1") + pods_of(lab, "v2"))
    assert {n: e["service"] for n, e in eps.items()} == {**{p: "v1" for p in pods_of(lab, "v1")},
                                                          **{p: "v2" for p in pods_of(lab, "v2")}}
    assert png.read_bytes()[:4] == b"\x89PNG"
    # the same split judged against the wrong weights fails (exit 1), and says why
    res, doc = bench(lab, "v1,v2", "--via", "gateway/default/canary", "--expect", "weights:v1=50,v2=50",
                     "--alpha", "0.0001", "--from", "client-1")
    assert res.returncode == 1 and not doc["passed"] and "rejected" in doc["reason"], doc


def test_keepalive_spreads_over_endpoints_through_the_gateway_not_through_the_clusterip(lab: Lab) -> None:
    res, via = bench(lab, "v1,v2", "--via", "gateway/canary", "--keepalive", "--connections", "2",
                     "--per-connection", "50", "--from", "client-1", "--expect", "weights:v1=90,v2=10",
                     "--alpha", "0.0001")
    assert res.returncode == 0, res.stderr + res.stdout
    assert via["judged"] == "requests" and via["errors"] == {} and via["reconnects"] == 0
    rows = via["per_connection"]
    assert [r["requests"] for r in rows] == [50, 50]
    # the proxy picks an endpoint per request: one connection's requests go to several pods
    assert via["spread"] == sum(len(r["endpoints"]) >= 2 for r in rows) >= 1, rows
    assert max(len(r["endpoints"]) for r in rows) >= 2
    # kube-proxy (iptables) picks one per connection: every request of a connection to the same pod
    res, direct = bench(lab, "v1", "--keepalive", "--connections", "2", "--per-connection", "50",
                        "--from", "client-1", "--alpha", "0.0001")
    assert res.returncode == 0, res.stderr + res.stdout  # uniform over 2 connections: p >= 0.157 always
    assert direct["via"] == "service" and direct["judged"] == "connections" and direct["errors"] == {}
    assert direct["target"] == f"{lab.cluster_ip('v1')}:80"
    assert direct["spread"] == 0 and direct["pinned"] == direct["pinned_of"] == 2
    assert all(len(r["endpoints"]) == 1 and r["pinned"] for r in direct["per_connection"])


def test_via_the_ingress_controller_with_a_host(lab: Lab) -> None:
    res, doc = bench(lab, "v1", "--via", "ingress", "--host", "v1.example", "--requests", "100",
                     "--from", "client-1", "--alpha", "0.0001")
    assert res.returncode == 0, res.stderr + res.stdout
    address = lab.kubectl("get", "svc", "-n", "kmesh-system", "kmesh-ingress-controller",
                          "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}")
    assert (doc["via"], doc["target"], doc["host"]) == ("ingress", f"{address}:80", "v1.example")
    assert doc["errors"] == {} and sorted(e["name"] for e in doc["endpoints"]) == pods_of(lab, "v1")
    assert sum(e["count"] for e in doc["endpoints"]) == 100
    # a host no rule matches: the controller answers 404, counted as errors; nothing is tallied, exit 1
    res, doc = bench(lab, "v1", "--via", "ingress", "--host", "nobody.example", "--requests", "10",
                     "--from", "client-1", "--warmup", "0")
    assert res.returncode == 1 and doc["errors"] == {"http 404": 10}, doc
