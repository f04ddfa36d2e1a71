#!/usr/bin/env python3
"""What kmesh's NFQUEUE delayer sustains, as a share of the same veth without it.

Two namespaces joined by a veth; iperf3 from ``a`` to ``b``: TCP throughput
and small-datagram UDP (64-byte payloads, as fast as iperf3 sends them),
first bare (the anchor), then with what ``a`` sends queued, as it arrives in
``b`` (past the veth, as kmesh places its queues), to the delayer process (``kmesh link shaper``, as ``kmesh link set`` runs it) with
``--delay`` (default 1ms, so every packet takes the timer path). Prints
Gbit/s, UDP packets/s delivered and loss, and the share of the anchor. Every
namespace and process it made is removed at the end, also on Ctrl-C or an
error.

Needs root and iperf3. Run: ``.venv/bin/python benchmarks/link_delayer.py [--time 5] [--delay 1ms]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import trio
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from kmesh.packet.delayer import write_json
from kmesh.packet.linkspec import LinkSpec
from tests.support.vethpair import veth_pair

console = Console()
QUEUE = 4200
B_IP = "10.98.0.2"


async def iperf(a: str, b: str, seconds: float, udp: bool) -> dict:
    """One iperf3 run from ``a`` to ``b``; its JSON ``end``."""
    server = await trio.lowlevel.open_process(netns.nsenter_argv(b, ["iperf3", "-s", "-1", "-B", B_IP]),
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        argv = ["iperf3", "-c", B_IP, "-t", str(seconds), "-J"] + (["-u", "-b", "0", "-l", "64"] if udp else [])
        for _ in range(50):
            proc = await netns.run(a, argv, check=False)
            out = json.loads(proc.stdout or b"{}")
            if proc.returncode == 0 and "error" not in out:
                return out["end"]
            await trio.sleep(0.1)
        raise RuntimeError(f"iperf3 failed: {out.get('error')}")
    finally:
        if server.returncode is None:
            server.kill()
        await server.wait()


async def measure(a: str, b: str, seconds: float) -> tuple[float, float, float]:
    """(TCP Gbit/s, UDP packets/s delivered, UDP loss %)."""
    tcp = await iperf(a, b, seconds, udp=False)
    udp = await iperf(a, b, seconds, udp=True)
    s = udp["sum"]
    return (tcp["sum_received"]["bits_per_second"] / 1e9,
            (s["packets"] - s["lost_packets"]) / s["seconds"], s["lost_percent"])


async def main(seconds: float, delay: str) -> int:
    if not netns_usable():
        console.print("needs root and network namespaces")
        return 1
    shaper = None
    with veth_pair("kmbd", "10.98.0.1/24", f"{B_IP}/24") as (a, b):
        try:
            bare = await measure(a, b, seconds)
            # Where kmesh queues: past the veth (the packet no longer counts against the sender's socket)
            rules = "\n".join(["*mangle", f"-A PREROUTING -i veth0 -j NFQUEUE --queue-num {QUEUE} --queue-bypass",
                               "COMMIT", ""])
            await netns.run(b, ["iptables-restore", "--noflush"], input=rules.encode())
            with tempfile.TemporaryDirectory() as tmp:
                config, status = Path(tmp) / "c.json", Path(tmp) / "s.json"
                write_json(config, {"generation": 1, "device": "veth0",
                                    "queues": {str(QUEUE): LinkSpec.parse(delay=delay).to_json()}})
                shaper = await trio.lowlevel.open_process(
                    netns.nsenter_argv(b, [sys.executable, "-m", "kmesh.cli", "link", "shaper", "--config", str(config),
                                           "--status", str(status)]), stdout=subprocess.PIPE)
                assert shaper.stdout is not None
                with trio.fail_after(30):
                    while b"shaper ready" not in await shaper.stdout.receive_some():
                        pass
                shaped = await measure(a, b, seconds)
                queues = json.loads(status.read_text()).get("queues", {})
        finally:
            if shaper is not None and shaper.returncode is None:
                shaper.terminate()
                with trio.move_on_after(10):
                    await shaper.wait()
                if shaper.returncode is None:
                    shaper.kill()
                    await shaper.wait()
    t = Table("path", "TCP Gbit/s", "UDP 64 B packets/s", "UDP loss")
    t.add_row("bare veth (anchor)", f"{bare[0]:.2f}", f"{bare[1]:,.0f}", f"{bare[2]:.1f} %")
    t.add_row(f"through the delayer ({delay})", f"{shaped[0]:.3f}", f"{shaped[1]:,.0f}", f"{shaped[2]:.1f} %")
    t.add_row("share of the anchor", f"{shaped[0] / bare[0]:.1%}", f"{shaped[1] / bare[1]:.1%}", "")
    console.print(t)
    console.print(f"delayer counters: {queues}", highlight=False)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--time", type=float, default=5.0, help="Seconds per iperf3 run.")
    p.add_argument("--delay", default="1ms", help="The delayer's delay.")
    args = p.parse_args()
    raise SystemExit(trio.run(main, args.time, args.delay))
