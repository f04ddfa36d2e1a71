"""Link shaping in the kernel: tc qdiscs on both ends of a veth, NFQUEUE rules for the delayer, link state.

A link has an inside end (``eth0`` in a node's or pod's namespace) and an
outside end (the node's port on the underlay bridge, or the pod's host-side
veth in its node). Each direction is shaped where it leaves: the inside
end's egress for what the target sends, the outside end's egress for what
it receives. Every packet of each direction gets the settings, as Mininet's
TCLink: 50 ms of delay adds 100 ms to a round trip through the link.

What serves which setting:

- rate: ``tbf`` at the root of a device, or ``htb`` classes when some
  traffic is treated apart (``--to``), with ``u32`` filters on the peer's
  addresses (destination on the inside end, source on the outside end);
- delay, jitter, loss: ``netem`` where the kernel has it — at the root, with
  the ``tbf`` as its child, or as the leaf of each ``htb`` class. Where it has
  not (CONFIG_NET_SCH_NETEM unset), kmesh's delayer
  (``kmesh.packet.delayer``), placed like the qdiscs, where each direction
  leaves: a mangle chain ``KMESH-LINK``, jumped to from POSTROUTING, sends
  the packets to NFQUEUE queues (``--queue-bypass``: traffic flows when no
  delayer runs) — what the target sends with ``-o eth0`` in its own
  namespace, what it receives on the underlay bridge (``-m physdev
  --physdev-out <port>``, with bridge-nf-call-iptables in the underlay
  namespace) or in its node (``-d <pod IP>``, routed or bridged). Holding a
  packet before it enters the target's namespace matters: a packet held
  after it arrived keeps its arrival time stamp, and ping's round trip
  (``SO_TIMESTAMP``) would not show the delay.

A rule for a peer overrides the rule for all traffic for that peer's
addresses (first match, in iptables as in the tc filters): a peer rule
with less in it still exempts the peer from the general one.

Nothing here knows a lab: callers give namespaces, devices and addresses.
Every command runs inside the namespace it changes (``nsenter``), never in
the one the caller is in.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kmesh.net import netns
from kmesh.packet.linkspec import LinkSpec

CHAIN = "KMESH-LINK"  # jumped to from mangle POSTROUTING
CHAIN_PRE = "KMESH-LINK-PRE"  # from mangle PREROUTING
_CHAINS = {"post": (CHAIN, "POSTROUTING"), "pre": (CHAIN_PRE, "PREROUTING")}
QUEUE_BASE = 4200  # queue numbers are per namespace; kmesh's start here, out of the way of hand-made ones
QUEUE_LIMIT = 4200 + 1000
UNLIMITED = "100gbit"  # the rate of an htb class that only carries netem
MECH_NETEM = "netem"
MECH_DELAYER = "kmesh delayer (no netem in this kernel)"


class ShapingError(RuntimeError):
    """A tc/iptables/ip command failed; the message names it and the namespace."""


@dataclass(frozen=True)
class LinkEnds:
    """The two ends of one link: inside (``netns``/``device``), outside (``outer_netns``/``outer_device``)."""

    netns: str
    device: str
    outer_netns: str
    outer_device: str


@dataclass(frozen=True)
class Rule:
    """Settings for the link's traffic with ``peer`` (its ``addresses``), or all of it (``peer`` None)."""

    peer: str | None
    spec: LinkSpec
    addresses: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """``*`` for all traffic, else the peer's name."""
        return self.peer or "*"


def ordered(rules: Sequence[Rule]) -> list[Rule]:
    """Peer rules first (by name), the general one last: the order of first-match."""
    return sorted(rules, key=lambda r: (r.peer is None, r.peer or ""))


# ---------------------------------------------------------------------------------------------- tc


