"""The netns lab as a user drives it: `kmesh up --runtime netns`, kubectl, kmesh exec, ip, bridge, kmesh down.

One 3-node lab per overlay set-up (backend × subnet manager); six agnhost
pods spread over the nodes; every pod must reach every other pod over ICMP
and TCP, each node must hold exactly the per-peer entries flannel programs,
and deleting a node must remove its entries on the others. The etcd set-up
also keeps the API's objects in the lab's etcd (``--store etcd``), which
speaks TLS to client certificates of its own CA only, and which no pod can
reach.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from kmesh.net import netns
from kmesh.lab.datadir import DataDir
from kmesh.net.netns_check import netns_usable
from kmesh.lab.etcd import GUARD_TABLE, node_guard_rules
from kmesh.lab.topology import CONTROL_PLANE_IP, LabNames, lab_namespaces, processes_in
from tests.conftest import require, require_binary
from tests.e2e.etcdprobe import apiserver_files, client_urls, etcdctl, lab_etcd_argv
from tests.support.files import exposed
from tests.support.metrics import check_metrics

pytestmark = [pytest.mark.netns, pytest.mark.slow]

KMESH = [sys.executable, "-m", "kmesh.cli"]
SETUPS = [("vxlan", "kube"), ("host-gw", "kube"), ("udp", "kube"), ("vxlan", "etcd")]


@dataclass
class Lab:
    """A running lab and how to drive it."""

    dd: DataDir
    names: LabNames
    backend: str
    manager: str

    def kmesh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*KMESH, args[0], "--data-dir", str(self.dd.root), *args[1:]],
                              capture_output=True, text=True, check=check, timeout=120)

    def kubectl(self, *args: str) -> str:
        env = dict(os.environ, KUBECONFIG=str(self.dd.kubeconfig))
        return subprocess.run(["kubectl", *args], capture_output=True, text=True, check=True, env=env, timeout=60).stdout

    def pods(self, selector: str = "app=web", namespace: str = "default") -> list[dict[str, Any]]:
        return json.loads(self.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json"))["items"]

    def nodes(self) -> list[dict[str, Any]]:
        return json.loads(self.kubectl("get", "nodes", "-o", "json"))["items"]

    def exec(self, pod: str, script: str, namespace: str = "default") -> str:
        out = self.kmesh("exec", "-n", namespace, pod, "--", "sh", "-c", script, check=False)
        return out.stdout + out.stderr


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` (state held by the kernel, no event to await) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def leftovers(names: LabNames) -> list[str]:
    spaces = lab_namespaces(names)
    return spaces + [f"pid {p}" for p in processes_in(spaces)]


@pytest.fixture(scope="module", params=SETUPS, ids=[f"{b}-{m}" for b, m in SETUPS])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require(netns_usable(), "root and network namespaces")
    require_binary("kubectl")
    backend, manager = request.param
    if manager == "etcd":
        require_binary("etcd")
    root = tmp_path_factory.mktemp(f"lab-{backend}-{manager}")
    names = LabNames(f"e{uuid.uuid4().hex[:5]}")
    lab = Lab(DataDir(root), names, backend, manager)
    store = ["--store", "etcd"] if manager == "etcd" else []  # the API server and the subnet managers share it
    try:
        up = subprocess.run(
            [*KMESH, "up", "--runtime", "netns", "--nodes", "3", "--backend", backend, "--subnet-manager", manager,
             *store, "--name", names.lab, "--data-dir", str(root), "--port", "0"],
            capture_output=True, text=True, timeout=180,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        lab.kubectl("create", "deployment", "web", "--image=registry.k8s.io/e2e-test-images/agnhost:2.39",
                    "--replicas=6", "--", "/agnhost", "serve-hostname")
        lab.kubectl("rollout", "status", "deployment/web", "--timeout=90s")
        yield lab
    finally:
        down = subprocess.run([*KMESH, "down", "--data-dir", str(root)], capture_output=True, text=True, timeout=120)
        left = leftovers(names)
        assert down.returncode == 0, down.stdout + down.stderr
        assert left == [], f"kmesh down left {left}"


def test_every_pod_reaches_every_pod(lab: Lab) -> None:
    pods = lab.pods()
    assert {p["spec"]["nodeName"] for p in pods} == {"node-1", "node-2", "node-3"}
    targets = {p["status"]["podIP"]: p["metadata"]["name"] for p in pods}
    script = "; ".join(
        f"ping -c1 -W2 {ip} >/dev/null && echo icmp-ok {ip}; echo tcp $(curl -s --max-time 3 {ip}:9376)"
        for ip in targets
    )
    for p in pods:
        out = lab.exec(p["metadata"]["name"], script)
        for ip, name in targets.items():
            assert f"icmp-ok {ip}" in out, f"{p['metadata']['name']} cannot ping {name} ({ip}):\n{out}"
            assert f"tcp {name}" in out, f"{p['metadata']['name']} cannot reach {name} ({ip}):9376:\n{out}"


def _peers(lab: Lab, node: str, gone: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    """The other nodes (but ``gone``) as (subnet, public IP, VTEP MAC), read off each node itself."""
    out = []
    info = lab.dd.read_cluster()
    assert info is not None
    for n in info.nodes:
        if n.name == node or n.name in gone:
            continue
        env = (lab.dd.root / "nodes" / n.name / "run" / "subnet.env").read_text()
        net = next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith("FLANNEL_SUBNET="))
        base = net.split("/")[0].rsplit(".", 1)[0]
        mac = ""
        if lab.backend == "vxlan":
            mac = netns.ip(n.netns, "-o", "link", "show", "flannel.1").split("link/ether ")[1].split()[0]
        out.append({"subnet": f"{base}.0/24", "zero": f"{base}.0", "ip": n.ip, "mac": mac, "name": n.name})
    return out


def _entries(ns: str, backend: str) -> dict[str, set[str]]:
    def lines(*args: str) -> set[str]:
        return {" ".join(line.split()) for line in netns.ip(ns, *args).splitlines() if line.strip()}

    if backend == "vxlan":
        fdb = subprocess.run(["bridge", "-n", ns, "fdb", "show", "dev", "flannel.1"], capture_output=True, text=True).stdout
        return {
            "routes": lines("route", "show", "dev", "flannel.1"),
            "neigh": lines("neigh", "show", "dev", "flannel.1"),
            "fdb": {" ".join(line.split()) for line in fdb.splitlines() if "dst" in line},
        }
    if backend == "host-gw":
        return {"routes": {r for r in lines("route", "show", "dev", "eth0") if " via " in r and not r.startswith("default")}}
    return {"routes": lines("route", "show", "dev", "flannel0")}


def _expected(lab: Lab, node: str, gone: frozenset[str] = frozenset()) -> dict[str, set[str]]:
    peers = _peers(lab, node, gone)
    if lab.backend == "vxlan":
        return {
            "routes": {f"{p['subnet']} via {p['zero']} onlink" for p in peers},
            "neigh": {f"{p['zero']} lladdr {p['mac']} PERMANENT" for p in peers},
            "fdb": {f"{p['mac']} dst {p['ip']} self permanent" for p in peers},
        }
    if lab.backend == "host-gw":
        return {"routes": {f"{p['subnet']} via {p['ip']}" for p in peers}}
    return {"routes": {"10.244.0.0/16 scope link"}}  # udp: one route; the peer table lives in the agent


def _normalise(entries: dict[str, set[str]]) -> dict[str, set[str]]:
    out = {}
    for k, v in entries.items():
        out[k] = {e.replace(" dev flannel.1", "")
                  .replace(" dev eth0", "").replace(" dev flannel0", "") for e in v}
    return out


def test_each_node_holds_exactly_the_per_peer_entries(lab: Lab) -> None:
    for node in ("node-1", "node-2", "node-3"):
        have = _normalise(_entries(lab.names.node(node), lab.backend))
        want = _expected(lab, node)
        assert have == want, f"{node}: {have} != {want}"


def test_pod_resolves_through_its_search_list(lab: Lab) -> None:
    require_binary("dig")
    dns = lab.pods("k8s-app=kube-dns", "kube-system")
    assert dns, "no coredns pods"
    dns_ip = dns[0]["status"]["podIP"]
    client = lab.pods()[0]["metadata"]["name"]
    out = lab.exec(client, f"cat /etc/resolv.conf; hostname; dig +search +short @{dns_ip} kube-dns.kube-system")
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in out
    assert "nameserver 10.96.0.10" in out and "options ndots:5" in out
    assert client in out.split()
    assert "10.96.0.10" in out.splitlines()[-1]


def test_kubectl_logs_reads_a_pod_on_any_node(lab: Lab) -> None:
    lab.kubectl("run", "hello", "--image=busybox", "--restart=Never", "--overrides",
                '{"spec": {"nodeName": "node-2"}}', "--command", "--", "sh", "-c", "echo hello from $(hostname)")
    try:
        lab.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/hello", "--timeout=50s")
        assert lab.kubectl("logs", "hello") == "hello from hello\n"
        for pod in lab.pods():  # the web pods, spread over the nodes: their (empty or not) logs are there
            lab.kubectl("logs", pod["metadata"]["name"], "--tail=5")
        # pod logs, store, PKI, CNI and subnet state: no one else reads them (issue 12 point 9) ...
        assert list(lab.dd.root.glob("nodes/node-2/pods/default_hello_*/*/0.log"))
        assert exposed(lab.dd.root) == []
        # ... while a pod's /etc files keep the system's modes, as /etc/resolv.conf has
        web = lab.pods()[0]
        etc = netns.ETC_NETNS / lab.names.pod(web["spec"]["nodeName"], web["metadata"]["name"], web["metadata"]["uid"])
        assert [(etc / f).stat().st_mode & 0o777 for f in ("resolv.conf", "hosts")] == [0o644, 0o644]
    finally:
        lab.kubectl("delete", "pod", "hello", "--wait=false")


def test_status_shows_nodes_and_subnets(lab: Lab) -> None:
    out = subprocess.run([*KMESH, "status", "--data-dir", str(lab.dd.root)], capture_output=True, text=True,
                         env=dict(os.environ, COLUMNS="250"), timeout=60)
    assert out.returncode == 0, out.stderr
    for n in ("node-1", "node-2", "node-3"):
        assert n in out.stdout and lab.names.node(n) in out.stdout
    assert lab.backend in out.stdout
    assert out.stdout.count(" syncs ") == 3 and "not answering" not in out.stdout, out.stdout  # every proxy answers /healthz


def test_metrics_urls_and_proxy_health(lab: Lab) -> None:
    """cluster.json's metrics answer on the root namespace's loopback; kube-proxy's /healthz on every node IP:10256."""
    info = json.loads(lab.dd.cluster_json.read_text())
    check_metrics(info, lab.dd.kubeconfig)
    assert all(not url.startswith("http://192.168.") for url in info["metrics"].values())
    ips = {n["name"]: n["ip"] for n in info["nodes"]}
    for node, ip in ips.items():
        other = lab.names.node("node-1" if node != "node-1" else "node-2")  # as a load balancer's health check would
        out = subprocess.run(["ip", "netns", "exec", other, "curl", "-s", "-w", " %{http_code}",
                              f"http://{ip}:10256/healthz"], capture_output=True, text=True, timeout=30)
        body, _, code = out.stdout.rpartition(" ")
        assert code == "200", f"{node}: {out.stdout} {out.stderr}"
        doc = json.loads(body)
        assert doc["nodeEligible"] is True and {"lastUpdated", "currentTime"} <= set(doc)


