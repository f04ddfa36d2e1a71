"""Who answers ARP for an address: scapy's ``srp`` run inside a namespace, as ``arping`` would from that machine."""

from __future__ import annotations

import subprocess
import sys

from kmesh.net import netns

# Every answer within the window is collected (multi=True), so two nodes answering shows as two MACs.
_SCRIPT = """
import sys
from scapy.all import ARP, Ether, conf, srp
conf.verb = 0
ans, _ = srp(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=sys.argv[1]), iface=sys.argv[2], timeout=float(sys.argv[3]),
             multi=True)
print(" ".join(sorted({r[ARP].hwsrc for _, r in ans if r[ARP].op == 2 and r[ARP].psrc == sys.argv[1]})))
"""


def arp_answers(ns: str, ip: str, iface: str, window: float = 1.0) -> set[str]:
    """The MACs that answer an ARP request for ``ip`` sent on ``iface`` inside namespace ``ns``."""
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", _SCRIPT, ip, iface, str(window)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def mac_of(ns: str, iface: str) -> str:
    """The MAC address of ``iface`` in namespace ``ns``."""
    line = netns.ip(ns, "-o", "link", "show", iface)
    return line.split("link/ether ", 1)[1].split()[0]
