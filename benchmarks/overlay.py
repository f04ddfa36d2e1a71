#!/usr/bin/env python3
"""Pod-to-pod TCP throughput through each flannel backend, as a share of the bare underlay.

Builds a 2-node namespace lab (tests/cni/topo.py: underlay bridge, node
namespaces with eth0, a pod behind each node's cni0) and runs iperf3 for:
bare (node1 eth0 -> node2 eth0, the anchor), host-gw, vxlan and udp (pod on
node1 -> pod on node2), all in the same run. Prints Gbit/s and the share of
bare; goals: host-gw >= 85 %, vxlan >= 70 % (udp is a Python forwarder:
educational, no goal). ``--plot FILE.png`` draws a bar chart. Every
namespace it made is removed at the end, also on Ctrl-C or an error.

Needs root and iperf3. Run: ``.venv/bin/python benchmarks/overlay.py [--time 5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import trio
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmesh.cni.backends import Backend, make_backend
from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from tests.cni.topo import NETWORK, Node, Topo

console = Console()
MODES = ("bare", "host-gw", "vxlan", "udp")
GOALS = {"host-gw": 0.85, "vxlan": 0.70}
PORT = 5201
STARTED: set[int] = set()  # PIDs of iperf3 servers we started and have not reaped yet


@dataclass
class Result:
    """One iperf3 run: mode, throughput and the pod MTU it ran with."""

    mode: str
    gbps: float
    mtu: int
    retransmits: int
    runs: tuple[float, ...] = ()


def combine(rounds: list[Result]) -> Result:
    """The median run of one mode over ``--repeat`` rounds (retransmits summed)."""
    first = rounds[0]
    gbps = statistics.median(r.gbps for r in rounds)
    return Result(first.mode, gbps, first.mtu, sum(r.retransmits for r in rounds), tuple(r.gbps for r in rounds))


async def iperf(client_ns: str, server_ns: str, server_ip: str, seconds: float) -> tuple[float, int]:
    """Run iperf3 server (one-off) in ``server_ns`` and the client in ``client_ns``; (Gbit/s received, retransmits)."""
    server = await trio.lowlevel.open_process(
        netns.nsenter_argv(server_ns, ["iperf3", "-s", "-1", "-B", server_ip, "-p", str(PORT)]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    STARTED.add(server.pid)
    try:
        argv = ["iperf3", "-c", server_ip, "-p", str(PORT), "-t", str(seconds), "-J"]
        for _ in range(50):  # the server needs a moment to listen
            proc = await netns.run(client_ns, argv, check=False)
            out = json.loads(proc.stdout or b"{}")
            if proc.returncode == 0 and "error" not in out:
                end = out["end"]
                return end["sum_received"]["bits_per_second"] / 1e9, int(end["sum_sent"].get("retransmits", 0))
            if "refused" not in str(out.get("error", "")):
                raise RuntimeError(f"iperf3 failed: {out.get('error') or proc.stderr.decode()}")
            await trio.sleep(0.1)
        raise RuntimeError("iperf3 server did not start")
    finally:
        if server.returncode is None:
            server.kill()  # only the server this function started
        with trio.CancelScope(shield=True):
            await server.wait()
        STARTED.discard(server.pid)


async def with_backend(topo: Topo, kind: str, seconds: float) -> Result:
    """Program both nodes with ``kind``, measure pod1 -> pod2, then remove what the backend made."""
    n1, n2 = topo.nodes
    backends: list[Backend] = []
    async with trio.open_nursery() as nursery:
        try:
            leases = {}
            mtu = 0
            for n in (n1, n2):
                b = make_backend(kind, netns=n.ns, iface="eth0", public_ip=n.ip, network=NETWORK)
                backends.append(b)
                leases[n.ns] = n.lease(kind, await b.prepare())
                mtu = await b.configure(leases[n.ns])
            pairs: list[tuple[Backend, Node]] = [(backends[0], n2), (backends[1], n1)]
            for b, other in pairs:
                await b.add_peer(leases[other.ns])
            for b in backends:
                nursery.start_soon(b.run)
            topo.set_pod_mtu(mtu)
            gbps, retr = await iperf(n1.pod_ns, n2.pod_ns, n2.pod_ip, seconds)
            return Result(kind, gbps, mtu, retr)
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                for b in backends:
                    await b.close()
                topo.set_pod_mtu(topo.underlay_mtu)


async def measure(topo: Topo, modes: list[str], seconds: float, repeat: int = 1) -> list[Result]:
    """Every mode in turn; SIGTERM stops it like Ctrl-C (cleanly, through every ``finally``)."""
    results: list[Result] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_sigterm, nursery.cancel_scope)
        results = await _measure(topo, modes, seconds, repeat)
        nursery.cancel_scope.cancel()
    if len(results) != len(modes):  # SIGTERM cancelled the run
        raise KeyboardInterrupt
    return results


async def _sigterm(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def _measure(topo: Topo, modes: list[str], seconds: float, repeat: int) -> list[Result]:
    """``repeat`` rounds of every mode in turn (interleaved, so machine noise hits all modes alike)."""
    runs: dict[str, list[Result]] = {m: [] for m in modes}
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as progress:
        overall = progress.add_task("overlay benchmark", total=len(modes) * repeat)
        for round_ in range(1, repeat + 1):
            for mode in modes:
                progress.update(overall, description=f"round {round_}/{repeat}: iperf3 {mode} ({seconds:g} s)")
                if mode == "bare":
                    n1, n2 = topo.nodes
                    gbps, retr = await iperf(n1.ns, n2.ns, n2.ip, seconds)
                    runs[mode].append(Result("bare", gbps, topo.underlay_mtu, retr))
                else:
                    runs[mode].append(await with_backend(topo, mode, seconds))
                progress.advance(overall)
    return [combine(runs[m]) for m in modes]


def report(results: list[Result]) -> None:
    """Print the table: Gbit/s and share of bare, against the goals."""
    bare = next((r.gbps for r in results if r.mode == "bare"), 0.0)
    repeat = max((len(r.runs) for r in results), default=1)
    title = "pod-to-pod TCP throughput (iperf3, 1 stream" + (f", median of {repeat} runs)" if repeat > 1 else ")")
    table = Table(title=title)
    for col in ("mode", "MTU", "Gbit/s", "min-max", "of bare", "goal", "retrans"):
        table.add_column(col, justify="left" if col == "mode" else "right", no_wrap=True)
    for r in results:
        share = r.gbps / bare if bare else 0.0
        goal = GOALS.get(r.mode)
        verdict = "" if goal is None else (f"[green]{goal:.0%} ok[/]" if share >= goal else f"[red]{goal:.0%} missed[/]")
        runs = f"{min(r.runs):.2f}-{max(r.runs):.2f}" if len(r.runs) > 1 else ""
        table.add_row(r.mode, str(r.mtu), f"{r.gbps:.2f}", runs, f"{share:.1%}" if r.mode != "bare" else "anchor", verdict,
                      str(r.retransmits))
    console.print(table)
    console.print(f"machine: {os.cpu_count()} CPUs (shared with whatever else runs); veth underlay, MTU as shown")


def plot(results: list[Result], path: Path) -> None:
    """Bar chart of Gbit/s per mode, with the share of bare on each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bare = next((r.gbps for r in results if r.mode == "bare"), 0.0)
    fig, ax = plt.subplots(figsize=(6, 4))
    bars = ax.bar([r.mode for r in results], [r.gbps for r in results], color=["grey", "tab:green", "tab:blue", "tab:orange"][: len(results)])
    for bar, r in zip(bars, results, strict=True):
        label = f"{r.gbps:.2f}" + (f"\n{r.gbps / bare:.0%}" if bare and r.mode != "bare" else "")
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=9)
    if bare:
        for mode, goal in GOALS.items():
            ax.axhline(bare * goal, linestyle="--", linewidth=0.8, color="black", alpha=0.5)
            ax.annotate(f"{mode} goal {goal:.0%}", (len(results) - 0.5, bare * goal), ha="right", va="bottom", fontsize=8)
        ax.set_ylim(0, bare * 1.15)
    ax.set_ylabel("Gbit/s (iperf3, 1 TCP stream)")
    ax.set_title("kmesh overlay backends vs bare underlay")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    console.print(f"plot written to {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time", "-t", type=float, default=5.0, help="seconds per iperf3 run (default 5)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--repeat", "-r", type=int, default=1, help="rounds of all modes; the median is reported")
    parser.add_argument("--plot", type=Path, help="write a bar chart to this PNG")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := [m for m in modes if m not in MODES]:
        parser.error(f"unknown modes: {', '.join(unknown)}")
    if not netns_usable():
        console.print("[red]needs root and network namespaces[/]")
        return 2
    if not shutil.which("iperf3"):
        console.print("[red]needs iperf3 (apt-get install iperf3)[/]")
        return 2

    topo = Topo(nodes_count=2)
    results: list[Result] = []
    try:
        topo.build()
        console.print(f"lab {topo.prefix}*: 2 nodes on a veth/bridge underlay, MTU {topo.underlay_mtu}")
        results = trio.run(measure, topo, modes, args.time, max(1, args.repeat))
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:  # Ctrl-C delivered inside a nursery
        interrupt, rest = group.split(KeyboardInterrupt)
        if rest is not None or interrupt is None:
            raise
    finally:
        for pid in list(STARTED):  # normally reaped already; only ever our own servers
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        topo.destroy()
        left = netns.names(topo.prefix)
        console.print(f"removed lab namespaces ({len(left)} left)")
    if not results:
        console.print("[yellow]interrupted; nothing measured[/]")
        return 130
    report(results)
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
