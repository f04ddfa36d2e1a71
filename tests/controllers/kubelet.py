"""What a kubelet writes, done through the API by the tests: nodes, leases, pod IPs and readiness.

This is not a mock: these are exactly the writes a node agent makes
(Node + status, Lease renewals, pod status through the status subresource,
finishing a graceful deletion), so the controllers see what they would see
in a cluster. ``FakeKubelet`` does them for every pod bound to its nodes.
"""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import itertools
from typing import Any, Callable, Iterable

import trio

from kmesh.api import errors as E
from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer, key_of
from kmesh.controllers.base import Controller

Obj = dict[str, Any]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ready_conditions(ready: bool) -> list[Obj]:
    flag = "True" if ready else "False"
    t = now()
    return [{"type": ty, "status": flag, "lastProbeTime": None, "lastTransitionTime": t}
            for ty in ("Initialized", "Ready", "ContainersReady")] + \
        [{"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": t}]


async def add_node(c: Client, name: str, *, ready: bool = True, labels: dict[str, str] | None = None,
                   taints: list[Obj] | None = None, unschedulable: bool = False, lease: bool = True) -> Obj:
    """Register a node the way an agent does: Node, its status, and its Lease."""
    spec: Obj = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    node = await c.create({"apiVersion": "v1", "kind": "Node",
                           "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
                           "spec": spec})
    node = await set_node_ready(c, node, ready)
    if lease:
        await renew_lease(c, name)
    return node


async def post_node_status(c: Client, name: str, change: Callable[[Obj], None]) -> Obj:
    """Apply ``change`` to a fresh copy of node ``name`` and post its status, retrying on conflicts as an
    agent does (the controllers write the Node too: podCIDR, taints)."""
    for _ in range(20):
        node = copy.deepcopy(await c.get("Node", name))
        node["status"] = node.get("status") or {}
        change(node)
        try:
            return await c.update_status(node)
        except E.APIError as exc:
            if exc.code != 409:
                raise
    raise AssertionError(f"could not post the status of node {name}")


async def set_node_ready(c: Client, node: Obj, ready: bool) -> Obj:
    """Post the node's status (Ready condition with a fresh heartbeat), retrying on conflicts as an agent does."""

    def ready_condition(node: Obj) -> None:
        node["status"]["conditions"] = [{
            "type": "Ready", "status": "True" if ready else "False",
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "kubelet is posting ready status", "lastHeartbeatTime": micro_now(), "lastTransitionTime": now(),
        }]

    return await post_node_status(c, node["metadata"]["name"], ready_condition)


async def renew_lease(c: Client, node: str) -> None:
    """Create or renew ``kube-node-lease/<node>``."""
    try:
        lease = await c.get("Lease", node, "kube-node-lease")
    except E.APIError as exc:
        if exc.code != 404:
            raise
        await c.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": node, "namespace": "kube-node-lease"},
                        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": micro_now()}})
        return
    lease["spec"]["renewTime"] = micro_now()
    await c.update(lease)


def pod(name: str, labels: dict[str, str], *, node: str | None = None, ns: str = "default",
        ports: list[Obj] | None = None, **spec: Any) -> Obj:
    """A pod manifest (one agnhost container)."""
    container: Obj = {"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.39", "args": ["serve-hostname"]}
    if ports is not None:
        container["ports"] = ports
    body: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
                 "spec": {"containers": [container], **spec}}
    if node:
        body["spec"]["nodeName"] = node
    return body


class FakeKubelet(Controller[tuple[str, str]]):
    """Runs the pods bound to ``nodes``: gives them an IP, Running, Ready (if ``auto_ready``); finishes deletions."""

    name = "test-kubelet"

    def __init__(self, client: Client, nodes: Iterable[str] | None = None, *, auto_ready: bool = True,
                 pod_cidr: str = "10.244.0.0/16") -> None:
        super().__init__(workers=4)
        self.client = client
        self.nodes = set(nodes) if nodes is not None else None
        self.auto_ready = auto_ready
        self.not_ready: set[tuple[str, str]] = set()  # pods kept not ready
        hosts = ipaddress.ip_network(pod_cidr).hosts()
        next(hosts)
        self._ips = (str(ip) for ip in hosts)
        self.pods = Informer(client, "Pod", handlers=[self._on_pod])

    def _mine(self, p: Obj) -> bool:
        node = (p.get("spec") or {}).get("nodeName")
        return bool(node) and (self.nodes is None or node in self.nodes)

    def _on_pod(self, ch: Change) -> None:
        if ch.new is not None and self._mine(ch.new):
            self.queue.add(key_of(ch.new))

    async def run_all(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Informer + workers."""
        async with trio.open_nursery() as n:
            await n.start(self.pods.run)
            n.start_soon(self.run)
            task_status.started()

    async def sync(self, key: tuple[str, str]) -> None:
        p = self.pods.get(key[1], key[0])
        if p is None or not self._mine(p):
            return
        if p["metadata"].get("deletionTimestamp"):
            try:
                await self.client.delete("Pod", key[1], key[0], grace_period=0)
            except E.APIError as exc:
                if exc.code != 404:
                    raise
            return
        status = p.get("status") or {}
        if status.get("podIP"):
            return
        ready = self.auto_ready and key not in self.not_ready
        new = copy.deepcopy(p)
        ip = next(self._ips)
        new["status"] = {**status, "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.168.56.10",
                         "startTime": now(), "conditions": ready_conditions(ready)}
        await self.client.update_status(new)

    async def set_ready(self, name: str, ready: bool, ns: str = "default") -> Obj:
        """Flip a running pod's readiness, as a readiness probe would."""
        for _ in range(10):
            p = await self.client.get("Pod", name, ns)
            new = copy.deepcopy(p)
            flag = "True" if ready else "False"
            for c in new["status"]["conditions"]:
                if c["type"] in ("Ready", "ContainersReady") and c["status"] != flag:
                    c["status"] = flag
                    c["lastTransitionTime"] = now()
            try:
                return await self.client.update_status(new)
            except E.APIError as exc:
                if exc.code != 409:
                    raise
        raise AssertionError("could not update pod status")


async def start_kubelet(nursery: trio.Nursery, client: Client, nodes: Iterable[str] | None = None,
                        **kw: Any) -> FakeKubelet:
    """A running FakeKubelet."""
    k = FakeKubelet(client, nodes, **kw)
    await nursery.start(k.run_all)
    return k


_counter = itertools.count()


def unique(prefix: str) -> str:
    """A name unique within the test session."""
    return f"{prefix}{next(_counter)}"
