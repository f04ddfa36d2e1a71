"""Three control-plane servers on one 3-member etcd cluster, and what happens when one of them dies.

Machines m1..m3 each run an etcd member, as kubeadm runs etcd: TLS on client
and peer URLs, client certificates of one etcd CA required (each machine
makes its pairs with `kmesh certs etcd`), and `kmesh up --runtime host
--store etcd --etcd https://... --etcd-cafile/-certfile/-keyfile` with its
own API-server client pair (m2 and m3 join m1's control plane with the
server token); m4 is an agent that joined
through m1. Then m1 loses power (every process in it gets SIGKILL, its etcd
member included): within 30 s another server's controller manager holds the
Lease, a Deployment scaled through another server gets its pods and
endpoints, m4 keeps its API through its balancer, and traffic to a Service
whose pods live on m3 and m4 never stops.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import require, require_binary
from tests.support.machines import KMESH, EtcdCluster, Machines, kill_machine, make_machines, ok, start_etcd_members

pytestmark = [pytest.mark.netns, pytest.mark.etcd, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Machines, EtcdCluster]]:
    import os

    from kmesh.net.netns_check import netns_usable

    require(os.geteuid() == 0 and netns_usable(), "root and network namespaces")
    for tool in ("etcd", "kubectl", "curl", "iptables"):
        require_binary(tool)
    m = make_machines(tmp_path_factory.mktemp("servers"), 4)
    try:
        etcd = start_etcd_members(m, ["m1", "m2", "m3"])
        # each server: its own member first, its own client pair of the etcd CA
        ok(m.kmesh("m1", "up", "--runtime", "host", "--advertise-address", m.ip("m1"), "--node-name", "m1",
                    "--name", m.lab, "--store", "etcd", *etcd.kmesh_flags("m1")))
        server_token = (m.data_dir("m1") / "server-token").read_text().strip()
        for x in ("m2", "m3"):
            ok(m.kmesh(x, "up", "--runtime", "host", "--advertise-address", m.ip(x), "--node-name", x,
                        "--name", m.lab, "--store", "etcd", *etcd.kmesh_flags(x),
                        "--server", f"https://{m.ip('m1')}:6443", "--token", server_token))
        join_token = (m.data_dir("m1") / "join-token").read_text().strip()
        ok(m.kmesh("m4", "join", f"https://{m.ip('m1')}:6443", "--token", join_token, "--node-name", "m4",
                    "--name", m.lab))
        yield m, etcd
    finally:
        m.close()


@pytest.fixture(scope="module")
def servers(lab: tuple[Machines, EtcdCluster]) -> Machines:
    return lab[0]


def _kubectl(m: Machines, via: str, *argv: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    cfg = m.data_dir(via) / "kubeconfig.yaml"
    return subprocess.run(["ip", "netns", "exec", m.lan, "kubectl", "--kubeconfig", str(cfg), *argv],
                          input=input, capture_output=True, text=True, timeout=90)


def _lease_holder(m: Machines, via: str, name: str) -> str:
    r = _kubectl(m, via, "-n", "kube-system", "get", "lease", name, "-o", "jsonpath={.spec.holderIdentity}")
    return r.stdout.strip() if r.returncode == 0 else ""


def _deployment(name: str, replicas: int, nodes: list[str]) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": nodes}]}]}}},
                "containers": [{"name": "c", "image": "kmesh/echo", "ports": [{"containerPort": 8080}]}]}}},
    }


def _service(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}}


def _curl(pod_ns: str, ip: str) -> subprocess.CompletedProcess[str]:
    """One HTTP request from a pod's namespace; stdout is the status code (000 when none came)."""
    return subprocess.run(["ip", "netns", "exec", pod_ns, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                           "--max-time", "3", f"http://{ip}/"], capture_output=True, text=True)


def test_every_server_serves_and_one_leads(servers: Machines) -> None:
    m = servers
    for via in ("m1", "m2", "m3"):
        nodes = json.loads(ok(_kubectl(m, via, "get", "nodes", "-o", "json")))["items"]
        assert sorted(n["metadata"]["name"] for n in nodes) == ["m1", "m2", "m3", "m4"]
        control_plane = sorted(n["metadata"]["name"] for n in nodes
                               if "node-role.kubernetes.io/control-plane" in n["metadata"].get("labels", {}))
        assert control_plane == ["m1", "m2", "m3"]
    holders = {_lease_holder(m, via, "kube-controller-manager") for via in ("m1", "m2", "m3")}
    assert len(holders) == 1 and holders != {""}, holders
    eps = json.loads(ok(_kubectl(m, "m2", "get", "endpoints", "kubernetes", "-o", "json")))
    assert sorted(a["ip"] for a in eps["subsets"][0]["addresses"]) == [m.ip("m1"), m.ip("m2"), m.ip("m3")]


