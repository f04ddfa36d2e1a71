"""Prometheus metrics of one agent (upstream kubelet names), served at ``http://<node IP>:<port>/metrics``.

Each agent has its own registry, so several agents in one process (the sim
lab) do not mix their numbers. The labs serve it on upstream's kubelet port
10250 (plain HTTP, where upstream serves HTTPS with authentication).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kmesh.net import metrics as metrics_endpoint

KUBELET_PORT = 10250

if TYPE_CHECKING:
    from kmesh.node.kubelet import Kubelet


class KubeletCollector:
    """Reads the kubelet's state at scrape time."""

    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet

    def collect(self) -> Iterator[Metric]:
        """The metric families."""
        k = self.kubelet
        yield GaugeMetricFamily("kubelet_running_pods", "Number of pods that have a running pod sandbox", value=k.running_pods())
        states: Counter[str] = Counter()
        for w in list(k.workers.values()):
            for r in w.inits + w.runners:
                st = r.state.state
                states["running" if "running" in st else "exited" if "terminated" in st else "created"] += 1
        g = GaugeMetricFamily("kubelet_running_containers", "Number of containers currently running", labels=["container_state"])
        for state in ("running", "exited", "created"):
            g.add_metric([state], states[state])
        yield g
        c = CounterMetricFamily("kubelet_started_containers", "Cumulative number of containers started", labels=["container_type"])
        c.add_metric(["container"], k.started_containers)
        yield c
        e = CounterMetricFamily("kubelet_started_containers_errors", "Cumulative number of errors when starting containers",
                                labels=["code", "container_type"])
        for code, n in sorted(k.start_errors.items()):
            e.add_metric([code, "container"], n)
        yield e
        n = GaugeMetricFamily("kubelet_node_name", "The node's name. The count is always 1.", labels=["node"])
        n.add_metric([k.cfg.node_name], 1)
        yield n


def registry_for(kubelet: Kubelet) -> CollectorRegistry:
    """A registry holding this kubelet's metrics."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(KubeletCollector(kubelet))  # type: ignore[arg-type]
    return reg


async def serve_metrics(kubelet: Kubelet, host: str, port: int, *, any_port_if_taken: bool = False,
                        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``/metrics`` on ``host:port`` until cancelled (``any_port_if_taken``: a free port if that one is
    in use); ``task_status`` gets the bound port."""
    await metrics_endpoint.serve_metrics(registry_for(kubelet), host, port, any_port_if_taken=any_port_if_taken,
                                         task_status=task_status)
