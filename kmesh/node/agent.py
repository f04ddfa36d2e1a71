"""The node agent: registers its Node, renews its Lease, keeps Ready=True, and runs the kubelet.

``run_agent`` is what ``kmesh agent`` (and the lab supervisor, once per node)
runs. When the API server is unreachable the agent keeps its pods running,
serves from its informer caches and retries; when it comes back the agent
renews its lease, re-asserts Ready=True and removes the unreachable/not-ready
taints a node-lifecycle controller may have set meanwhile.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import trio

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.client.api import APIUnavailable, Client
from kmesh.client.informer import Change, Informer
from kmesh.node.kubelet import Kubelet
from kmesh.node.nodeinfo import (
    UNREACHABLE_TAINTS,
    has_unreachable_taints,
    new_node,
    node_labels,
    node_status,
    status_needs_post,
)
from kmesh.node.runtime import PodRuntime
from kmesh.node.waits import sleeper, wait_any

log = logging.getLogger("kmesh.node.agent")
LEASE_NAMESPACE = "kube-node-lease"


@dataclass
class AgentConfig:
    """What one node agent needs.

    ``data_dir`` is this node's own directory (IPAM state, container logs).
    ``lease_duration``/``heartbeat``: the Lease's leaseDurationSeconds and how
    often it is renewed (upstream: 40 s and 10 s). ``status_report``: how
    often the full Node status is re-posted when nothing changed (upstream:
    5 min). ``backoff_initial``/``backoff_max``: the crash-loop backoff of
    containers (upstream: 10 s doubling to 300 s).
    """

    node_name: str
    node_ip: str
    runtime: PodRuntime
    data_dir: Path
    lease_duration: int = 40
    heartbeat: float = 10.0
    status_report: float = 300.0
    labels: dict[str, str] = field(default_factory=dict)
    role: str = ""
    taints: list[Obj] = field(default_factory=list)
    max_pods: int = 110
    cpu: int | None = None
    memory: str | None = None
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    retry_max: float = 7.0
    metrics_port: int | None = None  # serve /metrics on node_ip:port (0: any free port); None: off
    metrics_any_port_if_taken: bool = False  # metrics_port in use: take a free one instead of failing
    # Set once the pod network is up (CNI config written); pods wait for it before their sandbox,
    # as the kubelet waits while the runtime reports NetworkReady=false. None: ready at once.
    network_ready: trio.Event | None = None
    # Answer ARP for the LoadBalancer addresses this node wins on this interface (kmesh.gateway.announce).
    lb_speaker_iface: str | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)


def micro_time(when: dt.datetime | None = None) -> str:
    """A Kubernetes MicroTime: ``2026-11-22T10:00:00.123456Z``."""
    when = when or dt.datetime.now(dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Agent:
    """A running agent: its caches, kubelet and counters (handed out by ``run_agent``)."""

    def __init__(self, client: Client, cfg: AgentConfig, nodes: Informer, pods: Informer) -> None:
        self.client = client
        self.cfg = cfg
        self.nodes = nodes
        self.pods = pods
        self.kubelet = Kubelet(client, cfg, pods)
        self.node_uid = ""
        self.lease: Obj | None = None
        self.lease_renewals = 0
        self.status_posts = 0
        self._post = trio.Event()
        self._renewed = trio.Event()
        self.metrics_port: int | None = None

    async def wait_lease_renewals(self, count: int) -> None:
        """Return once the lease has been renewed ``count`` times in all."""
        while self.lease_renewals < count:
            await self._renewed.wait()

    @property
    def node(self) -> Obj | None:
        """The cached Node object."""
        return self.nodes.get(self.cfg.node_name)

    # ----------------------------------------------------------- the Node

    def on_node(self, change: Change) -> None:
        """Node informer handler: learn the podCIDR, notice Ready≠True or unreachable taints."""
        node = change.new
        if node is None:
            self._post.set()  # deleted: register again
            return
        self.node_uid = node["metadata"].get("uid", self.node_uid)
        spec = node.get("spec") or {}
        cidrs = [c for c in (spec.get("podCIDRs") or [spec.get("podCIDR")]) if c and ":" not in c]
        if cidrs:
            self.kubelet.set_pod_cidr(cidrs[0])
        if status_needs_post(node) or has_unreachable_taints(node):
            self._post.set()

    async def register(self) -> Obj:
        """Create the Node (or adopt an existing one, adding our labels); retried until it works."""
        delay = 0.2
        while True:
            try:
                return await self._register_once()
            except (APIUnavailable, E.APIError) as exc:
                log.warning("%s: registering the node failed: %s", self.cfg.node_name, exc)
                await trio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.cfg.retry_max)

    async def _register_once(self) -> Obj:
        cfg = self.cfg
        try:
            node = await self.client.create(new_node(cfg))
            log.info("registered node %s", cfg.node_name)
        except E.APIError as exc:
            if exc.code != 409:
                raise
            node = await self.client.get("Node", cfg.node_name)
            labels = node["metadata"].get("labels") or {}
            want = node_labels(cfg)
            if any(labels.get(k) != v for k, v in want.items()):
                node = await self.client.patch("Node", cfg.node_name, {"metadata": {"labels": want}})
            node = await self._post_status(node)
        self.node_uid = node["metadata"]["uid"]
        return node

    async def _post_status(self, node: Obj) -> Obj:
        body = copy.deepcopy(node)
        status = dict(body.get("status") or {})
        status.update(node_status(self.cfg, status))
        body["status"] = status
        out = await self.client.update_status(body)
        self.status_posts += 1
        return out

    async def _sync_node(self) -> None:
        """Post the status (Ready=True, fresh heartbeat) and drop unreachable taints."""
        for attempt in range(3):
            try:
                node = await self.client.get("Node", self.cfg.node_name)
            except E.APIError as exc:
                if exc.code != 404:
                    raise
                await self._register_once()
                return
            try:
                node = await self._post_status(node)
                if has_unreachable_taints(node):
                    node["spec"]["taints"] = [t for t in node["spec"]["taints"] if t.get("key") not in UNREACHABLE_TAINTS]
                    if not node["spec"]["taints"]:
                        del node["spec"]["taints"]
                    await self.client.update(node)
                    log.info("%s: removed unreachable taints", self.cfg.node_name)
                return
            except E.APIError as exc:
                if exc.code != 409 or attempt == 2:
                    raise

    async def status_loop(self) -> None:
        """Post the Node status when something asks for it, and every ``status_report`` seconds."""
        delay = 0.2
        while True:
            await wait_any(self._post.wait, sleeper(self.cfg.status_report))
            self._post = trio.Event()
            try:
                await self._sync_node()
                delay = 0.2
            except (APIUnavailable, E.APIError) as exc:
                log.info("%s: node status not posted: %s", self.cfg.node_name, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, self.cfg.retry_max)
                self._post.set()

    # ---------------------------------------------------------- the Lease

    def _new_lease(self) -> Obj:
        md: Obj = {"name": self.cfg.node_name, "namespace": LEASE_NAMESPACE}
        if self.node_uid:
            md["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": self.cfg.node_name, "uid": self.node_uid}]
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": md,
            "spec": {"holderIdentity": self.cfg.node_name, "leaseDurationSeconds": self.cfg.lease_duration,
                     "renewTime": micro_time()},
        }

    async def renew_lease(self) -> Obj:
        """Create or renew ``kube-node-lease/<node>``."""
        for attempt in range(3):
            if self.lease is None:
                try:
                    self.lease = await self.client.get("Lease", self.cfg.node_name, LEASE_NAMESPACE)
                except E.APIError as exc:
                    if exc.code != 404:
                        raise
                    self.lease = await self.client.create(self._new_lease())
                    return self.lease
            body = copy.deepcopy(self.lease)
            spec = body.setdefault("spec", {})
            spec["holderIdentity"] = self.cfg.node_name
            spec["leaseDurationSeconds"] = self.cfg.lease_duration
            spec["renewTime"] = micro_time()
            try:
                self.lease = await self.client.update(body)
                return self.lease
            except E.APIError as exc:
                self.lease = None
                if exc.code not in (404, 409) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def lease_loop(self) -> None:
        """Renew the Lease every ``heartbeat`` seconds; after an outage, re-post the Node status too."""
        delay = 0.2
        failing = False
        while True:
            try:
                await self.renew_lease()
                self.lease_renewals += 1
                self._renewed.set()
                self._renewed = trio.Event()
                if failing:
                    log.info("%s: API reachable again", self.cfg.node_name)
                    self._post.set()
                failing = False
                delay = 0.2
                await trio.sleep(self.cfg.heartbeat)
            except (APIUnavailable, E.APIError) as exc:
                if not failing:
                    log.warning("%s: lease renewal failed: %s", self.cfg.node_name, exc)
                failing = True
                self.lease = None
                await trio.sleep(min(delay, self.cfg.heartbeat))
                delay = min(delay * 2, self.cfg.retry_max)


async def run_agent(client: Client, cfg: AgentConfig, *, task_status: trio.TaskStatus[Agent] = trio.TASK_STATUS_IGNORED) -> None:
    """Run one node agent until cancelled; ``task_status`` gets the ``Agent`` once the node is registered
    and the kubelet runs. Cancelling it stops every pod task and process of the node."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    nodes = Informer(client, "Node", field_selector=f"metadata.name={cfg.node_name}")
    pods = Informer(client, "Pod", field_selector=f"spec.nodeName={cfg.node_name}")
    agent = Agent(client, cfg, nodes, pods)
    await agent.register()
    async with trio.open_nursery() as n:
        await n.start(pods.run)  # before the node: opening the IPAM frees addresses of pods not in this cache
        nodes.add_handler(agent.on_node)
        await n.start(nodes.run)
        n.start_soon(agent.lease_loop)
        n.start_soon(agent.status_loop)
        await n.start(agent.kubelet.run)
        if cfg.metrics_port is not None:
            from kmesh.node.metrics import serve_metrics

            agent.metrics_port = await n.start(functools.partial(
                serve_metrics, agent.kubelet, cfg.node_ip, cfg.metrics_port,
                any_port_if_taken=cfg.metrics_any_port_if_taken))
        if cfg.lb_speaker_iface:
            from kmesh.gateway.announce import run_speaker

            await n.start(run_speaker, client, cfg.node_name, cfg.lb_speaker_iface)
        node = agent.node
        if node is not None:
            agent.on_node(Change(nodes.kind, None, node))
        task_status.started(agent)
