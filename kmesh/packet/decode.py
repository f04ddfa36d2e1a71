"""A captured frame read by scapy: the flow it carries (for ``kmesh trace``), or one line (``kmesh capture``).

``decode`` reduces a frame to its innermost IPv4 flow (addresses, ports, TCP
flags, an ICMP error's quoted packet) and the VXLAN header around it;
``describe`` writes the tcpdump-like line of a live capture. VXLAN is decoded on UDP 8472 (flannel's and Linux's port) as well
as on IANA's 4789, which scapy knows already.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import bind_layers

from kmesh.packet.sniff import LINKTYPE_ETHERNET, LINKTYPE_RAW

FLANNEL_VXLAN_PORT = 8472
FLANNEL_UDP_PORT = 8285  # flannel's udp backend: the inner IP packet is the datagram's payload
VXLAN_PORTS = (FLANNEL_VXLAN_PORT, 4789)  # flannel's (the Linux default), the IANA one
bind_layers(UDP, VXLAN, dport=FLANNEL_VXLAN_PORT)

ICMP_ERRORS = {3: "destination unreachable", 11: "time exceeded"}
UNREACHABLE = {0: "net unreachable", 1: "host unreachable", 3: "port unreachable", 9: "net prohibited",
               10: "host prohibited", 13: "administratively prohibited"}


@dataclass(frozen=True)
class Flow:
    """The IPv4 header and L4 ports of one packet (for an ICMP error, ``quoted`` is the packet it answers)."""

    src: str
    dst: str
    proto: str  # tcp | udp | icmp | ip
    sport: int = 0
    dport: int = 0
    flags: str = ""  # TCP flags as scapy spells them: S, SA, R, RA, PA, F...
    icmp: str = ""  # "destination unreachable (port unreachable)"
    quoted: Flow | None = None
    length: int = 0

    def text(self) -> str:
        """``10.244.1.4:40002 → 10.96.0.10:80 TCP SYN``."""
        if self.proto == "icmp":
            q = f" for {self.quoted.text()}" if self.quoted else ""
            return f"{self.src} → {self.dst} ICMP {self.icmp}{q}"
        if self.proto in ("tcp", "udp"):
            flags = f" {_flag_words(self.flags)}" if self.proto == "tcp" else ""
            return f"{self.src}:{self.sport} → {self.dst}:{self.dport} {self.proto.upper()}{flags}"
        return f"{self.src} → {self.dst} IP"

    def to_json(self) -> dict[str, object]:
        """The JSON form."""
        out: dict[str, object] = {"src": self.src, "dst": self.dst, "proto": self.proto}
        if self.proto in ("tcp", "udp"):
            out |= {"sport": self.sport, "dport": self.dport}
        if self.flags:
            out["flags"] = self.flags
        if self.icmp:
            out["icmp"] = self.icmp
        if self.quoted:
            out["quoted"] = self.quoted.to_json()
        return out


@dataclass(frozen=True)
class Vxlan:
    """The outer headers of an encapsulated frame: VXLAN, or flannel's udp backend (``kind`` "udp", no VNI)."""

    vni: int
    src: str
    dst: str
    sport: int
    dport: int
    kind: str = "vxlan"

    def text(self) -> str:
        """``VXLAN VNI 1 192.168.56.11 → 192.168.56.12:8472`` (``flannel UDP 192.168.56.11 → …:8285``)."""
        if self.kind == "udp":
            return f"flannel UDP {self.src} → {self.dst}:{self.dport}"
        return f"VXLAN VNI {self.vni} {self.src} → {self.dst}:{self.dport}"

    def to_json(self) -> dict[str, object]:
        """The JSON form."""
        out: dict[str, object] = {"vni": self.vni, "src": self.src, "dst": self.dst, "sport": self.sport,
                                  "dport": self.dport}
        if self.kind != "vxlan":
            out = {"kind": self.kind, **{k: v for k, v in out.items() if k != "vni"}}
        return out


@dataclass(frozen=True)
class Decoded:
    """A frame's innermost IPv4 flow and, if it was encapsulated, the VXLAN around it."""

    flow: Flow | None
    vxlan: Vxlan | None = None
    other: str = ""  # what it was when not IPv4 (ARP, IPv6...), as scapy summarises it

    def text(self) -> str:
        """One line: the VXLAN header, then the flow inside."""
        inner = self.flow.text() if self.flow else self.other
        return f"{self.vxlan.text()}: {inner}" if self.vxlan else inner


_FLAG_WORDS = {"S": "SYN", "A": "ACK", "F": "FIN", "R": "RST", "P": "PSH", "U": "URG", "E": "ECE", "C": "CWR"}


def _flag_words(flags: str) -> str:
    return "-".join(_FLAG_WORDS.get(f, f) for f in flags)


def _l4(ip: IP, tcp: type, udp: type) -> tuple[str, int, int, str]:
    if ip.haslayer(tcp):
        t = ip[tcp]
        return "tcp", int(t.sport), int(t.dport), str(t.flags)
    if ip.haslayer(udp):
        u = ip[udp]
        return "udp", int(u.sport), int(u.dport), ""
    return "ip", 0, 0, ""