def test_pods_cannot_reach_etcd(lab: Lab) -> None:
    """etcd listens on the control plane's loopback and, for the subnet managers, on its underlay address,
    where pods reach it through their node: the node resets their connections, and without a client
    certificate of etcd's CA etcd gives them nothing anyway. The agents (certificate in hand) get in."""
    if lab.manager != "etcd":
        pytest.skip("only the etcd subnet manager's lab runs etcd")
    require_binary("curl")
    argv = lab_etcd_argv(lab.dd)
    urls = client_urls(argv)
    assert sorted(u.rsplit(":", 1)[0] for u in urls) == ["https://127.0.0.1", f"https://{CONTROL_PLANE_IP}"], urls
    underlay = next(u for u in urls if CONTROL_PLANE_IP in u)
    port = int(underlay.rsplit(":", 1)[1])
    pod = next(p for p in lab.pods() if p["spec"]["nodeName"] == "node-1")["metadata"]["name"]
    probe = f"curl -sk --max-time 5 -o /dev/null {underlay}/version; echo rc=$?"

    out = lab.exec(pod, probe)
    assert "rc=7" in out, out  # connection refused: the node's guard resets it

    node1 = lab.names.node("node-1")
    subprocess.run(["ip", "netns", "exec", node1, "nft", "delete", "table", "inet", GUARD_TABLE], check=True)
    try:  # without the guard, the connection opens, and TLS without a certificate of etcd's CA ends it
        out = lab.exec(pod, probe)
        assert "rc=0" not in out and "rc=7" not in out, out
        got = lab.exec(pod, f"curl -sk --max-time 5 -d '{{\"key\":\"AA==\",\"range_end\":\"AA==\"}}' "
                            f"{underlay}/v3/kv/range; echo \" rc=$?\"")
        assert "kvs" not in got and "rc=0" not in got, got
    finally:
        subprocess.run(["ip", "netns", "exec", node1, "nft", "-f", "-"], input=node_guard_rules(port), text=True,
                       check=True)
    assert "rc=7" in lab.exec(pod, probe)

    # The node agents' certificate opens it from a node: the subnet leases are there.
    pki = lab.dd.root / "pki"
    flannel = (pki / "etcd" / "ca.crt", pki / "flannel-etcd-client.crt", pki / "flannel-etcd-client.key")
    leases = etcdctl(underlay, "get", "/coreos.com/network/subnets/", "--prefix", "--keys-only", files=flannel,
                     namespace=node1)
    assert leases.returncode == 0 and leases.stdout.count("/coreos.com/network/subnets/") == 3, leases
    # ... and the API's objects, which the API server keeps there.
    objects = etcdctl(urls[0], "get", "", "--from-key", "--keys-only", files=apiserver_files(lab.dd),
                      namespace=lab.names.control_plane)
    assert objects.returncode == 0 and "web" in objects.stdout, objects.stderr


