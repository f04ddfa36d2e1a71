"""``kmesh capture``: capture on pods, nodes and node interfaces of a netns lab at once, into one pcapng.

This is the lab's side: it turns each TARGET into capture points named after
their place in the lab, with the functions ``kmesh link`` finds its targets
with (``open_lab``, ``resolve_target``): a pod (``[NS/]NAME``) is its
``eth0`` (``web-abc/eth0``; ``NS/NAME/eth0`` when two pods of different
namespaces share the name, or a pod is named like a node), a node is every
interface of its namespace that is up except ``lo`` (``node-1/eth0``,
``node-1/cni0``, ``node-1/flannel.1``, its pods' veths), ``NODE/IFACE`` one
interface of a node. ``kmesh.packet.capture`` does the capturing, the file
and the lines.

Every check comes before anything is opened: a bad target, filter or file
is a ``CaptureUsage`` naming the argument (exit 2), no lab a ``NoLab``
(exit 1), and neither leaves a file behind. SIGINT (Ctrl-C) and SIGTERM end
a capture as ``--duration`` and ``--count`` do: the frames seen until then
are written, the file is complete, the counts are printed.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kmesh.lab.datadir import DataDir
from kmesh.lab.links import LinkLab, LinkUsage, NoLab, open_lab, resolve_target
from kmesh.net import netns
from kmesh.packet.sniff import LINKTYPE_ETHERNET, Point, SniffError, compile_filter, interfaces

console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CaptureUsage(ValueError):
    """Bad input; ``param`` names the argument (``TARGET``, ``--filter``, ``-w``, ``--data-dir``)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(f"{param}: {message}")
        self.message = message
        self.param = param


@dataclass(frozen=True)
class _Place:
    """A resolved target before its label is chosen: a pod's eth0, or a node's interface."""

    kind: str  # pod | iface
    ns: str  # the pod's namespace (pod)
    name: str  # the pod's name, or the node's
    netns: str
    device: str


def open_capture_lab(dd: DataDir) -> LinkLab:
    """The netns lab running in ``dd`` (as ``kmesh link`` opens it); ``NoLab``, or ``CaptureUsage`` naming
    ``--data-dir`` for a lab of another runtime."""
    try:
        return open_lab(dd, "kmesh capture", "interfaces")
    except LinkUsage as exc:
        raise CaptureUsage(exc.message, exc.param) from None


def _devices(ns: str) -> list[str]:
    """Every device of a namespace, up or not."""
    return [str(link["ifname"]) for link in json.loads(netns.ip(ns, "-j", "link", "show") or "[]")]


def _pod(lab: LinkLab, text: str) -> _Place:
    try:
        t = resolve_target(lab, text, "capture")
    except LinkUsage as exc:
        raise CaptureUsage(exc.message, "TARGET") from None
    if t.kind == "node":
        return _Place("node", "", t.node, t.ends.netns, "")
    ns, _, name = t.name.rpartition("/")
    return _Place("pod", ns, name, t.ends.netns, t.ends.device)


def _resolve_one(lab: LinkLab, text: str) -> list[_Place]:
    head, slash, tail = text.partition("/")
    if slash and head in lab.nodes and "/" not in tail and tail:
        ns = lab.node_target(head).ends.netns
        devices = _devices(ns)
        if tail in devices:
            return [_Place("iface", "", head, ns, tail)]
        try:  # a Kubernetes namespace named like a node: NS/POD
            return [_pod(lab, text)]
        except CaptureUsage:
            raise CaptureUsage(f"node {head} has no interface {tail!r} (its interfaces: "
                               f"{', '.join(d for d in devices if d != 'lo')})", "TARGET") from None
    place = _pod(lab, text)
    if place.kind == "node":
        return [_Place("iface", "", place.name, place.netns, d) for d in interfaces(place.netns)]
    return [place]


def resolve_points(lab: LinkLab, targets: list[str]) -> list[Point]:
    """The capture points of TARGETs, each named after its place in the lab, each once, in the given order."""
    places: list[_Place] = []
    for text in targets:
        try:
            places += _resolve_one(lab, text)
        except netns.NetnsError as exc:
            raise CaptureUsage(f"{text!r}: {exc}", "TARGET") from None
    pods = [p for p in places if p.kind == "pod"]
    points: list[Point] = []
    seen: set[tuple[str, str]] = set()
    for p in places:
        if (p.netns, p.device) in seen:
            continue
        seen.add((p.netns, p.device))
        if p.kind == "iface":
            label = f"{p.name}/{p.device}"
        else:
            shared = any(q.name == p.name and q.ns != p.ns for q in pods) or p.name in lab.nodes
            label = f"{p.ns}/{p.name}/{p.device}" if shared else f"{p.name}/{p.device}"
        points.append(Point(label, p.netns, p.device))
    return points


# ---------------------------------------------------------------------------------------------- running


def _line(frame: Any, width: int) -> Text:
    from kmesh.packet.capture import summary

    when, label, direction, what = summary(frame)
    line = Text()
    line.append(when, style="dim")
    line.append(f" {label:<{width}} ", style="cyan")
    line.append(f"{direction:<3} ", style="green" if direction == "in" else "yellow")
    line.append(what)
    return line


