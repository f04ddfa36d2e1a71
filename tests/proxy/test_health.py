"""kube-proxy's health server (upstream :10256) and the metrics endpoint's upstream paths (:10249)."""

from __future__ import annotations

import json

import httpx
import trio
from prometheus_client import CollectorRegistry

from kmesh.client.informer import Change
from kmesh.proxy.health import ProxyHealth, go_time
from kmesh.proxy.http import summary
from kmesh.proxy.runner import ProxyRunner, SyncConfig, run_proxy
from tests.proxy.test_tracker import RecordingMode
from tests.support.cluster import Cluster

NODE = """\
apiVersion: v1
kind: Node
metadata: {name: node-1}
spec:
  taints: [%s]
"""


async def get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as http:
        return await http.get(f"http://127.0.0.1:{port}{path}")


async def test_healthz_answers_upstreams_json_and_follows_the_node(cluster: Cluster, nursery: trio.Nursery) -> None:
    mode = RecordingMode()
    runner: ProxyRunner = await nursery.start(
        lambda task_status: run_proxy(cluster.client, mode, SyncConfig(min_sync_period=0.0), metrics_port=0,
                                      healthz_port=0, healthz_host="127.0.0.1", task_status=task_status))
    assert runner.healthz_port and runner.metrics_port and runner.healthz_port != runner.metrics_port
    resp = await get(runner.healthz_port, "/healthz")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    doc = resp.json()
    assert set(doc) == {"lastUpdated", "currentTime", "nodeEligible"} and doc["nodeEligible"] is True
    assert doc["currentTime"].endswith(" +0000 UTC")
    live = await get(runner.healthz_port, "/livez")
    assert live.status_code == 200 and set(live.json()) == {"lastUpdated", "currentTime"}
    assert (await get(runner.healthz_port, "/metrics")).status_code == 404  # only upstream's two paths there

    # the metrics port keeps upstream's plain paths
    assert (await get(runner.metrics_port, "/healthz")).text == "ok"
    assert (await get(runner.metrics_port, "/proxyMode")).text == "recording"
    assert await summary(netns_name=None, metrics_port=runner.metrics_port,
                         healthz_port=runner.healthz_port) == f"recording, {runner.metrics.syncs} syncs"

    # a node the autoscaler is taking away is not eligible: /healthz 503, /livez still 200
    await cluster.kubectl("apply", "-f", "-",
                          stdin=NODE % "{key: ToBeDeletedByClusterAutoscaler, value: '1', effect: NoSchedule}")
    with trio.fail_after(30):
        while runner.health.node_eligible:
            await trio.sleep(0.02)
    resp = await get(runner.healthz_port, "/healthz")
    assert resp.status_code == 503 and resp.json()["nodeEligible"] is False
    assert (await get(runner.healthz_port, "/livez")).status_code == 200
    assert await summary(netns_name=None, metrics_port=runner.metrics_port,
                         healthz_port=runner.healthz_port) == f"recording, {runner.metrics.syncs} syncs, unhealthy"
    await cluster.kubectl("apply", "-f", "-", stdin=NODE % "")
    with trio.fail_after(30):
        while not runner.health.node_eligible:
            await trio.sleep(0.02)
    assert (await get(runner.healthz_port, "/healthz")).status_code == 200
    text = (await get(runner.metrics_port, "/metrics")).text
    assert 'kubeproxy_proxy_healthz_total{code="503"}' in text and 'kubeproxy_proxy_livez_total{code="200"}' in text
    reg = runner.metrics.registry
    assert reg.get_sample_value("kubeproxy_proxy_healthz_total", {"code": "503"}) == 2  # the GET and the summary
    assert reg.get_sample_value("kubeproxy_proxy_livez_total", {"code": "200"}) == 2
    assert "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds" in text


def test_a_change_waiting_longer_than_the_timeout_is_unhealthy() -> None:
    now = [1000.0]
    h = ProxyHealth(60.0, CollectorRegistry(), clock=lambda: now[0])
    assert h.healthy()  # starting up
    h.queued_update()
    now[0] += 59
    assert h.healthy()
    h.queued_update()  # a later change does not restart the clock
    now[0] += 2
    assert not h.healthy()
    h.updated()
    assert h.healthy() and h.last_updated == now[0]
    h.queued_update()
    h.updated(still_pending=True)  # changes came in during the sync: their clock starts now
    now[0] += 61
    assert not h.healthy()
    h.on_node(Change("Node", {"metadata": {"name": "n"}}, None))
    assert not h.node_eligible  # deleted
    h.on_node(Change("Node", None, {"metadata": {"name": "n", "deletionTimestamp": "2026-01-01T00:00:00Z"}}))
    assert not h.node_eligible
    h.on_node(Change("Node", None, {"metadata": {"name": "n"}, "spec": {"taints": [{"key": "other"}]}}))
    assert h.node_eligible


async def test_unhealthy_answer_reports_the_last_update() -> None:
    now = [1_700_000_000.5]
    h = ProxyHealth(1.0, CollectorRegistry(), clock=lambda: now[0])
    h.updated()
    h.queued_update()
    now[0] += 5
    resp = await h.healthz(None)  # type: ignore[arg-type]
    doc = json.loads(resp.body)
    assert resp.status == 503
    assert doc == {"lastUpdated": go_time(1_700_000_000.5), "currentTime": go_time(1_700_000_005.5),
                   "nodeEligible": True}
    assert go_time(1_700_000_000.5) == "2023-11-14 22:13:20.500000 +0000 UTC"


async def test_failed_syncs_count_under_the_modes_upstream_name(cluster: Cluster, nursery: trio.Nursery) -> None:
    mode = RecordingMode(fail_next=1)
    mode.name = "iptables"  # as far as the metrics go
    runner: ProxyRunner = await nursery.start(
        lambda task_status: run_proxy(cluster.client, mode, SyncConfig(min_sync_period=0.0), metrics_port=0,
                                      task_status=task_status))
    assert runner.metrics.failures == 1  # the first sync failed, the retry (full) succeeded
    text = (await get(runner.metrics_port, "/metrics")).text
    assert "kubeproxy_sync_proxy_rules_iptables_restore_failures_total 1.0" in text
    assert await summary(netns_name=None, metrics_port=runner.metrics_port) == \
        f"iptables, {runner.metrics.syncs} syncs, 1 failed"
