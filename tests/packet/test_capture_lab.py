"""`kmesh capture` in a 2-node netns lab, driven as a user would: a cross-node HTTP request seen on every hop.

Pods: ``client-1`` (node-1, agnhost pause), ``server-2`` (node-2, agnhost
netexec on 8080) and ``other/server-2`` (node-1, pause: a pod sharing a
name across namespaces). Each test starts ``kmesh capture``, waits for it to
say it captures, runs ``curl`` from ``client-1`` to ``server-2`` and reads
what it wrote or printed. One lab for the whole module.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmesh.lab.topology import LabNames
from tests.conftest import require_binary
from tests.e2e.labdriver import AGNHOST, KMESH, Lab, client_pods, running_lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PODS = f"""---
apiVersion: v1
kind: Pod
metadata: {{name: server-2, namespace: default, labels: {{app: server}}}}
spec:
  nodeName: node-2
  containers:
  - {{name: c, image: {AGNHOST}, args: [netexec, --http-port=8080, --udp-port=-1]}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: other}}
---
apiVersion: v1
kind: Pod
metadata: {{name: server-2, namespace: other}}
spec:
  nodeName: node-1
  containers:
  - {{name: c, image: {AGNHOST}, args: [pause]}}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_binary("tcpdump")
    root = tmp_path_factory.mktemp("capture")
    with running_lab(root, LabNames(f"c{uuid.uuid4().hex[:5]}"), "iptables", nodes=2) as lab:
        lab.kubectl("apply", "-f", "-", stdin=client_pods(1) + PODS)
        lab.kubectl("wait", "--for=condition=Ready", "pod", "client-1", "server-2", "--timeout=120s")
        lab.kubectl("wait", "--for=condition=Ready", "pod", "server-2", "-n", "other", "--timeout=120s")
        yield lab


def pod_ip(lab: Lab, pod: str) -> str:
    return lab.kubectl("get", "pod", pod, "-o", "jsonpath={.status.podIP}")


