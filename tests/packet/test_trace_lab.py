"""`kmesh trace` in a 2-node netns lab, in each of the four proxy modes, checked against what really happened.

Pods: ``client-1`` on node-1, ``server-1`` on node-1 and ``server-2`` on
node-2 (agnhost netexec: HTTP 8080 answering ``/hostname``, UDP 8081
answering ``hostname``). Service ``web`` (NodePort 30080) selects
``server-2`` only, so every trace through it crosses the overlay;
``empty`` has no endpoints. The endpoint a trace names is checked against
the server's own answer on the same connection (``--http /hostname``).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kmesh.lab.topology import LabNames
from kmesh.net import netns
from tests.e2e.labdriver import AGNHOST, Lab, running_lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# every proxy mode, and every backend, in four labs
LABS = [("iptables", "vxlan"), ("nftables", "host-gw"), ("ipvs", "udp"), ("userspace", "vxlan")]

OBJECTS = f"""
apiVersion: v1
kind: Pod
metadata: {{name: client-1, labels: {{app: client}}}}
spec:
  nodeName: node-1
  containers: [{{name: c, image: "{AGNHOST}", args: [pause]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: server-1, labels: {{app: other}}}}
spec:
  nodeName: node-1
  containers:
  - name: s
    image: "{AGNHOST}"
    args: [netexec, --http-port=8080, --udp-port=8081]
    ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: server-2, labels: {{app: web}}}}
