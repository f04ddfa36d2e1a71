"""Topology-aware routing in a 3-node netns lab, driven as a user would.

node-1 is labelled into zone a, node-2 and node-3 into zone b; a Deployment
of agnhost serve-hostname pods sits behind a Service with
``trafficDistribution: PreferClose``. From a pod on each node, connections
through the ClusterIP must reach only the pods of that node's zone. Then
hints stop applying, twice: node-1 loses its zone label (its proxy follows
its Node and falls back to every endpoint) and the Service drops
``trafficDistribution`` (the controller removes the hints, every proxy falls
back). Last, the annotation ``service.kubernetes.io/topology-mode: Auto``
brings hints back, shared out by the zones' CPU.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter
from typing import Iterator

import pytest

from kmesh.lab.topology import LabNames
from tests.e2e.labdriver import AGNHOST, KMESH, Lab, client_pods, running_lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# The modes whose renderer takes Cluster-policy endpoints from ServicePort.cluster_endpoints(); iptables
# joins once iptables_rules.render_service does too (it reads usable(sp.endpoints) itself).
MODES = ["iptables", "userspace", "ipvs", "nftables"]
ZONE = "topology.kubernetes.io/zone"
ZONES = {"node-1": "a", "node-2": "b", "node-3": "b"}

WORKLOADS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 6
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: tcp
        image: %(img)s
        args: [serve-hostname]
        ports: [{containerPort: 9376}]
        readinessProbe: {tcpSocket: {port: 9376}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  trafficDistribution: PreferClose
  ports:
  - {name: http, port: 80, targetPort: 9376}
""" % {"img": AGNHOST} + client_pods(1, 2)


def hostnames(lab: Lab, client: str, n: int = 24) -> Counter[str]:
    """Who answers ``n`` connections from pod ``client`` to the Service's ClusterIP."""
    out = lab.exec(client, "for i in $(seq %d); do curl -s --max-time 2 http://%s/; echo; done" % (n, lab.cluster_ip("web")))
    return Counter(line for line in out.split() if line)


@pytest.fixture(scope="module", params=MODES)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp(f"topo-{request.param}")
    with running_lab(root, LabNames(f"t{uuid.uuid4().hex[:5]}"), request.param) as lab:
        for node, zone in ZONES.items():
            lab.kubectl("label", "node", node, f"{ZONE}={zone}")
        lab.kubectl("apply", "-f", "-", stdin=WORKLOADS)
        lab.kubectl("rollout", "status", "deployment/web", "--timeout=90s")
        lab.kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=client", "--timeout=90s")
        yield lab


def converge(lab: Lab, client: str, want: set[str], timeout: float = 60) -> None:
    """Connections from ``client`` reach every pod of ``want`` and no other: batches repeat until one
    reaches exactly ``want`` (the proxy may still be syncing; each batch is the probe), then one more
    batch must stay inside ``want`` (random modes need not hit every pod in one batch)."""
    deadline = time.monotonic() + timeout
    got = hostnames(lab, client)
    while set(got) != want:
        assert time.monotonic() < deadline, f"{lab.mode}: from {client} reached {dict(got)}, want {sorted(want)}"
        got = hostnames(lab, client)
    got = hostnames(lab, client)
    assert set(got) <= want, f"{lab.mode}: from {client} reached {dict(got)}, want {sorted(want)}"


def hinted(lab: Lab) -> dict[str, set[str]] | None:
    """Zone -> pods hinted for it, from the Service's slices; None while a ready endpoint has no hint."""
    slices = json.loads(lab.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "json"))
    out: dict[str, set[str]] = {}
    for s in slices["items"]:
        for e in s.get("endpoints") or []:
            if not e["conditions"].get("ready"):
                continue
            zones = [z["name"] for z in (e.get("hints") or {}).get("forZones") or []]
            if not zones:
                return None
            for z in zones:
                out.setdefault(z, set()).add(e["targetRef"]["name"])
    return out


def test_prefer_close_keeps_traffic_in_the_zone_until_hints_cannot_be_used(lab: Lab) -> None:
    pods = lab.pods("app=web")
    by_zone: dict[str, set[str]] = {"a": set(), "b": set()}
    for p in pods:
        by_zone[ZONES[p["spec"]["nodeName"]]].add(p["metadata"]["name"])
    every = by_zone["a"] | by_zone["b"]
    assert by_zone["a"] and by_zone["b"], f"the scheduler left a zone without pods: {by_zone}"

    # The controller hints each endpoint for its own zone.
    slices = json.loads(lab.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "json"))
    hints = {e["targetRef"]["name"]: [z["name"] for z in e["hints"]["forZones"]]
             for s in slices["items"] for e in s["endpoints"] if e["conditions"].get("ready")}
    assert hints == {p["metadata"]["name"]: [ZONES[p["spec"]["nodeName"]]] for p in pods}

    converge(lab, "client-1", by_zone["a"])
    converge(lab, "client-2", by_zone["b"])
    bench = subprocess.run([*KMESH, "bench", "lb", "--data-dir", str(lab.dd.root), "web", "--requests", "120",
                            "--alpha", "0.0001", "--from", "client-2"], capture_output=True, text=True, timeout=180)
    assert bench.returncode == 0, bench.stdout + bench.stderr  # the bench expects the zone's pods only

    # node-1's zone becomes unknown: its proxy follows its Node and uses every endpoint; node-2 is unaffected.
    lab.kubectl("label", "node", "node-1", f"{ZONE}-")
    converge(lab, "client-1", every)
    converge(lab, "client-2", by_zone["b"])
    lab.kubectl("label", "node", "node-1", f"{ZONE}=a")
    converge(lab, "client-1", by_zone["a"])

    # Without trafficDistribution the controller removes the hints: every proxy uses every endpoint.
    lab.kubectl("patch", "service", "web", "--type=merge", "-p", '{"spec": {"trafficDistribution": null}}')
    converge(lab, "client-2", every)
    converge(lab, "client-1", every)

    # topology-mode Auto: the controller shares the endpoints out by the zones' allocatable CPU (zone b has two
    # of the three equal nodes); each client then reaches the pods hinted for its zone.
    lab.kubectl("annotate", "service", "web", "service.kubernetes.io/topology-mode=Auto")
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, f"{lab.mode}: no Auto hints: {hinted(lab)}"
        zones = hinted(lab)
        if zones is not None and set(hostnames(lab, "client-1")) == zones.get("a"):  # the proxy has synced
            break
    assert sorted(zones) == ["a", "b"] and len(zones["a"]) == 2 and len(zones["b"]) == 4, zones
    converge(lab, "client-1", zones["a"])
    converge(lab, "client-2", zones["b"])
