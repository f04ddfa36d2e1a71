"""Transport (EDNS0, truncation, TCP with dig), pods modes, sync, change latency and metrics."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import httpx
import trio

from kmesh.client.api import Client
from kmesh.client.kubeconfig import Credentials
from kmesh.dns.config import DNSConfig
from kmesh.dns.resolver import qname_wire
from kmesh.dns.server import RunningDNS, run_dns
from tests.dns.conftest import (
    DNSLab,
    endpoint_slice,
    ep,
    rcode_text,
    service,
    start_lab,
)
from tests.support.cluster import Cluster

Z = "cluster.local"


async def many_endpoints(lab: DNSLab, n: int = 60) -> None:
    await lab.client.create(service("big", cluster_ip="None", ports=[{"name": "p", "port": 80}]))
    await lab.client.create(endpoint_slice("big", endpoints=[ep(f"127.244.2.{i}") for i in range(1, n + 1)],
                                           ports=[{"name": "p", "port": 80, "protocol": "TCP"}]))
    await lab.settle(lambda s: (svc := s.service("default", "big")) is not None and len(svc.endpoints) == n)


async def test_edns_opt_echoed_and_badvers(lab: DNSLab) -> None:
    await lab.client.create(service("web"))
    await lab.settle(lambda s: s.service("default", "web") is not None)
    msg = await lab.query(f"web.default.svc.{Z}", "A", use_edns=0, payload=1232)
    assert msg.edns == 0 and len(msg.answer) == 1
    msg = await lab.query(f"web.default.svc.{Z}", "A", use_edns=1)
    assert msg.rcode() == dns.rcode.BADVERS and not msg.answer


async def test_truncation_over_udp_then_whole_answer_over_tcp(lab: DNSLab) -> None:
    await many_endpoints(lab)
    msg = await lab.query(f"big.default.svc.{Z}", "A")  # no EDNS: 512 bytes max, whole records that fit
    assert msg.flags & dns.flags.TC and 0 < len(msg.answer[0]) < 60 and len(msg.to_wire()) <= 512
    msg = await lab.query(f"big.default.svc.{Z}", "A", use_edns=0, payload=4096)  # EDNS size honoured
    assert not msg.flags & dns.flags.TC and len(msg.answer[0]) == 60
    msg = await lab.query(f"big.default.svc.{Z}", "A", use_edns=0, payload=600)
    assert msg.flags & dns.flags.TC and msg.edns == 0 and len(msg.to_wire()) <= 600
    assert len(msg.answer[0]) > (512 - 60) // 16
    msg = await lab.query(f"big.default.svc.{Z}", "A", tcp=True)
    assert not msg.flags & dns.flags.TC and len(msg.answer[0]) == 60


async def test_dig_over_udp_and_tcp(lab: DNSLab) -> None:
    await lab.client.create(service("web"))
    await many_endpoints(lab)
    out = " ".join((await lab.dig("+noall", "+answer", f"web.default.svc.{Z}")).split())
    assert out.startswith(f"web.default.svc.{Z}. 5 IN A ")
    out = " ".join((await lab.dig("+tcp", "+noall", "+answer", "+comments", f"Web.Default.svc.{Z}", "SRV")).split())
    assert "status: NOERROR" in out and "flags: qr aa rd;" in out
    assert f"Web.Default.svc.{Z}. 5 IN SRV 0 100 80 web.default.svc.{Z}." in out
    out = await lab.dig("+noall", "+answer", "+ignore", "+noedns", f"big.default.svc.{Z}")
    assert 0 < " ".join(out.split()).count(" IN A ") < 60  # truncated to what fits, and told not to retry
    out = await lab.dig("+noall", "+answer", "+noedns", f"big.default.svc.{Z}")  # dig retries over TCP
    assert " ".join(out.split()).count(" IN A ") == 60
    out = await lab.dig("+norec", "+comments", f"nope.default.svc.{Z}")
    assert "status: NXDOMAIN" in out and "flags: qr aa;" in out, out


async def test_pods_disabled_by_default(lab: DNSLab) -> None:
    msg = await lab.query(f"10-244-0-5.default.pod.{Z}", "A")
    assert rcode_text(msg) == "NXDOMAIN"


async def test_pods_insecure(nursery: trio.Nursery, tmp_path: Path) -> None:
    lab = await start_lab(nursery, tmp_path, pods="insecure")
    await lab.settle(lambda s: "default" in s.namespaces)
    msg = await lab.query(f"10-244-0-5.Default.pod.{Z}", "A", tcp=True)
    assert [(r.name.to_text(), rd.to_text()) for r in msg.answer for rd in r] == [(f"10-244-0-5.Default.pod.{Z}.", "10.244.0.5")]
    assert rcode_text(await lab.query(f"10-244-0-5.nons.pod.{Z}", "A")) == "NXDOMAIN"
    assert rcode_text(await lab.query(f"not-an-ip.default.pod.{Z}", "A")) == "NXDOMAIN"
    msg = await lab.query(f"10-244-0-5.default.pod.{Z}", "AAAA")
    assert rcode_text(msg) == "NOERROR" and not msg.answer
    await lab.client.aclose()


async def test_pods_verified(nursery: trio.Nursery, tmp_path: Path) -> None:
    lab = await start_lab(nursery, tmp_path, pods="verified")
    pod = await lab.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                                   "spec": {"containers": [{"name": "c", "image": "kmesh/echo"}]}})
    pod["status"].update({"phase": "Running", "podIP": "127.244.3.3", "podIPs": [{"ip": "127.244.3.3"}]})
    await lab.client.update_status(pod)
    await lab.settle(lambda s: ("default", "127.244.3.3") in s.pod_ips)
    msg = await lab.query(f"127-244-3-3.default.pod.{Z}", "A")
    assert [rd.to_text() for r in msg.answer for rd in r] == ["127.244.3.3"]
    assert rcode_text(await lab.query(f"127-244-3-4.default.pod.{Z}", "A")) == "NXDOMAIN"
    await lab.client.aclose()


async def test_servfail_before_the_first_sync(nursery: trio.Nursery, cluster: Cluster) -> None:
    # The same credentials, but a port where no API server listens: the informers never list.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    creds = cluster.client.creds
    client = Client(Credentials(f"https://127.0.0.1:{dead}", creds.ca_pem, creds.token), timeout=1)
    running: RunningDNS = await nursery.start(run_dns, client, DNSConfig(listen=["127.0.0.1:0"], metrics_port=None, upstreams=[]))
    host, port = running.addresses[0]
    for name in (f"nope.default.svc.{Z}", f"web.default.svc.{Z}"):
        msg = await dns.asyncquery.udp(dns.message.make_query(name, "A"), host, port=port, timeout=3)
        assert rcode_text(msg) == "SERVFAIL"
    assert running.resolver.snapshot is None
    await client.aclose()


async def test_changes_reach_answers(lab: DNSLab) -> None:
    svc = await lab.client.create(service("web"))
    with trio.fail_after(10):
        await lab.dns.wait_for(lambda s: s.service("default", "web") is not None)
    msg = await lab.query(f"web.default.svc.{Z}", "A")
    assert [rd.to_text() for r in msg.answer for rd in r] == [svc["spec"]["clusterIP"]]
    await lab.client.delete("Service", "web", "default")
    with trio.fail_after(10):
        await lab.dns.wait_for(lambda s: s.service("default", "web") is None)
    assert rcode_text(await lab.query(f"web.default.svc.{Z}", "A")) == "NXDOMAIN"


async def test_prepared_answers_exist_for_every_service(lab: DNSLab) -> None:
    await lab.client.create(service("web"))
    await lab.settle(lambda s: s.service("default", "web") is not None)
    with trio.fail_after(10):
        while b"\x03web\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01" not in lab.dns.resolver.answers:
            await trio.lowlevel.checkpoint()  # the preparation slices run on the next scheduler turns


def _key(name: str, qtype: int) -> bytes:
    return qname_wire(name) + struct.pack("!HH", qtype, 1)


async def _prepared(lab: DNSLab, *keys: bytes) -> None:
    with trio.fail_after(10):
        while any(k not in lab.dns.resolver.answers for k in keys):
            await trio.lowlevel.checkpoint()  # the preparation slices run on the next scheduler turns


async def test_a_change_keeps_the_prepared_answers_of_other_services(lab: DNSLab) -> None:
    web = await lab.client.create(service("web"))
    await lab.client.create(service("db"))
    await lab.client.create(service("hl", cluster_ip="None"))
    await lab.client.create(endpoint_slice("hl", endpoints=[ep("10.244.1.5")]))
    await lab.settle(lambda s: s.service("default", "hl") is not None and len(s.service("default", "hl").endpoints) == 1)
    web_a, web_aaaa, db_srv, hl_a = (_key(f"web.default.svc.{Z}", 1), _key(f"web.default.svc.{Z}", 28),
                                     _key(f"db.default.svc.{Z}", 33), _key(f"hl.default.svc.{Z}", 1))
    await _prepared(lab, web_a, web_aaaa, db_srv, hl_a)
    before = dict(lab.dns.resolver.answers)

    # db gets another port, hl another endpoint: their answers are made again, web's positive one is kept.
    await lab.client.patch("Service", "db", {"spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                                                {"name": "grpc", "port": 9090, "protocol": "TCP"}]}},
                           "default")
    await lab.client.patch("EndpointSlice", "hl-abc", {"endpoints": [ep("10.244.1.5"), ep("10.244.2.6")]}, "default")
    await lab.settle(lambda s: len(s.service("default", "db").ports) == 2 and len(s.service("default", "hl").endpoints) == 2)
    await _prepared(lab, web_a, web_aaaa, db_srv, hl_a)
    answers = lab.dns.resolver.answers
    assert answers[web_a] is before[web_a]
    assert answers[web_aaaa] is not before[web_aaaa]  # NODATA carries the SOA (serial): never kept
    assert answers[db_srv] is not before[db_srv] and answers[hl_a] is not before[hl_a]
    assert sorted(rd.port for r in (await lab.query(f"db.default.svc.{Z}", "SRV")).answer for rd in r) == [80, 9090]
    assert sorted(rd.to_text() for r in (await lab.query(f"hl.default.svc.{Z}", "A")).answer
                  for rd in r) == ["10.244.1.5", "10.244.2.6"]
    assert [rd.to_text() for r in (await lab.query(f"web.default.svc.{Z}", "A")).answer
            for rd in r] == [web["spec"]["clusterIP"]]


async def test_metrics_coredns_names(lab: DNSLab) -> None:
    await lab.query(f"nope.default.svc.{Z}", "A")
    await lab.query(f"dns-version.{Z}", "TXT", tcp=True)
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{lab.dns.metrics_port}/metrics")).text
    assert 'coredns_dns_requests_total{family="1",proto="udp"' in text
    assert 'coredns_dns_responses_total{' in text and 'rcode="NXDOMAIN"' in text and 'rcode="NOERROR"' in text
    assert "coredns_dns_request_duration_seconds_bucket{" in text


def _worker_pids(port: int) -> list[int]:
    """PIDs of kmesh.dns.worker processes serving ``port`` (read from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"kmesh.dns.worker" in cmd and f"127.0.0.1:{port}".encode() in cmd:
                out.append(int(d.name))
    return out


async def test_reuseport_workers_answer_and_are_stopped(cluster: Cluster, nursery: trio.Nursery) -> None:
    svc = await cluster.client.create(service("web"))
    cfg = DNSConfig(listen=["127.0.0.1:0"], metrics_port=None, upstreams=[], workers=2, kubeconfig=str(cluster.kubeconfig))
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as n:
            running: RunningDNS = await n.start(run_dns, cluster.client, cfg)
            host, port = running.addresses[0]
            with trio.fail_after(20):
                while len(_worker_pids(port)) != 1:
                    await trio.sleep(0.05)  # a separate process: nothing to await but its appearance
            # Many source ports: the kernel spreads them over both sockets; every one gets the answer
            # (a worker still starting answers SERVFAIL, so ask until all agree).
            with trio.fail_after(20):
                while True:
                    answers = []
                    for _ in range(40):
                        msg = await dns.asyncquery.udp(dns.message.make_query(f"web.default.svc.{Z}", "A"), host, port=port, timeout=2)
                        answers.append([rd.to_text() for r in msg.answer for rd in r])
                    if all(a == [svc["spec"]["clusterIP"]] for a in answers):
                        break
                    await trio.sleep(0.1)
            scope.cancel()
    with trio.fail_after(10):
        while _worker_pids(port):
            await trio.sleep(0.05)


async def test_dropped_glue_is_not_truncation(lab: DNSLab) -> None:
    await many_endpoints(lab, 7)
    msg = await lab.query(f"_p._tcp.big.default.svc.{Z}", "SRV")  # 7 SRV fit in 512 bytes; not all their glue
    assert not msg.flags & dns.flags.TC and len(msg.to_wire()) <= 512
    assert len(msg.answer[0]) == 7 and 0 < sum(len(r) for r in msg.additional) < 7
    msg = await lab.query(f"_p._tcp.big.default.svc.{Z}", "SRV", tcp=True)
    assert sum(len(r) for r in msg.additional) == 7