def test_etcd_wants_a_client_certificate_of_its_ca(lab: tuple[Machines, EtcdCluster], tmp_path: Path) -> None:
    m, etcd = lab
    health = f"{etcd.url('m2')}/health"
    cert, key = etcd.pair("m3", "apiserver-etcd-client")  # any machine's pair of the etcd CA gets in
    r = etcd.curl("m3", health, "--cacert", str(etcd.cafile("m3")), "--cert", str(cert), "--key", str(key))
    assert r.returncode == 0 and '"health":"true"' in r.stdout.replace(" ", ""), r.stderr
    # no client certificate: etcd ends the handshake
    r = etcd.curl("m3", health, "--cacert", str(etcd.cafile("m3")))
    assert r.returncode != 0 and "health" not in r.stdout, r
    # a client pair of another etcd CA (another lab's): refused too
    other = tmp_path / "other"
    ok(subprocess.run([*KMESH, "certs", "etcd", "--out", str(other), "--client", "apiserver-etcd-client"],
                      capture_output=True, text=True, timeout=60))
    r = etcd.curl("m3", health, "--cacert", str(etcd.cafile("m3")), "--cert", str(other / "apiserver-etcd-client.crt"),
                  "--key", str(other / "apiserver-etcd-client.key"))
    assert r.returncode != 0 and "health" not in r.stdout, r
    # plain http to the client port or the peer port: no answer
    for url in (health.replace("https://", "http://"), f"http://{m.ip('m2')}:2380/members"):
        r = etcd.curl("m3", url)
        assert r.returncode != 0 and "health" not in r.stdout and "peerURLs" not in r.stdout, (url, r)
    # the peer port wants a certificate of the CA as well
    r = etcd.curl("m3", f"https://{m.ip('m2')}:2380/members", "--cacert", str(etcd.cafile("m3")))
    assert r.returncode != 0 and "peerURLs" not in r.stdout, r


def test_losing_a_server_keeps_the_cluster_working(servers: Machines) -> None:
    m = servers
    ok(_kubectl(m, "m2", "apply", "-f", "-", input=yaml.safe_dump_all([_deployment("web", 2, ["m3", "m4"]),
                                                                        _service("web"),
                                                                        _deployment("client", 1, ["m4"])])))
    ok(_kubectl(m, "m2", "rollout", "status", "deployment/web", "--timeout=120s"))
    ok(_kubectl(m, "m2", "rollout", "status", "deployment/client", "--timeout=120s"))
    client = json.loads(ok(_kubectl(m, "m2", "get", "pods", "-l", "app=client", "-o", "json")))["items"][0]
    cluster_ip = ok(_kubectl(m, "m2", "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}")).strip()
    pod_ns = m.pod_ns("m4", client["metadata"]["name"], client["metadata"]["uid"])
    # rollout status says the pods are Ready, not that m4's kube-proxy has their endpoints yet (on a real
    # cluster neither): wait for the first answer before the traffic that must never fail starts
    deadline = time.monotonic() + 60
    while _curl(pod_ns, cluster_ip).stdout != "200":
        assert time.monotonic() < deadline, f"{cluster_ip} never answered from m4's pod"
        time.sleep(0.2)
    failures: list[str] = []
    marks: dict[str, float] = {}  # when each step happened, to place any failure on the time line
    sent = [0]
    stop = threading.Event()

    def traffic() -> None:  # one request every 100 ms from m4's pod through the ClusterIP
        while not stop.is_set():
            r = _curl(pod_ns, cluster_ip)
            sent[0] += 1
            if r.stdout != "200":
                failures.append(f"{time.monotonic():.1f}: {r.stdout} {r.stderr.strip()}")
            stop.wait(0.1)

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        before = _lease_holder(m, "m2", "kube-controller-manager")
        killed_at = marks["m1 killed"] = time.monotonic()
        assert kill_machine(m, "m1"), "nothing ran on m1"
        deadline = killed_at + 30
        holder = before
        while time.monotonic() < deadline:
            holder = _lease_holder(m, "m2", "kube-controller-manager")
            if holder and not holder.startswith("m1_"):
                break
            time.sleep(0.5)
        assert holder and not holder.startswith("m1_"), f"the lease is still {holder!r} 30 s after m1 died"
        marks["new leader seen"] = time.monotonic()
        # a scale-up through another server gets its pods and endpoints (the controllers of m2 or m3 act)
        ok(_kubectl(m, "m3", "scale", "deployment/web", "--replicas=4"))
        marks["scaled to 4"] = time.monotonic()
        ok(_kubectl(m, "m3", "rollout", "status", "deployment/web", "--timeout=120s"))
        marks["rollout done"] = time.monotonic()
        slices = json.loads(ok(_kubectl(m, "m3", "get", "endpointslices", "-l", "kubernetes.io/service-name=web",
                                          "-o", "json")))["items"]
        ready = [e for s in slices for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")]
        assert len(ready) == 4
        # m4 joined through m1: its balancer now reaches m2 or m3, so m4 stays Ready
        node = json.loads(ok(_kubectl(m, "m3", "get", "node", "m4", "-o", "json")))
        assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
    finally:
        stop.set()
        t.join(10)
    assert sent[0] > 50
    timeline = ", ".join(f"{k} at {v:.1f}" for k, v in marks.items())
    assert failures == [], f"{len(failures)} of {sent[0]} requests failed: {failures[:5]} ({timeline})"
