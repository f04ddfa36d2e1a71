"""Services in a 3-node netns lab, for each proxy mode, driven as a user would.

kubectl creates the workloads and Services; `kmesh exec` runs curl/dig in
pods; `kmesh bench lb` measures the split; `ip netns exec` reaches NodePorts
from the control-plane namespace on the underlay. Topology-aware routing
(tests/e2e/topology_scenario.py) runs last in the same labs, with Services of
its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections import Counter
from typing import Iterator

import pytest

from kmesh.net import netns
from kmesh.lab.topology import LabNames
from tests.e2e.labdriver import AGNHOST, KMESH, Lab, client_pods, running_lab
from tests.e2e.topology_scenario import prefer_close_keeps_traffic_in_the_zone_until_hints_cannot_be_used

pytestmark = [pytest.mark.netns, pytest.mark.slow]

MODES = ["iptables", "ipvs", "userspace", "nftables"]

WORKLOADS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
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
      - name: udp
        image: %(img)s
        args: [serve-hostname, --udp, --http=false, --port=9377]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 9376}
  - {name: udp, port: 53, protocol: UDP, targetPort: 9377}
---
apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 9376, nodePort: 30080}
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: default}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports:
  - {name: http, port: 80, targetPort: 9376}
---
apiVersion: v1
kind: Service
metadata: {name: nobody, namespace: default}
spec:
  selector: {app: nobody}
  ports:
  - {name: http, port: 80, targetPort: 9376}
""" % {"img": AGNHOST} + client_pods(1, 2, 3)


@pytest.fixture(scope="module", params=MODES)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp(f"proxy-{request.param}")
    with running_lab(root, LabNames(f"p{uuid.uuid4().hex[:5]}"), request.param) as lab:
        lab.kubectl("apply", "-f", "-", stdin=WORKLOADS)
        lab.kubectl("rollout", "status", "deployment/web", "--timeout=90s")
        lab.kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=client", "--timeout=90s")
        lab.kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=90s")
        yield lab


UDP_ASK = ("python3 -c \"import socket\n"
           "for i in range(6):\n"
           "  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n"
           "  s.sendto(b'x', ('%s', 53)); print(s.recv(200).decode())\"")


def _names(lab: Lab) -> set[str]:
    return {p["metadata"]["name"] for p in lab.pods("app=web")}


def _slice_versions(lab: Lab) -> str:
    """The resourceVersions of web's EndpointSlices: they change whenever its endpoints do."""
    return lab.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o",
                       "jsonpath={.items[*].metadata.resourceVersion}")


def test_clusterip_tcp_and_udp_from_every_node(lab: Lab) -> None:
    web, want = lab.cluster_ip("web"), _names(lab)
    clients = lab.pods("app=client")
    assert {c["spec"]["nodeName"] for c in clients} == {"node-1", "node-2", "node-3"}
    for c in clients:
        before = _slice_versions(lab)
        out = lab.exec(c["metadata"]["name"], "for i in $(seq 30); do curl -s --max-time 2 http://%s/; echo; done" % web)
        got = Counter(line for line in out.split() if line)
        assert set(got) == want, f"from {c['spec']['nodeName']}: {got}"
        # round robin is exact while the endpoints stay as they are; a readiness flap under load (the probe
        # times out) changes them, and the proxy then starts its round again from a new order, as upstream's
        if lab.mode in ("ipvs", "userspace") and _slice_versions(lab) == before:
            assert sorted(got.values()) == [10, 10, 10], got
        udp = lab.exec(c["metadata"]["name"], UDP_ASK % web)
        assert {line for line in udp.split() if line} <= want and udp.strip(), f"UDP from {c['spec']['nodeName']}: {udp!r}"


