"""The capture writer and runner on real links: a veth pair between two test namespaces, a tun device.

The pcapng files are read back by scapy and by ``tcpdump -r``, the readers a
user would open them with. The ``kmesh capture`` checks that need no lab
(bad values, no lab) are here too; the lab's are in ``test_capture_lab.py``.
"""

from __future__ import annotations

import fcntl
import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from kmesh.packet.capture import Capture, PcapngWriter, summary
from kmesh.packet.decode import describe
from kmesh.packet.sniff import LINKTYPE_ETHERNET, LINKTYPE_RAW, Frame, Point, SniffError, Sniffer
from tests.conftest import require, require_binary
from tests.support.vethpair import veth_pair

KMESH = [sys.executable, "-m", "kmesh.cli"]
PREFIX = "kmtcap-"


def _ping(ns: str, ip: str, count: int = 3) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-W", "1", ip],
                   capture_output=True, timeout=30, check=True)


async def _capture_while(cap: Capture, action, *args) -> None:  # type: ignore[no-untyped-def]
    """Run ``cap`` while ``action(*args)`` runs in a thread; stop it after the action (and a moment)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cap.run)
        await trio.to_thread.run_sync(action, *args)
        await trio.sleep(0.2)
        cap.stop()


def _tcpdump(path: Path) -> list[str]:
    out = subprocess.run([require_binary("tcpdump"), "-r", str(path), "-nn"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.fixture
def pair():  # type: ignore[no-untyped-def]
    require(netns_usable(), "root and network namespaces")
    require_binary("ping")
    with veth_pair(PREFIX, "10.77.0.1/24", "10.77.0.2/24", a_dev="left", b_dev="right") as (a, b):
        yield a, b


def test_a_veth_pair_captured_on_both_ends_reads_back_in_scapy_and_tcpdump(pair: tuple[str, str],
                                                                            tmp_path: Path) -> None:
    from scapy.layers.inet import ICMP
    from scapy.utils import PcapNgReader

    a, b = pair
    pa, pb = Point("a/left", a, "left"), Point("b/right", b, "right")
    path = tmp_path / "pair.pcapng"
    with open(path, "wb") as f, Sniffer([pa, pb]) as sn:
        assert sn.linktypes == {pa: LINKTYPE_ETHERNET, pb: LINKTYPE_ETHERNET}
        w = PcapngWriter(f, sn.linktypes)
        cap = Capture(sn, w.write, flush=w.flush)
        trio.run(_capture_while, cap, _ping, a, "10.77.0.2")
    assert cap.reason == "stopped"
    # 3 requests and 3 replies cross both ends (plus ARP); each end saw what the other did
    assert cap.counts[pa] >= 6 and cap.counts[pb] >= 6

    with PcapNgReader(str(path)) as r:
        pkts = list(r)
        names = [i[2].get("name") for i in r.interfaces]
        assert [i[0] for i in r.interfaces] == [LINKTYPE_ETHERNET, LINKTYPE_ETHERNET]
        assert [i[2].get("tsresol") for i in r.interfaces] == [10**9, 10**9]
    assert names == [b"a/left", b"b/right"]
    echo = [p for p in pkts if ICMP in p]
    assert len(echo) >= 12
    on = {(p.sniffed_on, p[ICMP].type, p.direction) for p in echo}
    # a request leaves a's end (out) and arrives at b's (in); the reply the other way round
    assert {("a/left", 8, 2), ("b/right", 8, 1), ("b/right", 0, 2), ("a/left", 0, 1)} <= on
    times = [p.time for p in pkts]
    assert times == sorted(times)  # in the order they crossed, whichever end saw them

    lines = _tcpdump(path)
    assert sum("ICMP echo request" in line for line in lines) == 6
    assert sum("ICMP echo reply" in line for line in lines) == 6
    assert any("10.77.0.1 > 10.77.0.2" in line for line in lines)


def test_count_and_filter_end_and_select(pair: tuple[str, str], tmp_path: Path) -> None:
    a, b = pair
    pa = Point("a/left", a, "left")
    got: list[Frame] = []
    with Sniffer([pa], "icmp[icmptype] == icmp-echoreply") as sn:
        cap = Capture(sn, got.append, count=2)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cap.run)
                await trio.to_thread.run_sync(_ping, a, "10.77.0.2", 5)

        trio.run(main)
    assert cap.reason == "count" and cap.total == 2 and len(got) == 2
    assert all(f.direction == "in" and "ICMP 10.77.0.2 > 10.77.0.1 echo-reply" in describe(f.data) for f in got)


def test_duration_ends_a_quiet_capture(pair: tuple[str, str]) -> None:
    a, _ = pair
    with Sniffer([Point("a/left", a, "left")], "tcp port 9") as sn:
        cap = Capture(sn, lambda f: None, duration=0.3)
        trio.run(cap.run)
    assert cap.reason == "duration" and cap.total == 0
    assert cap.ended_ns - cap.started_ns >= 300_000_000


def test_a_bad_filter_is_refused_naming_it(pair: tuple[str, str]) -> None:
    a, _ = pair
    with pytest.raises(SniffError, match=r"--filter 'tcp port 8O'.*unknown port"):
        Sniffer([Point("a/left", a, "left")], "tcp port 8O")
    with pytest.raises(SniffError, match="a/nope"):
        Sniffer([Point("a/nope", a, "nope")])


TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000


def test_a_tun_device_is_raw_ip_next_to_an_ethernet_one(pair: tuple[str, str], tmp_path: Path) -> None:
    """A tun device (the udp backend's flannel0) gives raw IP. Alone, its interface is raw IP; next to an
    Ethernet one it gets a made-up Ethernet header, as libpcap reads no file whose interfaces differ in
    link type; scapy (like Wireshark) reads both kinds, tcpdump the second."""
    from scapy.layers.inet import ICMP, IP
    from scapy.utils import PcapNgReader

    a, _ = pair

    def open_tun() -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"tun7", IFF_TUN | IFF_NO_PI))
        return fd

    fd = netns.call_in(a, open_tun)
    mixed = tmp_path / "mixed.pcapng"
    try:
        netns.ip(a, "addr", "add", "10.78.0.1/24", "dev", "tun7")
        netns.ip(a, "link", "set", "tun7", "up")
        pt, pe = Point("a/tun7", a, "tun7"), Point("a/left", a, "left")
        path = tmp_path / "tun.pcapng"
        with open(path, "wb") as f, open(mixed, "wb") as m, Sniffer([pt, pe]) as sn:
            assert sn.linktypes == {pt: LINKTYPE_RAW, pe: LINKTYPE_ETHERNET}
            w = PcapngWriter(f, sn.linktypes)
            own = PcapngWriter(m, sn.linktypes, mixed=True)
            assert w.wrapped == {pt} and own.wrapped == set()
            lines: list[tuple[str, str, str, str]] = []

            def take(fr: Frame) -> None:
                w.write(fr)
                own.write(fr)
                lines.append(summary(fr))

            def pings() -> None:  # nobody answers on the tun: the requests are what it carries
                subprocess.run(["ip", "netns", "exec", a, "ping", "-n", "-c", "2", "-i", "0.05", "-W", "0.2",
                                "10.78.0.9"], capture_output=True, timeout=30)
                _ping(a, "10.77.0.2", 1)

            cap = Capture(sn, take)
            trio.run(_capture_while, cap, pings)
    finally:
        os.close(fd)
    assert cap.counts[pt] == 2
    assert [(lb, d) for _, lb, d, text in lines if "10.78.0.9 echo-request" in text] == [("a/tun7", "out")] * 2
    for file, first in ((mixed, LINKTYPE_RAW), (path, LINKTYPE_ETHERNET)):
        with PcapNgReader(str(file)) as r:
            pkts = list(r)
            assert [(i[0], i[2]["name"]) for i in r.interfaces] == [(first, b"a/tun7"), (LINKTYPE_ETHERNET, b"a/left")]
        tun = [p for p in pkts if p.sniffed_on == "a/tun7"]
        assert len(tun) == 2 and all(ICMP in p and p[IP].dst == "10.78.0.9" for p in tun)
        assert all(isinstance(p, IP) for p in tun) == (first == LINKTYPE_RAW)
    out = _tcpdump(path)
    assert sum("10.78.0.9: ICMP echo request" in line for line in out) == 2
    assert any("10.77.0.2: ICMP echo request" in line for line in out)


def test_writer_blocks_and_vxlan_lines() -> None:
    """Without a namespace: the blocks' layout (nanosecond stamps, direction flags) and VXLAN decoded."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN
    from scapy.utils import PcapNgReader

    inner = Ether() / IP(src="10.244.1.2", dst="10.244.2.3") / TCP(sport=40000, dport=8080, flags="S", seq=7)
    outer = (Ether() / IP(src="192.168.56.11", dst="192.168.56.12") / UDP(sport=51000, dport=8472)
             / VXLAN(vni=1) / inner)
    p = Point("node-1/eth0", "ns", "eth0")
    buf = io.BytesIO()
    w = PcapngWriter(buf, {p: LINKTYPE_ETHERNET})
    ts = 1_700_000_000_123_456_789
    w.write(Frame(p, ts, "out", LINKTYPE_ETHERNET, bytes(outer), len(outer)))
    raw = buf.getvalue()
    assert len(raw) % 4 == 0
    buf.seek(0)
    with PcapNgReader(buf) as r:
        (pkt,) = list(r)
    assert pkt.time == pytest.approx(ts / 1e9) and pkt.direction == 2 and pkt.sniffed_on == "node-1/eth0"
    assert str(pkt.time).replace(".", "").endswith("123456789")  # all nine digits kept

    line = describe(bytes(outer))
    assert line == ("VXLAN 192.168.56.11:51000 > 192.168.56.12:8472 vni 1 | "
                    "TCP 10.244.1.2:40000 > 10.244.2.3:8080 [S] seq 7 len 0")
    assert describe(bytes(inner[IP]), LINKTYPE_RAW).startswith("TCP 10.244.1.2:40000 > 10.244.2.3:8080 [S]")
    assert isinstance(describe(b"\x45", LINKTYPE_RAW), str)  # a malformed packet is a line, not a crash


# ---------------------------------------------------------------------------------------------- the command


def kmesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KMESH, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, words", [
    (("node-1", "--filter", "tcp port 8O"), "--filter"),
    (("node-1", "--count", "0"), "--count"),
    (("node-1", "--duration", "-1"), "--duration"),
    (("node-1", "--duration", "soon"), "--duration"),
    ((), "TARGET"),
])
def test_bad_values_are_refused_before_the_lab_is_looked_at(tmp_path: Path, args: tuple[str, ...],
                                                            words: str) -> None:
    require_binary("tcpdump")
    out = kmesh("capture", "--data-dir", str(tmp_path / "none"), "-w", str(tmp_path / "f.pcapng"), *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert words in out.stderr
    assert not (tmp_path / "none").exists() and not (tmp_path / "f.pcapng").exists()


def test_no_lab_is_exit_1_and_no_file(tmp_path: Path) -> None:
    out = kmesh("capture", "--data-dir", str(tmp_path / "none"), "node-1", "-w", str(tmp_path / "f.pcapng"))
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"no lab is running in {tmp_path / 'none'}" in out.stderr
    assert not (tmp_path / "f.pcapng").exists()
