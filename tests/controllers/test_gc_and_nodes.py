"""Garbage collection, the scheduler, node IPAM and node lifecycle, each against the real API server."""

from __future__ import annotations

from collections import Counter
from typing import Any

import trio

from kmesh.client.informer import Informer
from kmesh.controllers import podutil
from tests.controllers.conftest import Env, StartEnv
from tests.controllers.kubelet import add_node, pod, renew_lease, set_node_ready
from tests.controllers.test_endpoints import by_pod, service
from tests.controllers.test_workloads import deployment, live, rollout_done

Obj = dict[str, Any]


async def wait(inf: Informer, pred: Any, timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        await inf.wait_for(pred)


# ---------------------------------------------------------------------- garbage collection


async def test_deleting_a_deployment_removes_its_replicasets_and_pods(env: Env) -> None:
    c = env.client
    await add_node(c, "n1")
    await c.create(deployment("gone", 3))
    deps, sets, pods = env.informer("Deployment"), env.informer("ReplicaSet"), env.informer("Pod")
    await wait(deps, rollout_done(deps, "gone", 3))
    out = await env.cluster.kubectl("delete", "deployment", "gone")
    assert 'deployment.apps "gone" deleted' in out.stdout
    await wait(sets, lambda i: not [rs for rs in i.list("default") if podutil.labels(rs).get("app") == "gone"])
    await wait(pods, lambda i: not [p for p in i.list("default") if podutil.labels(p).get("app") == "gone"])


async def test_dangling_owner_references_are_dropped_then_the_orphan_deleted(env: Env) -> None:
    c = env.client
    a = await c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner-a"}})
    b = await c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner-b"}})
    refs = [{"apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]}
            for o in (a, b)]
    await c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dep", "ownerReferences": refs}})
    # An owner reference to a UID that never existed (a replaced owner) counts as gone too.
    ghost = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner-a", "uid": "00000000-0000-0000-0000-000000000000"}
    await c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ghosted", "ownerReferences": [ghost]}})
    # Owners of a kind kmesh does not serve are left alone.
    odd = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "1"}
    await c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "odd", "ownerReferences": [odd]}})
    cms = env.informer("ConfigMap")
    await wait(cms, lambda i: i.get("ghosted", "default") is None)
    await c.delete("ConfigMap", "owner-a", "default")
    await wait(cms, lambda i: [r["name"] for r in (i.get("dep", "default") or {"metadata": {}})["metadata"]
                               .get("ownerReferences") or []] == ["owner-b"])
    await c.delete("ConfigMap", "owner-b", "default")
    await wait(cms, lambda i: i.get("dep", "default") is None)
    assert cms.get("odd", "default") is not None


# ---------------------------------------------------------------------- scheduler


