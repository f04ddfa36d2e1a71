"""A partition meets the control plane, in a 3-node netns lab: ``kmesh bench lb --during 'link down node-2'``.

Service ``web`` has one endpoint on node-2 and one on node-3; the client
``client-1`` is on node-1. The lab runs with ``--node-grace-period 15`` (the
agents renew their Lease every 10 s) so the experiment takes about half a
minute, not more than one; the JSON must say that this grace period was in
force. After the run node-2 is back: Ready, on the underlay, and serving.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kmesh.bench.load import Record, port_reused
from kmesh.lab.topology import LabNames
from tests.e2e.labdriver import AGNHOST, KMESH, Lab, client_pods, running_lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

GRACE = 15

WEB = "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: web-{n}, namespace: default, labels: {{app: web}}}}
spec:
  nodeName: node-{n}
  containers:
  - name: s
    image: {AGNHOST}
    args: [serve-hostname]
    ports: [{{containerPort: 9376}}]
    readinessProbe: {{tcpSocket: {{port: 9376}}, periodSeconds: 1}}
""" for n in (2, 3)) + """---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 9376}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("partition")
    with running_lab(root, LabNames(f"p{uuid.uuid4().hex[:5]}"), "iptables", nodes=3,
                     flags=("--node-grace-period", str(GRACE))) as lab:
        try:
            lab.kubectl("apply", "-f", "-", stdin=client_pods(1) + WEB)
            lab.kubectl("wait", "--for=condition=Ready", "pod", "client-1", "web-2", "web-3", "--timeout=120s")
            yield lab
        finally:
            lab.kmesh("link", "reset")  # a failed run must not leave node-2 cut off for the other tests


def _states(lab: Lab) -> dict[str, str]:
    res = lab.kmesh("link", "show", "--json")
    assert res.returncode == 0, res.stderr
    return {e["target"]: e["state"] for e in json.loads(res.stdout)["links"] if e["kind"] == "node"}


def _bench(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """``kmesh bench lb web --data-dir D --timeout 1 [--from client-1] args...``."""
    src = () if "--from" in args else ("--from", "client-1")
    return subprocess.run([*KMESH, "bench", "lb", "web", "--data-dir", str(lab.dd.root), "--timeout", "1", *src, *args],
                          capture_output=True, text=True, timeout=400)


def test_bad_during_is_refused_and_changes_nothing(lab: Lab) -> None:
    for during in ("link down node-9", "link up node-2", "link down node-2 now"):
        res = _bench(lab, "--during", during)
        assert res.returncode == 2 and "--during" in res.stderr, res.stdout + res.stderr
    assert set(_states(lab).values()) == {"up"}
    res = _bench(lab, "--during", "link down node-1", "--from", "client-1")  # the client's own node
    assert res.returncode == 2 and "--from" in res.stderr, res.stdout + res.stderr
    assert set(_states(lab).values()) == {"up"}


def test_link_down_under_load(lab: Lab) -> None:
    res = _bench(lab, "--during", "link down node-2", "--json", "--rate", "20", "--during-after", "3",
                 "--settle", "3", "--max-wait", "90")
    assert res.returncode == 0, res.stdout + res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    print({k: doc[k] for k in ("leaseRenewedBeforeCut", "nodeNotReadyAfter", "endpointsNotReadyAfter", "restoredAfter",
                               "nodeReadyAfterRestore", "endpointsReadyAfterRestore", "errorWindow", "requests",
                               "failed", "errors")})  # shown with -s
    assert doc["during"] == "link down node-2" and doc["passed"] and doc["converged"] and doc["back"]
    assert doc["gracePeriod"]["seconds"] == GRACE and "--node-grace-period" in doc["gracePeriod"]["source"]
    assert doc["endpointsOnNode"] == 1
    # the node went NotReady once its Lease had gone unrenewed for the grace period, then its endpoint followed
    lease, not_ready, eps = doc["leaseRenewedBeforeCut"], doc["nodeNotReadyAfter"], doc["endpointsNotReadyAfter"]
    assert lease is not None and lease <= 0
    assert not_ready is not None and 0 < not_ready and not_ready - lease >= GRACE - 1
    assert eps is not None and eps >= not_ready
    # requests to node-2's endpoint failed until then, and stopped failing after it: a finite window
    w = doc["errorWindow"]
    assert w is not None and 0 < w["seconds"] < doc["maxWait"]
    assert w["start"] >= doc["cutAt"] - 1.5  # a request in flight at the cut may be caught (timeout 1 s)
    recs = doc["records"]
    failed = [r for r in recs if r["error"] is not None]
    assert doc["requests"] == len(recs) and doc["failed"] == len(failed) == sum(doc["errors"].values())
    assert doc["failed"] == sum(x["failed"] for x in doc["windows"])
    assert w["failed"] <= doc["failed"] and w["errors"]
    assert all(r["answer"] is None for r in failed) and all(r["answer"] for r in recs if r["error"] is None)
    # the grace period made the window: requests failed until about when the node went NotReady...
    assert w["end"] >= doc["cutAt"] + not_ready - 1.5
    # ...and once the proxies had dropped node-2's endpoint, requests failed only where conntrack still held an
    # unanswered connection from the same source port (kube-proxy clears stale entries of UDP only, as upstream):
    # every failure that was not such a one ended before node-2 came back, and answers came from web-3 alone
    restored = doc["cutAt"] + doc["restoredAfter"]
    assert all(isinstance(r["port"], int) for r in recs)  # each request names its source port, failed or not
    stale = {(x.start, x.port) for x in port_reused([Record(**r) for r in recs])}
    assert doc["portReused"] == len(stale)
    fresh = [r for r in failed if (r["start"], r["port"]) not in stale]
    assert fresh
    fresh_end = max(r["end"] for r in fresh)
    assert fresh_end < restored
    assert max(r["start"] for r in fresh) <= doc["cutAt"] + eps + 2.0  # a proxy sync's lag at most
    tail = [r for r in recs if fresh_end < r["start"] < restored]
    assert tail and all(r["answer"] == "web-3" for r in tail if r["error"] is None)
    # back: Ready, endpoint ready, and the events in order
    assert doc["nodeReadyAfterRestore"] is not None and doc["endpointsReadyAfterRestore"] is not None
    order = [e["event"] for e in doc["events"]]
    assert order[0] == "cut" and order.index("restored") > order.index("endpointsNotReady")
    assert sum(row["ok"] + sum(v for k, v in row.items() if k not in ("t", "ok")) for row in doc["timeline"]) \
        == doc["requests"]
    # after the run: node-2 on the underlay and Ready, and the Service serves from both nodes
    assert _states(lab) == {"node-1": "up", "node-2": "up", "node-3": "up"}
    ready = lab.kubectl("get", "node", "node-2", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
    assert ready == "True"
    res = _bench(lab, "--requests", "100", "--json", "--alpha", "0.0001")
    assert res.returncode == 0, res.stdout + res.stderr
    split = {e["name"]: e["count"] for e in json.loads(res.stdout)["endpoints"]}
    assert split.get("web-2", 0) > 0 and split.get("web-3", 0) > 0, split


def test_plot_and_table(lab: Lab, tmp_path: Any) -> None:
    """The terminal view names the events and the grace period; --plot writes a PNG; --no-restore leaves it cut."""
    png = tmp_path / "partition.png"
    res = _bench(lab, "--during", "link down node-3", "--rate", "10", "--during-after", "1", "--settle", "2",
                 "--max-wait", "90", "--plot", str(png), "--no-restore")
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        print(res.stdout)  # shown with -s
        assert "link down" in res.stdout and "longest error window" in res.stdout
        assert f"node grace period {GRACE} s" in res.stdout and "PASS" in res.stdout
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert _states(lab)["node-3"] == "down"
    finally:
        assert lab.kmesh("link", "up", "node-3").returncode == 0
