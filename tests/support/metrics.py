"""Checks of a lab's ``cluster.json`` → ``metrics``: every URL answers, with upstream's metric names."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

# What each component's /metrics must name (upstream's names), by the key's component part.
EXPECTED: dict[str, tuple[str, ...]] = {
    "apiserver": ("apiserver_request_total", "apiserver_request_duration_seconds_bucket"),
    "controller-manager": ("workqueue_adds_total", "workqueue_depth", "workqueue_queue_duration_seconds_bucket",
                           "workqueue_work_duration_seconds_bucket", "workqueue_retries_total"),
    "scheduler": ("scheduler_schedule_attempts_total", "scheduler_pending_pods", "scheduler_scheduler_cache_size"),
    "coredns": ("coredns_dns_requests_total", "coredns_dns_responses_total", "coredns_dns_request_duration_seconds"),
    "kubelet": ("kubelet_running_pods", "kubelet_running_containers"),
    "kube-proxy": ("kubeproxy_sync_proxy_rules_duration_seconds", "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                   "kubeproxy_network_programming_duration_seconds"),
}


def expected_keys(nodes: list[str], runtime: str) -> set[str]:
    """The keys a lab of ``nodes`` must list."""
    keys = {"apiserver", "controller-manager", "scheduler", "coredns"} | {f"kubelet/{n}" for n in nodes}
    return keys | ({"kube-proxy"} if runtime == "sim" else {f"kube-proxy/{n}" for n in nodes})


def check_metrics(info: dict[str, object], kubeconfig: Path) -> dict[str, str]:
    """GET every metrics URL of ``cluster.json`` (the API server's through kubectl, with the kubeconfig's
    credentials); fail naming the first component that does not answer with its upstream names.
    Returns the text of each."""
    metrics = info["metrics"]
    assert isinstance(metrics, dict) and metrics
    nodes = [n["name"] for n in info["nodes"]]  # type: ignore[attr-defined, index]
    assert set(metrics) == expected_keys(nodes, str(info["runtime"])), metrics
    texts: dict[str, str] = {}
    with httpx.Client(timeout=30.0, trust_env=False) as http:
        for key, url in metrics.items():
            assert url.startswith(("http://127.", "https://127.")), f"{key}: {url} is not on loopback"
            if key == "apiserver":
                assert url == f"{info['api']}/metrics"
                out = subprocess.run(["kubectl", "get", "--raw", "/metrics"], capture_output=True, text=True, check=False,
                                     env=dict(os.environ, KUBECONFIG=str(kubeconfig)), timeout=60)
                assert out.returncode == 0, out.stderr
                text = out.stdout
            else:
                resp = http.get(url)
                assert resp.status_code == 200, f"{key}: {url} answered {resp.status_code}"
                text = resp.text
            for name in EXPECTED[key.split("/")[0]]:
                assert name in text, f"{key} ({url}) does not name {name}"
            texts[key] = text
    for n in nodes:
        assert f'kubelet_node_name{{node="{n}"}}' in texts[f"kubelet/{n}"], f"kubelet/{n} is another node's"
    return texts
