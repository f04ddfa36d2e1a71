"""Follow one probe through the lab: every interface it crossed, every rule it met, where it ended.

The probe is a real connection (TCP) or datagram (UDP) from a socket in the
source's namespace, on a source port kmesh chose, so every proxy mode treats
it as it treats traffic: the relaying modes (userspace, and kmesh's IPVS
table where the kernel has no ip_vs) only pick an endpoint once the
handshake is complete, which a lone crafted SYN would never give them.
While it runs:

- ``kmesh.packet.sniff`` captures on every interface of every node and on
  the pods at both ends; scapy (``kmesh.packet.decode``) reads each frame,
  VXLAN included. The probe's first packet (SYN, or the datagram) and the
  first answer (SYN-ACK, RST, the reply, an ICMP error) are followed hop by
  hop; for a relaying proxy, so is the relay's own connection to the
  endpoint (the first SYN from the node to one of the Service's endpoints
  after the probe's handshake).
- ``kmesh.packet.nftrace`` traces those packets through the rules of every
  node namespace.
- afterwards, ``conntrack -L`` in each node gives the entry the probe made.

The endpoint is the reply tuple of that entry where the proxy NATed (iptables,
nftables, kernel IPVS), the relay's destination where it relayed, else the
pod the probe reached. Everything armed is removed on the way out, whatever
happens (the trace table, the monitors, the sockets).
"""

from __future__ import annotations

import errno
import random
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from kmesh.net import netns
from kmesh.packet import nftrace
from kmesh.packet.decode import Decoded, Flow, decode
from kmesh.packet.nftrace import TraceEvent
from kmesh.packet.sniff import Frame, Point, Sniffer
from kmesh.policy.nftrules import TABLE as POLICY_TABLE

VERDICTS = ("delivered", "rejected", "dropped")
PORT_RANGE = (40000, 60000)
_CT_FIELD = re.compile(r"(\w+)=(\S+)")


class TraceFailure(RuntimeError):
    """The trace could not run (a namespace gone, nft refused, no port free)."""


@dataclass
class Plan:
    """What to trace, in namespaces and addresses (the lab floor fills it in)."""

    source_netns: str
    source_label: str
    dst_ip: str
    dst_port: int
    udp: bool = False
    node_netns: dict[str, str] = field(default_factory=dict)  # node name → its namespace
    points: list[Point] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # IP → what has it ("pod default/web-x", "node node-1")
    endpoints: set[tuple[str, int]] = field(default_factory=set)  # where the proxy may send it
    timeout: float = 3.0
    http_path: str | None = None
    proxy_mode: str = ""  # the source node's kube-proxy mode, for the words of the decision
    udp_payload: bytes = b"hostname"  # agnhost netexec's UDP server answers it with the pod's name
    dns_name: str | None = None  # probe a DNS server (UDP 53): ask for this name's A record instead


@dataclass
class Hop:
    """One interface the probe (or its answer) crossed."""

    leg: str  # there | relay | back
    owner: str  # node-1, default/web-x (the label's first part)
    interface: str
    direction: str  # in | out
    ts_ns: int
    decoded: Decoded
    node: str = ""  # the node the interface is on

    def to_json(self, t0: int) -> dict[str, object]:
        """The JSON form; ``t0`` is the first hop's time."""
        d = self.decoded
        out: dict[str, object] = {"leg": self.leg, "node": self.node, "at": self.owner, "interface": self.interface,
                                  "direction": self.direction, "us": round((self.ts_ns - t0) / 1000, 1),
                                  "what": d.text()}
        if d.flow:
            out["packet"] = d.flow.to_json()
        if d.vxlan:
            out["vxlan"] = d.vxlan.to_json()
        return out


@dataclass
class Result:
    """What the trace found."""

    verdict: str  # delivered | rejected | dropped
    reason: str
    sport: int
    outcome: str  # what the socket saw: connected, refused, timeout, answered, no answer...
    hops: list[Hop] = field(default_factory=list)
    rules: list[TraceEvent] = field(default_factory=list)
    conntrack: list[dict[str, object]] = field(default_factory=list)
    endpoint: dict[str, object] | None = None
    decision: str = ""  # the proxy's decision, in one line
    answer: str = ""
    where: str = ""  # the node that rejected or dropped it


def _free_port(ns: str, udp: bool) -> socket.socket:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    for _ in range(50):
        port = random.randrange(*PORT_RANGE)
        s = netns.socket_in(ns, socket.AF_INET, kind)
        try:
            s.bind(("0.0.0.0", port))
            return s
        except OSError:
            s.close()
    raise TraceFailure("no free source port for the probe")


