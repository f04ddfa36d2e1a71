"""Forwarding of non-cluster names to an upstream (a dnsmasq we start on loopback), its cache and the client ACL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import pytest
import trio

from tests.conftest import require_binary
from tests.dns.conftest import DNSLab, rcode_text, service, start_lab

Z = "cluster.local"


def _free_port() -> int:
    """A loopback port free for UDP and TCP right now (a server we start may still lose a race: we retry)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


async def _start_dnsmasq(tmp_path: Path) -> tuple[trio.Process, int]:
    dnsmasq = require_binary("dnsmasq")
    for _ in range(5):
        port = _free_port()
        proc = await trio.lowlevel.open_process(
            [dnsmasq, "-k", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
             "--no-hosts", "--host-record=example.test,192.0.2.7",
             "--ptr-record=9.2.0.192.in-addr.arpa,nine.example.test", "--local=/example.test/", "--local-ttl=60",
             f"--pid-file={tmp_path / 'dnsmasq.pid'}", "--log-facility=/dev/null", "--user=root"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        with trio.fail_after(10):
            while proc.poll() is None:  # dnsmasq tells nobody when it is ready: ask it
                try:
                    r = await trio.to_thread.run_sync(
                        lambda p=port: dns.query.udp(dns.message.make_query("example.test", "A"), "127.0.0.1", port=p, timeout=0.2))
                    if r.answer:
                        return proc, port
                except (dns.exception.Timeout, OSError):
                    pass
        await proc.wait()  # exited (its port was taken meanwhile): try another
    raise AssertionError("dnsmasq did not start")


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[int]:
    """dnsmasq on a loopback port knowing a few outside names; stopped by its PID."""
    proc, port = await _start_dnsmasq(tmp_path)
    try:
        yield port
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        with trio.move_on_after(5) as slow:
            await proc.wait()
        if slow.cancelled_caught:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


async def test_outside_names_are_forwarded_and_cached(nursery: trio.Nursery, tmp_path: Path, upstream: int) -> None:
    lab = await start_lab(nursery, tmp_path, upstreams=[f"127.0.0.1:{upstream}"])
    await lab.settle(lambda s: True)
    for tcp in (False, True):
        msg = await lab.query("Example.TEST", "A", tcp=tcp)
        assert rcode_text(msg) == "NOERROR"
        assert [(r.name.to_text(), rd.to_text()) for r in msg.answer for rd in r] == [("Example.TEST.", "192.0.2.7")]
    fwd = lab.dns.resolver.forwarder
    assert fwd is not None and fwd.hits >= 1  # the second ask came from the cache
    assert rcode_text(await lab.query("nothere.example.test", "A")) == "NXDOMAIN"
    msg = await lab.query("9.2.0.192.in-addr.arpa", "PTR")  # reverse names that are not ours fall through
    assert [rd.to_text() for r in msg.answer for rd in r] == ["nine.example.test."]
    await lab.client.aclose()


async def test_external_name_target_resolved_upstream(nursery: trio.Nursery, tmp_path: Path, upstream: int) -> None:
    lab = await start_lab(nursery, tmp_path, upstreams=[f"127.0.0.1:{upstream}"])
    await lab.client.create(service("ext", external="example.test"))
    await lab.settle(lambda s: s.service("default", "ext") is not None)
    for tcp in (False, True):
        msg = await lab.query(f"ext.default.svc.{Z}", "A", tcp=tcp)
        assert [(r.name.to_text(), rd.to_text()) for r in msg.answer for rd in r] == [
            (f"ext.default.svc.{Z}.", "example.test."), ("example.test.", "192.0.2.7")]
        assert msg.flags & dns.flags.AA
    await lab.client.aclose()


async def test_clients_outside_allowed_networks_are_refused(nursery: trio.Nursery, tmp_path: Path, upstream: int) -> None:
    lab = await start_lab(nursery, tmp_path, upstreams=[f"127.0.0.1:{upstream}"], allowed_networks=["10.0.0.0/8"])
    await lab.client.create(service("web"))
    await lab.settle(lambda s: s.service("default", "web") is not None)
    assert rcode_text(await lab.query("example.test", "A")) == "REFUSED"
    assert len((await lab.query(f"web.default.svc.{Z}", "A")).answer) == 1  # cluster names: answered to anyone
    await lab.client.aclose()


async def test_dead_upstream_gives_servfail(nursery: trio.Nursery, tmp_path: Path) -> None:
    lab = await start_lab(nursery, tmp_path, upstreams=[f"127.0.0.1:{_free_port()}"], forward_timeout=0.3)
    await lab.settle(lambda s: True)
    assert rcode_text(await lab.query("example.test", "A")) == "SERVFAIL"
    await lab.client.aclose()


async def test_lab_fixture_refuses_outside_names_without_upstreams(lab: DNSLab) -> None:
    assert rcode_text(await lab.query("example.test", "A", tcp=True)) == "REFUSED"


async def test_refused_client_does_not_poison_external_name_answers(nursery: trio.Nursery, tmp_path: Path, upstream: int) -> None:
    lab = await start_lab(nursery, tmp_path, upstreams=[f"127.0.0.1:{upstream}"])
    await lab.client.create(service("ext", external="example.test"))
    await lab.settle(lambda s: s.service("default", "ext") is not None)
    resolver = lab.dns.resolver
    q = dns.message.make_query(f"ext.default.svc.{Z}", "A")
    out = resolver.handle(q.to_wire(), "192.0.2.99", False)  # not an allowed client: CNAME only
    assert isinstance(out, bytes) and len(dns.message.from_wire(out).answer) == 1
    msg = await lab.query(f"ext.default.svc.{Z}", "A")  # an allowed client still gets the target's records
    assert [rd.to_text() for r in msg.answer for rd in r] == ["example.test.", "192.0.2.7"]
    await lab.client.aclose()