async def test_scheduler_spreads_honours_selectors_and_retries(env: Env) -> None:
    c = env.client
    for i in range(3):
        await add_node(c, f"s{i}", labels={"disk": "ssd" if i == 0 else "hdd"})
    await add_node(c, "tainted", taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])
    await add_node(c, "cordoned", unschedulable=True)
    await add_node(c, "down", ready=False)
    pods = env.informer("Pod")
    for i in range(9):
        await c.create(pod(f"spread-{i}", {"app": "spread"}))
    await wait(pods, lambda i: all(p["spec"].get("nodeName") for p in live(i, "spread")) and len(live(i, "spread")) == 9)
    counts = Counter(p["spec"]["nodeName"] for p in live(pods, "spread"))
    assert counts == {"s0": 3, "s1": 3, "s2": 3}
    sched = next(x for x in live(pods, "spread")[0]["status"]["conditions"] if x["type"] == "PodScheduled")
    assert sched["status"] == "True"

    await c.create(pod("fast", {"app": "fast"}, nodeSelector={"disk": "ssd"}))
    await c.create(pod("tolerant", {"app": "tol"}, nodeSelector={"kubernetes.io/hostname": "tainted"},
                       tolerations=[{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]))
    await c.create(pod("preset", {"app": "preset"}, node="s2"))
    await wait(pods, lambda i: (i.get("fast", "default") or {}).get("spec", {}).get("nodeName") == "s0")
    await wait(pods, lambda i: (i.get("tolerant", "default") or {}).get("spec", {}).get("nodeName") == "tainted")
    assert pods.get("preset", "default")["spec"]["nodeName"] == "s2"

    # Fits nowhere: PodScheduled=False, reason Unschedulable, an event; bound once a node fits.
    await c.create(pod("gpu", {"app": "gpu"}, nodeSelector={"gpu": "yes"}))

    def unschedulable(i: Informer) -> bool:
        cond = podutil.condition(i.get("gpu", "default") or {}, "PodScheduled")
        return cond is not None and cond.get("reason") == "Unschedulable"

    await wait(pods, unschedulable)
    msg = podutil.condition(pods.get("gpu", "default"), "PodScheduled")["message"]
    assert msg.startswith("0/6 nodes are available:") and "3 node(s) didn't match Pod's node affinity/selector" in msg
    assert "1 node(s) had untolerated taint {dedicated: db}" in msg and "1 node(s) were not ready" in msg
    assert "1 node(s) were unschedulable" in msg
    async with trio.open_nursery() as n:
        events = Informer(c, "Event", namespace="default")
        await n.start(events.run)
        await wait(events, lambda i: any(e["reason"] == "FailedScheduling" and e["involvedObject"]["name"] == "gpu"
                                         for e in i.list()))
        n.cancel_scope.cancel()
    await add_node(c, "gpu-node", labels={"gpu": "yes"})
    await wait(pods, lambda i: (i.get("gpu", "default") or {}).get("spec", {}).get("nodeName") == "gpu-node")


# ---------------------------------------------------------------------- node IPAM


async def test_node_ipam_hands_out_subnets_in_order_and_repairs(start_env: StartEnv) -> None:
    env = await start_env(cluster_cidr="10.250.0.0/16", node_cidr_mask=24)
    c = env.client
    nodes = env.informer("Node")
    # A node that already has a subnet keeps it and that subnet is never handed out.
    await c.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "pre"},
                    "spec": {"podCIDR": "10.250.1.0/24"}})
    for name in ("a", "b", "c"):
        await c.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})

    def cidrs(i: Informer) -> dict[str, str]:
        return {n["metadata"]["name"]: (n.get("spec") or {}).get("podCIDR") for n in i.list()}

    await wait(nodes, lambda i: all(cidrs(i).get(n) for n in ("a", "b", "c")))
    got = cidrs(nodes)
    assert got == {"pre": "10.250.1.0/24", "a": "10.250.0.0/24", "b": "10.250.2.0/24", "c": "10.250.3.0/24"}
    assert all(n["spec"]["podCIDRs"] == [n["spec"]["podCIDR"]] for n in nodes.list())

    await c.delete("Node", "a")
    await c.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "d"}})
    await wait(nodes, lambda i: bool(cidrs(i).get("d")))
    assert cidrs(nodes)["d"] == "10.250.4.0/24"  # the freed 10.250.0.0/24 is not reused at once


