"""``kmesh up --nodeport-addresses`` end to end: the flag reaches each node's kube-proxy, and a NodePort
answers on the node's underlay address but not on its pod-network gateway address."""

from __future__ import annotations

import ipaddress
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from kmesh.net import netns
from kmesh.lab.topology import LabNames
from tests.e2e.labdriver import AGNHOST, Lab, running_lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

WORKLOADS = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  nodeName: node-1
  containers:
  - name: tcp
    image: AGNHOST
    args: [serve-hostname]
    ports: [{containerPort: 9376}]
    readinessProbe: {tcpSocket: {port: 9376}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec:
  nodeName: node-1
  containers:
  - {name: c, image: AGNHOST, args: [pause]}
---
apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 9376, nodePort: 30090}
""".replace("AGNHOST", AGNHOST)


@pytest.fixture(scope="module", params=["iptables", "ipvs", "userspace"])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp(f"npa-{request.param}")
    with running_lab(root, LabNames(f"kmnpa{uuid.uuid4().hex[:4]}"), request.param, nodes=1,
                     flags=["--nodeport-addresses", "192.168.56.0/24"]) as lab:
        lab.kubectl("apply", "-f", "-", stdin=WORKLOADS)
        lab.kubectl("wait", "--for=condition=Ready", "pod/web", "pod/client", "--timeout=90s")
        yield lab


def test_nodeport_only_on_the_selected_address(lab: Lab) -> None:
    info = lab.dd.read_cluster()
    assert info is not None
    node = info.nodes[0]
    gateway = str(ipaddress.ip_network(node.podCIDR).network_address + 1)  # cni0 on the node: also a local address
    # From the underlay (the control plane's namespace) to the node IP, in 192.168.56.0/24: answered once the
    # proxy has the endpoint (curl retries a refused connection meanwhile).
    url = f"http://{node.ip}:30090/"
    argv = netns.exec_argv(lab.names.control_plane, ["curl", "-s", "--max-time", "5", "--retry", "30",
                                                     "--retry-connrefused", "--retry-delay", "1", url])
    out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60).stdout
    assert out.split() == ["web"], out
    # From a pod on the node to the node's pod-network address: not selected, refused.
    assert "rc=7" in lab.exec("client", f"curl -s --max-time 5 http://{gateway}:30090/; echo rc=$?")
    # ...while the node IP answers the pod too.
    assert "web" in lab.exec("client", f"curl -s --max-time 5 {url}")