def tbf_args(rate_bps: int) -> list[str]:
    """``tbf``'s arguments for a rate: a burst of 10 ms of tokens (at least 15 kB, what Mininet uses), a queue
    of 100 ms on top."""
    burst = max(15000, rate_bps // 8 // 100)
    return ["rate", f"{rate_bps}bit", "burst", str(burst), "latency", "100ms"]


def _htb_rate(rate_bps: int) -> list[str]:
    rate = f"{rate_bps}bit" if rate_bps else UNLIMITED
    burst = max(15000, rate_bps // 8 // 100) if rate_bps else 15000
    return ["rate", rate, "ceil", rate, "burst", str(burst), "quantum", "60000"]


def _needs_tc(rule: Rule, netem: bool) -> bool:
    return bool(rule.spec.rate_bps or (netem and rule.spec.delays))


def tc_plan(device: str, rules: Sequence[Rule], *, inside: bool, netem: bool) -> list[list[str]]:
    """The ``tc`` commands (without ``tc``) that shape ``device`` for ``rules`` after its root qdisc is
    deleted: the inside end matches peers by destination, the outside end by source. Empty when tc has
    no part (no rate, and delays served by the delayer)."""
    rules = ordered(rules)
    general = next((r for r in rules if r.peer is None), None)
    in_tc = [r for r in rules if _needs_tc(r, netem)]
    if not in_tc:
        return []
    if general is not None and len(rules) == 1:
        spec = general.spec
        if netem and spec.delays:
            cmds = [["qdisc", "replace", "dev", device, "root", "handle", "1:", "netem", *spec.netem_args()]]
            if spec.rate_bps:
                cmds.append(["qdisc", "add", "dev", device, "parent", "1:1", "handle", "10:", "tbf",
                             *tbf_args(spec.rate_bps)])
            return cmds
        return [["qdisc", "replace", "dev", device, "root", "handle", "1:", "tbf", *tbf_args(spec.rate_bps)]]
    # Some traffic apart: htb, a class per rule in tc. When the general rule has a class (the default one),
    # a peer rule without one still gets a filter, to htb's direct queue (flowid 1:, unshaped): the general
    # settings never reach a peer that has a rule. Unfiltered traffic without a default class is direct too.
    minors = {r.key: 0x10 + i for i, r in enumerate(in_tc)}
    default = f"{minors['*']:x}" if "*" in minors else "0"
    cmds = [["qdisc", "replace", "dev", device, "root", "handle", "1:", "htb", "default", default]]
    for r in in_tc:
        minor = minors[r.key]
        cmds.append(["class", "add", "dev", device, "parent", "1:", "classid", f"1:{minor:x}", "htb",
                     *_htb_rate(r.spec.rate_bps)])
        if netem and r.spec.delays:
            cmds.append(["qdisc", "add", "dev", device, "parent", f"1:{minor:x}", "handle", f"{minor:x}:", "netem",
                         *r.spec.netem_args()])
    for r in rules:
        if r.peer is None or (r.key not in minors and "*" not in minors):
            continue
        flowid = f"1:{minors[r.key]:x}" if r.key in minors else "1:"
        for addr in r.addresses:
            cmds.append(["filter", "add", "dev", device, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                         "match", "ip", "dst" if inside else "src", addr, "flowid", flowid])
    return cmds


# ---------------------------------------------------------------------------------------------- iptables


@dataclass(frozen=True)
class Entry:
    """One rule of the ``KMESH-LINK`` chain: one direction of one target's rule, for one peer address (or all
    traffic); ``spec`` None for a peer exempted from a queued general rule (``RETURN``)."""

    target: str
    way: str  # out: what the target sends; in: what it receives
    peer: str | None
    match: tuple[str, ...]
    spec: LinkSpec | None
    hook: str = "post"  # post: KMESH-LINK (POSTROUTING); pre: KMESH-LINK-PRE (PREROUTING)

    @property
    def key(self) -> str:
        """What the delayer's queue for this entry is known by: ``<target> <way> <peer or *>``."""
        return f"{self.target} {self.way} {self.peer or '*'}"

    @property
    def comment(self) -> str:
        """The rule's comment, which ``parse_chain`` reads back."""
        return f"kmesh link {self.target} {self.way}" + (f" to {self.peer}" if self.peer else "")


def entries(target: str, way: str, base: Sequence[str], rules: Sequence[Rule], *, netem: bool,
            hook: str = "post") -> list[Entry]:
    """The chain entries for one direction of ``target``'s ``rules`` (the delayer's part: none with netem).

    ``base`` selects the direction's packets in the namespace on the outside of the link (see the module
    docstring), ``hook`` where: ``post`` (POSTROUTING) or ``pre`` (PREROUTING). Peers are matched by
    destination going out, by source coming in."""
    if netem:
        return []
    rules = ordered(rules)
    queued = {r.key for r in rules if r.spec.delays}
    out: list[Entry] = []
    for r in rules:
        if r.key not in queued and not (r.peer and "*" in queued):
            continue
        spec = r.spec if r.key in queued else None
        if r.peer is None:
            out.append(Entry(target, way, None, tuple(base), spec, hook))
            continue
        for addr in r.addresses:
            out.append(Entry(target, way, r.peer, (*base, "-d" if way == "out" else "-s", addr), spec, hook))
    return out


def assign_queues(chain: Sequence[Entry], current: Mapping[str, int]) -> dict[str, int]:
    """Queue numbers for the queued entries' keys: a key keeps the number it has in ``current``, a new one
    takes the lowest number ``current`` does not use (a queue being dropped is not reused in the same
    change: its rules still point at it until the chain switches)."""
    want = list(dict.fromkeys(e.key for e in chain if e.spec is not None))
    out = {k: current[k] for k in want if k in current}
    used = set(current.values())
    q = QUEUE_BASE
    for k in want:
        if k in out:
            continue
        while q in used:
            q += 1
        if q >= QUEUE_LIMIT:
            raise ShapingError("too many shaped links in one namespace")
        out[k] = q
        used.add(q)
    return out


def chain_text(chain: Sequence[Entry], queues: Mapping[str, int], *, jumps: Sequence[str] = ()) -> str:
    """``iptables-restore --noflush`` input that makes ``KMESH-LINK`` and ``KMESH-LINK-PRE`` hold exactly
    ``chain`` (declaring a chain flushes it: one transaction); ``jumps``: the jump lines there already
    (``parse_chain``), the missing ones are inserted first in their hook."""
    lines = ["*mangle", f":{CHAIN} - [0:0]", f":{CHAIN_PRE} - [0:0]"]
    for name, hook in _CHAINS.values():
        if not any(j.startswith(f"-A {hook} ") for j in jumps):
            lines.append(f"-I {hook} 1 -j {name}")
    for e in chain:
        verdict = f"NFQUEUE --queue-num {queues[e.key]} --queue-bypass" if e.spec is not None else "RETURN"
        lines.append(f'-A {_CHAINS[e.hook][0]} {" ".join(e.match)} -m comment --comment "{e.comment}" -j {verdict}')
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def chain_clear_text(jumps: Sequence[str], present: Sequence[str] = (CHAIN, CHAIN_PRE)) -> str:
    """``iptables-restore --noflush`` input that removes the ``present`` chains and the given jump lines
    (as ``iptables-save`` prints them, ``-A POSTROUTING ...``)."""
    lines = ["*mangle", *("-D" + j[2:] for j in jumps)]
    lines += [f":{c} - [0:0]" for c in present] + [f"-X {c}" for c in present] + ["COMMIT"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ChainRule:
    """One rule of ``KMESH-LINK``, read back."""

    target: str
    way: str
    peer: str | None
    address: str | None  # the peer address matched, None for all traffic
    queue: int | None  # None for RETURN


_COMMENT_RE = re.compile(r'--comment "?kmesh link (\S+) (out|in)(?: to ([^" ]+))?"?')


def parse_chain(save: str) -> tuple[list[ChainRule], list[str]]:
    """The rules of the two chains and the jump lines to them in ``iptables-save -t mangle`` output."""
    rules: list[ChainRule] = []
    jumps: list[str] = []
    for line in save.splitlines():
        if line.startswith((f"-A {CHAIN} ", f"-A {CHAIN_PRE} ")):
            m = _COMMENT_RE.search(line)
            if not m:
                continue
            target, way, peer = m.group(1), m.group(2), m.group(3)
            addr = re.search(r" -d (\S+)" if way == "out" else r" -s (\S+)", line) if peer else None
            queue = re.search(r"--queue-num (\d+)", line)
            rules.append(ChainRule(target, way, peer, _host(addr.group(1)) if addr else None,
                                   int(queue.group(1)) if queue else None))
        elif line.startswith(("-A POSTROUTING", "-A PREROUTING")) and line.endswith((f"-j {CHAIN}", f"-j {CHAIN_PRE}")):
            jumps.append(line)
    return rules, jumps


def _host(addr: str) -> str:
    """``192.168.56.12`` for ``192.168.56.12/32`` (iptables-save prints /32), networks as they are."""
    net = ipaddress.ip_network(addr, strict=False)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


# ---------------------------------------------------------------------------------------------- running


def _run(ns: str, argv: Sequence[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(netns.nsenter_argv(ns, argv), input=input, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise ShapingError(f"{' '.join(argv)} in {ns}: {proc.stderr.strip() or proc.returncode}")
    return proc


def netem_available() -> bool:
    """Whether this kernel has netem: tried on ``lo`` of a throwaway namespace (nothing else is touched)."""

    def probe() -> bool:
        proc = subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                              capture_output=True, text=True, check=False)
        return proc.returncode == 0

    try:
        return netns.call_in_private(probe)
    except (netns.NetnsError, OSError):
        return False


def clear_tc(ns: str, device: str) -> None:
    """Remove ``device``'s root qdisc (back to the default; no error when there is none)."""
    _run(ns, ["tc", "qdisc", "del", "dev", device, "root"], check=False)


def apply_tc(ends: LinkEnds, rules: Sequence[Rule], *, netem: bool) -> None:
    """Shape both ends for ``rules`` (replacing what they had)."""
    for ns, dev, inside in ((ends.netns, ends.device, True), (ends.outer_netns, ends.outer_device, False)):
        plan = tc_plan(dev, rules, inside=inside, netem=netem)
        clear_tc(ns, dev)
        for cmd in plan:
            _run(ns, ["tc", *cmd])


def mangle_save(ns: str) -> str:
    """``iptables-save -t mangle`` in ``ns``."""
    return _run(ns, ["iptables-save", "-t", "mangle"]).stdout


def apply_chain(ns: str, chain: Sequence[Entry], queues: Mapping[str, int]) -> None:
    """Make the chains in ``ns`` hold ``chain`` (empty: remove them and their jumps)."""
    save = mangle_save(ns)
    _, jumps = parse_chain(save)
    if not chain:
        present = [c for c in (CHAIN, CHAIN_PRE) if f":{c} " in save]
        if present or jumps:
            _run(ns, ["iptables-restore", "--noflush"], input=chain_clear_text(jumps, present))
        return
    _run(ns, ["iptables-restore", "--noflush"], input=chain_text(chain, queues, jumps=jumps))


def read_chain(ns: str) -> list[ChainRule]:
    """The rules of ``KMESH-LINK`` in ``ns`` ([] when it has none, or the namespace is gone)."""
    try:
        return parse_chain(mangle_save(ns))[0]
    except (ShapingError, OSError):
        return []


def bridge_calls_iptables(ns: str) -> None:
    """Let bridged packets in ``ns`` meet iptables (``net.bridge.bridge-nf-call-iptables``, this namespace
    only): the underlay bridge's egress toward a node is where that node's incoming direction is queued."""
    path = "/proc/sys/net/bridge/bridge-nf-call-iptables"

    def write() -> None:
        with open(path, "w") as f:
            f.write("1")

    netns.call_in(ns, write)


def link_state(ns: str, device: str) -> str:
    """``up`` or ``down`` (administratively) of ``device`` in ``ns``; ``gone`` when it does not exist."""
    try:
        doc = json.loads(netns.ip(ns, "-j", "link", "show", "dev", device) or "[]")
    except (netns.NetnsError, ValueError):
        return "gone"
    if not doc:
        return "gone"
    return "up" if "UP" in doc[0].get("flags", []) else "down"


def set_link_state(ns: str, device: str, up: bool) -> None:
    """Set ``device`` in ``ns`` up or down."""
    netns.ip(ns, "link", "set", "dev", device, "up" if up else "down")


def veth_peer(ns: str, device: str, peer_ns: str) -> str:
    """The name, in ``peer_ns``, of the other end of veth ``device`` in ``ns``."""
    doc = json.loads(netns.ip(ns, "-j", "link", "show", "dev", device) or "[]")
    if not doc or "link_index" not in doc[0]:
        raise ShapingError(f"{device} in {ns} is not a veth with a peer")
    index = doc[0]["link_index"]
    for link in json.loads(netns.ip(peer_ns, "-j", "link", "show") or "[]"):
        if link.get("ifindex") == index:
            return str(link["ifname"])
    raise ShapingError(f"the peer of {device} in {ns} (ifindex {index}) is not in {peer_ns}")


# ---------------------------------------------------------------------------------------------- reading back


@dataclass
class Direction:
    """What one direction of a link does to the traffic of one rule, as read from the kernel."""

    delay_ns: int = 0
    jitter_ns: int = 0
    loss: float = 0.0
    rate_bps: int = 0
    delay_by: str = ""  # MECH_NETEM / MECH_DELAYER / ""
    rate_by: str = ""  # tbf / htb / ""

    def spec(self) -> LinkSpec:
        """The settings as a LinkSpec."""
        return LinkSpec(self.delay_ns, self.jitter_ns, self.loss, self.rate_bps)


@dataclass
class Reading:
    """One link's qdiscs read back: per direction (``out`` from the target, ``into`` it), per peer address
    (``*`` for all traffic), what tc does."""

    out: dict[str, Direction] = field(default_factory=dict)
    into: dict[str, Direction] = field(default_factory=dict)


def _tc_json(ns: str, what: str, device: str) -> list[dict]:
    proc = _run(ns, ["tc", "-j", what, "show", "dev", device], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return []
    return doc if isinstance(doc, list) else []


def _netem_into(opts: dict, d: Direction) -> None:
    d.delay_by = MECH_NETEM
    delay = opts.get("delay") or {}
    if isinstance(delay, dict):
        d.delay_ns = round(float(delay.get("delay", 0)) * 1e9)
        d.jitter_ns = round(float(delay.get("jitter", 0)) * 1e9)
    loss = opts.get("loss-random") or {}
    if isinstance(loss, dict):
        d.loss = round(float(loss.get("loss", 0)) * 100, 6)


def _rate_of(opts: dict) -> int:
    return int(opts.get("rate") or 0) * 8  # tc -j prints tbf's rate in bytes per second


def read_tc(ns: str, device: str) -> dict[str, Direction]:
    """What ``device``'s qdiscs do, per address (``*`` for all traffic)."""
    qdiscs = _tc_json(ns, "qdisc", device)
    root = next((q for q in qdiscs if q.get("root")), None)
    if root is None or root.get("kind") not in ("tbf", "netem", "htb"):
        return {}
    if root["kind"] in ("tbf", "netem"):
        d = Direction()
        for q in qdiscs:
            if q.get("kind") == "netem":
                _netem_into(q.get("options") or {}, d)
            elif q.get("kind") == "tbf":
                d.rate_bps, d.rate_by = _rate_of(q.get("options") or {}), "tbf"
        return {"*": d}
    by_class: dict[str, Direction] = {}
    for handle, rate in _htb_classes(ns, device).items():
        d = Direction()
        if rate and rate < _UNLIMITED_BPS:
            d.rate_bps, d.rate_by = rate, "htb"
        by_class[handle] = d
    for q in qdiscs:
        if q.get("kind") == "netem" and q.get("parent") in by_class:
            _netem_into(q.get("options") or {}, by_class[q["parent"]])
    out: dict[str, Direction] = {}
    default = _minor((root.get("options") or {}).get("default"))
    for handle, d in by_class.items():
        if default and _minor(handle.partition(":")[2]) == default:
            out["*"] = d
    for f in _tc_json(ns, "filter", device):
        opts = f.get("options") or {}
        flowid = str(opts.get("flowid") or "")
        addr = _u32_address(opts)
        if addr and flowid in by_class:
            out[addr] = by_class[flowid]
        elif addr and flowid and _minor(flowid.partition(":")[2]) == 0:  # htb's direct queue: exempt
            out[addr] = Direction()
    return out


_UNLIMITED_BPS = 100 * 10**9
_CLASS_RE = re.compile(r"^class htb (\S+) .*?\brate (\S+)")


def _htb_classes(ns: str, device: str) -> dict[str, int]:
    """handle → rate (bits/s) of the htb classes (``tc -j class`` prints no JSON for htb: the text is read)."""
    from kmesh.packet.linkspec import LinkSpecError, parse_rate

    proc = _run(ns, ["tc", "class", "show", "dev", device], check=False)
    out: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        m = _CLASS_RE.match(line.strip())
        if not m:
            continue
        try:
            out[m.group(1)] = parse_rate(m.group(2))
        except LinkSpecError:
            out[m.group(1)] = 0
    return out


def _minor(text: object) -> int:
    """A class minor as tc prints it (``11``, ``0x11``: hex either way); 0 for none."""
    try:
        return int(str(text), 16) if text not in (None, "") else 0
    except ValueError:
        return 0


def _u32_address(opts: dict) -> str | None:
    """The address a u32 filter of ``tc_plan`` matches (``match ip dst A`` is 4 bytes at offset 16, src
    at 12)."""
    match = opts.get("match")
    if isinstance(match, list):
        match = match[0] if match else None
    if not isinstance(match, dict):
        return None
    value, mask = match.get("value"), match.get("mask")
    if value is None or mask is None:
        return None
    try:
        v, m = int(str(value), 16), int(str(mask), 16)
    except ValueError:
        return None
    net = ipaddress.ip_network((v, bin(m).count("1")), strict=False)
    return _host(str(net))


def read_link(ends: LinkEnds) -> Reading:
    """What the qdiscs of both ends of ``ends`` do (the delayer's part is in the chains: ``read_chain``)."""
    return Reading(out=read_tc(ends.netns, ends.device), into=read_tc(ends.outer_netns, ends.outer_device))
