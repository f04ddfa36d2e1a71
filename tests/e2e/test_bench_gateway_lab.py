"""``kmesh bench lb --via``: a canary split measured through a Gateway, per-request balancing over keep-alive
connections beside kube-proxy's pinning, and the ingress controller — in one netns lab (iptables mode), driven as a
user does: kubectl apply, then ``kmesh bench lb``.

Two Deployments of agnhost netexec, ``v1`` (2 pods) and ``v2`` (1 pod), each behind its Service; a Gateway of
class ``kmesh`` and an HTTPRoute that splits 90/10 between them; an Ingress to ``v1``; a client pod.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmesh.lab.topology import LabNames
from tests.e2e.labdriver import AGNHOST, KMESH, Lab, client_pods, running_lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

APPS = "".join(f"""---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {app}, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {app}}}}}
  template:
    metadata: {{labels: {{app: {app}}}}}
    spec:
      containers:
      - name: netexec
        image: {AGNHOST}
        args: [netexec, --http-port=8080, --udp-port=-1]
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: {app}, namespace: default}}
spec:
  selector: {{app: {app}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
""" for app, replicas in (("v1", 2), ("v2", 1))) + client_pods(1)

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


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("benchgw")
    with running_lab(root, LabNames(f"g{uuid.uuid4().hex[:5]}"), "iptables", nodes=2) as lab:
        lab.kubectl("apply", "-f", "-", stdin=APPS)
        for app in ("v1", "v2"):
            lab.kubectl("rollout", "status", f"deployment/{app}", "--timeout=120s")
        lab.kubectl("wait", "--for=condition=Ready", "pod/client-1", "--timeout=90s")
        lab.kubectl("apply", "-f", "-", stdin=ROUTES)
        lab.kubectl("wait", "gateway/canary", "--for=condition=Programmed", "--timeout=120s")
        lab.kubectl("rollout", "status", "deployment/canary-kmesh", "--timeout=120s")
        lab.kubectl("wait", "ingress/v1", "--for=jsonpath={.status.loadBalancer.ingress[0].ip}", "--timeout=60s")
        yield lab


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
