"""The components' local HTTP endpoints answer GET and HEAD on their paths, 404 on any other path, 405 on any
other method: kube-proxy's metrics (10249) and health (10256) ports, the DNS server's metrics (9153), the
kubelet's, the controller manager's and the scheduler's."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from kmesh.controllers.manager import ControllerConfig, ControllerManager, run_controllers
from kmesh.dns.config import DNSConfig
from kmesh.dns.server import RunningDNS, run_dns
from kmesh.node.agent import Agent, AgentConfig, run_agent
from kmesh.node.sim import SimRuntime
from kmesh.proxy.runner import ProxyRunner, SyncConfig, run_proxy
from tests.proxy.test_tracker import RecordingMode
from tests.support.cluster import Cluster

WRITES = ("POST", "PUT", "DELETE", "PATCH", "OPTIONS")
OTHER_PATHS = ("/", "/nope", "/metricsx", "/metrics/extra", "/configz", "/debug/pprof/")


async def check_endpoint(port: int, paths: tuple[str, ...], *, also: tuple[str, ...] = ()) -> None:
    """GET and HEAD answer 200 on ``paths``; other methods on ``paths`` and ``also`` 405 (Allow: GET, HEAD);
    every other path 404, whatever the method."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
        for path in paths:
            got = await http.get(path)
            assert got.status_code == 200, (path, got.status_code, got.text)
            head = await http.head(path)
            assert head.status_code == 200 and head.content == b"", (path, head.status_code)
        for path in paths + also:
            for method in WRITES:
                resp = await http.request(method, path, content=b'{"a": 1}')
                assert resp.status_code == 405, (method, path, resp.status_code, resp.text)
                assert resp.headers["allow"] == "GET, HEAD"
        for path in OTHER_PATHS:
            if path in paths:
                continue
            for method in ("GET", "HEAD", "POST"):
                resp = await http.request(method, path)
                assert resp.status_code == 404, (method, path, resp.status_code)
        assert (await http.get(paths[0])).status_code == 200  # still serving


async def test_kube_proxy_endpoints(cluster: Cluster, nursery: trio.Nursery) -> None:
    runner: ProxyRunner = await nursery.start(
        lambda task_status: run_proxy(cluster.client, RecordingMode(), SyncConfig(min_sync_period=0.0), metrics_port=0,
                                      healthz_port=0, healthz_host="127.0.0.1", task_status=task_status))
    assert runner.metrics_port and runner.healthz_port
    # /ipvs answers 404 in a mode without an IPVS table, but is a path of the endpoint all the same.
    await check_endpoint(runner.metrics_port, ("/metrics", "/healthz", "/proxyMode", "/rules"), also=("/ipvs",))
    await check_endpoint(runner.healthz_port, ("/healthz", "/livez"))


async def test_dns_metrics_endpoint_serves_metrics_only(cluster: Cluster, nursery: trio.Nursery) -> None:
    dns: RunningDNS = await nursery.start(run_dns, cluster.client, DNSConfig(listen=["127.0.0.1:0"], metrics_port=0,
                                                                             upstreams=[]))
    assert dns.metrics_port
    await check_endpoint(dns.metrics_port, ("/metrics",), also=())
    async with httpx.AsyncClient(trust_env=False) as http:
        for path in ("/healthz", "/proxyMode", "/rules", "/ready", "/health"):
            assert (await http.get(f"http://127.0.0.1:{dns.metrics_port}{path}")).status_code == 404


async def test_kubelet_metrics_endpoint(cluster: Cluster, nursery: trio.Nursery, tmp_path: Path) -> None:
    data = tmp_path / "node"
    cfg = AgentConfig(node_name="endpoints-node", node_ip="127.0.0.1", runtime=SimRuntime(data), data_dir=data,
                      heartbeat=0.5, metrics_port=0)
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def run(*, task_status: trio.TaskStatus[Agent]) -> None:
        try:
            with scope:
                await run_agent(cluster.client, cfg, task_status=task_status)
        finally:
            stopped.set()

    agent: Agent = await nursery.start(run)
    try:
        assert agent.metrics_port
        await check_endpoint(agent.metrics_port, ("/metrics",))
    finally:
        scope.cancel()
        await stopped.wait()


async def test_controller_manager_and_scheduler_metrics_endpoints(cluster: Cluster, nursery: trio.Nursery) -> None:
    mgr: ControllerManager = await nursery.start(run_controllers, cluster.client, ControllerConfig(
        metrics_port=0, scheduler_metrics_port=0))
    assert mgr.metrics_port and mgr.scheduler_metrics_port
    await check_endpoint(mgr.metrics_port, ("/metrics",))
    await check_endpoint(mgr.scheduler_metrics_port, ("/metrics",))