def test_deleting_a_node_removes_its_entries_on_the_others(lab: Lab) -> None:
    """Last in the module: it takes node-3 away."""
    node3 = lab.names.node("node-3")
    agents = [p for p in processes_in([node3]) if b"agent" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert agents, "node-3's agent is not running in its namespace"
    for pid in agents:
        os.kill(pid, signal.SIGTERM)
    if lab.manager == "kube":
        lab.kubectl("delete", "node", "node-3", "--wait=true")
    else:  # flannel's etcd leases outlive Node objects: the node leaves when its lease goes
        _delete_lease_of(lab, "node-3")
    for node in ("node-1", "node-2"):
        ns = lab.names.node(node)

        def only_node2_or_1() -> bool:
            have = _normalise(_entries(ns, lab.backend))
            want = _expected(lab, node, frozenset({"node-3"}))
            return have == want

        wait_until(only_node2_or_1, 15, f"{node} to drop node-3's entries")
        if lab.backend != "udp":
            assert len(_expected(lab, node, frozenset({"node-3"}))["routes"]) == 1
    if lab.backend == "udp":  # no kernel entry per peer: node-3's pods are unreachable from node-1 now
        client = next(p for p in lab.pods() if p["spec"]["nodeName"] == "node-1")["metadata"]["name"]
        gone = [p["status"]["podIP"] for p in lab.pods() if p["spec"]["nodeName"] == "node-3"]
        if gone:
            assert "icmp-ok" not in lab.exec(client, f"ping -c1 -W1 {gone[0]} >/dev/null && echo icmp-ok")


def test_down_after_kill_9_of_everything_leaves_nothing(tmp_path: Path) -> None:
    require(netns_usable(), "root and network namespaces")
    names = LabNames(f"k{uuid.uuid4().hex[:5]}")
    try:
        up = subprocess.run([*KMESH, "up", "--runtime", "netns", "--nodes", "2", "--name", names.lab,
                             "--data-dir", str(tmp_path), "--port", "0"], capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        sup = DataDir(tmp_path).supervisor_pid()
        assert sup is not None
        victims = [sup, *processes_in(lab_namespaces(names))]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert lab_namespaces(names), "the namespaces should outlive a kill -9"
        down = subprocess.run([*KMESH, "down", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert f"namespace {names.underlay}" in down.stdout
        assert leftovers(names) == []
        assert not tmp_path.exists() or not any(tmp_path.iterdir())
    finally:
        subprocess.run([*KMESH, "down", "--data-dir", str(tmp_path)], capture_output=True, timeout=120)


def _delete_lease_of(lab: Lab, node: str) -> None:
    """Remove ``node``'s subnet lease from the lab's etcd, with etcdctl inside the control plane
    (presenting the API server's client certificate: etcd takes no client without one)."""
    url = client_urls(lab_etcd_argv(lab.dd))[0]
    env = (lab.dd.root / "nodes" / node / "run" / "subnet.env").read_text()
    subnet = next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith("FLANNEL_SUBNET="))
    key = "/coreos.com/network/subnets/" + subnet.split("/")[0].rsplit(".", 1)[0] + ".0-24"
    out = etcdctl(url, "del", key, files=apiserver_files(lab.dd), namespace=lab.names.control_plane, timeout=30)
    assert out.stdout.strip() == "1", out.stdout + out.stderr
