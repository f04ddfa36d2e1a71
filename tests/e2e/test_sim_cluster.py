"""Issue 3's acceptance walk on a 3-node sim cluster, driven with the real kubectl, on SQLite and on etcd."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Callable

import pytest
import trio

from kmesh.client.informer import Informer
from tests.conftest import require_binary
from tests.support.simcluster import SimCluster, start_sim_cluster

GRACE = 4.0  # node grace period for the test (upstream default 40 s, settable)

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: registry.k8s.io/e2e-test-images/agnhost:2.39
        args: [serve-hostname]
        ports: [{name: http, containerPort: 9376}]
        readinessProbe: {tcpSocket: {port: 9376}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""

NOT_READY_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: never-ready, labels: {app: web}}
spec:
  containers:
  - name: web
    image: registry.k8s.io/e2e-test-images/agnhost:2.39
    args: [serve-hostname]
    ports: [{name: http, containerPort: 9376}]
    readinessProbe: {tcpSocket: {port: 9999}, periodSeconds: 1}
"""


def endpoints(slices: Informer) -> list[dict[str, Any]]:
    """Every endpoint of Service default/web across its slices."""
    out: list[dict[str, Any]] = []
    for s in slices.list("default"):
        if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == "web":
            out.extend(s.get("endpoints") or [])
    return out


def ready(eps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in eps if (e.get("conditions") or {}).get("ready")]


async def until(inf: Informer, pred: Callable[[Informer], bool], timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        await inf.wait_for(pred)


async def scenario(sim: SimCluster, nursery: trio.Nursery) -> None:
    slices = Informer(sim.client, "EndpointSlice", namespace="default")
    nodes = Informer(sim.client, "Node")
    pods = Informer(sim.client, "Pod", namespace="default")
    for inf in (slices, nodes, pods):
        await nursery.start(inf.run)

    await sim.kubectl("apply", "-f", "-", stdin=MANIFEST)
    await until(slices, lambda i: len(ready(endpoints(i))) == 3)
    assert len({e["nodeName"] for e in ready(endpoints(slices))}) == 3  # spread over the 3 nodes
    out = await sim.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "json")
    listed = [e for s in json.loads(out.stdout)["items"] for e in s.get("endpoints") or []]
    assert len(listed) == 3 and all(e["conditions"]["ready"] for e in listed)

    await sim.kubectl("scale", "deployment/web", "--replicas=6")
    await until(slices, lambda i: len(ready(endpoints(i))) == 6)
    await sim.kubectl("scale", "deployment/web", "--replicas=1")
    await until(slices, lambda i: len(endpoints(i)) == 1 and len(ready(endpoints(i))) == 1)

    victim = endpoints(slices)[0]["targetRef"]["name"]
    await sim.kubectl("delete", "pod", victim)
    await until(slices, lambda i: len(ready(endpoints(i))) == 1 and ready(endpoints(i))[0]["targetRef"]["name"] != victim)

    await sim.kubectl("apply", "-f", "-", stdin=NOT_READY_POD)
    await until(
        slices,
        lambda i: any(e["targetRef"]["name"] == "never-ready" and e["conditions"].get("ready") is False for e in endpoints(i)),
    )
    await sim.kubectl("delete", "pod", "never-ready", "--wait=false")

    await sim.kubectl("scale", "deployment/web", "--replicas=3")
    await sim.kubectl("patch", "deployment/web", "--type=json",
                      "-p", '[{"op":"replace","path":"/spec/template/spec/containers/0/args","value":["netexec","--http-port=9376"]}]')
    out = await sim.kubectl("rollout", "status", "deployment/web", "--timeout=90s")
    assert "successfully rolled out" in out.stdout
    await until(slices, lambda i: len(ready(endpoints(i))) == 3)

    # One agent stops: its node goes NotReady and its endpoints not ready within grace + 5 s.
    victim_node = ready(endpoints(slices))[0]["nodeName"]
    handle = next(a for a in sim.agents if a.name == victim_node)
    await handle.stop()

    def node_not_ready(i: Informer) -> bool:
        n = i.get(victim_node) or {}
        conds = {c["type"]: c["status"] for c in (n.get("status") or {}).get("conditions") or []}
        return conds.get("Ready") != "True"

    with trio.fail_after(GRACE + 5 + 10):  # the lease may have been renewed just before the stop
        await nodes.wait_for(node_not_ready)
        await slices.wait_for(
            lambda i: all(not e["conditions"].get("ready") for e in endpoints(i) if e.get("nodeName") == victim_node)
        )
    # And it recovers when the agent returns.
    await sim.start_agent(handle)
    await until(nodes, lambda i: not node_not_ready(i))


async def test_sim_cluster_on_sqlite(nursery: trio.Nursery, tmp_path: Path) -> None:
    require_binary("kubectl")
    sim = await start_sim_cluster(nursery, tmp_path, store_url=f"sqlite://{tmp_path / 'store.db'}", node_grace_period=GRACE)
    await scenario(sim, nursery)


@pytest.mark.etcd
async def test_sim_cluster_on_etcd(nursery: trio.Nursery, tmp_path: Path) -> None:
    require_binary("kubectl")
    require_binary("etcd")
    from kmesh.store.etcd_server import EtcdServer

    async with AsyncExitStack() as stack:
        etcd = await stack.enter_async_context(EtcdServer(tmp_path / "etcd", die_with_parent=True))
        async with trio.open_nursery() as inner:
            sim = await start_sim_cluster(inner, tmp_path, store_url=etcd.url, node_grace_period=GRACE)
            await scenario(sim, inner)
            inner.cancel_scope.cancel()
