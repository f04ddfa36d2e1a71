"""The Vagrant lab on real VMs: the project's own Vagrantfile, the libvirt provider, QEMU (TCG), the box that
``make vagrant-box`` builds.

libvirtd runs confined to a network namespace this module makes (tests/support/libvirt.py), so the lab
network 192.168.56.0/24, the management network, the VMs' tap devices and "the host" (192.168.56.1, where
kubectl runs) are all inside it. ``vagrant up`` provisions the VMs with vagrant/scripts: the first runs
``kmesh up --runtime host``, the others ``kmesh join`` with the command the first left in the synced folder.

Then, as a user of the lab would check it: every node Ready with its eth1 address, kubectl from the host,
pods talking across VMs over VXLAN, a ClusterIP Service reached from pods on every VM in iptables mode and
again in ipvs mode, a Service name resolved through kube-dns, ``kmesh bench lb`` across the VMs, and
``vagrant destroy`` leaving no VM, no namespace and no link.

2 VMs by default (what CI runs: 2 vCPUs and TCG); KMESH_VM_NODES=3 for three. Needs root and the packages
``make test`` installs; skipped otherwise, and failed instead under KMESH_REQUIRE_NETNS=1 (CI).
Deselect with ``-m "not vm"``. Logs (vagrant's, the consoles, libvirtd's) stay in the test's tmp dir;
KMESH_VM_PAUSE=FILE keeps the lab up at the end until FILE exists (to look at it).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kmesh.net.netns_check import netns_usable
from tests.conftest import require, require_binary
from tests.support.machines import WEB_SERVICE, echo_pod
from tests.support.vagrant import (
    VagrantLab,
    build_box,
    default_settings,
    missing_packages,
    vagrant_lab,
)

pytestmark = [pytest.mark.vm, pytest.mark.slow]

NODES = int(os.environ.get("KMESH_VM_NODES", "2"))
OTHER_MODE = os.environ.get("KMESH_VM_OTHER_MODE", "ipvs")

class Lab:
    """The running lab, and what the tests learned about it."""

    def __init__(self, vl: VagrantLab, root_links: set[str]) -> None:
        self.vl = vl
        self.root_links = root_links
        self.closed = False
        self.pods: dict[str, dict] = {}

    def names(self) -> list[str]:
        return self.vl.names()

    def json(self, *args: str) -> dict:
        return json.loads(self.vl.kubectl(*args, "-o", "json").stdout)

    def in_pod(self, pod: dict, command: str, *, check: bool = True, timeout: float = 120) -> str:
        """``command`` (a shell line) inside ``pod``'s network namespace, on the VM that runs it."""
        ns_suffix = f"-{pod['metadata']['name'][:40]}-{pod['metadata']['uid'][:8]}"
        line = (f"ns=$(ip netns list | awk '{{print $1}}' | grep -- '{ns_suffix}$' | head -n 1); "
                f"[ -n \"$ns\" ] || {{ echo 'no namespace *{ns_suffix}'; exit 97; }}; ip netns exec \"$ns\" {command}")
        out = self.vl.ssh(pod["spec"]["nodeName"], line, check=check, timeout=timeout)
        return out.stdout

    def wait_pods(self, names: list[str], timeout: float = 600) -> dict[str, dict]:
        self.vl.kubectl("wait", "--for=condition=Ready", "pod", *names, f"--timeout={timeout:.0f}s",
                        timeout=timeout + 60)
        items = self.json("get", "pods")["items"]
        return {p["metadata"]["name"]: p for p in items if p["metadata"]["name"] in names}

    def wait_nodes_ready(self, timeout: float = 900) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        nodes: dict[str, dict] = {}
        while time.monotonic() < deadline:
            out = self.vl.kubectl("get", "nodes", "-o", "json", check=False)
            if out.returncode == 0:
                nodes = {n["metadata"]["name"]: n for n in json.loads(out.stdout)["items"]}
                if set(nodes) == set(self.names()) and all(_ready(n) for n in nodes.values()):
                    return nodes
            time.sleep(5)
        raise AssertionError(f"nodes not all Ready after {timeout:.0f} s: "
                             f"{ {k: _ready(v) for k, v in nodes.items()} }")