spec:
  nodeName: node-2
  containers: [{{name: s, image: "{AGNHOST}", args: [netexec, --http-port=8080, --udp-port=8081]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: 8080, nodePort: 30080}}
  - {{name: udp, port: 81, targetPort: 8081, protocol: UDP}}
---
apiVersion: v1
kind: Service
metadata: {{name: empty}}
spec:
  selector: {{app: nothing}}
  ports: [{{port: 80}}]
"""


@pytest.fixture(scope="module", params=LABS, ids=[f"{m}-{b}" for m, b in LABS])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    mode, backend = request.param
    root = tmp_path_factory.mktemp(f"trace-{mode}-{backend}")
    with running_lab(root, LabNames(f"t{uuid.uuid4().hex[:5]}"), mode, nodes=2, flags=("--backend", backend)) as lab:
        lab.backend = backend  # type: ignore[attr-defined]
        lab.kubectl("apply", "-f", "-", stdin=OBJECTS)
        lab.kubectl("wait", "--for=condition=Ready", "pod", "--all", "--timeout=120s")
        # the Service's endpoint must be programmed on node-1 before a trace through it means anything
        for _ in range(50):
            if _trace(lab, "client-1", "svc/web")[0] == 0:
                break
        yield lab


def _trace(lab: Lab, *args: str) -> tuple[int, dict[str, Any]]:
    out = lab.kmesh("trace", *args, "--json")
    assert out.returncode in (0, 1), out.stdout + out.stderr
    return out.returncode, json.loads(out.stdout)


def _check_underlay(lab: Lab, doc: dict[str, Any]) -> None:
    """The cross-node hop as the backend carries it: VXLAN with VNI 1 on UDP 8472 (vxlan), flannel's UDP
    encapsulation on 8285 (udp), the pod addresses routed as they are (host-gw); on both nodes' underlay."""
    under = [h for h in doc["hops"] if h["leg"] in ("there", "relay") and h["interface"] == "eth0"
             and h["at"] in ("node-1", "node-2")]
    assert {(h["node"], h["direction"]) for h in under} >= {("node-1", "out"), ("node-2", "in")}, doc["hops"]
    backend = lab.backend  # type: ignore[attr-defined]
    if backend == "host-gw":
        assert not any("vxlan" in h for h in doc["hops"])
        return
    assert all("vxlan" in h for h in under)
    if backend == "vxlan":
        assert all(h["vxlan"]["vni"] == 1 and h["vxlan"]["dport"] == 8472 for h in under)
    else:
        assert all(h["vxlan"]["kind"] == "udp" and h["vxlan"]["dport"] == 8285 for h in under)
    assert {h["vxlan"]["src"] for h in under if h["node"] == "node-1" and h["direction"] == "out"} == {"192.168.56.11"}


def _left_behind(lab: Lab) -> list[str]:
    """Trace tables and `nft monitor` processes of the lab that a trace left."""
    out = []
    for node in ("node-1", "node-2"):
        ns = lab.names.node(node)
        tables = subprocess.run(netns.nsenter_argv(ns, ["nft", "list", "tables"]), capture_output=True,
                                text=True).stdout
        if "kmesh-trace" in tables:
            out.append(f"{node}: {tables.strip()}")
    ps = subprocess.run(["pgrep", "-af", "nft -a monitor trace"], capture_output=True, text=True).stdout
    out += [line for line in ps.splitlines() if lab.names.prefix in line]
    return out


def test_service_on_another_node(lab: Lab) -> None:
    rc, doc = _trace(lab, "client-1", "svc/web", "--http", "/hostname")
    assert rc == 0 and doc["verdict"] == "delivered", doc["reason"]
    # the endpoint it names is the one that answered this very connection
    assert doc["endpoint"]["pod"] == "server-2" and doc["endpoint"]["port"] == 8080
    assert doc["answer"].rstrip().endswith("server-2")
    # the proxy's decision, in the mode's own words
    words = {"iptables": "KUBE-SEP-", "nftables": "@service-ips", "ipvs": "IPVS virtual server",
             "userspace": "userspace proxy's listener"}[lab.mode]
    assert words in doc["decision"], doc["decision"]
    if lab.mode in ("iptables", "nftables"):
        assert "DNAT to " + doc["endpoint"]["ip"] + ":8080" in doc["decision"]
        assert any(r.get("iptables", "").startswith("-A KUBE-SEP-") or "dnat to" in r["rule"] for r in doc["rules"])
    _check_underlay(lab, doc)
    # it reached the pod, and the answer came back to the client
    assert any(h["at"] == "server-2" and h["direction"] == "in" for h in doc["hops"])
    assert [h for h in doc["hops"] if h["leg"] == "back"][-1]["at"] == "client-1"
    assert doc["conntrack"] and doc["conntrack"][0]["node"] == "node-1"
    assert _left_behind(lab) == []


def test_service_without_endpoints_is_rejected(lab: Lab) -> None:
    rc, doc = _trace(lab, "client-1", "svc/empty")
    assert rc == 1 and doc["verdict"] == "rejected" and doc["where"] == "node-1", doc
    assert doc["endpoint"] is None
    if lab.mode == "iptables":
        assert "has no endpoints" in doc["reason"] and "REJECT" in doc["reason"]
    if lab.mode == "nftables":
        assert "@no-endpoint-services" in doc["reason"]
    assert any(h["leg"] == "back" and h["at"] == "client-1" for h in doc["hops"])
    assert _left_behind(lab) == []


def test_pod_on_the_same_node_has_no_vxlan(lab: Lab) -> None:
    rc, doc = _trace(lab, "client-1", "server-1", "--http", "/hostname")
    assert rc == 0 and doc["endpoint"]["pod"] == "server-1" and doc["answer"].rstrip().endswith("server-1")
    assert not any("vxlan" in h for h in doc["hops"])
    assert {h["node"] for h in doc["hops"]} == {"node-1"}


def test_udp_and_nodeport(lab: Lab) -> None:
    rc, doc = _trace(lab, "client-1", "web.default", "--udp")
    assert rc == 0 and doc["endpoint"]["pod"] == "server-2" and doc["answer"].strip() == "server-2", doc
    rc, doc = _trace(lab, "client-1", "node-2:30080", "--http", "/hostname")
    assert rc == 0 and doc["endpoint"]["pod"] == "server-2" and doc["answer"].rstrip().endswith("server-2")
    # the probe left node-1 masqueraded to its node address: the trace followed it through the NAT
    assert any(h["node"] == "node-2" and h["interface"] == "eth0" and h["leg"] == "there" for h in doc["hops"])
    rc, doc = _trace(lab, "node-1", "svc/web")
    assert rc == 0 and doc["endpoint"]["pod"] == "server-2"
    assert _left_behind(lab) == []


def test_bad_input_names_the_argument(lab: Lab) -> None:
    if lab.mode != "iptables":
        pytest.skip("the same code in every mode: checked once")
    for args, param in ((["nobody", "svc/web"], "FROM"), (["client-1", "svc/nothing"], "TO"),
                        (["client-1", "svc/web", "--port", "99"], "--port"),
                        (["client-1", "server-2"], "--port"),
                        (["client-1", "svc/web", "--udp", "--port", "80"], "--port")):
        out = lab.kmesh("trace", *args)
        assert out.returncode == 2 and param in out.stderr, (args, out.stderr)
    assert _left_behind(lab) == []
