"""Cluster add-ons a netns lab applies at start, as kubeadm does: CoreDNS behind Service kube-dns.

The ``coredns`` Deployment runs kmesh's DNS server (image ``kmesh/dns``) in
pods of ``kube-system``; Service ``kube-dns`` gets the well-known ClusterIP
10.96.0.10 that every pod's resolv.conf names. Names, labels and ports are
kubeadm's, so ``kubectl -n kube-system get deploy,svc,pods -l k8s-app=kube-dns``
shows what a user expects.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from kmesh.api import errors as E
from kmesh.api.wellknown import CLUSTER_DNS_IP
from kmesh.client.api import Client

DNS_IMAGE = "kmesh/dns"
DNS_RETRY = 0.25  # seconds wait_cluster_dns gives one query before it sends another


def coredns_objects(kubeconfig: Path | None, *, replicas: int = 2, allow: list[str] | None = None) -> list[dict[str, Any]]:
    """Deployment ``coredns`` and Service ``kube-dns`` (kube-system); pods read the API through ``kubeconfig``
    (None: the node's in-cluster credentials, for labs whose nodes are other machines)."""
    labels = {"k8s-app": "kube-dns"}
    args = ([f"--kubeconfig={kubeconfig}"] if kubeconfig else []) + ["--port=53", "--metrics-port=9153"]
    if allow:
        args.append("--allow=" + ",".join(allow))
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "dnsPolicy": "Default",
                    "tolerations": [
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                    ],
                    "containers": [{
                        "name": "coredns",
                        "image": DNS_IMAGE,
                        "args": args,
                        "ports": [
                            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                        ],
                        # every second: a lab's `kmesh up` waits for these pods, and a first probe made before
                        # the server listens would otherwise cost it a full period
                        "readinessProbe": {"tcpSocket": {"port": 53}, "periodSeconds": 1},
                        "livenessProbe": {"httpGet": {"path": "/metrics", "port": 9153}, "periodSeconds": 10,
                                          "failureThreshold": 5},
                    }],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns", "namespace": "kube-system",
            "labels": {**labels, "kubernetes.io/name": "CoreDNS"},
            "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
        },
        "spec": {
            "selector": dict(labels),
            "clusterIP": CLUSTER_DNS_IP,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
            ],
        },
    }
    return [deployment, service]


async def apply_objects(client: Client, objects: list[dict[str, Any]]) -> None:
    """Create each object unless it exists already (a restarted lab, or another server, made it)."""
    for obj in objects:
        md = obj["metadata"]
        try:
            await client.get(obj["kind"], md["name"], md.get("namespace"))
            continue
        except E.APIError as exc:
            if exc.code != 404:
                raise
        try:
            await client.create(copy.deepcopy(obj))
        except E.APIError as exc:
            if exc.code != 409:
                raise


async def wait_cluster_dns(namespaces: list[str | None], *, timeout: float = 90.0) -> None:
    """Return once a query to kube-dns (10.96.0.10) from every node namespace (None: this one) gets an answer.

    The answer has to come through each node's proxy, so this also waits for
    the proxies to program kube-dns's endpoints. Raises ``TimeoutError``."""
    import socket

    import trio
    from dnslib import DNSRecord

    from kmesh.net import netns

    query = DNSRecord.question("kubernetes.default.svc.cluster.local").pack()

    async def one(ns: str | None) -> None:
        # No event to await: the answer needs the coredns pods ready and every proxy synced. While queries are
        # refused (no endpoints programmed yet: the usual case) another follows DNS_RETRY / 2 later, each from a
        # new socket (a new source port, so no conntrack entry made before the endpoints is reused); a query
        # that gets no answer at all is given longer each time, up to a second, so a slow machine is still heard.
        wait = DNS_RETRY
        while True:
            sock = await netns.open_socket(ns, socket.AF_INET, socket.SOCK_DGRAM)
            with sock:
                await sock.connect((CLUSTER_DNS_IP, 53))
                try:
                    await sock.send(query)
                    with trio.move_on_after(wait) as waited:
                        reply = await sock.recv(4096)
                        if DNSRecord.parse(reply).header.rcode == 0:
                            return
                    if waited.cancelled_caught:
                        wait = min(wait * 2, 1.0)
                except OSError:  # refused / unreachable while endpoints are not programmed yet
                    pass
            await trio.sleep(DNS_RETRY / 2)

    try:
        with trio.fail_after(timeout):
            async with trio.open_nursery() as n:
                for ns in namespaces:
                    n.start_soon(one, ns)
    except trio.TooSlowError:
        raise TimeoutError(f"kube-dns ({CLUSTER_DNS_IP}) did not answer from every node within {timeout:.0f} s") from None
