"""The netpol benchmark's anchor rules (kube-router's shape, ``kmesh/bench/kuberouter.py``) load with the real
``ipset`` and ``iptables-restore`` and enforce what the policy model says, on a real node namespace: a fair
anchor must allow and deny what kmesh's rules do."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import trio
import yaml

from kmesh.bench.kuberouter import render
from kmesh.net import netns
from kmesh.policy.model import PolicyWorld
from tests.proxy.traffic_lab import CLIENT_NET, NODE, TCP_PORT, Lab, namespace_factory
from tests.support.connects import connects

pytestmark = pytest.mark.netns

OTHER_PORT = 9000
POLICIES = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-y, namespace: x}
spec:
  podSelector: {matchExpressions: [{key: pod, operator: In, values: [pod1, pod3]}]}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
    ports: [{port: %d}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-only-x, namespace: y}
spec:
  podSelector: {}
  egress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [%s/32]}}]
""" % (TCP_PORT, "PLACEHOLDER")


def _pod(ns: str, name: str, ip: str) -> dict:
    return {"metadata": {"name": name, "namespace": ns, "labels": {"pod": name}},
            "spec": {"nodeName": NODE}, "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


@pytest.fixture
async def lab(nursery: trio.Nursery) -> AsyncIterator[Lab]:
    with namespace_factory("kmt-kr", needs=("iptables", "ipset")) as make:
        lab = Lab(make)
        await lab.setup()
        await netns.run(lab.node, ["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])
        await lab.serve(nursery)
        for pod_ns in lab.pods.values():
            sock = await netns.open_socket(pod_ns)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await sock.bind(("0.0.0.0", OTHER_PORT))
            sock.listen(16)
            nursery.start_soon(trio.serve_listeners, lambda s: s.aclose(), [trio.SocketListener(sock)])
        yield lab


async def test_anchor_rules_load_and_enforce_what_the_model_says(lab: Lab) -> None:
    pod1, pod2, pod3 = (lab.ips[p] for p in ("pod1", "pod2", "pod3"))
    client = f"{CLIENT_NET}.2"
    pods = [_pod("x", p, ip) for p, ip in lab.ips.items()] + [_pod("y", "client", client)]
    namespaces = [{"metadata": {"name": ns, "labels": {"ns": ns}}} for ns in ("x", "y")]
    policies = list(yaml.safe_load_all(POLICIES.replace("PLACEHOLDER", pod3)))
    world = PolicyWorld(pods, namespaces, policies)
    out = render(world, world.pods)
    assert out.rules > 0 and any(s.startswith("KUBE-SRC-") for s in out.sets)
    await netns.run(lab.node, ["ipset", "restore"], input=out.ipsets.encode())
    await netns.run(lab.node, ["iptables-restore", "--noflush"], input=out.iptables.encode())
    saved = (await netns.run(lab.node, ["iptables-save", "-t", "filter"])).stdout.decode()
    assert "-A FORWARD -m comment --comment \"kube-router netpol\" -j KUBE-ROUTER-FORWARD" in saved
    assert "KUBE-POD-FW-" in saved and "KUBE-NWPLCY-" in saved

    cases = [  # (from namespace, to, port): every one the model answers, checked against the kernel
        (lab.client, pod1, TCP_PORT), (lab.client, pod1, OTHER_PORT), (lab.client, pod2, TCP_PORT),
        (lab.pods["pod2"], pod1, TCP_PORT), (lab.client, pod3, TCP_PORT),  # its ingress allows it, the client's egress does not
    ]
    src_ip = {lab.client: client, lab.pods["pod2"]: pod2}
    got = [await connects(ns, ip, port) for ns, ip, port in cases]
    want = [world.evaluate(src_ip[ns], ip, port).allowed for ns, ip, port in cases]
    assert want == [True, False, False, False, False]
    assert got == want
    assert await connects(lab.node, pod2, TCP_PORT)  # the node's own traffic to its pods passes

    # taken out again: nothing of it is left, and everything passes
    await netns.run(lab.node, ["iptables-restore", "--noflush"], input=out.removal().encode())
    for name in out.sets:
        await netns.run(lab.node, ["ipset", "destroy", name])
    saved = (await netns.run(lab.node, ["iptables-save", "-t", "filter"])).stdout.decode()
    assert "KUBE-" not in saved and not (await netns.run(lab.node, ["ipset", "list", "-n"])).stdout.strip()
    assert [await connects(ns, ip, port) for ns, ip, port in cases] == [True] * len(cases)
