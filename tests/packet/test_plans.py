"""What kmesh asks of tc and iptables for a link's rules, and the nfnetlink_queue messages, without a kernel."""

from __future__ import annotations

import socket
import struct

from kmesh.packet import nfqueue
from kmesh.packet.linkspec import LinkSpec
from kmesh.packet.shaping import (
    CHAIN,
    CHAIN_PRE,
    QUEUE_BASE,
    ChainRule,
    Rule,
    assign_queues,
    chain_clear_text,
    chain_text,
    entries,
    parse_chain,
    tc_plan,
)

N2 = ("192.168.56.12", "10.244.2.0/24")
N3 = ("192.168.56.13", "10.244.3.0/24")


def spec(**kw: str) -> LinkSpec:
    return LinkSpec.parse(**kw)


def test_rate_alone_is_a_root_tbf_on_each_end() -> None:
    rules = [Rule(None, spec(rate="10mbit"))]
    for inside in (True, False):
        assert tc_plan("eth0", rules, inside=inside, netem=False) == [
            ["qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "tbf", "rate", "10000000bit", "burst", "15000",
             "latency", "100ms"]]


def test_delay_is_netem_where_the_kernel_has_it_else_no_tc_at_all() -> None:
    rules = [Rule(None, spec(delay="50ms", jitter="5ms", loss="1%", rate="1gbit"))]
    assert tc_plan("eth0", rules, inside=True, netem=True) == [
        ["qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "netem", "delay", "50000us", "5000us", "loss", "1%"],
        ["qdisc", "add", "dev", "eth0", "parent", "1:1", "handle", "10:", "tbf", "rate", "1000000000bit",
         "burst", "1250000", "latency", "100ms"]]
    assert tc_plan("eth0", [Rule(None, spec(delay="50ms"))], inside=True, netem=False) == []
    no_netem = tc_plan("eth0", rules, inside=True, netem=False)
    assert [c[7] for c in no_netem] == ["tbf"]


def test_a_peer_gets_an_htb_class_and_filters_on_its_addresses() -> None:
    rules = [Rule("node-2", spec(rate="10mbit"), N2)]
    inside = tc_plan("eth0", rules, inside=True, netem=False)
    assert inside[0] == ["qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "htb", "default", "0"]
    assert inside[1][:9] == ["class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb"]
    assert [c[-5:] for c in inside[2:]] == [["ip", "dst", "192.168.56.12", "flowid", "1:10"],
                                           ["ip", "dst", "10.244.2.0/24", "flowid", "1:10"]]
    outside = tc_plan("node-1", rules, inside=False, netem=False)
    assert [c[-4] for c in outside if c[0] == "filter"] == ["src", "src"]


def test_a_peer_rule_takes_its_peer_out_of_the_general_rate() -> None:
    rules = [Rule(None, spec(rate="100mbit")), Rule("node-2", spec(delay="50ms"), N2)]
    plan = tc_plan("eth0", rules, inside=True, netem=False)
    assert plan[0][-2:] == ["default", "10"]  # the general class is the default
    assert [c[7] for c in plan if c[0] == "class"] == ["1:10"]
    assert {c[-1] for c in plan if c[0] == "filter"} == {"1:"}  # node-2: htb's direct queue, unshaped
    netem = tc_plan("eth0", rules, inside=True, netem=True)  # with netem node-2 has a class of its own
    classes = {c[7]: c[c.index("rate") + 1] for c in netem if c[0] == "class"}
    assert classes == {"1:10": "100gbit", "1:11": "100000000bit"} and netem[0][-1] == "11"
    assert ["qdisc", "add", "dev", "eth0", "parent", "1:10", "handle", "10:", "netem", "delay", "50000us"] in netem
    assert {c[-1] for c in netem if c[0] == "filter"} == {"1:10"}


def test_chain_entries_queue_peers_first_and_exempt_peers_from_a_queued_general_rule() -> None:
    rules = [Rule(None, spec(delay="10ms")), Rule("node-3", spec(rate="1mbit"), N3), Rule("node-2", spec(loss="5%"), N2)]
    out = entries("node-1", "out", ("-m", "physdev", "--physdev-in", "node-1"), rules, netem=False)
    into = entries("node-1", "in", ("-m", "physdev", "--physdev-out", "node-1"), rules, netem=False)
    chain = out + into
    queues = assign_queues(chain, {})
    assert queues == {"node-1 out node-2": QUEUE_BASE, "node-1 out *": QUEUE_BASE + 1,
                      "node-1 in node-2": QUEUE_BASE + 2, "node-1 in *": QUEUE_BASE + 3}
    lines = chain_text(chain, queues).splitlines()
    assert lines[:5] == ["*mangle", f":{CHAIN} - [0:0]", f":{CHAIN_PRE} - [0:0]", f"-I POSTROUTING 1 -j {CHAIN}",
                         f"-I PREROUTING 1 -j {CHAIN_PRE}"]
    body = [line for line in lines if line.startswith("-A")]
    assert body[0] == (f'-A {CHAIN} -m physdev --physdev-in node-1 -d 192.168.56.12 -m comment --comment '
                       f'"kmesh link node-1 out to node-2" -j NFQUEUE --queue-num {QUEUE_BASE} --queue-bypass')
    assert [line.split(" -j ")[1] for line in body if "node-3" in line] == ["RETURN"] * 4
    assert body[8] == (f'-A {CHAIN} -m physdev --physdev-out node-1 -s 10.244.3.0/24 -m comment --comment '
                       '"kmesh link node-1 in to node-3" -j RETURN')
    assert body[-1] == (f'-A {CHAIN} -m physdev --physdev-out node-1 -m comment --comment "kmesh link node-1 in" '
                        f"-j NFQUEUE --queue-num {QUEUE_BASE + 3} --queue-bypass")
    there = [f"-A POSTROUTING -j {CHAIN}", f"-A PREROUTING -j {CHAIN_PRE}"]
    assert "-I " not in chain_text(chain, queues, jumps=there)
    assert entries("node-1", "out", ("-o", "eth0"), rules, netem=True) == []
    only_rate = entries("node-1", "out", ("-o", "eth0"), [Rule("node-3", spec(rate="1mbit"), N3)], netem=False)
    assert only_rate == []


def test_a_pods_way_out_is_queued_in_prerouting() -> None:
    rules = [Rule("node-2", spec(delay="5ms"), N2)]
    chain = entries("default/web", "out", ("-s", "10.244.1.5/32"), rules, netem=False, hook="pre")
    text = chain_text(chain, assign_queues(chain, {}))
    assert (f'-A {CHAIN_PRE} -s 10.244.1.5/32 -d 192.168.56.12 -m comment --comment "kmesh link default/web out to '
            f'node-2" -j NFQUEUE --queue-num {QUEUE_BASE} --queue-bypass') in text.splitlines()


def test_queues_keep_their_numbers_across_changes() -> None:
    rules = [Rule("node-2", spec(delay="1ms"), N2), Rule("node-3", spec(delay="2ms"), N3)]
    first = assign_queues(entries("p", "out", ("-o", "eth0"), rules, netem=False), {})
    assert first == {"p out node-2": QUEUE_BASE, "p out node-3": QUEUE_BASE + 1}
    again = assign_queues(entries("p", "out", ("-o", "eth0"), [rules[1], Rule(None, spec(delay="3ms"))],
                                  netem=False), first)
    assert again == {"p out node-3": QUEUE_BASE + 1, "p out *": QUEUE_BASE + 2}  # node-2's number: not yet
    assert assign_queues(entries("p", "out", ("-o", "eth0"), [Rule(None, spec(delay="3ms"))], netem=False),
                         {"p out node-3": QUEUE_BASE + 1, "p out *": QUEUE_BASE + 2}) == {"p out *": QUEUE_BASE + 2}


def test_the_chain_reads_back_from_iptables_save() -> None:
    save = "\n".join([
        "*mangle", ":POSTROUTING ACCEPT [0:0]", f":{CHAIN} - [0:0]", f"-A POSTROUTING -j {CHAIN}",
        f'-A {CHAIN} -d 192.168.56.12/32 -o eth0 -m comment --comment "kmesh link node-1 out to node-2" '
        "-j NFQUEUE --queue-num 4200 --queue-bypass",
        f'-A {CHAIN} -s 10.244.2.0/24 -d 10.244.1.5/32 -m comment --comment "kmesh link default/web in to node-2" '
        "-j RETURN",
        f'-A {CHAIN} -d 10.244.1.5/32 -m comment --comment "kmesh link default/web in" -j NFQUEUE --queue-num 4201 '
        "--queue-bypass",
        f'-A {CHAIN} -o eth0 -m comment --comment "someone else\'s" -j ACCEPT',
        "COMMIT"])
    rules, jumps = parse_chain(save)
    assert rules == [ChainRule("node-1", "out", "node-2", "192.168.56.12", 4200),
                     ChainRule("default/web", "in", "node-2", "10.244.2.0/24", None),
                     ChainRule("default/web", "in", None, None, 4201)]
    assert jumps == [f"-A POSTROUTING -j {CHAIN}"]
    assert chain_clear_text(jumps, [CHAIN]).splitlines() == ["*mangle", f"-D POSTROUTING -j {CHAIN}",
                                                             f":{CHAIN} - [0:0]", f"-X {CHAIN}", "COMMIT"]


def test_nfqueue_messages_have_the_kernels_layout() -> None:
    v = nfqueue.verdict(4200, 77, nfqueue.NF_DROP)
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", v)
    assert (length, mtype, flags) == (len(v), (3 << 8) | 1, 1) and len(v) == 32
    assert v[16:20] == bytes([socket.AF_UNSPEC, 0]) + struct.pack("!H", 4200)
    assert struct.unpack_from("=HH", v, 20) == (12, 2) and struct.unpack_from("!II", v, 24) == (0, 77)
    bind = nfqueue.bind_messages(7, 100, maxlen=4096)
    assert [struct.unpack_from("=IHHII", m)[3] for m in bind] == [100, 101, 102, 103]
    assert all(struct.unpack_from("=IHHII", m)[2] == 5 for m in bind)  # request + ack
    assert bind[0][20:28] == struct.pack("=HH", 8, 1) + struct.pack("!BxH", 1, socket.AF_INET)
    assert bind[1][20:29] == struct.pack("=HH", 9, 2) + struct.pack("!IB", 0, 1) and len(bind[1]) == 32


def test_nfqueue_packets_and_acks_parse() -> None:
    hdr = struct.pack("=HH", 11, 1) + struct.pack("!IHB", 99, 0x0800, 4) + b"\0"
    indev = struct.pack("=HH", 8, 5) + struct.pack("!I", 3)
    body = bytes([2, 0]) + struct.pack("!H", 4201) + hdr + indev
    packet = struct.pack("=IHHII", 16 + len(body), (3 << 8) | 0, 0, 0, 0) + body
    error = struct.pack("=IHHII", 36, 2, 0, 5, 0) + struct.pack("=i", -1) + b"\0" * 16
    got = list(nfqueue.parse(packet + error + b"\x01\x02"))  # a torn tail is ignored
    assert got == [nfqueue.Packet(4201, 99, 4, 3, 0), nfqueue.Ack(5, 1)]
