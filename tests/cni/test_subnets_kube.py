"""The kube subnet manager against kmesh's API server: podCIDR, annotations, condition, peers."""

from __future__ import annotations

import copy
import ipaddress
import json
from typing import Any

import trio
import trio.testing

from kmesh.client.api import Client
from kmesh.cni.netconf import NetConf
from kmesh.cni.subnets import KubeSubnetManager, SubnetError
from kmesh.cni.subnets.kube import (
    BACKEND_DATA,
    BACKEND_TYPE,
    KUBE_MANAGED,
    PUBLIC_IP,
    lease_of,
)
from tests.cni.peer_events import PeerEvents
from tests.support.cluster import Cluster

VXLAN = {"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:01"}


async def add_node(c: Client, name: str, pod_cidr: str | None = None, conditions: list[dict[str, Any]] | None = None) -> None:
    node = await c.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                           "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]} if pod_cidr else {}})
    if conditions:
        node["status"] = {"conditions": conditions}
        await c.update_status(node)


async def set_pod_cidr(c: Client, name: str, cidr: str) -> None:
    await c.patch("Node", name, {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})


async def test_acquire_waits_for_pod_cidr_then_publishes(cluster: Cluster) -> None:
    c = cluster.client
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok",
             "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    await add_node(c, "node-1", conditions=[ready])
    m = KubeSubnetManager(c, "node-1", "192.168.56.11", NetConf.default())
    got: list[Any] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            async def acquire() -> None:
                got.append(await m.acquire("vxlan", VXLAN))
            n.start_soon(acquire)
            await trio.testing.wait_all_tasks_blocked()
            assert not got
            await set_pod_cidr(c, "node-1", "10.244.3.0/24")
    lease = got[0]
    assert lease.subnet == ipaddress.IPv4Network("10.244.3.0/24")
    assert (lease.public_ip, lease.backend_type, lease.node, lease.vtep_mac) == ("192.168.56.11", "vxlan", "node-1", VXLAN["VtepMAC"])

    out = await cluster.kubectl("get", "node", "node-1", "-o", "json")
    node = json.loads(out.stdout)
    ann = node["metadata"]["annotations"]
    assert ann[BACKEND_TYPE] == "vxlan"
    assert json.loads(ann[BACKEND_DATA]) == VXLAN
    assert ann[PUBLIC_IP] == "192.168.56.11"
    assert ann[KUBE_MANAGED] == "true"
    conds = {cond["type"]: cond for cond in node["status"]["conditions"]}
    assert conds["Ready"]["status"] == "True"  # kept
    nu = conds["NetworkUnavailable"]
    assert (nu["status"], nu["reason"], nu["message"]) == ("False", "FlannelIsUp", "Flannel is running on this node")
    assert lease_of(node) == lease

    # a restart with new backend data rewrites the annotation; the transition time stays
    m2 = KubeSubnetManager(c, "node-1", "192.168.56.11")
    with trio.fail_after(10):
        await m2.acquire("vxlan", {"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:02"})
    node2 = await c.get("Node", "node-1")
    assert json.loads(node2["metadata"]["annotations"][BACKEND_DATA])["VtepMAC"] == "aa:bb:cc:00:00:02"
    nu2 = next(x for x in node2["status"]["conditions"] if x["type"] == "NetworkUnavailable")
    assert nu2["lastTransitionTime"] == nu["lastTransitionTime"]


async def test_pod_cidr_outside_network_is_an_error(cluster: Cluster) -> None:
    await add_node(cluster.client, "odd", "10.99.1.0/24")
    m = KubeSubnetManager(cluster.client, "odd", "192.168.56.12", NetConf.default())
    with trio.fail_after(10):
        try:
            await m.acquire("vxlan", VXLAN)
        except SubnetError as exc:
            assert "10.99.1.0/24" in str(exc) and "10.244.0.0/16" in str(exc)
        else:
            raise AssertionError("acquire accepted a podCIDR outside the Network")


async def test_peers_added_changed_removed(cluster: Cluster) -> None:
    c = cluster.client
    await add_node(c, "me", "10.244.1.0/24")
    await add_node(c, "early", "10.244.2.0/24")
    await add_node(c, "bystander", "10.244.9.0/24")  # not flannel's: no annotations
    early = KubeSubnetManager(c, "early", "192.168.56.20")
    await early.acquire("vxlan", VXLAN)
    me = KubeSubnetManager(c, "me", "192.168.56.10")
    peers = PeerEvents()
    events, on_event, next_event = peers.events, peers.on_event, peers.next

    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            await me.acquire("vxlan", VXLAN)
            await n.start(me.watch_peers, on_event)
            assert [(e.kind, e.lease.node, str(e.lease.subnet)) for e in events] == [("added", "early", "10.244.2.0/24")]
            events.clear()

            await add_node(c, "late", None)
            late = KubeSubnetManager(c, "late", "192.168.56.30")
            acquired = trio.Event()

            async def acquire_late() -> None:
                await late.acquire("host-gw", {})
                acquired.set()

            n.start_soon(acquire_late)
            await set_pod_cidr(c, "late", "10.244.5.0/24")
            ev = await next_event()
            await acquired.wait()  # its status update (NetworkUnavailable) is no peer event either
            assert (ev.kind, ev.lease.node, ev.lease.public_ip, ev.lease.backend_type) == ("added", "late", "192.168.56.30", "host-gw")
            assert ev.lease.subnet == ipaddress.IPv4Network("10.244.5.0/24")

            # the public IP moves: a change carrying old and new
            await c.patch("Node", "late", {"metadata": {"annotations": {PUBLIC_IP: "192.168.56.31"}}})
            ev = await next_event()
            assert ev.kind == "changed" and ev.old is not None
            assert (ev.old.public_ip, ev.lease.public_ip) == ("192.168.56.30", "192.168.56.31")

            # a status-only update (heartbeat) is no event
            node = copy.deepcopy(await c.get("Node", "late"))
            node.setdefault("status", {}).setdefault("conditions", []).append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                                                 "message": "", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                                                 "lastTransitionTime": "2026-01-01T00:00:00Z"})
            await c.update_status(node)
            await c.delete("Node", "early")
            ev = await next_event()  # the heartbeat produced nothing before this
            assert (ev.kind, ev.lease.node) == ("removed", "early")
            n.cancel_scope.cancel()
