"""Rule tracing on real netfilter: the trace table, ``nft monitor trace`` and its markers, iptables' own lines.

Each test makes a veth pair between two throwaway namespaces, puts rules in
one of them (iptables through the nft backend, and an nftables table of its
own), sends real packets across and reads what the kernel's trace said.
"""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest
import trio

from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from kmesh.packet import nftrace
from tests.conftest import require, require_binary
from tests.support.vethpair import veth_pair

pytestmark = pytest.mark.netns

SAMPLE = [
    'trace id 8f63ae3a ip nat KUBE-SERVICES rule meta l4proto tcp ip daddr 10.100.212.112  tcp dport 80 counter '
    'packets 2 bytes 120 jump KUBE-SVC-LOLE4ISW44XBNF3G # handle 87 (verdict jump KUBE-SVC-LOLE4ISW44XBNF3G)',
    'trace id 8f63ae3a ip nat KUBE-SEP-4BF5YOXF4CNSHTIN rule meta l4proto tcp   counter packets 1 bytes 60 dnat to '
    '10.244.0.3:8080 # handle 96 (verdict accept)',
    'trace id 02f30847 ip nat PREROUTING policy accept ',
    'trace id 9e75e36f ip kmesh-trace pre packet: iif "cni0" ip saddr 10.244.1.4 ip daddr 10.100.212.112 tcp sport '
    '40002 tcp dport 80 tcp flags == syn',
    'trace id 9e75e36f inet kmesh-netpol ing-2 rule counter packets 3 bytes 180 drop comment "shop/web-1 ingress: no '
    'policy allows it" # handle 7 (verdict drop)',
]


def test_parse_line() -> None:
    a, b, c, d, e = (nftrace.parse_line("ns", line) for line in SAMPLE)
    assert a is not None and (a.table, a.chain, a.kind, a.handle) == ("nat", "KUBE-SERVICES", "rule", 87)
    assert a.verdict == "jump KUBE-SVC-LOLE4ISW44XBNF3G"
    assert a.text == "meta l4proto tcp ip daddr 10.100.212.112 tcp dport 80 jump KUBE-SVC-LOLE4ISW44XBNF3G"
    assert b is not None and b.text.endswith("dnat to 10.244.0.3:8080") and b.verdict == "accept"
    assert c is not None and (c.kind, c.verdict, c.text) == ("policy", "accept", "")
    assert d is not None and d.kind == "packet" and "tcp sport 40002" in d.text
    # the NetworkPolicy agent's table is in the inet family (kmesh trace names its drops)
    assert e is not None and (e.table, e.chain, e.verdict) == ("kmesh-netpol", "ing-2", "drop")
    assert 'comment "shop/web-1 ingress: no policy allows it"' in e.text
    assert nftrace.parse_line("ns", "trace id 1 ip6 filter INPUT policy accept") is None
    assert nftrace.parse_line("ns", "something else") is None


def _setup(a: str) -> None:
    """iptables rules (a comment, a jump, an accept) and an nftables table with a set in namespace ``a``."""
    for rule in (["-N", "KMESH-TEST"],
                 ["-A", "INPUT", "-p", "tcp", "--dport", "7777", "-m", "comment", "--comment", "to the test chain",
                  "-j", "KMESH-TEST"],
                 ["-A", "KMESH-TEST", "-p", "tcp", "-m", "comment", "--comment", "refused here", "-j", "REJECT",
                  "--reject-with", "tcp-reset"]):
        subprocess.run(netns.nsenter_argv(a, ["iptables", *rule]), check=True, capture_output=True)


def _connect(ns: str, ip: str, port: int, sport: int) -> str:
    def go() -> str:
        with socket.socket() as s:
            s.bind(("0.0.0.0", sport))
            s.settimeout(2)
            try:
                s.connect((ip, port))
            except ConnectionRefusedError:
                return "refused"
            return "connected"

    return netns.call_in(ns, go)


async def test_trace_a_probe_through_iptables_rules() -> None:
    require(netns_usable(), "root and network namespaces")
    require_binary("nft")
    require_binary("iptables")
    with veth_pair("kmtnft-", "10.77.0.1/24", "10.77.0.2/24") as (a, b):
        netns.ip(a, "link", "set", "lo", "up")
        netns.ip(b, "link", "set", "lo", "up")
        _setup(b)
        sport, marker = 45123, 61999
        nftrace.arm(b, f"tcp sport {sport}\ntcp dport {sport}", marker)
        mon = nftrace.Monitor(b, marker)
        async with trio.open_nursery() as nursery:
            await nursery.start(mon.read)
            await mon.marker()
            outcome = await trio.to_thread.run_sync(_connect, a, "10.77.0.2", 7777, sport)
            await mon.marker()
            nursery.cancel_scope.cancel()
        nftrace.disarm(b)
        assert outcome == "refused"
        nftrace.annotate(mon.events)
        rules = [e for e in mon.events if e.kind == "rule"]
        # the packet met the jump and the REJECT, in that order, with iptables' own text and comments
        jump = next(e for e in rules if e.chain == "INPUT")
        reject = next(e for e in rules if e.chain == "KMESH-TEST")
        assert rules.index(jump) < rules.index(reject)
        assert jump.verdict == "jump KMESH-TEST" and '--comment "to the test chain"' in jump.iptables
        assert reject.iptables.startswith("-A KMESH-TEST") and "REJECT" in reject.iptables
        assert "reject" in reject.text
        # only the probe was traced (the marker is not reported), and the table is gone
        assert all(f"sport {sport}" in e.packet or f"dport {sport}" in e.packet for e in mon.events)
        tables = subprocess.run(netns.nsenter_argv(b, ["nft", "list", "tables"]), capture_output=True, text=True)
        assert nftrace.TABLE not in tables.stdout


def test_arm_refuses_bad_rules_and_changes_nothing() -> None:
    require(netns_usable(), "root and network namespaces")
    require(shutil.which("nft") is not None, "nft")
    with veth_pair("kmtnft-", "10.78.0.1/24", "10.78.0.2/24") as (a, _):
        with pytest.raises(nftrace.TraceError, match="refused"):
            nftrace.arm(a, "tcp sport notaport", 61998)
        tables = subprocess.run(netns.nsenter_argv(a, ["nft", "list", "tables"]), capture_output=True, text=True)
        assert nftrace.TABLE not in tables.stdout


def test_a_marker_is_known_by_its_sequence_number() -> None:
    # nft shows a payload's first 96 bits: the marker's 12 bytes carry the number, so a marker sent again and
    # read late is never taken for a later one
    line = ('trace id b698c1b9 ip kmesh-trace out packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 '
            "udp sport 61999 udp dport 61999 udp length 20 @th,64,96 0x6b6d74723030303030303032 ")
    assert nftrace.marker_seq(line) == 2
    assert nftrace.marker_seq(line.replace("0x6b6d7472", "0x6b6d6573")) is None  # another payload
    assert nftrace.marker_seq("trace id 1 ip filter INPUT rule accept") is None
