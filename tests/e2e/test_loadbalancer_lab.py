"""LoadBalancer Services in a netns lab: the pool's rules (loadBalancerIP, exhaustion), externalTrafficPolicy: Local
and failover. (Every proxy mode's address, ARP answer, forward, status and source ranges are checked in
test_proxy_lab's labs.)

Driven as a user would: kubectl applies the objects, curl on this machine
uses the loopback forward cluster.json lists, scapy in the underlay namespace
(the "host" of the lab's network) asks who has the address.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from kmesh.gateway.announce import elect
from kmesh.lab.topology import LabNames, processes_in
from tests.e2e.labdriver import AGNHOST, Lab, running_lab
from tests.e2e.lbprobe import answering as _answering
from tests.e2e.lbprobe import curl, listed, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow]

NODES = ["node-1", "node-2"]


def web(name: str = "web", extra_spec: str = "") -> str:
    """agnhost serve-hostname pods ``<name>-<node>-...``, one on each node, and a LoadBalancer Service for them.

    One Deployment per node, pinned by ``kubernetes.io/hostname``, not one Deployment of two replicas: the
    scheduler puts a pod on the node with the fewest pods, and with the system pods on node-2 both replicas went
    to node-1. When node-1 announced the address and its agent was stopped, no ready endpoint was left anywhere
    (kmesh, like upstream within its 300 s unreachable toleration, does not evict pods from a NotReady node), so
    no node may announce the Service and the failover never came. The failure showed as either timeout: node-2
    "taking over" was listed only for the moment between node-1 turning NotReady and its pods turning not ready
    (the election then still counted their endpoints), and then nobody answered ARP."""
    return "".join(f"""---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}-{node}, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}, node: {node}}}}}
  template:
    metadata: {{labels: {{app: {name}, node: {node}}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      containers:
      - name: web
        image: {AGNHOST}
        args: [serve-hostname, --port=8080]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
""" for node in NODES) + f"""---
{lb_service(name, extra_spec)}"""


def lb_service(name: str, extra_spec: str = "", selector: str = "") -> str:
    """A LoadBalancer Service (port 80 → 8080) selecting ``app: <selector or name>``."""
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  type: LoadBalancer
  selector: {{app: {selector or name}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
{extra_spec}
"""


def events(lab: Lab, svc: str, reason: str) -> list[dict[str, Any]]:
    """The Events ``reason`` about Service ``svc``."""
    doc = json.loads(lab.kubectl("get", "events", "-n", "default", "-o", "json",
                                 "--field-selector", f"involvedObject.name={svc}"))
    return [e for e in doc["items"] if e.get("reason") == reason and e["involvedObject"].get("kind") == "Service"]


def ingress(lab: Lab, svc: str) -> str:
    """The Service's LoadBalancer address ("" while pending)."""
    return lab.kubectl("get", "svc", svc, "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}")


def answering(lab: Lab, ip: str) -> set[str]:
    """The nodes answering ARP for ``ip``."""
    return _answering(lab, ip, NODES)


def serves(lab: Lab, entry: dict[str, Any], seconds: float = 5) -> bool:
    """Whether the loopback forward of port 80 answers with a pod name of the web Deployment."""
    r = curl(f"http://{entry['ports']['80']}/", seconds)
    return r.returncode == 0 and r.stdout.startswith("web-")


def test_pool_rules_local_policy_and_failover(tmp_path: Path) -> None:
    """loadBalancerIP honoured and refused, the pool exhausted, externalTrafficPolicy: Local announced where the
    endpoint is, and another node taking over when the announcing node's agent stops."""
    names = LabNames(f"lbf{os.getpid() % 10000}")
    flags = ["--lb-range", "192.168.56.240-192.168.56.242", "--node-grace-period", "15", "--disable", "ingress"]
    with running_lab(tmp_path / "lab", names, "iptables", nodes=2, flags=flags) as lab:
        lab.kubectl("apply", "-f", "-", stdin=web(extra_spec="  loadBalancerIP: 192.168.56.242"))
        lab.kubectl("apply", "-f", "-", stdin=lb_service("outside", "  loadBalancerIP: 192.168.56.100", "web"))
        for node in NODES:
            lab.kubectl("rollout", "status", f"deploy/web-{node}", "--timeout=120s")
        assert wait_until(lambda: ingress(lab, "web"), 60, "web's address") == "192.168.56.242"
        refused = wait_until(lambda: events(lab, "outside", "AllocationFailed"), 60, "outside's AllocationFailed")
        assert refused[0]["type"] == "Warning" and "192.168.56.100" in refused[0]["message"]
        assert ingress(lab, "outside") == ""

        # externalTrafficPolicy: Local is announced by the node with the endpoint, even where the hash
        # would pick the other
        lab.kubectl("apply", "-f", "-", stdin=lb_service("solo", "  externalTrafficPolicy: Local"))
        ip = wait_until(lambda: ingress(lab, "solo"), 60, "solo's address")
        assert ip in ("192.168.56.240", "192.168.56.241")
        loser = next(n for n in NODES if n != elect(ip, NODES))
        lab.kubectl("apply", "-f", "-", stdin=f"""
apiVersion: v1
kind: Pod
metadata: {{name: solo, namespace: default, labels: {{app: solo}}}}
spec:
  nodeName: {loser}
  containers: [{{name: web, image: {AGNHOST}, args: [serve-hostname, --port=8080]}}]
""")
        entry = wait_until(lambda: (listed(lab, "solo") or {}).get("node") == loser and listed(lab, "solo"), 60,
                           "solo to be announced from its endpoint's node")
        assert wait_until(lambda: curl(f"http://{entry['ports']['80']}/").stdout == "solo", 60, "solo to answer")
        assert answering(lab, ip) == {loser}

        # the pool is exhausted now
        lab.kubectl("apply", "-f", "-", stdin=lb_service("more", selector="web"))
        lab.kubectl("apply", "-f", "-", stdin=lb_service("late", selector="web"))
        wait_until(lambda: events(lab, "late", "AllocationFailed") or events(lab, "more", "AllocationFailed"), 60,
                   "an AllocationFailed event")
        pending = [s for s in ("more", "late") if not ingress(lab, s)]
        assert len(pending) == 1
        assert "no available IPs" in events(lab, pending[0], "AllocationFailed")[0]["message"]

        # failover: the node announcing web stops; the other takes over (gratuitous ARP) and traffic follows.
        # The other node must hold a ready endpoint, else no node may announce web (see web())
        assert {p["spec"]["nodeName"] for p in lab.pods("app=web")} == set(NODES)
        web_entry = wait_until(lambda: listed(lab, "web"), 30, "web in cluster.json")
        first = web_entry["node"]
        other = next(n for n in NODES if n != first)
        assert answering(lab, "192.168.56.242") == {first}
        agents = [p for p in processes_in([lab.names.node(first)])
                  if b"agent" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert agents
        for pid in agents:
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: (listed(lab, "web") or {}).get("node") == other, 120, f"{other} to take web over")
        assert wait_until(lambda: answering(lab, "192.168.56.242") == {other} or None, 60, f"{other} answering ARP")
        assert wait_until(lambda: serves(lab, web_entry), 120, "web to answer again through the other node")
        msgs = [e["message"] for e in events(lab, "web", "nodeAssigned")]
        assert any(f'"{other}"' in m for m in msgs)
