"""``kmesh.packet.shaping`` on a veth pair between two namespaces this test makes: tc and iptables applied,
read back, removed; link state; and the netem path where the kernel has netem."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from kmesh.packet import shaping
from kmesh.packet.linkspec import LinkSpec
from kmesh.packet.shaping import LinkEnds, Rule
from tests.conftest import require, require_binary
from tests.support.vethpair import veth_pair

pytestmark = pytest.mark.netns

PEER = ("10.99.0.2", "10.244.2.0/24")


@pytest.fixture
def ends() -> Iterator[LinkEnds]:
    """``a``'s veth0 (10.99.0.1) inside, ``b``'s veth0 (10.99.0.2) outside."""
    require(netns_usable(), "root and network namespaces")
    require_binary("tc")
    require_binary("iptables-restore")
    with veth_pair("kmsh", "10.99.0.1/24", "10.99.0.2/24", b_dev="peer0") as (a, b):
        yield LinkEnds(a, "veth0", b, "peer0")


def qdiscs(ns: str, dev: str) -> str:
    return subprocess.run(netns.nsenter_argv(ns, ["tc", "qdisc", "show", "dev", dev]), capture_output=True,
                          text=True, check=True).stdout


def test_the_netem_probe_touches_nothing_here() -> None:
    require(netns_usable(), "root and network namespaces")
    before = subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True).stdout
    assert isinstance(shaping.netem_available(), bool)
    assert subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True).stdout == before


def test_a_rate_is_tbf_on_both_ends_and_reads_back(ends: LinkEnds) -> None:
    shaping.apply_tc(ends, [Rule(None, LinkSpec.parse(rate="10mbit"))], netem=False)
    assert "tbf" in qdiscs(ends.netns, ends.device) and "tbf" in qdiscs(ends.outer_netns, ends.outer_device)
    reading = shaping.read_link(ends)
    assert set(reading.out) == set(reading.into) == {"*"}
    for d in (reading.out["*"], reading.into["*"]):
        assert (d.rate_bps, d.rate_by, d.delay_by) == (10_000_000, "tbf", "")
    shaping.apply_tc(ends, [], netem=False)
    assert "tbf" not in qdiscs(ends.netns, ends.device) and "tbf" not in qdiscs(ends.outer_netns, ends.outer_device)
    assert shaping.read_link(ends).out == {}


def test_peers_apart_are_htb_classes_read_back_per_address(ends: LinkEnds) -> None:
    rules = [Rule(None, LinkSpec.parse(rate="100mbit")), Rule("b", LinkSpec.parse(rate="5mbit"), PEER)]
    shaping.apply_tc(ends, rules, netem=False)
    reading = shaping.read_link(ends)
    for side in (reading.out, reading.into):
        assert {a: d.rate_bps for a, d in side.items()} == {"*": 100_000_000, "10.99.0.2": 5_000_000,
                                                            "10.244.2.0/24": 5_000_000}
        assert {d.rate_by for d in side.values()} == {"htb"}
    only_peer = [Rule("b", LinkSpec.parse(rate="5mbit"), PEER)]
    shaping.apply_tc(ends, only_peer, netem=False)
    assert set(shaping.read_link(ends).out) == {"10.99.0.2", "10.244.2.0/24"}
    exempt = [Rule(None, LinkSpec.parse(rate="100mbit")), Rule("b", LinkSpec.parse(delay="5ms"), PEER)]
    shaping.apply_tc(ends, exempt, netem=False)  # b's traffic goes to htb's direct queue: no rate
    out = shaping.read_link(ends).out
    assert out["*"].rate_bps == 100_000_000 and out["10.99.0.2"].rate_bps == 0 and out["10.244.2.0/24"].rate_by == ""


def test_the_chain_applies_reads_back_and_goes(ends: LinkEnds) -> None:
    rules = [Rule(None, LinkSpec.parse(delay="5ms")), Rule("b", LinkSpec.parse(loss="1%"), PEER)]
    chain = shaping.entries("a", "out", ("-o", ends.device), rules, netem=False)
    queues = shaping.assign_queues(chain, {})
    shaping.apply_chain(ends.netns, chain, queues)
    shaping.apply_chain(ends.netns, chain, queues)  # again: the jump is not doubled
    save = shaping.mangle_save(ends.netns)
    assert save.count(f"-j {shaping.CHAIN}\n") == 1 and save.count(f"-j {shaping.CHAIN_PRE}\n") == 1
    assert shaping.read_chain(ends.netns) == [
        shaping.ChainRule("a", "out", "b", "10.99.0.2", queues["a out b"]),
        shaping.ChainRule("a", "out", "b", "10.244.2.0/24", queues["a out b"]),
        shaping.ChainRule("a", "out", None, None, queues["a out *"])]
    shaping.apply_chain(ends.netns, [], {})
    assert "KMESH" not in shaping.mangle_save(ends.netns)
    shaping.apply_chain(ends.netns, [], {})  # nothing there: nothing to do
    assert shaping.read_chain("kmsh-no-such-namespace") == []


def test_link_state_and_the_veth_peer(ends: LinkEnds) -> None:
    assert shaping.veth_peer(ends.netns, ends.device, ends.outer_netns) == ends.outer_device
    assert shaping.link_state(ends.outer_netns, ends.outer_device) == "up"
    shaping.set_link_state(ends.outer_netns, ends.outer_device, False)
    assert shaping.link_state(ends.outer_netns, ends.outer_device) == "down"
    shaping.set_link_state(ends.outer_netns, ends.outer_device, True)
    assert shaping.link_state(ends.outer_netns, ends.outer_device) == "up"
    assert shaping.link_state(ends.outer_netns, "nothere0") == "gone"


def test_the_netem_path(ends: LinkEnds) -> None:
    if not shaping.netem_available():
        pytest.skip("this kernel has no netem (CONFIG_NET_SCH_NETEM is not set): no CI setting can give it one; "
                    "kmesh's delayer serves delay and loss here (test_delayer.py, test_link_lab.py)")
    spec = LinkSpec.parse(delay="30ms", jitter="1ms", loss="0.5%", rate="50mbit")
    base = _rtt(ends)
    shaping.apply_tc(ends, [Rule(None, spec)], netem=True)
    reading = shaping.read_link(ends)
    for d in (reading.out["*"], reading.into["*"]):
        assert (d.delay_ns, d.jitter_ns, d.loss, d.rate_bps) == (30_000_000, 1_000_000, 0.5, 50_000_000)
        assert (d.delay_by, d.rate_by) == (shaping.MECH_NETEM, "tbf")
    assert abs(_rtt(ends) - (base + 60.0)) <= 10.0
    peers = [Rule("b", LinkSpec.parse(delay="20ms"), PEER)]
    shaping.apply_tc(ends, peers, netem=True)
    reading = shaping.read_link(ends)
    assert reading.out["10.99.0.2"].delay_ns == 20_000_000 and reading.out["10.99.0.2"].delay_by == shaping.MECH_NETEM
    assert abs(_rtt(ends) - (base + 40.0)) <= 10.0


def _rtt(ends: LinkEnds) -> float:
    out = subprocess.run(netns.nsenter_argv(ends.netns, ["ping", "-n", "-q", "-c", "10", "-i", "0.05", "10.99.0.2"]),
                         capture_output=True, text=True).stdout
    m = re.search(r"= [\d.]+/([\d.]+)/", out)
    assert m, out
    return float(m.group(1))
