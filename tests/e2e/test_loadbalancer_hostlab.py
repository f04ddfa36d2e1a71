"""LoadBalancer Services in a host-runtime lab (namespace machines shaped like Vagrant VMs): "the host" on the
host-only network reaches the address directly, by ARP, without any forward."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest
import yaml

from kmesh.gateway.announce import elect
from kmesh.net.netns_check import netns_usable
from tests.conftest import require, require_binary
from tests.e2e.lbprobe import arp_answers, mac_of
from tests.e2e.test_loadbalancer_lab import wait_until
from tests.support.machines import Machines, echo_pod, make_machines, ok

pytestmark = [pytest.mark.netns, pytest.mark.slow]

LB_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machines]:
    """m1 the server (iptables) with the pool 192.168.56.200/31, m2 joined (nftables)."""
    require(os.geteuid() == 0 and netns_usable(), "root and network namespaces")
    for tool in ("iptables", "nft", "kubectl", "curl"):
        require_binary(tool)
    m = make_machines(tmp_path_factory.mktemp("machines"), 2)
    try:
        ok(m.kmesh("m1", "up", "--runtime", "host", "--advertise-address", m.ip("m1"), "--node-name", "m1",
                   "--name", m.lab, "--port", "6443", "--lb-range", "192.168.56.200/31", "--disable", "ingress"))
        token = (m.data_dir("m1") / "join-token").read_text().strip()
        ok(m.kmesh("m2", "join", f"https://{m.ip('m1')}:6443", "--token", token, "--node-name", "m2",
                   "--name", m.lab, "--proxy-mode", "nftables"))
        yield m
    finally:
        m.close()


def _apply(m: Machines, text: str) -> None:
    ok(subprocess.run(["ip", "netns", "exec", m.lan, "kubectl", "--kubeconfig", str(m.data_dir("m1") / "kubeconfig.yaml"),
                       "apply", "-f", "-"], input=text, capture_output=True, text=True, timeout=60))


def _curl_from_host(m: Machines, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", m.lan, "curl", "-sS", "--max-time", "5", url],
                          capture_output=True, text=True, timeout=30)


def test_the_host_reaches_the_address_directly(lab: Machines) -> None:
    _apply(lab, yaml.safe_dump_all([echo_pod(f"web-{n}", n, {"app": "web"}) for n in ("m1", "m2")]))
    _apply(lab, LB_SERVICE)
    ok(lab.kubectl("wait", "--for=condition=Ready", "pod", "web-m1", "web-m2", "--timeout=120s"))
    ip = wait_until(lambda: ok(lab.kubectl("get", "svc", "web", "-o",
                                           "jsonpath={.status.loadBalancer.ingress[0].ip}")), 60, "web's address")
    assert ip == "192.168.56.200"  # the /31's first address
    info = json.loads((lab.data_dir("m1") / "cluster.json").read_text())
    assert info["lbRange"] == "192.168.56.200/31" and info["loadBalancers"] == {}  # no forward: the LAN is real

    def served() -> bool:
        r = _curl_from_host(lab, f"http://{ip}/")
        return r.returncode == 0 and json.loads(r.stdout)["pod"] in ("web-m1", "web-m2")

    assert wait_until(served, 60, "the host to reach the LoadBalancer address")
    winner = elect(ip, ["m1", "m2"])
    assert arp_answers(lab.lan, ip, "br0") == {mac_of(lab.ns(winner), "eth1")}  # one machine answers
