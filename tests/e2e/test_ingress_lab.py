"""Traffic from outside in a netns lab, as a user drives it: the ingress controller and the Gateway API
controller the lab ships, reached from the machine through cluster.json's loopback forwards and from a pod
through the LoadBalancer address.

One lab (iptables mode, two nodes) for the module:
- Ingress: the default class, host and path rules, TLS with SNI from a Secret made with the real
  ``kubectl create secret tls``, status.loadBalancer, and a rule change under load with no failed request;
- Gateway API: upstream's conformance base manifests applied unchanged (class substituted), the Gateways
  Programmed with addresses, and a sample of upstream's HTTPRoute cases sent through the real path.
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
from tests.e2e.labdriver import Lab, client_pods, running_lab
from tests.gateway.checks import check
from tests.gateway.conformance_cases import CASES, MANIFESTS, STATUSES
from tests.gateway.manifests import CONFORMANCE
from tests.gateway.rig import Reply
from tests.support.certs import CA, server_pair

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ECHO = "gcr.io/k8s-staging-gateway-api/echo-basic:v20231214-v1.0.0-140-gf544a46e"
APPS = "".join(f"""---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {app}, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {app}}}}}
  template:
    metadata: {{labels: {{app: {app}}}}}
    spec:
      containers:
      - name: echo
        image: {ECHO}
        env:
        - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
        - {{name: NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
        ports: [{{containerPort: 3000}}]
        readinessProbe: {{httpGet: {{path: /health, port: 3000}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: {app}, namespace: default}}
spec:
  selector: {{app: {app}}}
  ports: [{{name: http, port: 80, targetPort: 3000}}]
""" for app in ("app-a", "app-b")) + client_pods(1)

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
        for app in ("app-a", "app-b"):
            lab.kubectl("rollout", "status", f"deployment/{app}", "--timeout=120s")
        lab.kubectl("wait", "--for=condition=Ready", "pod/client-1", "--timeout=90s")
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
