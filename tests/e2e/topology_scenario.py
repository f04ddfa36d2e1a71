"""Topology-aware routing, a scenario run in test_proxy_lab's 3-node iptables and nftables labs.

It shares that module's lab, not one of its own: a lab takes longer to bring
up than the scenario to run. Its Deployment and Service are ``zoned``, its
clients the lab's ``client-1`` (node-1) and ``client-2`` (node-2); no other
Service there has hints, so the zone labels change nothing else.

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
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.e2e.labdriver import AGNHOST, KMESH, Lab

SVC = "zoned"
ZONE = "topology.kubernetes.io/zone"
ZONES = {"node-1": "a", "node-2": "b", "node-3": "b"}

# Two Deployments (by zone: 2 pods in a, 4 in b), not one of 6: the shared lab already holds pods, and the
# scheduler's fewest-pods-first could leave zone a, one node, without any.
WORKLOADS = "".join(f"""---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: zoned-{zone}, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: zoned, zone: {zone}}}}}
  template:
    metadata: {{labels: {{app: zoned, zone: {zone}}}}}
    spec:
      nodeSelector: {{{ZONE}: {zone}}}
      containers:
      - name: tcp
        image: {AGNHOST}
        args: [serve-hostname]
        ports: [{{containerPort: 9376}}]
        readinessProbe: {{tcpSocket: {{port: 9376}}, periodSeconds: 1}}
""" for zone, replicas in (("a", 2), ("b", 4))) + """---
apiVersion: v1
kind: Service
metadata: {name: zoned, namespace: default}
spec:
  selector: {app: zoned}
  trafficDistribution: PreferClose
  ports:
  - {name: http, port: 80, targetPort: 9376}
"""


def hostnames(lab: Lab, client: str, n: int = 24) -> Counter[str]:
    """Who answers ``n`` connections (made at once) from pod ``client`` to the Service's ClusterIP."""
    ip = _cluster_ips.get(lab.names.lab) or _cluster_ips.setdefault(lab.names.lab, lab.cluster_ip(SVC))
    return Counter(body for body in lab.get_many(client, f"http://{ip}/", n) if body)


_cluster_ips: dict[str, str] = {}  # lab name -> the ClusterIP of zoned (fixed for the Service's life)


def set_up(lab: Lab) -> None:
    """Zones on the nodes and the ``zoned`` workload, ready (the lab's client pods are ready already)."""
    for node, zone in ZONES.items():
        lab.kubectl("label", "--overwrite", "node", node, f"{ZONE}={zone}")
    lab.kubectl("apply", "-f", "-", stdin=WORKLOADS)
    for zone in ("a", "b"):
        lab.kubectl("rollout", "status", f"deployment/{SVC}-{zone}", "--timeout=90s")


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


def converge_both(lab: Lab, want_1: set[str], want_2: set[str]) -> None:
    """``converge`` from client-1 and from client-2 at the same time (the two probe different proxies)."""
    with ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(converge, lab, "client-1", want_1), pool.submit(converge, lab, "client-2", want_2)]:
            f.result()


def hinted(lab: Lab) -> dict[str, set[str]] | None:
    """Zone -> pods hinted for it, from the Service's slices; None while a ready endpoint has no hint."""
    slices = json.loads(lab.kubectl("get", "endpointslices", "-l", f"kubernetes.io/service-name={SVC}", "-o", "json"))
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


def prefer_close_keeps_traffic_in_the_zone_until_hints_cannot_be_used(lab: Lab) -> None:
    """The scenario of the module docstring, in ``lab``."""
    set_up(lab)
    pods = lab.pods(f"app={SVC}")
    by_zone: dict[str, set[str]] = {"a": set(), "b": set()}
    for p in pods:
        by_zone[ZONES[p["spec"]["nodeName"]]].add(p["metadata"]["name"])
    every = by_zone["a"] | by_zone["b"]
    assert by_zone["a"] and by_zone["b"], f"the scheduler left a zone without pods: {by_zone}"

    # The controller hints each endpoint for its own zone.
    slices = json.loads(lab.kubectl("get", "endpointslices", "-l", f"kubernetes.io/service-name={SVC}", "-o", "json"))
    hints = {e["targetRef"]["name"]: [z["name"] for z in e["hints"]["forZones"]]
             for s in slices["items"] for e in s["endpoints"] if e["conditions"].get("ready")}
    assert hints == {p["metadata"]["name"]: [ZONES[p["spec"]["nodeName"]]] for p in pods}

    converge_both(lab, by_zone["a"], by_zone["b"])
    bench = subprocess.run([*KMESH, "bench", "lb", "--data-dir", str(lab.dd.root), SVC, "--requests", "120",
                            "--alpha", "0.0001", "--from", "client-2"], capture_output=True, text=True, timeout=180)
    assert bench.returncode == 0, bench.stdout + bench.stderr  # the bench expects the zone's pods only

    # node-1's zone becomes unknown: its proxy follows its Node and uses every endpoint; node-2 is unaffected.
    lab.kubectl("label", "node", "node-1", f"{ZONE}-")
    converge_both(lab, every, by_zone["b"])
    lab.kubectl("label", "node", "node-1", f"{ZONE}=a")
    converge(lab, "client-1", by_zone["a"])

    # Without trafficDistribution the controller removes the hints: every proxy uses every endpoint.
    lab.kubectl("patch", "service", SVC, "--type=merge", "-p", '{"spec": {"trafficDistribution": null}}')
    converge_both(lab, every, every)

    # topology-mode Auto: the controller shares the endpoints out by the zones' allocatable CPU (zone b has two
    # of the three equal nodes); each client then reaches the pods hinted for its zone.
    lab.kubectl("annotate", "service", SVC, "service.kubernetes.io/topology-mode=Auto")
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, f"{lab.mode}: no Auto hints: {hinted(lab)}"
        zones = hinted(lab)
        if zones is not None and set(hostnames(lab, "client-1")) == zones.get("a"):  # the proxy has synced
            break
    assert sorted(zones) == ["a", "b"] and len(zones["a"]) == 2 and len(zones["b"]) == 4, zones
    converge_both(lab, zones["a"], zones["b"])