def _ready(node: dict) -> bool:
    return {c["type"]: c["status"] for c in node["status"].get("conditions", [])}.get("Ready") == "True"


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require(os.geteuid() == 0, "root (libvirtd, namespaces, QEMU)")
    require(netns_usable(), "network namespaces")
    missing = missing_packages()
    require(not missing, f"Debian packages {' '.join(missing)} (make test installs them as root)")
    require(Path("/dev/net/tun").exists(), "/dev/net/tun (libvirt's tap devices)")
    require_binary("kubectl")
    work = tmp_path_factory.mktemp("vagrant-lab")
    box, box_seconds = build_box(work / "box.log")
    settings = default_settings(work, workers=NODES - 1)
    netns = f"kmvm-{secrets.token_hex(3)}"
    before = _root_links()
    with vagrant_lab(work, netns, settings, box) as vl:
        vl.timings["box build (cached: a few s)"] = box_seconds
        lab = Lab(vl, before)
        try:
            vl.up()
            yield lab
        finally:
            print("\nVM lab timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in vl.timings.items()))
            pause = os.environ.get("KMESH_VM_PAUSE")  # debugging: the lab stays until this file exists
            while pause and not lab.closed and not Path(pause).exists():
                time.sleep(5)
            if not lab.closed and vl.lv.domains():
                vl.vagrant("destroy", "-f", timeout=900, check=False)


def test_nodes_ready_with_their_eth1_addresses(lab: Lab) -> None:
    nodes = lab.wait_nodes_ready()
    assert set(nodes) == set(lab.names())
    for name, node in nodes.items():
        ip = lab.vl.machines[name].ip
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal == [ip], f"{name}: InternalIP {internal}, not its eth1 address {ip}"
        assert node["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] == ip
        # the overlay runs over eth1 with eth1's MTU less VXLAN's 50 bytes (never over the management NIC)
        links = {ln["ifname"]: ln for ln in json.loads(lab.vl.ssh(name, "ip -j -d link show").stdout)}
        vxlan = links["flannel.1"]
        assert vxlan["mtu"] == links["eth1"]["mtu"] - 50
        assert vxlan["linkinfo"]["info_data"]["local"] == ip
        assert vxlan["linkinfo"]["info_data"]["link"] == "eth1"
    _vtep_macs_published(lab)


def _vtep_macs_published(lab: Lab) -> None:
    """Every node announces its flannel.1's real MAC (its peers' FDB and neighbour entries are made from it)."""
    for name, node in lab.wait_nodes_ready().items():
        published = json.loads(node["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"])["VtepMAC"]
        actual = json.loads(lab.vl.ssh(name, "ip -j link show flannel.1").stdout)[0]["address"]
        assert published == actual, f"{name}: flannel.1 is {actual} but the Node announces VtepMAC {published}"


def test_kubectl_from_the_host_machine(lab: Lab) -> None:
    config = yaml.safe_load(lab.vl.kubeconfig.read_text())
    first = lab.vl.machines[lab.names()[0]].ip
    assert config["clusters"][0]["cluster"]["server"] == f"https://{first}:6443"
    out = lab.vl.kubectl("get", "nodes", "-o", "wide").stdout
    for name in lab.names():
        assert name in out and lab.vl.machines[name].ip in out, out


def test_pods_talk_across_vms_over_vxlan(lab: Lab) -> None:
    names = [f"web-{n}" for n in lab.names()]
    lab.vl.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([echo_pod(f"web-{n}", n, {"app": "web"}) for n in lab.names()]))
    lab.vl.kubectl("apply", "-f", "-", stdin=WEB_SERVICE)
    lab.pods = lab.wait_pods(names)
    for src in names:
        for dst in names:
            body = json.loads(lab.in_pod(lab.pods[src], f"curl -sS --max-time 20 "
                                                         f"http://{lab.pods[dst]['status']['podIP']}:8080/"))
            assert body["pod"] == dst
            assert body["client"].split(":")[0] == lab.pods[src]["status"]["podIP"]  # no NAT between pods


def _service_settled(lab: Lab, timeout: float = 600) -> dict[str, dict]:
    """web's pods Ready and its EndpointSlice naming exactly their addresses (after a restart the pods come
    back with new ones); then every pod gets an answer from the ClusterIP once (its kube-proxy has synced)."""
    names = [f"web-{n}" for n in lab.names()]
    deadline = time.monotonic() + timeout
    while True:
        pods = lab.wait_pods(names, timeout=max(60.0, deadline - time.monotonic()))
        ips = {p["status"].get("podIP") for p in pods.values()}
        slices = lab.json("get", "endpointslices", "-l", "kubernetes.io/service-name=web")["items"]
        ready = {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]
                 if (e.get("conditions") or {}).get("ready", True)}
        if ready == ips:
            break
        assert time.monotonic() < deadline, f"web's endpoints {ready} never matched its pods {ips}"
        time.sleep(5)
    cluster_ip = lab.json("get", "service", "web")["spec"]["clusterIP"]
    for pod in pods.values():
        out = lab.in_pod(pod, f"sh -c 'for i in $(seq 60); do curl -s --max-time 5 -o /dev/null http://{cluster_ip}/ "
                              f"&& exit 0; sleep 2; done; exit 1'", check=False, timeout=600)
        assert "no namespace" not in out, out
    return pods


