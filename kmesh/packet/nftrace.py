"""What the netfilter rules of a namespace did with a flow: nftables' rule tracing, armed and read back.

A table ``ip kmesh-trace`` with base chains on prerouting and output at
priority -350 (before conntrack and every NAT chain) sets ``meta nftrace``
on the packets of one flow; ``nft -a monitor trace`` in the namespace
prints every rule those packets met, in every table: kube-proxy's
iptables rules (iptables-nft keeps them in nftables tables ``ip nat``,
``ip filter``…, as Debian and Ubuntu do by default), its nftables table
``ip kube-proxy``, flannel's chains. Removing the table clears the flag
for good; nothing else is touched.

The monitor tells nothing when it is ready and buffers nothing, so kmesh
sends a marker datagram (127.0.0.1 to itself, from a port only the marker
rule traces) and waits for its trace: once the start marker is read the
monitor is listening, once the end marker is read every event before it has
been read too (one netlink socket keeps the kernel's order).

For rules of iptables-nft's tables the iptables text is looked up too
(``iptables-save``'s line in the same chain at the same position), so the
trace reads as the node's own iptables rules, comments included.

Written here rather than with a library: pyroute2 and python-nftables do
not decode trace events (``NFT_MSG_TRACE``); ``nft monitor trace`` does.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from kmesh.net import netns

TABLE = "kmesh-trace"
PRIORITY = -350
MARKER_PORT_BASE = 61000
IPTABLES_NFT_TABLES = ("raw", "mangle", "nat", "filter", "security")

_EVENT = re.compile(r"^trace id (?P<id>[0-9a-f]+) (?P<family>\w+) (?P<table>\S+) (?P<chain>\S+) (?P<kind>packet|rule|policy|verdict)\b:? ?(?P<rest>.*)$")
_HANDLE = re.compile(r"\s*# handle (\d+)")
_VERDICT = re.compile(r"\s*\(verdict ([^)]*)\)\s*$")
_COUNTER = re.compile(r"\s*counter packets \d+ bytes \d+")


class TraceError(RuntimeError):
    """Tracing could not be armed or read (no nft, a namespace gone)."""


@dataclass
class TraceEvent:
    """One line of ``nft monitor trace``: a packet seen by a base chain, a rule it matched, a chain's policy."""

    netns: str
    trace_id: str
    table: str  # "nat", "kube-proxy"
    chain: str
    kind: str  # packet | rule | policy
    text: str  # the rule (counters removed) or the packet's fields
    handle: int | None = None
    verdict: str = ""
    iptables: str = ""  # the iptables-save line, for iptables-nft's tables
    packet: str = ""  # the fields of the packet this event is about (its trace's last "packet:" line)
    leg: str = ""  # there | back: whether that packet was the probe or the answer (set by the trace)

    def to_json(self) -> dict[str, object]:
        """The JSON form."""
        out: dict[str, object] = {"table": self.table, "chain": self.chain, "kind": self.kind, "rule": self.text,
                                  "verdict": self.verdict}
        if self.iptables:
            out["iptables"] = self.iptables
        if self.leg:
            out["leg"] = self.leg
        return out


def parse_line(ns: str, line: str) -> TraceEvent | None:
    """One event from a line of ``nft -a monitor trace`` output; None for anything else."""
    m = _EVENT.match(line.rstrip("\n"))
    if not m or m["family"] not in ("ip", "inet"):  # inet: the NetworkPolicy table (kmesh.policy)
        return None
    rest = m["rest"].strip()
    verdict = ""
    if v := _VERDICT.search(rest):
        verdict = v.group(1).strip()
        rest = rest[:v.start()]
    handle = None
    if h := _HANDLE.search(rest):
        handle = int(h.group(1))
        rest = rest[:h.start()] + rest[h.end():]
    if m["kind"] == "policy":
        verdict, rest = rest, ""
    rest = " ".join(_COUNTER.sub("", rest).split())
    return TraceEvent(ns, m["id"], m["table"], m["chain"], m["kind"], rest, handle, verdict)


def ruleset(match: str, marker_port: int) -> str:
    """The ``nft -f`` text of the trace table: ``match`` lines (nft rule bodies) traced in prerouting and
    output, and the marker."""
    lines = "".join(f"    {m} meta nftrace set 1\n" for m in match.splitlines() if m.strip())
    return (f"table ip {TABLE} {{\n"
            f"  chain pre {{\n    type filter hook prerouting priority {PRIORITY};\n{lines}  }}\n"
            f"  chain out {{\n    type filter hook output priority {PRIORITY};\n{lines}"
            f"    udp sport {marker_port} udp dport {marker_port} meta nftrace set 1\n  }}\n"
            "}\n")


def _nft() -> str:
    nft = shutil.which("nft")
    if nft is None:
        raise TraceError("nft not found (apt package nftables): kmesh trace reads the kernel's rule tracing with it")
    return nft


def disarm(ns: str) -> None:
    """Remove the trace table from namespace ``ns`` (nothing if it is not there)."""
    subprocess.run(netns.nsenter_argv(ns, [_nft(), "delete", "table", "ip", TABLE]), capture_output=True, check=False)


def _send_marker(ns: str, port: int, seq: int) -> None:
    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.sendto(b"kmtr%08d" % (seq % 10**8), ("127.0.0.1", port))  # 12 bytes: nft shows a payload's first 96 bits

    netns.call_in(ns, send)


_MARKER_PAYLOAD = re.compile(r"@th,64,\d+ 0x([0-9a-f]+)")