async def test_node_ipam_repair_after_controller_restart(start_env: StartEnv) -> None:
    env = await start_env(cluster_cidr="10.251.0.0/22", node_cidr_mask=24, controllers=("nodeipam",))
    c = env.client
    for name in ("a", "b"):
        await c.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    nodes = env.informer("Node")
    await wait(nodes, lambda i: all((i.get(n) or {}).get("spec", {}).get("podCIDR") for n in ("a", "b")))
    env.scope.cancel()  # the controllers stop ...
    from kmesh.controllers.manager import ControllerConfig, run_controllers

    async with trio.open_nursery() as n:  # ... and a new instance starts over the same cluster
        mgr = await n.start(run_controllers, c, ControllerConfig(cluster_cidr="10.251.0.0/22", controllers=("nodeipam",)))
        for name in ("x", "y"):
            await c.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
        inf = mgr.factory.informer("Node")
        await wait(inf, lambda i: all((i.get(x) or {}).get("spec", {}).get("podCIDR") for x in ("x", "y")))
        assert {inf.get(x)["spec"]["podCIDR"] for x in ("a", "b", "x", "y")} == \
            {"10.251.0.0/24", "10.251.1.0/24", "10.251.2.0/24", "10.251.3.0/24"}
        events = Informer(c, "Event", namespace="default")
        await n.start(events.run)
        await c.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "z"}})
        # The range is full: z gets nothing (and nothing is double-allocated), and an event says so.
        await wait(events, lambda i: any(e["reason"] == "CIDRNotAvailable" and e["involvedObject"]["name"] == "z"
                                         for e in i.list()))
        assert not ((await c.get("Node", "z")).get("spec") or {}).get("podCIDR")
        await c.delete("Node", "a")
        await wait(inf, lambda i: bool((i.get("z") or {}).get("spec", {}).get("podCIDR")))
        assert inf.get("z")["spec"]["podCIDR"] == "10.251.0.0/24"
        n.cancel_scope.cancel()


# ---------------------------------------------------------------------- node lifecycle


async def test_silent_node_goes_not_ready_and_its_endpoints_follow(start_env: StartEnv) -> None:
    env = await start_env(node_grace_period=1.5)
    c = env.client
    await add_node(c, "alive")
    dead = await add_node(c, "dying")
    await c.create(service("svc", {"app": "x"}))
    await c.create(pod("on-dying", {"app": "x"}, node="dying"))
    await c.create(pod("on-alive", {"app": "x"}, node="alive"))
    slices, nodes = env.informer("EndpointSlice"), env.informer("Node")
    await wait(slices, lambda i: len(by_pod(i, "svc")) == 2 and all(e["conditions"]["ready"] for e in by_pod(i, "svc").values()))
    assert dead

    async def keep_alive() -> None:
        while True:
            await renew_lease(c, "alive")
            await trio.sleep(0.3)

    async with trio.open_nursery() as n:
        n.start_soon(keep_alive)
        env.kubelet.nodes = {"alive"}  # the dying node's kubelet is gone
        await wait(nodes, lambda i: (podutil.condition(i.get("dying"), "Ready") or {}).get("status") == "Unknown",
                   timeout=15)
        ready = podutil.condition(nodes.get("dying"), "Ready")
        assert ready["reason"] == "NodeStatusUnknown" and ready["message"] == "Kubelet stopped posting node status."
        await wait(nodes, lambda i: {(t["key"], t["effect"]) for t in i.get("dying")["spec"].get("taints") or []} ==
                   {("node.kubernetes.io/unreachable", "NoSchedule"), ("node.kubernetes.io/unreachable", "NoExecute")})
        await wait(slices, lambda i: by_pod(i, "svc")["on-dying"]["conditions"]["ready"] is False)
        assert by_pod(slices, "svc")["on-alive"]["conditions"]["ready"] is True
        assert (podutil.condition(nodes.get("alive"), "Ready") or {}).get("status") == "True"
        assert not nodes.get("alive")["spec"].get("taints")

        # New pods are not scheduled onto it.
        await c.create(pod("new", {"app": "new"}))
        await wait(env.informer("Pod"), lambda i: (i.get("new", "default") or {}).get("spec", {}).get("nodeName") == "alive")

        # The agent comes back: lease renewed, taints lifted; it reports its node and pods again.
        await renew_lease(c, "dying")
        await wait(nodes, lambda i: not i.get("dying")["spec"].get("taints"), timeout=10)
        await set_node_ready(c, nodes.get("dying"), True)
        env.kubelet.nodes = {"alive", "dying"}
        await env.kubelet.set_ready("on-dying", True)
        await wait(slices, lambda i: by_pod(i, "svc")["on-dying"]["conditions"]["ready"] is True)
        n.cancel_scope.cancel()