def _cluster_ip_from_every_vm(lab: Lab) -> str:
    pods = _service_settled(lab)
    cluster_ip = lab.json("get", "service", "web")["spec"]["clusterIP"]
    for src, pod in pods.items():
        # every request answered (a failed one prints nothing: 12 lines or a failure), by pods on several VMs
        out = lab.in_pod(pod, f"sh -c 'for i in $(seq 12); do curl -sS --max-time 10 http://{cluster_ip}/ && echo; done'",
                         timeout=300)
        answers = [json.loads(line)["pod"] for line in out.splitlines() if line.strip()]
        assert len(answers) == 12, f"from {src}: {12 - len(answers)} of 12 requests unanswered"
        assert len(set(answers)) >= 2, f"from {src} every request went to {set(answers)}"
    return cluster_ip


def test_cluster_ip_from_pods_on_every_vm_iptables(lab: Lab) -> None:
    cluster_ip = _cluster_ip_from_every_vm(lab)
    for name in lab.names():
        rules = lab.vl.ssh(name, "iptables-save -t nat").stdout
        assert cluster_ip in rules and "KUBE-SERVICES" in rules


def test_a_pod_resolves_a_service_name_through_kube_dns(lab: Lab) -> None:
    cluster_ip = lab.json("get", "service", "web")["spec"]["clusterIP"]
    dns_ip = lab.json("get", "service", "kube-dns", "-n", "kube-system")["spec"]["clusterIP"]
    assert dns_ip == "10.96.0.10"
    for pod in lab.pods.values():
        answer = lab.in_pod(pod, "dig +short +time=5 +tries=3 @10.96.0.10 web.default.svc.cluster.local")
        assert answer.split() == [cluster_ip]
        short = lab.in_pod(pod, "curl -sS --max-time 20 http://web/")  # resolv.conf's search path
        assert json.loads(short)["pod"] in lab.pods


def test_kmesh_bench_lb_across_vms(lab: Lab) -> None:
    # from a pod on the last VM (a joined one), to web's pods on every VM
    last = lab.names()[-1]
    out = lab.vl.ssh(last, f"kmesh bench lb web --from web-{last} --protocol http --requests 150 --concurrency 4 --alpha 0.0001 "
                           f"--timeout 10 --json", check=False, timeout=900)
    assert out.returncode == 0, f"kmesh bench lb: {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    doc = json.loads(out.stdout)
    assert doc["passed"] is True, doc
    assert sorted(e["name"] for e in doc["endpoints"]) == sorted(f"web-{n}" for n in lab.names())
    assert all(e["count"] > 0 for e in doc["endpoints"]), doc["endpoints"]


def test_cluster_ip_from_pods_on_every_vm_other_mode(lab: Lab) -> None:
    """Every machine switched to another proxy mode (vagrant/scripts/proxy-mode.sh: the unit restarts, the first
    server on its store): the Service still answers from every VM, now through that mode's rules."""
    scripts = f"{lab.vl.settings['synced_folder']['guest']}/.kmesh-scripts"
    for name in lab.names():  # the first server first
        lab.vl.ssh(name, f"bash {scripts}/proxy-mode.sh {OTHER_MODE}", timeout=1800)
    lab.wait_nodes_ready()
    _vtep_macs_published(lab)  # each restart made a new flannel.1: the peers must learn it
    cluster_ip = _cluster_ip_from_every_vm(lab)
    for name in lab.names():
        if OTHER_MODE == "ipvs":
            table = lab.vl.ssh(name, "ipvsadm -Ln").stdout
            assert f"{cluster_ip}:80" in table, table
        elif OTHER_MODE == "nftables":
            assert cluster_ip in lab.vl.ssh(name, "nft list ruleset").stdout


def test_destroy_leaves_nothing(lab: Lab) -> None:
    vl = lab.vl
    vl.destroy()
    lab.closed = True
    assert vl.lv.domains() == [], "a VM is left after vagrant destroy"
    status = vl.vagrant("status", timeout=300).stdout
    assert status.count("not created") == len(lab.names()), status
    left = [ln for ln in vl.lv.netns_links() if ln.startswith(("vnet", "virbr", "tap"))]
    assert left == [], f"links left in the lab namespace after destroy: {left}"
    # the namespace, libvirtd and its tree go now (the fixture's context does it again, harmlessly)
    assert vl.lv.stop() == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.split()
    assert vl.lv.netns not in netns
    assert vl.lv.proc is not None and vl.lv.proc.poll() is not None, "libvirtd still runs"
    qemu = subprocess.run(["pgrep", "-f", str(vl.work)], capture_output=True, text=True, check=False).stdout.split()
    assert qemu == [], f"processes still name the lab's dir: {qemu}"
    new_links = _root_links() - lab.root_links
    assert not [ln for ln in new_links if ln.startswith(("vnet", "virbr", "tap"))], new_links