def flow_of(ip: IP) -> Flow:
    """The flow of an IPv4 packet as scapy parsed it (the outer one, if it carries more)."""
    if ip.proto == 1 and ip.haslayer(ICMP):
        icmp = ip[ICMP]
        what = ICMP_ERRORS.get(int(icmp.type), f"type {int(icmp.type)}")
        if int(icmp.type) == 3:
            what += f" ({UNREACHABLE.get(int(icmp.code), f'code {int(icmp.code)}')})"
        elif int(icmp.type) == 8:
            what = "echo request"
        elif int(icmp.type) == 0:
            what = "echo reply"
        quoted = None
        if icmp.haslayer(IPerror):
            q = icmp[IPerror]
            proto, sport, dport, flags = _l4(q, TCPerror, UDPerror)
            quoted = Flow(str(q.src), str(q.dst), proto, sport, dport, flags)
        return Flow(str(ip.src), str(ip.dst), "icmp", icmp=what, quoted=quoted, length=int(ip.len or 0))
    proto, sport, dport, flags = _l4(ip, TCP, UDP)
    return Flow(str(ip.src), str(ip.dst), proto, sport, dport, flags, length=int(ip.len or 0))


def decode(data: bytes, linktype: int = LINKTYPE_ETHERNET) -> Decoded:
    """What a captured frame carries."""
    pkt = Ether(data) if linktype == LINKTYPE_ETHERNET else IP(data)
    if not pkt.haslayer(IP):
        return Decoded(None, other=pkt.summary())
    outer = pkt[IP]
    if outer.haslayer(UDP) and FLANNEL_UDP_PORT in (int(outer[UDP].sport), int(outer[UDP].dport)):
        u = outer[UDP]
        inner_ip = IP(bytes(u.payload))
        return Decoded(flow_of(inner_ip), Vxlan(0, str(outer.src), str(outer.dst), int(u.sport), int(u.dport), "udp"))
    if outer.haslayer(VXLAN) and outer.haslayer(UDP):
        vx = outer[VXLAN]
        inner = vx.payload
        if inner.haslayer(IP):
            u = outer[UDP]
            tunnel = Vxlan(int(vx.vni), str(outer.src), str(outer.dst), int(u.sport), int(u.dport))
            return Decoded(flow_of(inner[IP]), tunnel)
    return Decoded(flow_of(outer))


# ---------------------------------------------------------------------------------------------- summary lines


def _l4_line(ip: object, src: str, dst: str) -> str:
    from scapy.layers.inet import ICMP, TCP, UDP

    seg = getattr(ip, "payload", None)
    if isinstance(seg, TCP):
        flags = str(seg.flags) or "."
        size = len(bytes(seg.payload))
        ack = f" ack {seg.ack}" if "A" in flags else ""
        return f"TCP {src}:{seg.sport} > {dst}:{seg.dport} [{flags}] seq {seg.seq}{ack} len {size}"
    if isinstance(seg, UDP):
        return f"UDP {src}:{seg.sport} > {dst}:{seg.dport} len {max(int(seg.len or 8) - 8, 0)}"
    if isinstance(seg, ICMP):
        what = seg.sprintf("%ICMP.type%")
        extra = f" id {seg.id} seq {seg.seq}" if seg.type in (0, 8) else ""
        return f"ICMP {src} > {dst} {what}{extra}"
    if seg is not None and seg.name not in ("Raw", "NoPayload", "Padding"):
        return f"{seg.name} {src} > {dst}"
    proto = getattr(ip, "proto", getattr(ip, "nh", "?"))
    return f"IP {src} > {dst} proto {proto}"


def _describe(pkt: object) -> str:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP
    from scapy.layers.vxlan import VXLAN

    if VXLAN in pkt and UDP in pkt:  # type: ignore[operator]
        udp, vx = pkt[UDP], pkt[VXLAN]  # type: ignore[index]
        outer = udp.underlayer
        inner = _describe(vx.payload)
        return (f"VXLAN {outer.src}:{udp.sport} > {outer.dst}:{udp.dport} vni {vx.vni} | {inner}")
    for kind in (IP, IPv6):
        if kind in pkt:  # type: ignore[operator]
            ip = pkt[kind]  # type: ignore[index]
            return _l4_line(ip, ip.src, ip.dst)
    if ARP in pkt:  # type: ignore[operator]
        arp = pkt[ARP]  # type: ignore[index]
        if arp.op == 1:
            return f"ARP who-has {arp.pdst} tell {arp.psrc}"
        return f"ARP {arp.psrc} is-at {arp.hwsrc}"
    summary: str = pkt.summary()  # type: ignore[attr-defined]
    return summary


_BOUND = {8472, 4789}


def describe(data: bytes, linktype: int = LINKTYPE_ETHERNET, vxlan_ports: Iterable[int] = VXLAN_PORTS) -> str:
    """One line for a frame, decoded by scapy, ports and addresses as numbers; VXLAN (on ``vxlan_ports``)
    as its outer addresses, VNI and the inner packet's line."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN
    from scapy.packet import bind_layers

    for port in vxlan_ports:  # scapy knows 8472 and 4789 already; a lab on another port is decoded too
        if port not in _BOUND:
            bind_layers(UDP, VXLAN, dport=port)
            _BOUND.add(port)
    try:
        pkt = Ether(data) if linktype == LINKTYPE_ETHERNET else IP(data) if linktype == LINKTYPE_RAW else None
        if pkt is None:
            return f"link type {linktype}, {len(data)} bytes"
        return _describe(pkt)
    except Exception as exc:  # a malformed frame is still a line, not a crash
        return f"{len(data)} bytes (not decoded: {exc})"