def _probe(sock: socket.socket, plan: Plan) -> tuple[str, str, str]:
    """Send the probe on ``sock``; (outcome, answer, the source address it left from)."""
    outcome, answer = _send(sock, plan)
    try:
        src = sock.getsockname()[0]
    except OSError:
        src = ""
    return outcome, answer, "" if src == "0.0.0.0" else src


def _send(sock: socket.socket, plan: Plan) -> tuple[str, str]:
    sock.settimeout(plan.timeout)
    dst = (plan.dst_ip, plan.dst_port)
    if plan.udp:
        sock.connect(dst)
        sock.send(dns_query(plan.dns_name) if plan.dns_name else plan.udp_payload)
        try:
            data = sock.recv(4096)
            return "answered", dns_answer(data) if plan.dns_name else data.decode(errors="replace")
        except ConnectionRefusedError:
            return "refused", ""
        except TimeoutError:
            return "no answer", ""
    try:
        sock.connect(dst)
    except ConnectionRefusedError:
        return "refused", ""
    except TimeoutError:
        return "timeout", ""
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "unreachable", ""
        if exc.errno == errno.ECONNRESET:
            return "reset", ""
        raise
    if plan.http_path is None:
        return "connected", ""
    host = plan.dst_ip
    sock.sendall(f"GET {plan.http_path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    chunks = []
    try:
        while (b := sock.recv(65536)) and sum(map(len, chunks)) < 1 << 16:
            chunks.append(b)
    except (TimeoutError, ConnectionResetError):
        pass
    return "connected", b"".join(chunks).decode(errors="replace")


Pairs = set[tuple[str | None, int]]  # (address or None for any, port): the probe's source as each NAT left it


def dns_query(name: str) -> bytes:
    """A recursive A query for ``name``."""
    from scapy.layers.dns import DNS, DNSQR

    return bytes(DNS(id=random.randrange(1 << 16), rd=1, qd=DNSQR(qname=name, qtype="A")))


_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def dns_answer(data: bytes) -> str:
    """A DNS answer in one line: ``NOERROR kubernetes.default.svc.cluster.local. A 10.96.0.1``."""
    from scapy.layers.dns import DNS

    try:
        msg = DNS(data)
    except Exception:  # noqa: BLE001 - whatever answered was not DNS
        return data.decode(errors="replace")
    words = [_RCODES.get(int(msg.rcode), f"RCODE{int(msg.rcode)}")]
    for i in range(int(msg.ancount or 0)):
        rr = msg.an[i]
        name = rr.rrname.decode() if isinstance(rr.rrname, bytes) else str(rr.rrname)
        words.append(f"{name} {rr.sprintf('%type%')} {rr.rdata}")
    return " ".join(words)


def match_rules(sport: int, plan: Plan) -> str:
    """nft rule bodies tracing the probe's opening packet and the first answer, also where a NAT on the way
    (a masquerade to a node address) changed its source: by its destination (the target, the endpoints)."""
    proto = "udp" if plan.udp else "tcp"
    opening = "" if plan.udp else " tcp flags & (syn | ack) == syn"
    answers = [""] if plan.udp else [" tcp flags & (syn | ack) == syn | ack", " tcp flags & rst == rst"]
    dests = sorted({(plan.dst_ip, plan.dst_port)} | set(plan.endpoints))[:64]
    elements = ", ".join(f"{ip} . {port}" for ip, port in dests)
    lines = [f"{proto} sport {sport}{opening}", f"ip daddr . {proto} dport {{ {elements} }}{opening}"]
    for a in answers:
        lines += [f"{proto} dport {sport}{a}", f"ip saddr . {proto} sport {{ {elements} }}{a}"]
    lines.append("icmp type destination-unreachable")
    return "\n".join(lines)


def _in(pairs: Pairs, ip: str, port: int) -> bool:
    return (ip, port) in pairs or (None, port) in pairs


def _leg(flow: Flow, pairs: Pairs, udp: bool) -> str | None:
    """Which leg a packet belongs to: the probe's opening packet (there), the first answer (back), else None."""
    proto = "udp" if udp else "tcp"
    q = flow.quoted
    if flow.proto == "icmp" and q and q.proto == proto and _in(pairs, q.src, q.sport):
        return "back"
    if flow.proto != proto:
        return None
    if _in(pairs, flow.src, flow.sport):
        return "there" if udp or flow.flags == "S" else None
    if _in(pairs, flow.dst, flow.dport):
        return "back" if udp or flow.flags in ("SA", "R", "RA") else None
    return None


_PKT_ADDR = re.compile(r"ip (saddr|daddr) (\S+)")
_PKT_PORT = re.compile(r"(?:tcp|udp) (sport|dport) (\d+)")


def event_leg(ev: TraceEvent, pairs: Pairs) -> str | None:
    """Whether a traced packet is the probe (there) or its answer (back), or other traffic to the same
    destination (None)."""
    if " icmp " in f" {ev.packet} ":
        return "back"
    addr = dict(_PKT_ADDR.findall(ev.packet))
    port = {k: int(v) for k, v in _PKT_PORT.findall(ev.packet)}
    if "sport" not in port or "dport" not in port:
        return None
    if _in(pairs, addr.get("saddr", ""), port["sport"]):
        return "there"
    if _in(pairs, addr.get("daddr", ""), port["dport"]):
        return "back"
    return None


def build_hops(frames: Iterable[Frame], plan: Plan, pairs: Pairs, nodes_of: dict[str, str], start_ns: int) -> list[Hop]:
    """The hops of the probe, its answer and (relaying proxies) the relay's connection, in time order;
    ``start_ns`` is when the probe was sent (a relay's connection comes after it)."""
    hops: list[Hop] = []
    relay: tuple[str, int, int] | None = None  # (node address, relay's source port, endpoint port)
    for f in sorted(frames, key=lambda f: f.ts_ns):
        try:
            d = decode(f.data, f.linktype)
        except Exception:  # noqa: BLE001 - a frame scapy cannot read is not the probe
            continue
        if d.flow is None:
            continue
        leg = _leg(d.flow, pairs, plan.udp)
        if leg is None and f.ts_ns >= start_ns and d.flow.proto == ("udp" if plan.udp else "tcp"):
            fl = d.flow
            opening = plan.udp or fl.flags == "S"
            answer = plan.udp or fl.flags in ("SA", "R", "RA")
            if relay is None and opening and (fl.dst, fl.dport) in plan.endpoints:
                relay = (fl.src, fl.sport, fl.dport)
            if relay and ((fl.src, fl.sport) == relay[:2] and opening or (fl.dst, fl.dport) == relay[:2] and answer):
                leg = "relay"
        if leg is None:
            continue
        owner, _, iface = f.point.label.rpartition("/")
        hops.append(Hop(leg, owner, iface, f.direction, f.ts_ns, d, nodes_of.get(f.point.label, "")))
    return hops


def _conntrack(ns: str, node: str, sport: int, udp: bool) -> list[dict[str, object]]:
    tool = shutil.which("conntrack")
    if tool is None:
        return []
    argv = [tool, "-L", "-p", "udp" if udp else "tcp", "--orig-port-src", str(sport)]
    out = subprocess.run(netns.nsenter_argv(ns, argv), capture_output=True, text=True, check=False).stdout
    entries = []
    for line in out.splitlines():
        fields = _CT_FIELD.findall(line)
        if len(fields) < 8:
            continue
        orig = dict(fields[:4])
        reply = dict(fields[4:8])
        words = line.split()
        state = words[3] if not udp and len(words) > 3 and "=" not in words[3] else ""
        entries.append({"node": node, "line": " ".join(words), "state": state,
                        "original": {"src": orig.get("src"), "dst": orig.get("dst"), "sport": _int(orig.get("sport")),
                                     "dport": _int(orig.get("dport"))},
                        "reply": {"src": reply.get("src"), "dst": reply.get("dst"), "sport": _int(reply.get("sport")),
                                  "dport": _int(reply.get("dport"))}})
    return entries


def follow_conntrack(plan: Plan, sport: int, src: str) -> tuple[dict[str, list[dict[str, object]]], Pairs]:
    """The conntrack entries of the probe on every node, following each NAT that changed its source (a node's
    masquerade, then the next node's entry for the translated source), and the probe's sources so found."""
    pairs: Pairs = {(src or None, sport)}
    entries: dict[str, list[dict[str, object]]] = {ns: [] for ns in plan.node_netns.values()}
    todo, asked = [sport], set()
    while todo:
        port = todo.pop()
        if port in asked:
            continue
        asked.add(port)
        for node, ns in plan.node_netns.items():
            for e in _conntrack(ns, node, port, plan.udp):
                o, r = e["original"], e["reply"]
                assert isinstance(o, dict) and isinstance(r, dict)
                if not _in(pairs, str(o["src"]), int(o["sport"])) or e in entries[ns]:
                    continue
                entries[ns].append(e)
                if (r["dst"], r["dport"]) != (o["src"], o["sport"]):
                    pairs.add((str(r["dst"]), int(r["dport"])))
                    todo.append(int(r["dport"]))
    return entries, pairs


def _int(v: str | None) -> int:
    try:
        return int(v or 0)
    except ValueError:
        return 0


_DNAT = re.compile(r"dnat (?:ip )?to (\d+\.\d+\.\d+\.\d+):(\d+)")
_REDIRECT = re.compile(r"redirect to :(\d+)")
_VMAP = re.compile(r"vmap @([\w-]+)")
_COMMENT = re.compile(r'comment "([^"]*)"')


def decide(plan: Plan, outcome: str, hops: list[Hop], events: list[TraceEvent],
           conntrack: dict[str, list[dict[str, object]]]) -> tuple[str, str, str, tuple[str, int] | None, str]:
    """(verdict, reason, the proxy's decision, endpoint (ip, port) or None, where it ended) from what was seen."""
    endpoint: tuple[str, int] | None = None
    decision = ""
    for i, ev in enumerate(events):
        if m := _DNAT.search(ev.text):
            to = (m.group(1), int(m.group(2)))
            if to in plan.endpoints or not plan.endpoints:
                endpoint = endpoint or to
                what = f"DNAT to {to[0]}:{to[1]}"
            else:  # userspace mode's portal for the node's own traffic
                what = f"DNAT to the userspace proxy's listener on {to[0]}:{to[1]}"
            decision = decision or f"{_node_of(plan, ev.netns)}: {_walk(events, i)}: {what}"
        elif m := _REDIRECT.search(ev.text):
            decision = decision or (f"{_node_of(plan, ev.netns)}: {_walk(events, i)}: redirect to the userspace "
                                    f"proxy's listener on port {m.group(1)}")
    for node_ns, entries in conntrack.items():
        for e in entries:
            o, r = e["original"], e["reply"]
            assert isinstance(o, dict) and isinstance(r, dict)
            if (r["src"], r["sport"]) != (o["dst"], o["dport"]) and (r["src"], r["sport"]) in plan.endpoints:
                endpoint = endpoint or (str(r["src"]), int(r["sport"]))
    relay = [h for h in hops if h.leg == "relay" and h.decoded.flow and (plan.udp or h.decoded.flow.flags == "S")
             and (h.decoded.flow.dst, h.decoded.flow.dport) in plan.endpoints]
    if relay and endpoint is None:
        fl = relay[0].decoded.flow
        assert fl is not None
        endpoint = (fl.dst, fl.dport)
        node = relay[0].node or relay[0].owner
        if plan.proxy_mode == "ipvs":
            decision = (f"{node}: IPVS virtual server {plan.dst_ip}:{plan.dst_port} chose real server "
                        f"{fl.dst}:{fl.dport} (kmesh serves the IPVS table itself where the kernel has no ip_vs: "
                        f"its relay connected from {fl.src})")
        else:
            decision = (decision + "; " if decision else f"{node}: ") + (
                f"the proxy accepted the connection and connected to {fl.dst}:{fl.dport} from {fl.src}")
    elif endpoint and plan.proxy_mode == "ipvs" and not decision:
        decision = f"IPVS virtual server {plan.dst_ip}:{plan.dst_port} chose real server {endpoint[0]}:{endpoint[1]}"
    redirected = any(_REDIRECT.search(ev.text) for ev in events)
    there = [h for h in hops if h.leg == "there"]
    if endpoint is None and there and outcome in ("connected", "answered", "no answer"):
        last = there[-1].decoded.flow
        if last and (last.dst, last.dport) in plan.endpoints:
            endpoint = (last.dst, last.dport)
    rejecting = [ev for ev in events if ev.kind == "rule" and ("reject" in ev.text or ev.verdict.startswith("drop"))]
    back = [h for h in hops if h.leg == "back"]
    where = ""
    if rejecting:
        ev = rejecting[0]
        where = _node_of(plan, ev.netns)
    if outcome in ("connected", "answered"):
        return "delivered", "the endpoint answered", decision, endpoint, ""
    if outcome == "no answer":
        reached = endpoint is not None and any(h.decoded.flow and (h.decoded.flow.dst, h.decoded.flow.dport) == endpoint
                                               for h in there)
        if reached:
            return "delivered", "the datagram reached the endpoint, which did not answer", decision, endpoint, ""
        return "dropped", _drop_reason(plan, events, there, rejecting), decision, endpoint, where or _last_node(there)
    if outcome in ("refused", "reset", "unreachable"):
        if rejecting:
            reason = _rule_reason(plan, events, rejecting[0])
        elif plan.proxy_mode == "ipvs" and back and back[0].decoded.flow and back[0].decoded.flow.src == plan.dst_ip:
            where = where or back[0].node
            reason = (f"{where}: IPVS virtual server {plan.dst_ip}:{plan.dst_port} has no real servers, so the "
                      "connection is refused (as ip_vs refuses it)")
        elif redirected and outcome == "refused":
            reason = (f"{decision.split(':')[0]}: the userspace proxy's port for {plan.dst_ip}:{plan.dst_port} is "
                      "bound but not listening: the Service has no endpoints, so the kernel answers with a reset")
            where = where or decision.split(":")[0]
        elif back:
            first = back[0]
            fl = first.decoded.flow
            what = fl.icmp if fl and fl.proto == "icmp" else "a TCP reset"
            reason = f"{first.node or first.owner} answered with {what}" + (
                f" from {fl.src}" if fl else "") + _refusal_hint(plan, fl)
            where = where or first.node or first.owner
        else:
            reason = f"the connection was {outcome}"
        return "rejected", reason, decision, endpoint, where
    return "dropped", _drop_reason(plan, events, there, rejecting), decision, endpoint, where or _last_node(there)


def _walk(events: list[TraceEvent], i: int) -> str:
    """The chains the packet of ``events[i]`` went through in its table to get there: ``nat PREROUTING →
    KUBE-SERVICES → KUBE-SVC-… → KUBE-SEP-…``, each lookup of an nftables map with its element."""
    ev = events[i]
    chains: list[str] = []
    for e in events[:i + 1]:
        if (e.netns, e.table, e.packet) != (ev.netns, ev.table, ev.packet) or e.kind != "rule":
            continue
        if e.verdict.startswith(("jump ", "goto ")) or e is ev:
            step = e.chain
            if m := _VMAP.search(e.text):
                step += f" (map @{m.group(1)})"
            if not chains or chains[-1].split(" (")[0] != e.chain:
                chains.append(step)
    if chains and ev.table:
        chains[0] = f"{ev.table} {chains[0]}"
    return " → ".join(chains)


def _refusal_hint(plan: Plan, fl: Flow | None) -> str:
    if fl is None:
        return ""
    owner = plan.owners.get(fl.src, "")
    if owner.startswith("node"):
        return f" ({owner}: nothing listens there; a Service without endpoints is refused so)"
    if owner:
        return f" ({owner}: nothing listens on port {plan.dst_port})"
    return ""


def _last_node(hops: list[Hop]) -> str:
    return hops[-1].node or hops[-1].owner if hops else ""


def _rule_reason(plan: Plan, events: list[TraceEvent], ev: TraceEvent) -> str:
    """``node-1: filter KUBE-SERVICES: -A … -j REJECT``; for a bare rule (nftables' ``reject-chain``), the lookup
    that sent the packet to its chain too."""
    if ev.table == POLICY_TABLE and (m := _COMMENT.search(ev.text)):  # a NetworkPolicy drop (kmesh.policy)
        return (f"{_node_of(plan, ev.netns)}: dropped by NetworkPolicy: {m.group(1)} (nft table inet "
                f"{POLICY_TABLE}, chain {ev.chain}; `kmesh policy explain` says which policies select the pod)")
    text = f"{_node_of(plan, ev.netns)}: {ev.table} {ev.chain}: {ev.iptables or ev.text}"
    for e in events:
        if e.netns == ev.netns and e.verdict in (f"goto {ev.chain}", f"jump {ev.chain}") and e.kind == "rule":
            via = f"{e.chain}: {e.text}"
            if m := _VMAP.search(e.text):
                via += f" (the element for {plan.dst_ip} . {'udp' if plan.udp else 'tcp'} . {plan.dst_port} in map " \
                       f"@{m.group(1)})"
            return f"{text}, reached from {via}"
    return text


def _drop_reason(plan: Plan, events: list[TraceEvent], there: list[Hop], rejecting: list[TraceEvent]) -> str:
    if rejecting:
        return _rule_reason(plan, events, rejecting[0])
    if not there:
        return "the probe never left its namespace"
    h = there[-1]
    return f"last seen {h.direction} {h.owner}/{h.interface}; no answer within the timeout"


def _node_of(plan: Plan, ns: str) -> str:
    for node, n in plan.node_netns.items():
        if n == ns:
            return node
    return ns


async def run(plan: Plan) -> Result:
    """Send the probe and follow it; everything armed is gone when this returns or raises."""
    sock = _free_port(plan.source_netns, plan.udp)
    sport = sock.getsockname()[1]
    marker = nftrace.MARKER_PORT_BASE + random.randrange(1000)
    nodes_of = {p.label: _owner_node(plan, p) for p in plan.points}
    frames: list[Frame] = []
    arrived = [trio.Event()]

    def on_frame(f: Frame) -> None:
        frames.append(f)
        arrived[0].set()

    monitors = [nftrace.Monitor(ns, marker) for ns in plan.node_netns.values()]
    armed: list[str] = []
    try:
        with Sniffer(plan.points, bpf=_bpf(sport, plan.udp)) as sniffer:
            for ns in plan.node_netns.values():
                nftrace.arm(ns, match_rules(sport, plan), marker)
                armed.append(ns)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sniffer.run, on_frame)
                for m in monitors:
                    await nursery.start(m.read)
                for m in monitors:
                    await m.marker()
                start_ns = time.time_ns()
                outcome, answer, src = await trio.to_thread.run_sync(_probe, sock, plan)
                if outcome == "connected" and not plan.udp and plan.endpoints:
                    await _await_endpoint(frames, arrived, plan, {(src or None, sport)}, nodes_of, start_ns)
                sock.close()
                for m in monitors:
                    await m.marker()
                frames.extend(sniffer.poll())
                nursery.cancel_scope.cancel()
    except (OSError, nftrace.TraceError, netns.NetnsError, BaseExceptionGroup) as exc:
        leaf = _expected(exc)
        if leaf is None:
            raise
        raise TraceFailure(str(leaf)) from None
    finally:
        sock.close()
        for ns in armed:
            nftrace.disarm(ns)
    conntrack, pairs = follow_conntrack(plan, sport, src)
    events = []
    for ev in (ev for m in monitors for ev in m.events):
        if leg := event_leg(ev, pairs):
            ev.leg = leg
            events.append(ev)
    nftrace.annotate(events)
    hops = build_hops(frames, plan, pairs, nodes_of, start_ns)
    verdict, reason, decision, endpoint, where = decide(plan, outcome, hops, events, conntrack)
    ep = None
    if endpoint:
        ep = {"ip": endpoint[0], "port": endpoint[1], "pod": plan.owners.get(endpoint[0], "")}
    return Result(verdict, reason, sport, outcome, hops, events, [e for es in conntrack.values() for e in es], ep,
                  decision, answer, where)


