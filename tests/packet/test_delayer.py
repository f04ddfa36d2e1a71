"""kmesh's NFQUEUE delayer on a bare veth pair between two namespaces this test makes.

``a`` (10.99.0.1) and ``b`` (10.99.0.2) are joined by a veth; iptables queue
what a namespace sends out of its veth (mangle POSTROUTING, where kmesh
queues each direction of a link: where it leaves) to a delayer whose
netlink socket is opened inside that namespace. Ping from ``a`` measures:
the round trip rises by the delay once per queued direction, the loss is
within binomial bounds, and when the delayer ends (or its process, ``kmesh
link shaper``, is stopped) traffic flows unshaped through ``--queue-bypass``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from kmesh.packet import nfqueue
from kmesh.packet.delayer import Delayer, write_json
from kmesh.packet.linkspec import LinkSpec
from tests.conftest import require, require_binary
from tests.support.vethpair import veth_pair

pytestmark = pytest.mark.netns

QUEUE = 4200
B_IP = "10.99.0.2"


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    """Namespaces ``a`` and ``b`` joined by a veth (``veth0`` in each), removed however the test ends."""
    require(netns_usable(), "root and network namespaces")
    require_binary("iptables-restore")
    require_binary("ping")
    with veth_pair("kmdl", "10.99.0.1/24", f"{B_IP}/24") as (a, b):
        yield a, b


def queue_rules(ns: str) -> None:
    """What ``ns`` sends out of veth0 goes to QUEUE, bypassing it when no one listens."""
    text = f"*mangle\n-A POSTROUTING -o veth0 -j NFQUEUE --queue-num {QUEUE} --queue-bypass\nCOMMIT\n"
    subprocess.run(netns.nsenter_argv(ns, ["iptables-restore", "--noflush"]), input=text, text=True, check=True,
                   capture_output=True)


async def ping(ns: str, count: int, interval: float, *, wait: float = 2.0) -> tuple[int, float | None]:
    """(replies, average RTT in ms or None) of ``count`` pings from ``ns`` to B_IP."""
    proc = await trio.run_process(netns.nsenter_argv(ns, ["ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                                                          "-W", str(wait), B_IP]),
                                  capture_stdout=True, capture_stderr=True, check=False)
    out = proc.stdout.decode()
    received = int(re.search(r"(\d+) received", out).group(1))  # type: ignore[union-attr]
    avg = re.search(r"= [\d.]+/([\d.]+)/", out)
    return received, float(avg.group(1)) if avg else None


async def open_delayer(ns: str, nursery: trio.Nursery) -> Delayer:
    sock = netns.call_in(ns, nfqueue.open_socket)
    delayer = Delayer(sock)
    await nursery.start(delayer.run)
    return delayer


async def test_delay_adds_once_per_queued_direction(pair: tuple[str, str]) -> None:
    a, b = pair
    _, base = await ping(a, 10, 0.05)
    assert base is not None
    queue_rules(a)
    queue_rules(b)
    async with trio.open_nursery() as nursery:
        out, back = await open_delayer(a, nursery), await open_delayer(b, nursery)
        try:
            await out.configure({QUEUE: LinkSpec.parse(delay="30ms")})
            got, avg = await ping(a, 20, 0.05)  # b's queue has no listener yet: its packets bypass it
            assert got == 20 and avg is not None and abs(avg - (base + 30.0)) <= 10.0, (base, avg)
            await back.configure({QUEUE: LinkSpec.parse(delay="30ms")})
            got, avg = await ping(a, 20, 0.05)
            assert got == 20 and avg is not None and abs(avg - (base + 60.0)) <= 10.0, (base, avg)
            await out.configure({QUEUE: LinkSpec.parse(delay="10ms", jitter="5ms")})
            await back.configure({QUEUE: LinkSpec.parse(delay="10ms", jitter="5ms")})
            got, avg = await ping(a, 40, 0.02)
            assert got == 40 and avg is not None and abs(avg - (base + 20.0)) <= 10.0, (base, avg)
            assert out.stats[QUEUE].received >= 40 and out.stats[QUEUE].dropped == 0
        finally:
            for d in (out, back):
                await d.close()
            nursery.cancel_scope.cancel()
            for d in (out, back):
                d.sock.close()
    # nobody listens any more: the rules let everything through (--queue-bypass), undelayed
    got, avg = await ping(a, 5, 0.05)
    assert got == 5 and avg is not None and avg < base + 10.0


async def test_loss_is_within_binomial_bounds(pair: tuple[str, str]) -> None:
    from scipy.stats import binom

    a, _ = pair
    queue_rules(a)  # one direction: each echo request is lost with p = 0.3
    n, p = 400, 0.3
    async with trio.open_nursery() as nursery:
        delayer = await open_delayer(a, nursery)
        try:
            await delayer.configure({QUEUE: LinkSpec.parse(loss="30%")})
            got, _ = await ping(a, n, 0.005, wait=1.0)
            lo, hi = binom.interval(0.9999, n, p)
            assert lo <= n - got <= hi, f"lost {n - got} of {n}, expected {lo:.0f}..{hi:.0f}"
            assert delayer.stats[QUEUE].dropped == n - got
        finally:
            await delayer.close()
            nursery.cancel_scope.cancel()
            delayer.sock.close()


async def test_a_second_binder_is_refused(pair: tuple[str, str]) -> None:
    a, _ = pair
    async with trio.open_nursery() as nursery:
        first = await open_delayer(a, nursery)
        second = await open_delayer(a, nursery)
        try:
            await first.configure({QUEUE: LinkSpec.parse(delay="1ms")})
            with pytest.raises(nfqueue.NfQueueError, match="another process has bound this queue"):
                await second.configure({QUEUE: LinkSpec.parse(delay="1ms")})
            assert second.specs == {}
        finally:
            await first.close()
            nursery.cancel_scope.cancel()
            first.sock.close()
            second.sock.close()


async def read_until(proc: trio.Process, marker: bytes, log: Path | None = None) -> None:
    """Read the shaper's stdout until it says ``marker`` (``shaper ready``, ``generation N applied``)."""
    assert proc.stdout is not None
    seen = b""
    with trio.fail_after(30):
        while marker not in seen:
            chunk = await proc.stdout.receive_some()
            assert chunk, f"the shaper exited: {log.read_text() if log else ''}"
            seen += chunk