def start(lab: Lab, *args: str) -> subprocess.Popen[str]:
    """``kmesh capture`` in the background, returned once it says it captures."""
    proc = subprocess.Popen([*KMESH, "capture", "--data-dir", str(lab.dd.root), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    seen = ""
    while "capturing on" not in seen:
        left = deadline - time.monotonic()
        ready = select.select([proc.stderr], [], [], max(left, 0))[0]
        line = proc.stderr.readline() if ready else ""
        if not line:
            proc.kill()
            out, rest = proc.communicate()
            pytest.fail(f"kmesh capture did not start: {seen}{rest}{out}")
        seen += line
    return proc


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    out, rest = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out + rest
    return out, rest


def request(lab: Lab) -> str:
    """An HTTP request from client-1 (node-1) to server-2 (node-2); the server's answer."""
    out = lab.exec("client-1", f"curl -s -m 10 http://{pod_ip(lab, 'server-2')}:8080/hostname")
    assert out.strip() == "server-2", out
    return out


def read(path: Path) -> tuple[list[Any], list[bytes]]:
    """(packets, interface names) as scapy reads the file."""
    from scapy.utils import PcapNgReader

    with PcapNgReader(str(path)) as r:
        pkts = list(r)
        return pkts, [i[2].get("name") for i in r.interfaces]


def tcpdump(path: Path) -> list[str]:
    out = subprocess.run(["tcpdump", "-r", str(path), "-nn"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_a_cross_node_request_is_seen_on_every_hop(lab: Lab, tmp_path: Path) -> None:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.vxlan import VXLAN

    server = pod_ip(lab, "server-2")
    f = tmp_path / "hops.pcapng"
    proc = start(lab, "client-1", "server-2", "node-1", "node-2", "-w", str(f), "--duration", "5", "--json",
                 "--filter", "tcp port 8080 or udp port 8472")
    request(lab)
    out, _ = finish(proc)
    doc = json.loads(out)
    assert doc["file"] == str(f) and doc["stoppedBy"] == "duration" and doc["duration"] >= 5
    counts = doc["packets"]
    labels = ["client-1/eth0", "server-2/eth0", "node-1/eth0", "node-1/cni0", "node-1/flannel.1", "node-2/eth0",
              "node-2/cni0", "node-2/flannel.1"]
    assert set(labels) <= set(counts), counts
    for label in labels:
        assert counts[label] > 0, (label, counts)
    assert not any(label.endswith("/lo") for label in counts)

    pkts, names = read(f)
    assert [n.decode() for n in names] == list(counts)
    assert doc["total"] == len(pkts)
    # the inner segment on the pods' eth0 and the overlay device: plain TCP to the server
    for label in ("client-1/eth0", "node-1/flannel.1", "node-2/flannel.1", "server-2/eth0"):
        tcp = [p for p in pkts if p.sniffed_on == label and TCP in p and VXLAN not in p]
        assert any(p[IP].dst == server and p[TCP].dport == 8080 for p in tcp), label
    # the same segment encapsulated on the underlay, both nodes: UDP 8472, VNI 1, between the nodes' addresses
    node_ips = {n.name: n.ip for n in lab.dd.read_cluster().nodes}  # type: ignore[union-attr]
    for label in ("node-1/eth0", "node-2/eth0"):
        vx = [p for p in pkts if p.sniffed_on == label and VXLAN in p]
        assert vx, label
        assert all(p[UDP].dport == 8472 and p[VXLAN].vni == 1 for p in vx)
        to_server = [p for p in vx if IP in p[VXLAN] and p[VXLAN][IP].dst == server and p[VXLAN][TCP].dport == 8080]
        assert to_server, label
        assert {(p[IP].src, p[IP].dst) for p in to_server} == {(node_ips["node-1"], node_ips["node-2"])}
    # one SYN crossing the hops in order: client eth0 → node-1 overlay → underlay → node-2 overlay → server eth0
    syn = [p.sniffed_on for p in pkts if TCP in p and (p[TCP].flags == "S") and p[TCP].dport == 8080
           and (VXLAN not in p)]
    path = [lb for lb in syn if lb in ("client-1/eth0", "node-1/flannel.1", "node-2/flannel.1", "server-2/eth0")]
    assert path[:1] == ["client-1/eth0"] and path[-1:] == ["server-2/eth0"], syn

    lines = tcpdump(f)
    assert any(f"> {server}.8080: Flags [S]" in line for line in lines)
    assert any(f"{node_ips['node-1']}." in line and f"> {node_ips['node-2']}.8472:" in line for line in lines)


def test_ctrl_c_ends_it_with_a_complete_file(lab: Lab, tmp_path: Path) -> None:
    from scapy.layers.inet import TCP

    f = tmp_path / "int.pcapng"
    proc = start(lab, "node-2/eth0", "server-2", "-w", str(f))
    request(lab)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = finish(proc)
    assert "server-2/eth0" in out and "node-2/eth0" in out and "interrupted" in out, out
    pkts, names = read(f)
    assert names == [b"node-2/eth0", b"server-2/eth0"]
    assert any(p.sniffed_on == "server-2/eth0" and TCP in p and p[TCP].sport == 8080 for p in pkts)
    assert any("8080" in line for line in tcpdump(f))


def test_live_lines_decode_vxlan(lab: Lab) -> None:
    server = pod_ip(lab, "server-2")
    proc = start(lab, "node-2/eth0", "--filter", f"udp port 8472 and udp[46:4] = 0x{_hex(server)}",
                 "--count", "2")
    request(lab)
    out, _ = finish(proc)
    lines = [line for line in out.splitlines() if "VXLAN" in line]
    assert len(lines) == 2, out
    for line in lines:
        assert " node-2/eth0 in " in line
        assert ":8472 vni 1 | TCP " in line and f"> {server}:8080 [" in line, line
    assert "count reached" in out


def _hex(ip: str) -> str:
    return "".join(f"{int(x):02x}" for x in ip.split("."))


def test_pods_sharing_a_name_are_told_apart(lab: Lab) -> None:
    out = lab.kmesh("capture", "server-2", "other/server-2", "client-1", "--duration", "0.2", "--json")
    assert out.returncode == 0, out.stderr
    assert list(json.loads(out.stdout)["packets"]) == ["default/server-2/eth0", "other/server-2/eth0",
                                                      "client-1/eth0"]


@pytest.mark.parametrize("target, words", [
    ("nosuchpod", "'nosuchpod' is neither a node"),
    ("node-1/eth9", "node node-1 has no interface 'eth9'"),
    ("other/client-1", "no pod 'client-1' in namespace 'other'"),
])
def test_a_bad_target_is_exit_2_and_no_file(lab: Lab, tmp_path: Path, target: str, words: str) -> None:
    f = tmp_path / "bad.pcapng"
    out = lab.kmesh("capture", "client-1", target, "-w", str(f), "--duration", "1")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "TARGET" in out.stderr and words in out.stderr, out.stderr
    assert not f.exists()


def test_an_unwritable_file_is_exit_2(lab: Lab, tmp_path: Path) -> None:
    f = tmp_path / "no" / "such" / "dir.pcapng"
    out = lab.kmesh("capture", "client-1", "-w", str(f), "--duration", "1")
    assert out.returncode == 2 and "-w" in out.stderr and "cannot write" in out.stderr, out.stderr
    assert not f.parent.exists()
