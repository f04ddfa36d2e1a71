"""Who answers ARP for an address: scapy's ``srp`` run inside a namespace, as ``arping`` would from that machine."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kmesh.net import netns

if TYPE_CHECKING:
    from tests.e2e.labdriver import Lab

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


def listed(lab: "Lab", svc: str) -> dict[str, Any] | None:
    """cluster.json's loadBalancers entry of ``default/<svc>``."""
    info = json.loads(lab.dd.cluster_json.read_text())
    return (info.get("loadBalancers") or {}).get(f"default/{svc}")


def answering(lab: "Lab", ip: str, nodes: list[str]) -> set[str]:
    """The names of ``nodes`` whose MAC answers ARP for ``ip`` on the underlay (unknown MACs as they are)."""
    macs = {mac_of(lab.names.node(n), "eth0"): n for n in nodes}
    got = arp_answers(lab.names.underlay, ip, "br0")
    return {macs.get(m, m) for m in got}


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` (state in a file, the kernel or another process: nothing to await) until truthy."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def curl(url: str, seconds: float = 5) -> subprocess.CompletedProcess[str]:
    """curl from this machine (no proxy from the environment), giving up after ``seconds``."""
    return subprocess.run(["curl", "-s", "-m", str(seconds), "--noproxy", "*", url], capture_output=True, text=True,
                          timeout=30)
