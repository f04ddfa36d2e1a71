"""An API outage longer than the node grace period: no node is judged on Leases nobody could write.

Real parts: an API server on SQLite (stopped, then started again on the same
port), the controllers, and sim-runtime node agents renewing their Leases.
The agents reach the API through a TCP relay the test can cut, so they can
come back after the controllers, as agents with their slower retry do.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from kmesh.apiserver.server import ServerConfig
from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer
from kmesh.client.kubeconfig import Credentials
from kmesh.controllers import podutil
from kmesh.controllers.manager import ControllerConfig, ControllerManager, run_controllers
from kmesh.controllers.nodelifecycle import NodeLifecycle, has_unreachable_taint
from kmesh.lab.datadir import SIM_SERVICE_CIDR
from kmesh.node.agent import Agent, AgentConfig, run_agent
from kmesh.node.sim import SimRuntime
from tests.support.cluster import Stoppable, serve_stoppable

Obj = dict[str, Any]
GRACE = 3.0  # node grace period (upstream: 40 s)
HEARTBEAT = 0.25  # the agents' lease renewal period and retry cap (upstream: 10 s, 7 s)
CLUSTER_CIDR = "127.247.0.0/16"  # pod addresses of this test only
NODES = {"outage-a": "127.1.247.1", "outage-b": "127.1.247.2"}
REPLICAS = 4


def web() -> list[Obj]:
    """A Deployment of agnhost serve-hostname with a readiness probe, and its Service."""
    labels = {"app": "web"}
    container = {"name": "web", "image": "registry.k8s.io/e2e-test-images/agnhost:2.39", "args": ["serve-hostname"],
                 "ports": [{"name": "http", "containerPort": 9376}],
                 "readinessProbe": {"tcpSocket": {"port": 9376}, "periodSeconds": 1}}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"replicas": REPLICAS, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
    ]


def ready_endpoints(slices: Informer) -> int:
    """Ready endpoints of Service default/web over all its slices."""
    return sum(1 for s in slices.list("default")
               if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == "web"
               for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready"))


def node_ok(node: Obj) -> bool:
    return (podutil.condition(node, "Ready") or {}).get("status") == "True" and not has_unreachable_taint(node)


class Watchdog:
    """Records every Node that stops being Ready (or gets tainted) and every time Service web loses an endpoint."""

    def __init__(self, nodes: Informer, slices: Informer) -> None:
        self.slices = slices
        self.bad: list[str] = []
        nodes.add_handler(self._on_node)
        slices.add_handler(self._on_slice)

    def _on_node(self, ch: Change) -> None:
        if ch.new is None or not node_ok(ch.new):
            self.bad.append(f"{ch.type} node {ch.obj['metadata']['name']}: {ch.obj.get('status', {}).get('conditions')}"
                            f" taints {ch.obj.get('spec', {}).get('taints')}")

    def _on_slice(self, ch: Change) -> None:
        n = ready_endpoints(self.slices)
        if n < REPLICAS:
            self.bad.append(f"Service web has {n} ready endpoints after {ch.type} {ch.obj['metadata']['name']}")


class Relay:
    """The agents' path to the API server: a TCP relay on loopback that the test cuts and restores."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.open = True
        self._conns: set[trio.CancelScope] = set()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on a free loopback port (handed back) until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    def cut(self) -> None:
        """Refuse new connections and close the open ones."""
        self.open = False
        for scope in self._conns:
            scope.cancel()

    async def _handle(self, down: trio.SocketStream) -> None:
        async with down:
            if not self.open:
                return
            try:
                up = await trio.open_tcp_stream("127.0.0.1", self.port)
            except OSError:
                return
            async with up:
                with trio.CancelScope() as scope:
                    self._conns.add(scope)
                    try:
                        async with trio.open_nursery() as n:
                            n.start_soon(self._copy, down, up, n.cancel_scope)
                            n.start_soon(self._copy, up, down, n.cancel_scope)
                    finally:
                        self._conns.discard(scope)

    @staticmethod
    async def _copy(src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()


@dataclass
class Lab:
    """What the scenarios drive and watch."""

    tmp_path: Path
    nursery: trio.Nursery
    port: int
    server: Stoppable
    relay: Relay
    lifecycle: NodeLifecycle
    agents: dict[str, Agent]
    nodes: Informer
    slices: Informer
    leases: Informer
    watchdog: Watchdog

    def server_config(self, port: int) -> ServerConfig:
        return server_config(self.tmp_path, port)

    async def restart_server(self) -> None:
        """Start the API server again on its port (same store)."""
        _, self.server = await self.nursery.start(serve_stoppable, self.server_config(self.port))

    async def observe_renewals(self) -> None:
        """Return once every agent renewed its Lease more often than one grace period holds (as the test's
        lease informer saw it), or at the first bad event."""
        renewals = {name: 0 for name in NODES}

        def count(ch: Change) -> None:
            if ch.new is not None and ch.new["metadata"]["name"] in renewals:
                renewals[ch.new["metadata"]["name"]] += 1

        self.leases.add_handler(count)
        enough = math.ceil(GRACE / HEARTBEAT) + 2
        with trio.fail_after(60):
            await self.leases.wait_for(lambda i: min(renewals.values()) >= enough or bool(self.watchdog.bad))


def server_config(tmp_path: Path, port: int) -> ServerConfig:
    return ServerConfig(data_dir=tmp_path / "api", store_url=f"sqlite://{tmp_path / 'store.db'}", port=port,
                        loopback_ok=True, service_cidr=SIM_SERVICE_CIDR)


async def _agent(client: Client, tmp_path: Path, name: str, ip: str, *,
                 task_status: trio.TaskStatus[Agent] = trio.TASK_STATUS_IGNORED) -> None:
    data = tmp_path / "nodes" / name
    cfg = AgentConfig(node_name=name, node_ip=ip, runtime=SimRuntime(data), data_dir=data,
                      heartbeat=HEARTBEAT, retry_max=HEARTBEAT)
    await run_agent(client, cfg, task_status=task_status)


@asynccontextmanager
async def running_lab(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Lab]:
    """API server, controllers (grace GRACE), two agents behind the relay and a Service with REPLICAS ready
    endpoints; the watchdog starts once all of it is healthy."""
    srv, server = await nursery.start(serve_stoppable, server_config(tmp_path, 0))
    port = int(srv.url.rsplit(":", 1)[1])
    creds = Credentials(srv.url, srv.pki.ca_pem(), srv.pki.token)
    client = Client(creds)
    relay = Relay(port)
    lab: Lab | None = None
    try:
        async with trio.open_nursery() as n:  # controllers, agents, relay and the test's informers
            relay_port = await n.start(relay.serve)
            agents_client = Client(Credentials(f"https://127.0.0.1:{relay_port}", creds.ca_pem, creds.token))
            try:
                mgr: ControllerManager = await n.start(run_controllers, client, ControllerConfig(
                    cluster_cidr=CLUSTER_CIDR, service_cidr=SIM_SERVICE_CIDR, node_grace_period=GRACE))
                agents = {name: await n.start(_agent, agents_client, tmp_path, name, ip) for name, ip in NODES.items()}
                for obj in web():
                    await client.create(obj)
                nodes, slices = Informer(client, "Node"), Informer(client, "EndpointSlice", namespace="default")
                leases = Informer(client, "Lease", namespace="kube-node-lease")
                for inf in (nodes, slices, leases):
                    await n.start(inf.run)
                with trio.fail_after(60):
                    await slices.wait_for(lambda i: ready_endpoints(i) == REPLICAS)
                    await nodes.wait_for(lambda i: len(i.list()) == len(NODES) and all(map(node_ok, i.list())))
                lifecycle = mgr.controllers["nodelifecycle"]
                assert isinstance(lifecycle, NodeLifecycle)
                lab = Lab(tmp_path, nursery, port, server, relay, lifecycle, agents, nodes, slices, leases,
                          Watchdog(nodes, slices))
                yield lab
                n.cancel_scope.cancel()
            finally:
                await agents_client.aclose()
    finally:
        await client.aclose()
        await (lab.server if lab is not None else server).stop()


async def test_api_server_away_longer_than_the_grace_period_marks_no_node(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_lab(nursery, tmp_path) as lab:
        # The API server goes away for twice the grace period: nobody can renew a Lease.
        controller_leases = lab.lifecycle.leases
        lab.relay.cut()
        await lab.server.stop()
        with trio.fail_after(15):
            await controller_leases.wait_for(lambda i: not i.connected)
        await trio.sleep(2 * GRACE)  # the outage itself
        regained = lab.lifecycle.sight_regained

        # It comes back; the controllers watch again before the agents get through (their retry is slower).
        await lab.restart_server()
        with trio.fail_after(15):
            await lab.lifecycle.nodes.wait_for(lambda i: i.connected)
            await controller_leases.wait_for(lambda i: i.connected)
        assert lab.lifecycle.sight_regained > regained
        await trio.sleep(GRACE / 2)  # the agents' path stays down a while longer
        lab.relay.open = True
        await lab.observe_renewals()
        assert lab.watchdog.bad == []
        assert ready_endpoints(lab.slices) == REPLICAS


async def test_lab_process_stopped_longer_than_the_grace_period_marks_no_node(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    async with running_lab(nursery, tmp_path) as lab:
        regained = lab.lifecycle.sight_regained
        # The whole process stops (as under SIGSTOP): API server, controllers and agents alike.
        time.sleep(2 * GRACE)  # noqa: ASYNC251 - blocking the whole loop on purpose: the process is stopped
        await lab.observe_renewals()
        assert lab.lifecycle.sight_regained > regained
        assert lab.watchdog.bad == []
        assert ready_endpoints(lab.slices) == REPLICAS