def test_split_passes_chi_square(lab: Lab) -> None:
    client = lab.pods("app=client")[0]["metadata"]["name"]
    out = subprocess.run([*KMESH, "bench", "lb", "--data-dir", str(lab.dd.root), "web", "--requests", "300",
                          "--alpha", "0.0001", "--from", client], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr


def test_affinity_pins_a_client(lab: Lab) -> None:
    ip = lab.cluster_ip("sticky")
    for c in lab.pods("app=client"):
        out = lab.exec(c["metadata"]["name"], "for i in $(seq 12); do curl -s --max-time 2 http://%s/; echo; done" % ip)
        got = Counter(line for line in out.split() if line)
        assert len(got) == 1 and sum(got.values()) == 12, got


def test_no_endpoints_refuses(lab: Lab) -> None:
    ip = lab.cluster_ip("nobody")
    client = lab.pods("app=client")[0]["metadata"]["name"]
    out = lab.exec(client, f"curl -s --max-time 3 http://{ip}/; echo rc=$?")
    assert "rc=7" in out, out  # connection refused (not a 3 s timeout: rc=28)


def test_nodeport_from_the_underlay(lab: Lab) -> None:
    info = lab.dd.read_cluster()
    assert info is not None
    want = _names(lab)
    for node in info.nodes:
        argv = netns.exec_argv(lab.names.control_plane, ["sh", "-c",
               "for i in $(seq 9); do curl -s --max-time 2 http://%s:30080/; echo; done" % node.ip])
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
        got = {line for line in out.split() if line}
        assert got and got <= want, f"NodePort on {node.name}: {out!r}"


def test_loadbalancer_from_the_machine_with_one_arp_answer(lab: Lab) -> None:
    """A LoadBalancer Service (default pool) answers through cluster.json's loopback forward, over the underlay
    and the announcing node's rules in this mode; exactly the elected node answers ARP (in ipvs mode every node
    holds the address on kube-ipvs0: strictARP keeps the others quiet); `kmesh status` lists it; in the modes that
    enforce loadBalancerSourceRanges a source outside them is refused, one inside admitted; deleting the Service
    stops the forward and the ARP answers."""
    from kmesh.gateway.announce import elect
    from tests.e2e.lbprobe import answering, curl, listed, wait_until

    def serves(entry: dict, seconds: float = 5) -> str:
        return curl(f"http://{entry['ports']['80']}/", seconds).stdout

    lab.kubectl("expose", "deployment", "web", "--name=web-lb", "--type=LoadBalancer", "--port=80",
                "--target-port=9376")
    nodes = ["node-1", "node-2", "node-3"]
    try:
        entry = wait_until(lambda: listed(lab, "web-lb"), 60, "cluster.json to list default/web-lb")
        assert entry["ip"] == lab.kubectl("get", "svc", "web-lb", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}")
        assert entry["node"] == elect(entry["ip"], nodes)
        out = wait_until(lambda: serves(entry), 60, "an answer through the forward")
        assert out in _names(lab), out
        assert answering(lab, entry["ip"], nodes) == {entry["node"]}
        status = lab.kmesh("status")
        assert status.returncode == 0 and "default/web-lb" in status.stdout and entry["ports"]["80"] in status.stdout
        events = json.loads(lab.kubectl("get", "events", "-o", "json", "--field-selector", "involvedObject.name=web-lb"))
        assert {"IPAllocated", "nodeAssigned"} <= {e["reason"] for e in events["items"]}
        if lab.mode in ("iptables", "nftables"):  # kmesh's ipvs and userspace modes do not enforce them yet
            # the forward's source is the underlay's "host" 192.168.56.1: outside 10.1.0.0/16, then inside
            lab.kubectl("patch", "svc", "web-lb", "-p", '{"spec": {"loadBalancerSourceRanges": ["10.1.0.0/16"]}}')
            wait_until(lambda: not serves(entry, 1), 60, "a source outside loadBalancerSourceRanges to be refused")
            lab.kubectl("patch", "svc", "web-lb", "-p", '{"spec": {"loadBalancerSourceRanges": ["192.168.56.0/24"]}}')
            wait_until(lambda: serves(entry), 60, "a source inside loadBalancerSourceRanges to pass")
    finally:
        lab.kubectl("delete", "svc", "web-lb")
    wait_until(lambda: listed(lab, "web-lb") is None, 60, "the forward to be removed from cluster.json")
    assert curl(f"http://{entry['ports']['80']}/", 1).returncode != 0
    assert wait_until(lambda: answering(lab, entry["ip"], nodes) == set() or None, 30, "ARP answers to stop")


def test_cluster_dns_through_kube_dns(lab: Lab) -> None:
    client = lab.pods("app=client")[0]["metadata"]["name"]
    # A records only: `getent hosts` asks AAAA first, and a name without one walks the search list out to the
    # lab's upstream, which the lab cannot reach (5 s timeouts per try, as with CoreDNS and a dead upstream)
    out = lab.exec(client, "getent ahostsv4 kubernetes.default; getent ahostsv4 web")
    assert "10.96.0.1 " in out and lab.cluster_ip("web") in out, out


def test_services_keep_working_while_the_control_plane_is_frozen(lab: Lab) -> None:
    """The API server, controllers and etcd stop answering (SIGSTOP): what the proxies installed keeps serving,
    and names still resolve through the coredns pods' caches."""
    import signal

    pid = lab.dd.supervisor_pid()
    assert pid is not None
    client = lab.pods("app=client")[1]
    ns = lab.names.pod(client["spec"]["nodeName"], client["metadata"]["name"], client["metadata"]["uid"])
    want = _names(lab)
    os.kill(pid, signal.SIGSTOP)
    try:  # kmesh exec asks the API where the pod is: go straight to its namespace instead
        out = subprocess.run(netns.exec_argv(ns, ["sh", "-c", "sleep 2; for i in $(seq 9); do "
                                                  "curl -s --max-time 2 http://web/; echo; done"]),
                             capture_output=True, text=True, timeout=60).stdout
    finally:
        os.kill(pid, signal.SIGCONT)
    got = {line for line in out.split() if line}
    assert got and got <= want, out


KEEPALIVE = r"""
import socket, sys
conns, seen = [], {}

def ask(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += s.recv(4096)
    return body.decode().strip()

while len(conns) < 60 and (len(seen) < 3 or min(seen.values()) < 2):  # every endpoint held at least twice
    s = socket.create_connection((sys.argv[1], 80), timeout=5)
    name = ask(s)
    seen[name] = seen.get(name, 0) + 1
    print("before", len(conns), name, flush=True)
    conns.append(s)
print("ready", len(conns), flush=True)
sys.stdin.readline()
for i, s in enumerate(conns):
    try:
        print("after", i, ask(s), flush=True)
    except Exception as e:
        print("after", i, "ERR", type(e).__name__, flush=True)
"""


def test_scaling_keeps_survivors_and_moves_new_connections_within_a_second(lab: Lab) -> None:
    """Last of web's tests: it changes the Deployment. Keep-alive connections opened before the scale-down keep
    working when their endpoint survives; new connections go only to the survivor."""
    web = lab.cluster_ip("web")
    client = lab.pods("app=client")[0]["metadata"]["name"]
    held = subprocess.Popen([*KMESH, "exec", "--data-dir", str(lab.dd.root), client, "--", "python3", "-c", KEEPALIVE, web],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout is not None and held.stdin is not None
        before: dict[str, str] = {}
        while not (line := held.stdout.readline()).startswith("ready"):
            assert line, "the keep-alive client ended early"
            before.update([line.split()[1:3]])
        assert len(set(before.values())) == 3, before  # every endpoint holds connections
        lab.kubectl("scale", "deployment/web", "--replicas=1")
        deadline = time.monotonic() + 30
        while True:
            slices = json.loads(lab.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "json"))
            ready = [e for s in slices["items"] for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")]
            if len(ready) == 1:
                break
            assert time.monotonic() < deadline, "the slice never shrank to one ready endpoint"
            time.sleep(0.05)
        survivor = ready[0]["targetRef"]["name"]
        out = lab.exec(client, "sleep 1; for i in $(seq 10); do curl -s --max-time 2 http://%s/; echo; done" % web)
        assert {line for line in out.split() if line} == {survivor}, out
        held.stdin.write("go\n")
        held.stdin.flush()
        after = dict(line.split()[1:3] for line in (held.stdout.readline() for _ in range(len(before))))
        for i, name in before.items():
            if name == survivor:
                assert after[i] == survivor, f"connection {i} to the surviving {survivor} broke: {after}"
    finally:
        held.kill()
        held.wait()


def test_prefer_close_keeps_traffic_in_the_zone_until_hints_cannot_be_used(lab: Lab) -> None:
    """Topology-aware routing: PreferClose, its fallbacks and topology-mode Auto (see topology_scenario).

    Hints, the node's zone and the filtering are the shared tracker's and model's; a mode sees their result
    as a changed endpoint set, which every mode's scaling test covers. So the scenario runs in the two
    modes that write rules, iptables (full syncs) and nftables (partial syncs), not in all four."""
    if lab.mode not in ("iptables", "nftables"):
        pytest.skip("the same shared code in every mode: run in iptables and nftables")
    prefer_close_keeps_traffic_in_the_zone_until_hints_cannot_be_used(lab)