def marker_seq(text: str) -> int | None:
    """The sequence number a marker datagram carries, from its trace line (its payload, in hex), if any."""
    m = _MARKER_PAYLOAD.search(text)
    if not m:
        return None
    try:
        payload = bytes.fromhex(m.group(1) if len(m.group(1)) % 2 == 0 else "0" + m.group(1))
    except ValueError:
        return None
    if not payload.startswith(b"kmtr"):
        return None
    try:
        return int(payload[4:12])
    except ValueError:
        return None


@dataclass
class Monitor:
    """``nft monitor trace`` in one namespace, with its events as read so far."""

    ns: str
    marker_port: int
    events: list[TraceEvent] = field(default_factory=list)
    _proc: trio.Process | None = None
    _markers: int = 0  # the highest marker sequence number read
    _sent: int = 0
    _seen: trio.Event = field(default_factory=trio.Event)
    _last_packet: dict[str, str] = field(default_factory=dict)

    def _feed(self, line: str) -> None:
        ev = parse_line(self.ns, line)
        if ev is None:
            return
        if ev.table == TABLE:
            if ev.kind == "packet" and f"udp sport {self.marker_port} " in ev.text + " ":
                seq = marker_seq(ev.text)
                if seq is not None and seq > self._markers:
                    self._markers = seq
                    self._seen.set()
                    self._seen = trio.Event()
            return
        if ev.kind == "packet":
            self._last_packet[ev.trace_id] = ev.text
            return
        ev.packet = self._last_packet.get(ev.trace_id, "")
        if f"udp sport {self.marker_port} " in ev.packet + " ":
            return  # the marker on its way through the other tables
        self.events.append(ev)

    async def read(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the monitor until cancelled."""
        argv = netns.nsenter_argv(self.ns, [_nft(), "-a", "monitor", "trace"])
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(_run_process, argv)
            self._proc = proc
            task_status.started()
            buf = b""
            assert proc.stdout is not None
            while True:
                chunk = await proc.stdout.receive_some(65536)
                if not chunk:
                    raise TraceError(f"nft monitor trace in {self.ns} ended")
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._feed(line.decode(errors="replace"))

    async def marker(self, timeout: float = 5.0) -> None:
        """Send a marker and wait until the monitor has read it (and so everything before it).

        Each marker carries a sequence number: one sent again (the first may go out before the monitor
        listens) and read late cannot be taken for a later call's marker."""
        with trio.move_on_after(timeout) as scope:
            while True:  # a marker sent before the monitor listened is lost: send again
                self._sent += 1
                want = self._sent
                await trio.to_thread.run_sync(_send_marker, self.ns, self.marker_port, want)
                with trio.move_on_after(0.5):
                    while self._markers < want:
                        await self._seen.wait()
                if self._markers >= want:
                    break
        if scope.cancelled_caught:
            raise TraceError(f"nft monitor trace in {self.ns} did not report the marker within {timeout:.0f} s")


async def _run_process(argv: list[str], task_status: trio.TaskStatus[trio.Process]) -> None:
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                            stdin=subprocess.DEVNULL)
    try:
        task_status.started(proc)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()


def arm(ns: str, match: str, marker_port: int) -> None:
    """Put the trace table in namespace ``ns``; ``TraceError`` if nft refuses it."""
    disarm(ns)
    proc = subprocess.run(netns.nsenter_argv(ns, [_nft(), "-f", "-"]), input=ruleset(match, marker_port),
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise TraceError(f"nft refused the trace table in {ns}: {proc.stderr.strip()}")


def iptables_lines(ns: str, tables: Iterable[str]) -> dict[tuple[str, str, int], str]:
    """(table, chain, handle) → ``iptables-save`` line, for iptables-nft's tables of namespace ``ns``."""
    out: dict[tuple[str, str, int], str] = {}
    nft, save = shutil.which("nft"), shutil.which("iptables-save")
    if nft is None or save is None:
        return out
    for table in tables:
        if table not in IPTABLES_NFT_TABLES:
            continue
        listing = subprocess.run(netns.nsenter_argv(ns, [nft, "-a", "list", "table", "ip", table]),
                                 capture_output=True, text=True, check=False).stdout
        saved = subprocess.run(netns.nsenter_argv(ns, [save, "-t", table]), capture_output=True, text=True,
                               check=False).stdout
        by_chain: dict[str, list[str]] = {}
        for line in saved.splitlines():
            if line.startswith("-A "):
                by_chain.setdefault(line.split()[1], []).append(line)
        chain = ""
        index = 0
        for line in listing.splitlines():
            s = line.strip()
            if s.startswith("chain "):
                chain, index = s.split()[1], 0
                continue
            h = _HANDLE.search(s)
            if not chain or h is None or s.startswith(("type ", "policy ")) or s.startswith("}"):
                continue
            rules = by_chain.get(chain, [])
            if index < len(rules):
                out[(table, chain, int(h.group(1)))] = rules[index]
            index += 1
    return out


def annotate(events: list[TraceEvent]) -> None:
    """Fill in each event's iptables text where its table is one of iptables-nft's."""
    by_ns: dict[str, set[str]] = {}
    for ev in events:
        if ev.kind == "rule" and ev.table in IPTABLES_NFT_TABLES:
            by_ns.setdefault(ev.netns, set()).add(ev.table)
    for ns, tables in by_ns.items():
        lines = iptables_lines(ns, tables)
        for ev in events:
            if ev.netns == ns and ev.handle is not None:
                ev.iptables = lines.get((ev.table, ev.chain, ev.handle), "")