async def test_the_shaper_process_reloads_on_sighup_and_lets_traffic_flow_when_it_ends(
        pair: tuple[str, str], tmp_path: Path) -> None:
    a, _ = pair
    _, base = await ping(a, 10, 0.05)
    assert base is not None
    queue_rules(a)
    config, status = tmp_path / "shaper.json", tmp_path / "status.json"
    write_json(config, {"generation": 1, "device": "veth0",
                        "queues": {str(QUEUE): LinkSpec.parse(delay="25ms").to_json()}})
    argv = netns.nsenter_argv(a, [sys.executable, "-m", "kmesh.cli", "link", "shaper", "--config", str(config),
                                  "--status", str(status)])
    log = open(tmp_path / "shaper.log", "wb")
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=log)
    try:
        await read_until(proc, b"shaper ready", tmp_path / "shaper.log")
        got, avg = await ping(a, 10, 0.05)
        assert got == 10 and avg is not None and abs(avg - (base + 25.0)) <= 10.0, (base, avg)

        write_json(config, {"generation": 2, "device": "veth0",
                            "queues": {str(QUEUE): LinkSpec.parse(delay="5ms").to_json()}})
        proc.send_signal(signal.SIGHUP)
        await read_until(proc, b"generation 2 applied", tmp_path / "shaper.log")
        got, avg = await ping(a, 10, 0.05)
        assert got == 10 and avg is not None and abs(avg - (base + 5.0)) <= 10.0, (base, avg)
        assert json.loads(status.read_text())["queues"][str(QUEUE)]["received"] >= 10  # counted by the reload

        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await proc.wait() == 0, (tmp_path / "shaper.log").read_text()
        got, avg = await ping(a, 5, 0.05)
        assert got == 5 and avg is not None and avg < base + 10.0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()


async def test_the_shaper_ends_by_itself_when_its_device_goes(pair: tuple[str, str], tmp_path: Path) -> None:
    a, _ = pair
    config, status = tmp_path / "shaper.json", tmp_path / "status.json"
    write_json(config, {"generation": 1, "device": "veth0",
                        "queues": {str(QUEUE): LinkSpec.parse(delay="1ms").to_json()}})
    argv = netns.nsenter_argv(a, [sys.executable, "-m", "kmesh.cli", "link", "shaper", "--config", str(config),
                                  "--status", str(status)])
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        await read_until(proc, b"shaper ready")
        netns.ip(a, "link", "del", "veth0")  # as when a pod's veth is deleted with the pod
        with trio.fail_after(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert os.path.exists(status)