def _expected(exc: BaseException) -> BaseException | None:
    """The one error a trace reports plainly (nft refused, a namespace went), out of trio's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, (OSError, nftrace.TraceError, netns.NetnsError)) else None


def _owner_node(plan: Plan, p: Point) -> str:
    for node, ns in plan.node_netns.items():
        if p.netns == ns or (p.netns or "").startswith(ns + "-"):
            return node
    return ""


async def _await_endpoint(frames: list[Frame], arrived: list[trio.Event], plan: Plan, pairs: Pairs,
                          nodes_of: dict[str, str], start_ns: int, timeout: float = 1.0) -> None:
    """Keep the connection open until the SYN of the probe or of a relay reached an endpoint (or a second)."""
    with trio.move_on_after(timeout):
        while True:
            arrived[0] = trio.Event()
            for h in build_hops(list(frames), plan, pairs, nodes_of, start_ns):
                fl = h.decoded.flow
                if h.leg in ("there", "relay") and fl and (fl.dst, fl.dport) in plan.endpoints and h.direction == "in":
                    return
            await arrived[0].wait()


def _bpf(sport: int, udp: bool) -> str | None:
    """A kernel filter keeping what a trace may need: the probe's ports, ICMP, VXLAN and SYNs (relays)."""
    if shutil.which("tcpdump") is None:
        return None
    if udp:
        return "udp or icmp"
    return "icmp or (udp port 8472 or udp port 4789 or udp port 8285) or (tcp[13] & 6 != 0)"
