"""Fixtures for the cluster DNS tests: an API server, the DNS server on a free loopback port, and query helpers."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rdatatype
import pytest
import trio

from kmesh.client.api import Client
from kmesh.dns.config import DNSConfig
from kmesh.dns.server import RunningDNS, run_dns
from tests.conftest import require_binary
from tests.support.cluster import Cluster, start_cluster


def service(name: str, ns: str = "default", *, ports: list[dict[str, Any]] | None = None, cluster_ip: str | None = None,
            external: str | None = None, families: list[str] | None = None) -> dict[str, Any]:
    """A Service object as a user would write it."""
    spec: dict[str, Any] = {"ports": ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP"}]}
    if external:
        spec = {"type": "ExternalName", "externalName": external}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    if families:
        spec["ipFamilies"] = families
        spec["ipFamilyPolicy"] = "PreferDualStack"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def endpoint_slice(svc: str, ns: str = "default", *, endpoints: list[dict[str, Any]], ports: list[dict[str, Any]] | None = None,
                   name: str | None = None, family: str = "IPv4") -> dict[str, Any]:
    """An EndpointSlice as the endpoints controller would write it (labelled with its service)."""
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name or f"{svc}-abc", "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family,
        "endpoints": endpoints,
        "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def ep(ip: str, hostname: str | None = None, ready: bool | None = True) -> dict[str, Any]:
    """One endpoint entry."""
    out: dict[str, Any] = {"addresses": [ip]}
    if ready is not None:
        out["conditions"] = {"ready": ready}
    if hostname:
        out["hostname"] = hostname
    return out


@dataclass
class DNSLab:
    """A running API server + DNS server and ways to ask it."""

    cluster: Cluster
    dns: RunningDNS
    host: str
    port: int

    @property
    def client(self) -> Client:
        return self.cluster.client

    async def query(self, name: str, rdtype: str = "A", *, tcp: bool = False, **kw: Any) -> dns.message.Message:
        """Ask with dnspython over UDP (or TCP)."""
        q = dns.message.make_query(name, rdtype, **kw)
        fn = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
        return await fn(q, self.host, port=self.port, timeout=3)

    async def dig(self, *args: str) -> str:
        """Run the real dig against the server; returns its output."""
        dig = require_binary("dig")
        res = await trio.run_process([dig, "@" + self.host, "-p", str(self.port), "+time=2", "+tries=1", *args],
                                     capture_stdout=True, capture_stderr=True, check=False)
        out = res.stdout.decode()
        assert res.returncode == 0, out + res.stderr.decode()
        return out

    async def settle(self, pred: Any) -> None:
        """Wait until the served snapshot satisfies ``pred`` (bounded)."""
        with trio.fail_after(5):
            await self.dns.wait_for(pred)


async def start_lab(nursery: trio.Nursery, tmp_path: Path, **cfg: Any) -> DNSLab:
    """API server + DNS server with ``cfg`` overrides (forwarding off unless upstreams are given)."""
    cluster = await start_cluster(nursery, tmp_path, loopback_ok=True)
    cfg.setdefault("upstreams", [])
    conf = DNSConfig(listen=["127.0.0.1:0"], metrics_port=0, **cfg)
    running: RunningDNS = await nursery.start(run_dns, cluster.client, conf)
    host, port = running.addresses[0]
    return DNSLab(cluster, running, host, port)


@pytest.fixture
async def lab(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[DNSLab]:
    """The default lab (pods disabled, no forwarding), synced."""
    lab = await start_lab(nursery, tmp_path)
    await lab.settle(lambda s: True)
    try:
        yield lab
    finally:
        await lab.cluster.client.aclose()


def rcode_text(msg: dns.message.Message) -> str:
    """NOERROR, NXDOMAIN, ..."""
    import dns.rcode

    return dns.rcode.to_text(msg.rcode())


__all__ = ["DNSLab", "endpoint_slice", "ep", "rcode_text", "service", "start_lab", "subprocess"]
