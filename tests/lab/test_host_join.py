"""The host runtime across machines: `kmesh up --runtime host` on one, `kmesh join` on the others.

The machines are namespaces that look like Vagrant VMs (``tests.support.machines``):
10.0.2.15 on every ``eth0`` with the default route, ``eth1`` on a shared
host-only bridge with MTU 1400. kmesh runs in them as a user runs it on a VM,
through ``ip netns exec``; kubectl runs from "the host" on the bridge.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
import yaml

from tests.conftest import require, require_binary
from kmesh.net import netns
from tests.support.machines import KMESH, NAT_IP, WEB_SERVICE, Machines, echo_pod, make_machines, ok

pytestmark = [pytest.mark.netns, pytest.mark.slow]

@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machines]:
    """Three machines: m1 the server (iptables), m2 joined (iptables), m3 joined (nftables); m4 not joined."""
    import os

    from kmesh.net.netns_check import netns_usable

    require(os.geteuid() == 0 and netns_usable(), "root and network namespaces")
    for tool in ("iptables", "nft", "kubectl", "dig", "curl"):
        require_binary(tool)
    m = make_machines(tmp_path_factory.mktemp("machines"), 4)
    early = None
    try:
        # m3 starts joining before m1 is up, as a lab's machines start together: it waits for the token file
        # (a shared folder's) and for the server to answer
        shared = m.root / "shared"
        shared.mkdir()
        early = subprocess.Popen(netns.nsenter_argv(m.ns("m3"), [
            *KMESH, "join", f"https://{m.ip('m1')}:6443", "--token-file", str(shared / "join-token"),
            "--node-name", "m3", "--name", m.lab, "--proxy-mode", "nftables", "--data-dir", str(m.data_dir("m3"))]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out = ok(m.kmesh("m1", "up", "--runtime", "host", "--advertise-address", m.ip("m1"), "--node-name", "m1",
                          "--name", m.lab, "--port", "6443"))
        assert "kmesh join https://192.168.56.10:6443 --token" in out
        token = (m.data_dir("m1") / "join-token").read_text().strip()
        (shared / "join-token.tmp").write_text(token + "\n")
        (shared / "join-token.tmp").rename(shared / "join-token")
        ok(m.kmesh("m2", "join", f"https://{m.ip('m1')}:6443", "--token", token, "--node-name", "m2",
                    "--name", m.lab, "--proxy-mode", "iptables"))
        out, err = early.communicate(timeout=600)
        assert early.returncode == 0, out + err
        assert "waiting for the join token in" in err + out
        yield m
    finally:
        if early is not None and early.poll() is None:
            early.kill()
            early.wait()
        m.close()


def _nodes(m: Machines) -> dict[str, dict]:
    return {n["metadata"]["name"]: n for n in json.loads(ok(m.kubectl("get", "nodes", "-o", "json")))["items"]}


def test_nodes_ready_with_their_eth1_addresses(lab: Machines) -> None:
    nodes = _nodes(lab)
    assert set(nodes) == {"m1", "m2", "m3"}
    for name, node in nodes.items():
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal == [lab.ip(name)], f"{name}: InternalIP {internal}, never the NAT address {NAT_IP}"
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True"
        # kubectl's ROLES: the server is a control-plane node, as kubeadm labels it; a joined machine is not
        roles = {k for k in node["metadata"]["labels"] if k.startswith("node-role.kubernetes.io/")}
        assert roles == ({"node-role.kubernetes.io/control-plane"} if name == "m1" else set()), (name, roles)
        assert node["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] == lab.ip(name)
    for name in ("m1", "m2", "m3"):  # the overlay's MTU comes from eth1 (1400), not from eth0 (1500)
        link = json.loads(ok(lab.run(name, "ip", "-j", "link", "show", "flannel.1")))[0]
        assert link["mtu"] == 1400 - 50
        vxlan = ok(lab.run(name, "ip", "-d", "link", "show", "flannel.1"))
        assert f"local {lab.ip(name)} dev eth1" in vxlan
        # the MAC is set at creation (udev leaves it alone) and is what the node announces
        from kmesh.cni.backends.vxlan import stable_mac

        assert link["address"] == stable_mac(lab.ip(name), 1)
        data = json.loads(nodes[name]["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"])
        assert data["VtepMAC"] == link["address"]


def test_kubectl_from_the_host_machine(lab: Machines) -> None:
    out = ok(lab.kubectl("get", "nodes", "-o", "wide"))
    for name in ("m1", "m2", "m3"):
        assert name in out and lab.ip(name) in out


def _apply(m: Machines, objs: list[dict] | str) -> None:
    text = objs if isinstance(objs, str) else yaml.safe_dump_all(objs)
    r = subprocess.run(["ip", "netns", "exec", m.lan, "kubectl", "--kubeconfig",
                        str(m.data_dir("m1") / "kubeconfig.yaml"), "apply", "-f", "-"],
                       input=text, capture_output=True, text=True, timeout=60)
    ok(r)


def _running(m: Machines, names: list[str], timeout: float = 120) -> dict[str, dict]:
    ok(m.kubectl("wait", "--for=condition=Ready", "pod", *names, f"--timeout={timeout:.0f}s"))
    return {p["metadata"]["name"]: p for p in json.loads(ok(m.kubectl("get", "pods", "-o", "json")))["items"]}


def _in_pod(m: Machines, pod: dict, *argv: str) -> subprocess.CompletedProcess[str]:
    ns = m.pod_ns(pod["spec"]["nodeName"], pod["metadata"]["name"], pod["metadata"]["uid"])
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=30)


def _exec(m: Machines, machine: str, pod: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return m.run(machine, *KMESH, "exec", "--data-dir", str(m.data_dir(machine)), pod, "--", *argv)


def _until_served(m: Machines, pod: dict, url: str, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while _in_pod(m, pod, "curl", "-sS", "-o", "/dev/null", "--max-time", "3", url).returncode != 0:
        assert time.monotonic() < deadline, f"{url} not served from {pod['metadata']['name']} in {timeout:.0f} s"
        time.sleep(0.2)


def test_pods_talk_across_machines_through_services_and_dns(lab: Machines) -> None:
    names = [f"web-{n}" for n in ("m1", "m2", "m3")]
    _apply(lab, [echo_pod(f"web-{n}", n, {"app": "web"}) for n in ("m1", "m2", "m3")])
    _apply(lab, WEB_SERVICE)
    pods = _running(lab, names)
    ok(lab.kubectl("wait", "--for=jsonpath={.endpoints[2].conditions.ready}=true", "endpointslice",
                    "-l", "kubernetes.io/service-name=web", "--timeout=60s"))
    svc = json.loads(ok(lab.kubectl("get", "service", "web", "-o", "json")))
    cluster_ip = svc["spec"]["clusterIP"]
    for src in names:  # each node's proxy programs the Service once it has seen the endpoints
        _until_served(lab, pods[src], f"http://{cluster_ip}/")
    for src in names:
        for dst in names:  # pod to pod, across the VXLAN overlay between machines
            body = json.loads(ok(_in_pod(lab, pods[src], "curl", "-sS", "--max-time", "10",
                                          f"http://{pods[dst]['status']['podIP']}:8080/")))
            assert body["pod"] == dst
            assert body["client"].split(":")[0] == pods[src]["status"]["podIP"]  # no NAT between pods
        seen = set()
        for _ in range(60):  # the ClusterIP, from every machine (iptables on m1/m2, nftables on m3)
            body = json.loads(ok(_in_pod(lab, pods[src], "curl", "-sS", "--max-time", "10", f"http://{cluster_ip}/")))
            seen.add(body["pod"])
            if len(seen) == 3:
                break
        assert seen == set(names), f"{src}: 60 requests reached only {seen}"
        answer = ok(_in_pod(lab, pods[src], "dig", "+short", "+time=3", "@10.96.0.10", "web.default.svc.cluster.local"))
        assert answer.split() == [cluster_ip]
        short = ok(_in_pod(lab, pods[src], "curl", "-sS", "--max-time", "10", "http://web/"))  # search path
        assert json.loads(short)["pod"] in names
    node_of = {n: n.removeprefix("web-") for n in names}
    for src in names:  # kmesh exec on the pod's own machine
        out = ok(_exec(lab, node_of[src], src, "ip", "-4", "-o", "addr", "show", "eth0"))
        assert pods[src]["status"]["podIP"] in out



def test_bench_lb_across_machines(lab: Machines) -> None:
    # the Service `web` of the test above: endpoints on m1, m2 and m3; sent from m2 (a joined machine)
    r = lab.kmesh("m2", "bench", "lb", "web", "--requests", "150", "--concurrency", "4", "--protocol", "http",
                  "--alpha", "0.0001", "--json")  # a random split: 1 in 10000 false alarms
    out = ok(r)
    doc = json.loads(out)
    assert doc["passed"] is True, doc
    assert sorted(e["name"] for e in doc["endpoints"]) == ["web-m1", "web-m2", "web-m3"]
    assert all(e["count"] > 0 for e in doc["endpoints"])


def test_a_wrong_token_or_ca_is_refused_and_nothing_is_left(lab: Machines) -> None:
    from kmesh.client.bootstrap import JoinToken

    token = JoinToken.parse((lab.data_dir("m1") / "join-token").read_text())
    url = f"https://{lab.ip('m1')}:6443"
    wrong_ca = JoinToken("0" * 64, token.secret).format()
    r = lab.kmesh("m4", "join", url, "--token", wrong_ca, "--node-name", "m4", "--name", lab.lab)
    assert r.returncode == 1
    assert "does not match the token" in r.stderr and "0" * 64 in r.stderr
    wrong_secret = JoinToken(token.ca_hash, "abcdef.0123456789abcdef").format()
    r = lab.kmesh("m4", "join", url, "--token", wrong_secret, "--node-name", "m4", "--name", lab.lab)
    assert r.returncode == 1
    assert "refused the token" in r.stderr
    r = lab.kmesh("m4", "join", url, "--token", "not-a-token", "--node-name", "m4", "--name", lab.lab)
    assert r.returncode == 2 and "--token" in r.stderr
    bad = lab.root / "bad-token"
    bad.write_text("not-a-token\n")
    r = lab.kmesh("m4", "join", url, "--token-file", str(bad), "--node-name", "m4", "--name", lab.lab)
    assert r.returncode == 2 and "--token-file" in r.stderr
    for both_or_none in (["--token", token.format(), "--token-file", str(bad)], []):
        r = lab.kmesh("m4", "join", url, *both_or_none, "--node-name", "m4", "--name", lab.lab)
        assert r.returncode == 2 and "--token/--token-file" in r.stderr
    # a server that never answers: join waits --server-timeout, then gives up naming it
    r = lab.kmesh("m4", "join", f"https://{lab.ip('m1')}:6999", "--token", token.format(), "--server-timeout", "1",
                  "--node-name", "m4", "--name", lab.lab)
    assert r.returncode == 1
    assert "cannot reach the server" in r.stderr and "--server-timeout" in r.stderr
    assert "m4" not in _nodes(lab)
    assert not lab.data_dir("m4").exists()
    links = ok(lab.run("m4", "ip", "-o", "link", "show"))
    assert "cni0" not in links and "flannel" not in links


def test_a_duplicate_public_ip_is_refused_naming_both_nodes(lab: Machines) -> None:
    ghost = {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": "ghost", "annotations": {"flannel.alpha.coreos.com/public-ip": NAT_IP}}}
    _apply(lab, [ghost])
    try:
        # the API refuses a second node announcing the same address, naming both
        twin = {**ghost, "metadata": {**ghost["metadata"], "name": "twin"}}
        r = subprocess.run(["ip", "netns", "exec", lab.lan, "kubectl", "--kubeconfig",
                            str(lab.data_dir("m1") / "kubeconfig.yaml"), "create", "-f", "-"],
                           input=json.dumps(twin), capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert 'node "ghost" already has this address' in r.stderr and '"twin"' in r.stderr
        # join refuses before it changes anything, with both names and the way out
        token = (lab.data_dir("m1") / "join-token").read_text().strip()
        r = lab.kmesh("m4", "join", f"https://{lab.ip('m1')}:6443", "--token", token, "--node-name", "m4",
                      "--name", lab.lab, "--iface", "eth0")
        assert r.returncode == 1
        assert f"node ghost already has the address {NAT_IP}" in r.stderr and "node m4" in r.stderr
        assert "--iface" in r.stderr
        assert "m4" not in _nodes(lab)
    finally:
        lab.kubectl("delete", "node", "ghost", "--ignore-not-found")


def test_status_on_the_server_and_on_a_joined_machine(lab: Machines) -> None:
    for machine in ("m1", "m2"):
        out = ok(lab.kmesh(machine, "status"))
        assert "runtime host" in out
        for name in ("m1", "m2", "m3"):
            assert name in out
    info = json.loads((lab.data_dir("m2") / "cluster.json").read_text())
    assert info["runtime"] == "host" and info["api"] == f"https://{lab.ip('m1')}:6443"
    assert [(n["name"], n["ip"], n["netns"]) for n in info["nodes"]] == [("m2", lab.ip("m2"), None)]


def test_bad_host_options_are_refused_before_anything_is_made(lab: Machines) -> None:
    r = lab.kmesh("m4", "up", "--runtime", "host", "--name", lab.lab)
    assert r.returncode == 2 and "--advertise-address" in r.stderr
    r = lab.kmesh("m4", "up", "--runtime", "host", "--advertise-address", "192.168.56.99", "--name", lab.lab,
                  "--port", "6443")
    assert r.returncode == 1
    assert "--advertise-address 192.168.56.99: no interface of this machine has that address" in r.stderr
    assert "eth1 192.168.56.13/24" in r.stderr  # the addresses it does have
    r = lab.kmesh("m4", "up", "--runtime", "host", "--advertise-address", lab.ip("m4"), "--nodes", "3")
    assert r.returncode == 2 and "--nodes" in r.stderr
    r = lab.kmesh("m4", "join", "http://192.168.56.10:6443", "--token", "x")
    assert r.returncode == 2
    assert not lab.data_dir("m4").exists()
    links = ok(lab.run("m4", "ip", "-o", "link", "show"))
    assert "cni0" not in links and "flannel" not in links


def test_down_on_a_joined_machine_removes_its_node_and_network(lab: Machines) -> None:
    ok(lab.kmesh("m3", "down"))
    assert "m3" not in _nodes(lab)
    links = ok(lab.run("m3", "ip", "-o", "link", "show"))
    assert "cni0" not in links and "flannel.1" not in links
    from kmesh.net import netns

    assert netns.names(f"kmesh-{lab.lab}-m3-") == []
    assert "kube-proxy" not in ok(lab.run("m3", "nft", "list", "tables"))
    assert "KUBE-SERVICES" not in ok(lab.run("m3", "iptables-save"))
    assert not lab.data_dir("m3").exists()
