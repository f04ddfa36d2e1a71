"""The L2 speaker: the election as every node computes it, ARP frames, and a real speaker on a veth."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from kmesh.gateway.announce import (
    EXCLUDE_LABEL, Speaker, arp_frame, arp_reply, assignments, elect, eligible_nodes, gratuitous, parse_arp_request,
)
from kmesh.net.netns_check import netns_usable
from tests.conftest import require


def node(name: str, ready: bool = True, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": name, "labels": labels or {}},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def svc(name: str, ip: str = "192.168.56.240", local: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "LoadBalancer", "ports": [{"port": 80}]}
    if local:
        spec["externalTrafficPolicy"] = "Local"
    return {"kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec,
            "status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}}


def eps(name: str, *on: tuple[str, bool | None]) -> dict[str, Any]:
    return {"kind": "EndpointSlice",
            "metadata": {"name": f"{name}-x", "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
            "endpoints": [{"addresses": [f"10.244.{i}.5"], "nodeName": n,
                           "conditions": {} if r is None else {"ready": r}} for i, (n, r) in enumerate(on)]}


# ---------------------------------------------------------------------- election


def test_elect_orders_by_hash_of_node_and_address() -> None:
    nodes = [f"node-{i}" for i in range(1, 6)]
    for ip in ("192.168.56.240", "192.168.56.241", "10.0.0.1"):
        want = min(nodes, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).hexdigest())
        assert elect(ip, nodes) == want == elect(ip, reversed(nodes))
    assert len({elect(f"192.168.56.{i}", nodes) for i in range(200, 255)}) > 1  # addresses spread over nodes
    assert elect("192.168.56.240", []) is None


def test_eligible_nodes() -> None:
    nodes = [node("a"), node("b"), node("c", ready=False), node("d", labels={EXCLUDE_LABEL: ""})]
    assert eligible_nodes(svc("s"), nodes, [eps("s", ("a", True))]) == ["a", "b"]
    assert eligible_nodes(svc("s"), nodes, [eps("s", ("a", False))]) == []  # no ready endpoint: no one
    assert eligible_nodes(svc("s"), nodes, []) == []
    assert eligible_nodes(svc("s", local=True), nodes, [eps("s", ("b", None), ("c", True), ("a", False))]) == ["b"]


def test_assignments_one_node_per_address() -> None:
    nodes = [node("node-1"), node("node-2")]
    services = [svc("web"), svc("local", "192.168.56.241", local=True), svc("idle", "192.168.56.242"),
                {"kind": "Service", "metadata": {"name": "np", "namespace": "default"}, "spec": {"type": "NodePort"}}]
    slices = [eps("web", ("node-1", True)), eps("local", ("node-2", True))]
    got = assignments(services, nodes, slices)
    assert got == {"192.168.56.240": (elect("192.168.56.240", ["node-1", "node-2"]), "default/web"),
                   "192.168.56.241": ("node-2", "default/local")}


# ---------------------------------------------------------------------- frames

MAC_A = bytes.fromhex("02aabbccdd01")
MAC_B = bytes.fromhex("02aabbccdd02")


def test_request_reply_and_gratuitous() -> None:
    req_frame = arp_frame(1, MAC_A, "192.168.56.1", b"\0" * 6, "192.168.56.240", b"\xff" * 6)
    req = parse_arp_request(req_frame)
    assert req is not None and (req.sender_mac, req.sender_ip, req.target_ip) == (MAC_A, "192.168.56.1",
                                                                                   "192.168.56.240")
    reply = arp_reply(req, MAC_B)
    assert reply[:6] == MAC_A and reply[6:12] == MAC_B and reply[20:22] == b"\x00\x02"
    assert reply[22:28] == MAC_B and socket.inet_ntoa(reply[28:32]) == "192.168.56.240"
    assert socket.inet_ntoa(reply[38:42]) == "192.168.56.1"
    assert parse_arp_request(reply) is None  # a reply is not a request
    assert parse_arp_request(req_frame[:30]) is None
    for g in gratuitous("192.168.56.240", MAC_B):
        assert g[:6] == b"\xff" * 6 and g[28:32] == g[38:42] == socket.inet_aton("192.168.56.240")
    from scapy.layers.l2 import ARP, Ether  # the frames are what scapy (and so the kernel) reads as ARP

    parsed = Ether(reply)
    assert parsed[ARP].op == 2 and parsed[ARP].hwsrc == "02:aa:bb:cc:dd:02" and parsed[ARP].psrc == "192.168.56.240"


# ---------------------------------------------------------------------- a real speaker


@pytest.mark.netns
async def test_speaker_answers_while_it_wins(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A speaker in one namespace answers ARP for the address of a Service it wins (sent from the peer
    namespace, as scapy's arping would), and stops when its node is no longer Ready."""
    require(netns_usable(), "root and network namespaces")
    from tests.e2e.lbprobe import arp_answers, mac_of
    from tests.support.cluster import start_cluster
    from tests.support.vethpair import veth_pair

    cluster = await start_cluster(nursery, tmp_path)
    c = cluster.client
    with veth_pair("kmt-spk", "192.168.56.11/24", "192.168.56.1/24", a_dev="eth0", b_dev="eth0") as (a, b):
        for n in ("node-a", "node-b"):
            await c.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}})
            cur = await c.get("Node", n)
            cur["status"] = node(n)["status"]
            await c.update_status(cur)
        s = await c.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                                     "ports": [{"port": 80}]}})
        s["status"] = {"loadBalancer": {"ingress": [{"ip": "192.168.56.240", "ipMode": "VIP"}]}}
        await c.update_status(s)
        await c.create({"apiVersion": "discovery.k8s.io/v1", "addressType": "IPv4", **eps("web", ("node-a", True))})

        speaker = Speaker(c, "node-a", "eth0", netns=a)
        async with trio.open_nursery() as n:
            await n.start(speaker.run)
            await speaker.wait_announced(lambda ips: "192.168.56.240" in ips)
            got = await trio.to_thread.run_sync(arp_answers, b, "192.168.56.240", "eth0")
            assert got == {mac_of(a, "eth0")}
            assert speaker.answered >= 1
            assert await trio.to_thread.run_sync(arp_answers, b, "192.168.56.241", "eth0") == set()

            cur = await c.get("Node", "node-a")
            cur["status"] = node("node-a", ready=False)["status"]
            await c.update_status(cur)  # node-a is not Ready: the endpoint's node cannot announce, no one does
            await speaker.wait_announced(lambda ips: not ips)
            assert await trio.to_thread.run_sync(arp_answers, b, "192.168.56.240", "eth0") == set()
            n.cancel_scope.cancel()
    await c.aclose()