def run_capture(lab: LinkLab, points: list[Point], bpf: str | None, out: Path | None, count: int | None,
                duration: float | None, json_out: bool) -> dict[str, Any]:
    """Capture until Ctrl-C, ``duration`` or ``count``; the summary (also ``--json``'s document)."""
    import trio

    from kmesh.packet.capture import Capture, PcapngWriter
    from kmesh.packet.sniff import Sniffer

    try:
        sniffer = Sniffer(points, bpf)
    except SniffError as exc:
        msg = str(exc)
        if msg.startswith("--filter"):
            raise CaptureUsage(msg.removeprefix("--filter "), "--filter") from None
        raise
    with sniffer:
        f = None
        if out is not None:
            try:
                f = open(out, "wb")  # after every check: a bad target or filter leaves no file behind
            except OSError as exc:
                raise CaptureUsage(f"cannot write {out}: {exc.strerror or exc}", "-w") from None
        try:
            writer = PcapngWriter(f, sniffer.linktypes) if f is not None else None
            width = max(len(p.label) for p in points)

            def emit(frame: Any) -> None:
                if writer is not None:
                    writer.write(frame)
                if out is None and not json_out:
                    console.print(_line(frame, width))

            cap = Capture(sniffer, emit, count=count, duration=duration,
                          flush=writer.flush if writer is not None else None)

            async def main() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    where = f" → {out}" if out is not None else ""
                    ends = [f"{count} packets" if count else "", f"{duration:g} s" if duration else "", "Ctrl-C"]
                    err.print(f"capturing on {len(points)} interface{'s' if len(points) != 1 else ''}{where} "
                              f"(until {' or '.join(e for e in ends if e)})", highlight=False)
                    async with trio.open_nursery() as nursery:
                        async def watch() -> None:
                            async for _ in signals:
                                cap.stop()
                                return

                        nursery.start_soon(watch)
                        await cap.run()
                        nursery.cancel_scope.cancel()

            trio.run(main)
        finally:
            if f is not None:
                f.close()
    return {
        "lab": lab.info.name,
        "file": str(out) if out is not None else None,
        "filter": bpf,
        "packets": {p.label: cap.counts.get(p, 0) for p in points},
        "total": cap.total,
        "duration": round((cap.ended_ns - cap.started_ns) / 1e9, 3),
        "stoppedBy": {"stopped": "signal"}.get(cap.reason, cap.reason),
        "interfaces": [{"label": p.label, "netns": p.netns, "device": p.device,
                        "linktype": sniffer.linktypes.get(p)} for p in points],
    }


# ---------------------------------------------------------------------------------------------- the command


@click.command("capture", context_settings={"help_option_names": ["-h", "--help"]},
               short_help="Capture on pods, nodes and interfaces at once into one pcapng.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="The lab's data dir (default /var/lib/kmesh as root, else ~/.local/share/kmesh).")
@click.argument("targets", metavar="TARGET...", nargs=-1, required=True)
@click.option("-w", "write", type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="FILE",
              help="Write the packets to this pcapng file (one interface per capture point) instead of "
                   "printing a line per packet.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Stop after this many seconds.")
@click.option("--filter", "bpf", default=None, metavar="BPF",
              help="Only packets matching this tcpdump filter expression (e.g. 'tcp port 80 or udp port 8472').")
@click.option("--count", type=click.IntRange(min=1), default=None, metavar="N", help="Stop after N packets.")
@click.option("--json", "json_out", is_flag=True,
              help="Print a JSON summary at the end (file, packets per interface, duration) and no packet lines.")
def capture(data_dir: Path | None, targets: tuple[str, ...], write: Path | None, duration: float | None,
            bpf: str | None, count: int | None, json_out: bool) -> None:
    """Capture on every TARGET at once: a pod ([NAMESPACE/]POD: its eth0), a node (every interface of it
    that is up but lo) or NODE/IFACE.

    With -w, one pcapng whose interfaces are named after their place in the lab (node-1/flannel.1,
    node-1/eth0, web-abc/eth0), so Wireshark shows a packet crossing each hop; without, a line per packet
    (VXLAN decoded: outer addresses, VNI, inner packet). Ctrl-C, --duration or --count ends it; the file
    is complete and the packets per interface are printed."""
    from kmesh.lab.datadir import default_data_dir

    if bpf is not None:  # checked before the lab is looked at; raw-IP devices are checked when opened
        if shutil.which("tcpdump") is None:
            raise click.ClickException("--filter needs tcpdump to compile the expression (apt package tcpdump)")
        try:
            compile_filter(bpf, LINKTYPE_ETHERNET)
        except SniffError as exc:
            raise click.BadParameter(str(exc).removeprefix("--filter "), param_hint="--filter") from None
    dd = DataDir((data_dir or default_data_dir()).expanduser().absolute())
    try:
        lab = open_capture_lab(dd)
        points = resolve_points(lab, list(targets))
        result = run_capture(lab, points, bpf, write, count, duration, json_out)
    except CaptureUsage as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param) from None
    except NoLab as exc:
        raise click.ClickException(str(exc)) from None
    except (SniffError, netns.NetnsError) as exc:
        raise click.ClickException(str(exc)) from None
    except BrokenPipeError:  # `kmesh capture ... | head`: the reader is gone, the file (if any) is closed
        sys.stderr.close()
        raise SystemExit(0) from None
    if json_out:
        click.echo(json.dumps(result, indent=2))
        return
    t = Table("INTERFACE", "PACKETS")
    for label, n in result["packets"].items():
        t.add_row(label, str(n))
    console.print(t)
    why = {"signal": "interrupted", "duration": "duration reached", "count": "count reached"}.get(
        result["stoppedBy"], result["stoppedBy"])
    saved = f", written to {result['file']}" if result["file"] else ""
    console.print(f"{result['total']} packets in {result['duration']:.1f} s ({why}){saved}")
