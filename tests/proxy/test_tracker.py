"""The change tracker and sync loop every mode shares, against a real API server and kubectl."""

from __future__ import annotations

import trio

from kmesh.proxy.model import NodeContext, ProxyState, ServicePortName
from kmesh.proxy.runner import ProxyRunner, SyncConfig, run_proxy
from tests.proxy.support import endpoint_slice_yaml, endpoint_yaml, service_yaml
from tests.support.cluster import Cluster

SVC = service_yaml("10.96.0.50", "{name: http, port: 80, targetPort: 9376}", "{name: dns, port: 53, protocol: UDP}")

SLICE = endpoint_slice_yaml(
    ("{name: http, port: 9376, protocol: TCP}", "{name: dns, port: 5353, protocol: UDP}"),
    (endpoint_yaml("10.244.1.2", "node-1", "%s"), endpoint_yaml("10.244.2.2", "node-2")),
    annotations='{endpoints.kubernetes.io/last-change-trigger-time: "2026-11-23T01:00:00Z"}',
)

HTTP = ServicePortName("default", "web", "http", "TCP")
DNS = ServicePortName("default", "web", "dns", "UDP")


class RecordingMode:
    """A mode that records what the loop hands it (our own interface, not a system under test)."""

    name = "recording"

    def __init__(self, fail_next: int = 0) -> None:
        self.ctx = NodeContext(node="node-1", node_ips=("192.168.56.11",))
        self.calls: list[tuple[ProxyState, frozenset[ServicePortName], bool]] = []
        self.fail_next = fail_next
        self.changed = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        pass

    async def sync(self, state: ProxyState, changed: frozenset[ServicePortName], full: bool) -> None:
        self.calls.append((state, changed, full))
        self.changed.set()
        self.changed = trio.Event()
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("iptables-restore: exit 1")

    async def rules(self) -> str:
        return ""

    async def cleanup(self) -> None:
        pass


async def _until(runner: ProxyRunner, mode: RecordingMode, pred) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(10):
        while not pred():
            await mode.changed.wait()


async def test_changes_reach_the_mode_once_with_the_terminating_fallback(cluster: Cluster, nursery: trio.Nursery) -> None:
    mode = RecordingMode()
    runner: ProxyRunner = await nursery.start(run_proxy, cluster.client, mode, SyncConfig(min_sync_period=0.0))
    assert mode.calls[0][2] is True and {k.name for k in mode.calls[0][0].services} == {"kubernetes"}
    await cluster.kubectl("apply", "-f", "-", stdin=SVC)
    await cluster.kubectl("apply", "-f", "-", stdin=SLICE % "true")
    await _until(runner, mode, lambda: HTTP in mode.calls[-1][0].services
                 and len(mode.calls[-1][0].services[HTTP].endpoints) == 2)
    seen = set().union(*(c[1] for c in mode.calls[1:]))
    assert seen == {HTTP, DNS}
    sp = mode.calls[-1][0].services[HTTP]
    assert (sp.cluster_ip, sp.port, [e.addr for e in sp.cluster_endpoints()]) == (
        "10.96.0.50", 80, ["10.244.1.2:9376", "10.244.2.2:9376"])
    assert mode.calls[-1][0].services[DNS].endpoints[0].port == 5353
    assert runner.metrics.programming.collect()[0].samples  # observed from last-change-trigger-time
    # one endpoint becomes not ready: only this service's ports are named as changed
    n = len(mode.calls)
    await cluster.kubectl("apply", "-f", "-", stdin=SLICE % "false")
    await _until(runner, mode, lambda: len(mode.calls) > n and HTTP in mode.calls[-1][1])
    assert [e.addr for e in mode.calls[-1][0].services[HTTP].cluster_endpoints()] == ["10.244.2.2:9376"]
    n = len(mode.calls)
    await cluster.kubectl("delete", "service", "web")
    await _until(runner, mode, lambda: len(mode.calls) > n and HTTP not in mode.calls[-1][0].services)
    assert mode.calls[-1][1] >= {HTTP}


def _sample(runner: ProxyRunner, name: str) -> float:
    """One sample of the proxy's /metrics text, read as Prometheus would."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(runner.metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                return s.value
    raise AssertionError(f"{name} not in /metrics:\n{text}")


async def test_sync_metrics_carry_upstreams_names(cluster: Cluster, nursery: trio.Nursery) -> None:
    mode = RecordingMode()
    runner: ProxyRunner = await nursery.start(run_proxy, cluster.client, mode, SyncConfig(min_sync_period=0.0))
    assert _sample(runner, "kubeproxy_sync_full_proxy_rules_duration_seconds_count") == 1  # the first sync is full
    assert _sample(runner, "kubeproxy_sync_partial_proxy_rules_duration_seconds_count") == 0
    before = _sample(runner, "kubeproxy_sync_proxy_rules_last_timestamp_seconds")
    await cluster.kubectl("apply", "-f", "-", stdin=SVC)
    await cluster.kubectl("apply", "-f", "-", stdin=SLICE % "true")
    await _until(runner, mode, lambda: HTTP in mode.calls[-1][0].services and mode.calls[-1][0].services[HTTP].endpoints)
    partial = _sample(runner, "kubeproxy_sync_partial_proxy_rules_duration_seconds_count")
    assert partial >= 1 and _sample(runner, "kubeproxy_sync_full_proxy_rules_duration_seconds_count") == 1
    assert _sample(runner, "kubeproxy_sync_proxy_rules_duration_seconds_count") == partial + 1
    assert _sample(runner, "kubeproxy_sync_proxy_rules_last_timestamp_seconds") > before
    assert _sample(runner, "kubeproxy_network_programming_duration_seconds_count") >= 1


async def test_a_failed_sync_is_retried_as_full_with_its_changes(cluster: Cluster, nursery: trio.Nursery) -> None:
    mode = RecordingMode()
    runner: ProxyRunner = await nursery.start(run_proxy, cluster.client, mode, SyncConfig(min_sync_period=0.0))
    mode.fail_next = 1
    await cluster.kubectl("apply", "-f", "-", stdin=SVC)
    await _until(runner, mode, lambda: runner.metrics.failures == 1 and len(mode.calls) >= 3)
    failed, retried = mode.calls[-2], mode.calls[-1]
    assert HTTP in failed[1] and failed[2] is False
    assert HTTP in retried[1] and retried[2] is True


async def test_headless_and_external_name_are_not_proxied(cluster: Cluster, nursery: trio.Nursery) -> None:
    mode = RecordingMode()
    runner: ProxyRunner = await nursery.start(run_proxy, cluster.client, mode, SyncConfig(min_sync_period=0.0))
    await cluster.kubectl("create", "service", "clusterip", "hl", "--clusterip=None", "--tcp=80")
    await cluster.kubectl("create", "service", "externalname", "ext", "--external-name=example.com")
    await cluster.kubectl("create", "service", "clusterip", "plain", "--tcp=80")
    await _until(runner, mode, lambda: any(k.name == "plain" for k in mode.calls[-1][0].services))
    assert {k.name for k in mode.calls[-1][0].services} == {"plain", "kubernetes"}
