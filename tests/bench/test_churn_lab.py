"""Endpoint churn under load, in a 2-node netns lab (iptables mode): ``kmesh bench churn --during rollout``.

Two 3-replica agnhost netexec Deployments with a readiness probe on /readyz
sit behind Services ``web`` and ``web-pre``; only ``web-pre``'s pods have a
``preStop: {sleep: 3}`` hook. The client ``client-1`` sends 40 requests/s
(GET /hostname, a new connection each) through each Service while its
Deployment rolls. Without the hook an old pod stops listening the moment it
is told to stop, while kube-proxy may still send it new connections; with it
the pod keeps serving until its endpoint is out of the rules. The test checks
that each report adds up and the direction (with preStop: no more errors),
never a time bound. A UDP run deleting one pod then reads the source node's
conntrack table for flows left pointing at the deleted pod.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kmesh.lab.topology import LabNames
from tests.e2e.labdriver import AGNHOST, KMESH, Lab, client_pods, running_lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def _web(name: str, pre_stop: bool) -> str:
    hook = "\n        lifecycle: {preStop: {sleep: {seconds: 3}}}" if pre_stop else ""
    return f"""---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: web
        image: {AGNHOST}
        args: [netexec, --http-port=8080, --udp-port=8081]
        ports: [{{containerPort: 8080}}, {{containerPort: 8081, protocol: UDP}}]
        readinessProbe: {{httpGet: {{path: /readyz, port: 8080}}, periodSeconds: 1}}{hook}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: udp, port: 81, targetPort: 8081, protocol: UDP}}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("churn")
    with running_lab(root, LabNames(f"c{uuid.uuid4().hex[:5]}"), "iptables", nodes=2) as lab:
        lab.kubectl("apply", "-f", "-", stdin=client_pods(1) + _web("web", False) + _web("web-pre", True))
        lab.kubectl("wait", "--for=condition=Ready", "pod", "client-1", "--timeout=120s")
        for name in ("web", "web-pre"):
            lab.kubectl("rollout", "status", f"deployment/{name}", "--timeout=120s")
        yield lab


def _churn(lab: Lab, service: str, *args: str) -> dict[str, Any]:
    res = subprocess.run([*KMESH, "bench", "churn", service, "--data-dir", str(lab.dd.root), "--from", "client-1",
                          "--json", "--timeout", "1", "--after", "1", "--settle", "2", "--max-wait", "90", *args],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    _adds_up(doc)
    return doc


def _adds_up(doc: dict[str, Any]) -> None:
    recs = doc["records"]
    failed = [r for r in recs if r["error"] is not None]
    assert doc["requests"] == len(recs) == doc["ok"] + doc["failed"]
    assert doc["failed"] == len(failed) == sum(doc["errors"].values()) == sum(doc["errorDetail"].values())
    assert set(doc["errors"]) == {"refused", "reset", "timeout", "other"}
    assert sum(w["failed"] for w in doc["windows"]) == doc["failed"]
    assert doc["longest_error_window_s"] == (doc["errorWindow"]["seconds"] if doc["errorWindow"] else 0.0)
    tl = doc["timeline"]
    assert sum(r["ok"] + sum(v for k, v in r.items() if k not in ("t", "ok", "terminating", "endpoints"))
               for r in tl) == doc["requests"]
    assert sum(doc["answers"].values()) == doc["ok"]
    sbt = doc["served_by_terminating"]
    assert sbt["requests"] == sum(p["requests"] for p in sbt["pods"]) == sum(r.get("terminating", 0) for r in tl)
    assert sbt["afterEndpointTerminating"] <= sbt["requests"]
    deleted = {p["pod"]: p for p in doc["pods"] if p["deletingAt"] is not None}
    for p in sbt["pods"]:  # each named pod had been seen terminating before it answered, and answered that much
        assert p["pod"] in deleted and p["first"] >= p["deletingAt"] and doc["answers"][p["pod"]] >= p["requests"]
    assert doc["completed"] and doc["settled"] and doc["passed"]


def test_rollout_with_and_without_pre_stop(lab: Lab) -> None:
    plain = _churn(lab, "web", "--during", "rollout", "--rate", "40")
    pre = _churn(lab, "web-pre", "--during", "rollout", "--rate", "40")
    for doc, name in ((plain, "web"), (pre, "web-pre")):
        print(name, {k: doc[k] for k in ("requests", "ok", "errors", "errorDetail", "longest_error_window_s")},
              {k: doc["served_by_terminating"][k] for k in ("requests", "afterEndpointTerminating")})  # with -s
        assert doc["during"] == "rollout" and doc["deployment"] == name and doc["protocol"] == "http"
        old = [p for p in doc["pods"] if p["deletingAt"] is not None]
        new = [p for p in doc["pods"] if p["readyAt"] is not None]
        assert len(old) == 3 and len(new) == 3 and not {p["pod"] for p in old} & {p["pod"] for p in new}
        assert all(p["goneAt"] is not None and p["endpointTerminatingAt"] is not None for p in old)
        assert all(p["deletionTimestamp"] for p in old)
        assert doc["events"][0]["event"] == "change" and "complete" in [e["event"] for e in doc["events"]]
        assert doc["ok"] > 0 and doc["stale_udp_conntrack"] is None
    # the point of the hook: endpoints leave the rules before the process stops listening
    assert pre["failed"] <= plain["failed"], (pre["errorDetail"], plain["errorDetail"])


def test_udp_delete_pod_and_conntrack(lab: Lab) -> None:
    doc = _churn(lab, "web", "--during", "delete-pods:1", "--udp", "--rate", "20")
    print({k: doc[k] for k in ("requests", "ok", "errors", "stale_udp_conntrack")}, doc["conntrack"])  # with -s
    assert doc["protocol"] == "udp" and len(doc["deletedPods"]) == 1
    ct = doc["conntrack"]
    assert ct is not None and ct["error"] is None and ct["where"].startswith("node node-1")
    assert doc["stale_udp_conntrack"] == ct["stale"] == len(ct["flows"])
    assert ct["entries"] >= ct["stale"]
    gone = doc["deletedPods"][0]
    assert all(f["pod"] in (gone, "") for f in ct["flows"])
