"""The policy agent on a real node namespace: a bridge with three pods of namespace ``x`` and a routed client
pod of namespace ``y``, a real API server holding the objects, and the real ``nft``.

Checked: nothing is policed before a policy exists; a default-deny drops bridged (same subnet) and routed
traffic alike; an allow rule by namespace selector and port lets exactly that in; replies of allowed
connections pass and a connection opened before a deny keeps working; the node reaches its pods (probes);
denied packets are counted on the pod's drop rule; the table goes when the agent stops.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from kmesh.net import netns
from kmesh.policy.agent import PolicyAgent
from tests.proxy.traffic_lab import CLIENT_NET, NODE, TCP_PORT, Lab, namespace_factory
from tests.support.cluster import Cluster, start_cluster
from tests.support.connects import connects

pytestmark = pytest.mark.netns

ECHO_PORT = 9000
DENY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""
ALLOW_Y = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: pod1}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
    ports: [{port: %d}]
""" % TCP_PORT


async def _until(ns: str, ip: str, port: int, want: bool) -> None:
    """Probe until the answer is ``want`` (the agent applies a change after its informers see it)."""
    with trio.fail_after(10):
        while await connects(ns, ip, port) != want:
            pass


async def _echo(ns: str, nursery: trio.Nursery) -> None:
    sock = await netns.open_socket(ns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind(("0.0.0.0", ECHO_PORT))
    sock.listen(16)

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(1024):
                await stream.send_all(data)

    nursery.start_soon(trio.serve_listeners, handle, [trio.SocketListener(sock)])


async def _pod(cluster: Cluster, ns: str, name: str, ip: str) -> None:
    pod = await cluster.client.create({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"pod": name}},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9"}]}})
    pod["status"] = {**pod.get("status", {}), "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    await cluster.client.update_status(pod)


@pytest.fixture
async def rig(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[tuple[Lab, Cluster, PolicyAgent]]:
    with namespace_factory("kmt-np", needs=("nft",)) as make:
        lab = Lab(make)
        await lab.setup()
        await netns.run(lab.node, ["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])
        await lab.serve(nursery)
        for pod_ns in lab.pods.values():
            await _echo(pod_ns, nursery)
        cluster = await start_cluster(nursery, tmp_path)
        for ns in ("x", "y"):
            await cluster.client.create({"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": ns, "labels": {"ns": ns}}})
        for pod, ip in lab.ips.items():
            await _pod(cluster, "x", pod, ip)
        await _pod(cluster, "y", "client", f"{CLIENT_NET}.2")
        async with trio.open_nursery() as n:
            agent: PolicyAgent = await n.start(PolicyAgent(cluster.client, NODE, netns=lab.node).run)
            yield lab, cluster, agent
            n.cancel_scope.cancel()
        listed = await netns.run(lab.node, ["nft", "list", "tables"])
        assert b"kmesh-netpol" not in listed.stdout  # the agent removed its table on the way out


async def test_policies_are_enforced_on_the_node(rig: tuple[Lab, Cluster, PolicyAgent]) -> None:
    lab, cluster, agent = rig
    pod1, pod2, pod3 = (lab.ips[p] for p in ("pod1", "pod2", "pod3"))
    assert await connects(lab.client, pod1, TCP_PORT) and await connects(lab.pods["pod2"], pod1, TCP_PORT)

    # A connection opened before the deny: it keeps working after (established packets pass).
    held = trio.SocketStream(await netns.open_socket(lab.client))
    await held.socket.connect((pod3, ECHO_PORT))

    await cluster.kubectl("apply", "-f", "-", stdin=DENY)
    await _until(lab.client, pod1, TCP_PORT, False)  # routed: dropped
    assert not await connects(lab.pods["pod2"], pod1, TCP_PORT)  # bridged, same subnet: dropped too
    assert await connects(lab.node, pod1, TCP_PORT)  # the node itself (the kubelet's probes) still gets in
    with trio.fail_after(5):
        await held.send_all(b"still there")
        assert await held.receive_some(100) == b"still there"
    await held.aclose()

    await cluster.kubectl("apply", "-f", "-", stdin=ALLOW_Y)
    await _until(lab.client, pod1, TCP_PORT, True)  # namespace y, the allowed port
    assert not await connects(lab.client, pod1, ECHO_PORT)  # another port
    assert not await connects(lab.client, pod2, TCP_PORT)  # another pod
    assert not await connects(lab.pods["pod2"], pod1, TCP_PORT)  # namespace x is not y

    listing = await agent.listing()
    drops = [line for line in listing.splitlines() if "x/pod2 ingress: no policy allows it" in line]
    assert drops and "packets 0 " not in drops[0], listing
    assert "x/allow-y ingress rule 0" in listing

    await cluster.kubectl("delete", "networkpolicy", "-n", "x", "deny", "allow-y")
    await _until(lab.client, pod2, TCP_PORT, True)
    assert await connects(lab.pods["pod2"], pod1, TCP_PORT)
