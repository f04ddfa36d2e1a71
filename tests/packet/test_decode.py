"""Frames as a trace reads them: scapy-built Ethernet, VXLAN on flannel's port 8472, ICMP errors, raw IP."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from kmesh.packet.decode import decode
from kmesh.packet.sniff import LINKTYPE_RAW


def test_plain_tcp_syn() -> None:
    frame = bytes(Ether() / IP(src="10.244.1.4", dst="10.96.0.10") / TCP(sport=40002, dport=80, flags="S"))
    d = decode(frame)
    assert d.vxlan is None and d.flow is not None
    assert (d.flow.src, d.flow.dst, d.flow.proto, d.flow.sport, d.flow.dport, d.flow.flags) == (
        "10.244.1.4", "10.96.0.10", "tcp", 40002, 80, "S")
    assert d.text() == "10.244.1.4:40002 → 10.96.0.10:80 TCP SYN"


def test_vxlan_on_flannels_port() -> None:
    inner = Ether() / IP(src="10.244.1.4", dst="10.244.0.3") / TCP(sport=40002, dport=8080, flags="SA")
    frame = bytes(Ether() / IP(src="192.168.56.11", dst="192.168.56.12") / UDP(sport=51000, dport=8472)
                  / VXLAN(vni=1, flags=0x08) / inner)
    d = decode(frame)
    assert d.vxlan is not None and (d.vxlan.vni, d.vxlan.src, d.vxlan.dst, d.vxlan.dport) == (
        1, "192.168.56.11", "192.168.56.12", 8472)
    assert d.flow is not None and (d.flow.src, d.flow.dport, d.flow.flags) == ("10.244.1.4", 8080, "SA")
    assert d.text().startswith("VXLAN VNI 1 192.168.56.11 → 192.168.56.12:8472: 10.244.1.4:40002")


def test_icmp_error_quotes_the_probe() -> None:
    probe = IP(src="10.244.1.4", dst="10.96.5.5") / TCP(sport=40002, dport=80, flags="S")
    frame = bytes(Ether() / IP(src="10.244.1.1", dst="10.244.1.4") / ICMP(type=3, code=3) / bytes(probe)[:28])
    d = decode(frame)
    assert d.flow is not None and d.flow.proto == "icmp" and d.flow.icmp == "destination unreachable (port unreachable)"
    assert d.flow.quoted is not None and (d.flow.quoted.sport, d.flow.quoted.dst) == (40002, "10.96.5.5")


def test_raw_ip_and_not_ip() -> None:
    d = decode(bytes(IP(src="1.2.3.4", dst="5.6.7.8") / UDP(sport=1, dport=2)), LINKTYPE_RAW)
    assert d.flow is not None and (d.flow.proto, d.flow.sport, d.flow.dport) == ("udp", 1, 2)
    arp = decode(bytes(Ether(type=0x0806) / (b"\x00" * 28)))
    assert arp.flow is None and arp.other


def test_flannel_udp_backend() -> None:
    inner = IP(src="10.244.1.4", dst="10.244.0.3") / TCP(sport=40002, dport=8080, flags="S")
    frame = bytes(Ether() / IP(src="192.168.56.11", dst="192.168.56.12") / UDP(sport=8285, dport=8285) / inner)
    d = decode(frame)
    assert d.vxlan is not None and d.vxlan.kind == "udp" and d.vxlan.dst == "192.168.56.12"
    assert d.flow is not None and (d.flow.src, d.flow.dport, d.flow.flags) == ("10.244.1.4", 8080, "S")
    assert d.text().startswith("flannel UDP 192.168.56.11 → 192.168.56.12:8285: 10.244.1.4:40002")
