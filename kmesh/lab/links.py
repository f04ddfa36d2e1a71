"""``kmesh link``: shape a netns lab's links, cut a node off the underlay, show what is set.

This is the lab's side: it turns ``node-1`` or ``default/web-abc`` into the
two ends of a link (``LinkEnds``), a peer node into its addresses, keeps the
record of what was set in ``D/run/links/targets.json``, and runs the
delayer process (``kmesh link shaper``) of each namespace that needs one.
``kmesh.packet.shaping`` does the kernel's side.

Every change is reconciled as a whole, as kube-proxy syncs: from the
records, the chain entries of every namespace (a node's queues are on the
underlay bridge, a pod's in its node, so one namespace serves several
targets), each namespace's delayer first, its chains after.

A node's link is its underlay veth: ``eth0`` in the node's namespace, whose
peer (named after the node) is a port of ``br0`` in the underlay namespace.
A pod's link is its ``eth0`` and the host-side veth in its node. ``--to
PEER`` (a node) is the traffic between the target and the peer's underlay
address and pod subnet (host-gw carries pod addresses on the underlay).

Files: ``D/run/links/targets.json`` (what ``set`` was given, and the ends it
resolved), per namespace with a delayer (the underlay's, a node's)
``<netns>.json`` (its settings), ``<netns>.status.json`` (what it applied,
its counters), ``<netns>.pid`` (its ``ProcId``) and
``D/logs/link-shaper-<netns>.log``. ``kmesh down`` removes them with ``D/run``
and ``D/logs``, and the delayers with the namespaces they run in; the rules
and qdiscs go with the namespaces. A deleted pod's settings go with its
namespace; its record, and its node's rules for its address, at the next
``kmesh link`` change.

Every check comes before the first change: a bad target, peer or value
changes nothing (``LinkUsage``, exit 2; no lab: ``NoLab``, exit 1).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmesh.lab.datadir import ClusterInfo, DataDir
from kmesh.lab.procs import ProcId, send, stop
from kmesh.lab.topology import UNDERLAY_BRIDGE, LabNames
from kmesh.net import netns
from kmesh.packet import shaping
from kmesh.packet.delayer import read_config, write_json
from kmesh.packet.linkspec import LinkSpec, format_duration, format_loss, format_rate
from kmesh.packet.shaping import LinkEnds, Rule

SHAPER_READY = b"shaper ready"
SHAPER_START_TIMEOUT = 20.0
SHAPER_RELOAD_TIMEOUT = 10.0


class LinkUsage(ValueError):
    """Bad input; ``param`` names the argument (``TARGET``, ``--to``, ``--delay``...)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(f"{param}: {message}")
        self.message = message
        self.param = param


class NoLab(RuntimeError):
    """No lab runs in the data dir."""


class LinkFailure(RuntimeError):
    """The kernel or the delayer refused a change (the previous settings were put back where possible)."""


@dataclass(frozen=True)
class Target:
    """A shaped link: a node's underlay link or a pod's eth0."""

    name: str  # node-1, default/web-abc
    kind: str  # node | pod
    node: str  # the node it is (node) or runs on (pod)
    ip: str  # its address: the node's underlay address, the pod's IP
    ends: LinkEnds

    def ways(self) -> list[tuple[str, str, tuple[str, ...], str]]:
        """(way, namespace, match, hook) of its two directions for the delayer: both on the outside of the
        link, where its packets have crossed the veth (a packet a local socket still owns counts against
        that socket while held, and TCP would slow to a trickle) and before they reach the other side (a
        packet held after it arrived keeps its arrival time stamp): on the underlay bridge for a node
        (``physdev`` in/out of its port), in its node for a pod (from its address as it comes in, to its
        address as it leaves, routed or bridged)."""
        e = self.ends
        if self.kind == "node":
            port = ("-m", "physdev")
            return [("out", e.outer_netns, (*port, "--physdev-in", e.outer_device), "post"),
                    ("in", e.outer_netns, (*port, "--physdev-out", e.outer_device), "post")]
        return [("out", e.outer_netns, ("-s", f"{self.ip}/32"), "pre"),
                ("in", e.outer_netns, ("-d", f"{self.ip}/32"), "post")]

    def to_json(self) -> dict[str, Any]:
        """The record's form."""
        e = self.ends
        return {"name": self.name, "kind": self.kind, "node": self.node, "ip": self.ip, "netns": e.netns,
                "device": e.device, "outerNetns": e.outer_netns, "outerDevice": e.outer_device}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Target:
        """Read ``to_json``'s form."""
        return cls(str(doc["name"]), str(doc["kind"]), str(doc["node"]), str(doc.get("ip") or ""),
                   LinkEnds(str(doc["netns"]), str(doc["device"]), str(doc["outerNetns"]), str(doc["outerDevice"])))


@dataclass
class LinkLab:
    """A running netns lab, as ``kmesh link`` sees it."""

    dd: DataDir
    info: ClusterInfo
    names: LabNames
    nodes: dict[str, Any] = field(default_factory=dict)  # name → NodeInfo

    @property
    def dir(self) -> Path:
        """``D/run/links``."""
        return self.dd.root / "run" / "links"

    @property
    def targets_file(self) -> Path:
        """The record of what ``set`` was given."""
        return self.dir / "targets.json"

    def node_target(self, node: str) -> Target:
        """A node's underlay link."""
        return Target(node, "node", node, self.nodes[node].ip,
                      LinkEnds(self.names.node(node), "eth0", self.names.underlay, node[:15]))

    def peer_addresses(self, node: str) -> tuple[str, ...]:
        """A node's underlay address and pod subnet."""
        n = self.nodes[node]
        return tuple(a for a in (n.ip, n.podCIDR) if a)

    def peer_of(self, address: str) -> str:
        """The node an address belongs to (underlay address or pod subnet), else the address itself."""
        for n in self.nodes.values():
            if address in (n.ip, n.podCIDR):
                return str(n.name)
        return address


def open_lab(dd: DataDir, command: str = "link shaping", own: str = "links") -> LinkLab:
    """The netns lab running in ``dd``; ``NoLab`` when none runs, ``LinkUsage`` for another runtime, saying
    that ``command`` needs nodes and pods with ``own`` of their own."""
    info = dd.read_cluster()
    if info is None or dd.supervisor_pid() is None:
        raise NoLab(f"no lab is running in {dd.root}")
    if info.runtime != "netns":
        why = ("its pods share this machine's loopback" if info.runtime == "sim"
               else f"its {own} are the machines' own")
        raise LinkUsage(f"the lab in {dd.root} runs the {info.runtime} runtime ({why}); {command} works on "
                        f"netns labs, whose nodes and pods have {own} of their own", "--data-dir")
    return LinkLab(dd, info, LabNames(info.name), {n.name: n for n in info.nodes})


def _node_or_none(lab: LinkLab, text: str) -> str | None:
    return text if "/" not in text and text in lab.nodes else None


def resolve_node(lab: LinkLab, text: str, param: str) -> str:
    """A node of the lab by name; ``LinkUsage`` naming ``param`` otherwise."""
    if text not in lab.nodes:
        raise LinkUsage(f"no node {text!r} in lab {lab.info.name} (nodes: {', '.join(lab.nodes)})", param)
    return text


def resolve_target(lab: LinkLab, text: str, verb: str = "shape") -> Target:
    """TARGET: a node by name, else a pod as ``[NS/]POD`` (namespace default), looked up in the API; a
    hostNetwork pod is refused with advice to ``verb`` its node instead."""
    node = _node_or_none(lab, text)
    if node is not None:
        return lab.node_target(node)
    ns, _, pod = text.rpartition("/")
    ns = ns or "default"
    if not pod or "/" in ns:
        raise LinkUsage(f"{text!r} is neither a node ({', '.join(lab.nodes)}) nor a pod as [NAMESPACE/]POD", "TARGET")
    obj = _get_pod(lab, ns, pod)
    if obj is None:
        raise LinkUsage(f"{text!r} is neither a node of lab {lab.info.name} ({', '.join(lab.nodes)}) nor a pod "
                        f"(no pod {pod!r} in namespace {ns!r})", "TARGET")
    spec = obj.get("spec") or {}
    node = spec.get("nodeName") or ""
    if spec.get("hostNetwork"):
        raise LinkUsage(f"pod {ns}/{pod} uses its node's network: {verb} node {node} instead", "TARGET")
    if node not in lab.nodes:
        raise LinkUsage(f"pod {ns}/{pod} is not running on a node of the lab yet", "TARGET")
    ip = (obj.get("status") or {}).get("podIP") or ""
    if not ip:
        raise LinkUsage(f"pod {ns}/{pod} has no IP yet; is it running?", "TARGET")
    pod_ns = lab.names.pod(node, pod, obj["metadata"]["uid"])
    if not netns.exists(pod_ns):
        raise LinkUsage(f"pod {ns}/{pod} has no network namespace ({pod_ns}); is it running?", "TARGET")
    try:
        outer = shaping.veth_peer(pod_ns, "eth0", lab.names.node(node))
    except (shaping.ShapingError, netns.NetnsError, ValueError) as exc:
        raise LinkUsage(f"pod {ns}/{pod}: cannot find its link: {exc}", "TARGET") from None
    return Target(f"{ns}/{pod}", "pod", node, ip, LinkEnds(pod_ns, "eth0", lab.names.node(node), outer))


def _get_pod(lab: LinkLab, ns: str, pod: str) -> dict[str, Any] | None:
    import trio

    from kmesh.api import errors as E
    from kmesh.client.api import APIUnavailable, Client

    async def fetch() -> dict[str, Any]:
        async with Client.from_kubeconfig(lab.info.kubeconfig) as c:
            return await c.get("Pod", pod, ns)

    try:
        return trio.run(fetch)
    except E.APIError as exc:
        if exc.code == 404:
            return None
        raise LinkUsage(exc.message, "TARGET") from None
    except APIUnavailable as exc:
        raise NoLab(f"the API server of lab {lab.info.name} does not answer: {exc}") from None


# ---------------------------------------------------------------------------------------------- records


@contextlib.contextmanager
def _locked(lab: LinkLab) -> Iterator[None]:
    """One ``kmesh link`` change at a time per lab."""
    lab.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lab.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _records(lab: LinkLab) -> dict[str, dict[str, Any]]:
    try:
        doc = json.loads(lab.targets_file.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _save_records(lab: LinkLab, records: dict[str, dict[str, Any]]) -> None:
    if records:
        write_json(lab.targets_file, records)
    else:
        lab.targets_file.unlink(missing_ok=True)


def _rules_of(record: dict[str, Any]) -> list[Rule]:
    return [Rule(r.get("peer"), LinkSpec.from_json(r), tuple(r.get("addresses") or ()))
            for r in (record.get("rules") or {}).values()]


def _record(target: Target, rules: list[Rule]) -> dict[str, Any]:
    return {**target.to_json(), "rules": {r.key: {"peer": r.peer, "addresses": list(r.addresses), **r.spec.to_json()}
                                          for r in shaping.ordered(rules)}}


# ---------------------------------------------------------------------------------------------- the delayer


@dataclass(frozen=True)
class ShaperFiles:
    """The files of the delayer of one namespace."""

    dir: Path
    log_dir: Path
    netns: str

    @property
    def config(self) -> Path:
        """Its settings."""
        return self.dir / f"{self.netns}.json"

    @property
    def status(self) -> Path:
        """What it applied, and its counters."""
        return self.dir / f"{self.netns}.status.json"

    @property
    def pid(self) -> Path:
        """Its ``ProcId``."""
        return self.dir / f"{self.netns}.pid"

    @property
    def log(self) -> Path:
        """Its log."""
        return self.log_dir / f"link-shaper-{self.netns}.log"

    def proc(self) -> ProcId | None:
        """The delayer process, if it still runs (proven by its start time)."""
        try:
            p = ProcId.parse(self.pid.read_text())
        except FileNotFoundError:
            return None
        return p if p is not None and p.alive() else None

    def entries(self) -> dict[int, tuple[str, LinkSpec]]:
        """Queue → (entry key, spec) in the current settings (empty when there are none)."""
        try:
            doc = json.loads(self.config.read_text())
            specs = read_config(self.config)[2]
        except (OSError, ValueError):
            return {}
        return {q: (str((doc["queues"].get(str(q)) or {}).get("key") or ""), spec) for q, spec in specs.items()}

    def queues(self) -> dict[str, int]:
        """Entry key → queue number in the current settings."""
        return {key: q for q, (key, _) in self.entries().items() if key}

    def read_status(self) -> dict[str, Any]:
        """The delayer's status file ({} when there is none)."""
        try:
            doc = json.loads(self.status.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}


def _files(lab: LinkLab, ns: str) -> ShaperFiles:
    return ShaperFiles(lab.dir, lab.dd.log_dir, ns)


def shaper_argv(files: ShaperFiles) -> list[str]:
    """The delayer's command line, inside its namespace."""
    return netns.nsenter_argv(files.netns, [sys.executable, "-m", "kmesh.cli", "link", "shaper", "--config",
                                            str(files.config), "--status", str(files.status)])


def _write_config(files: ShaperFiles, device: str, queues: dict[int, tuple[str, LinkSpec]]) -> int:
    """Write the delayer's settings (queue → (rule key, spec)); the new generation number."""
    try:
        generation = int(json.loads(files.config.read_text()).get("generation", 0)) + 1
    except (FileNotFoundError, ValueError, AttributeError):
        generation = 1
    write_json(files.config, {
        "generation": generation, "device": device,
        "queues": {str(q): {"key": key, **spec.to_json()} for q, (key, spec) in sorted(queues.items())},
    })
    return generation


def _start_shaper(files: ShaperFiles) -> ProcId:
    files.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(files.log, "ab") as log:
        proc = subprocess.Popen(shaper_argv(files), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                start_new_session=True, close_fds=True)
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + SHAPER_START_TIMEOUT
    try:
        while SHAPER_READY not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                raise LinkFailure(f"the delayer in {files.netns} did not start in {SHAPER_START_TIMEOUT:.0f} s; "
                                  f"see {files.log}")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                proc.wait()
                tail = files.log.read_text(errors="replace").strip().splitlines()[-3:]
                raise LinkFailure(f"the delayer in {files.netns} exited with {proc.returncode}: "
                                  + (" / ".join(tail) or f"see {files.log}"))
            seen += chunk
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        proc.stdout.close()
    pid = ProcId.of(proc.pid)
    if pid is None:
        raise LinkFailure(f"the delayer in {files.netns} exited right after it started; see {files.log}")
    files.pid.write_text(pid.format())
    proc.returncode = 0  # it runs on by itself: no "still running" warning when this object goes
    return pid


def _reload_shaper(files: ShaperFiles, proc: ProcId, generation: int) -> None:
    fd = proc.open()
    if fd is None:
        raise LinkFailure(f"the delayer in {files.netns} is gone")
    try:
        send(fd, signal.SIGHUP)
        deadline = time.monotonic() + SHAPER_RELOAD_TIMEOUT
        while True:
            status = files.read_status()
            if status.get("generation") == generation:
                return
            if status.get("error") and status.get("failedGeneration") == generation:
                raise LinkFailure(f"the delayer in {files.netns} refused the settings: {status['error']}")
            if select.select([fd], [], [], 0.01)[0]:
                raise LinkFailure(f"the delayer in {files.netns} exited; see {files.log}")
            if time.monotonic() > deadline:
                raise LinkFailure(f"the delayer in {files.netns} did not take the settings in "
                                  f"{SHAPER_RELOAD_TIMEOUT:.0f} s; see {files.log}")
    finally:
        os.close(fd)


def _stop_shaper(files: ShaperFiles) -> bool:
    proc = files.proc()
    stopped = stop(proc, grace=5.0) if proc is not None else False
    for p in (files.config, files.status, files.pid):
        p.unlink(missing_ok=True)
    return stopped


# ---------------------------------------------------------------------------------------------- applying


def _prune(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The records whose link still exists (a deleted pod's goes: its settings went with its namespace)."""
    return {k: r for k, r in records.items() if r.get("kind") != "pod" or netns.exists(str(r.get("netns")))}


def _netem_for(records: dict[str, dict[str, Any]]) -> bool:
    """Whether delays are netem's (the kernel has it) — asked only when some rule has a delay or loss."""
    if any(r.spec.delays for rec in records.values() for r in _rules_of(rec)):
        return shaping.netem_available()
    return False


def _spaces(lab: LinkLab, records: dict[str, dict[str, Any]]) -> set[str]:
    """Every namespace that can hold a KMESH-LINK chain or a delayer of this lab now."""
    out = {lab.names.underlay, *(lab.names.node(n) for n in lab.nodes)}
    for rec in records.values():
        out |= {str(rec["netns"]), str(rec["outerNetns"])}
    for p in lab.dir.glob("*.pid") if lab.dir.is_dir() else []:
        out.add(p.name.removesuffix(".pid"))
    return out


def _reconcile(lab: LinkLab, records: dict[str, dict[str, Any]], netem: bool) -> None:
    """Make the KMESH-LINK chain and the delayer of every namespace serve exactly what ``records`` call for
    (the delayer's part; tc is per target, ``shaping.apply_tc``)."""
    chains: dict[str, list[shaping.Entry]] = {}
    for rec in records.values():
        t, rules = Target.from_json(rec), _rules_of(rec)
        for way, ns, match, hook in t.ways():
            chains.setdefault(ns, []).extend(shaping.entries(t.name, way, match, rules, netem=netem, hook=hook))
    for ns in sorted(_spaces(lab, records)):
        if not netns.exists(ns):
            _stop_shaper(_files(lab, ns))
            continue
        _apply_ns(lab, ns, chains.get(ns, []))


def _apply_ns(lab: LinkLab, ns: str, chain: list[shaping.Entry]) -> None:
    """One namespace: its delayer serves the chain's queues, then the chain switches to them."""
    files = _files(lab, ns)
    current = files.entries()
    queues = shaping.assign_queues(chain, files.queues())
    if not queues:
        shaping.apply_chain(ns, [], {})
        _stop_shaper(files)
        return
    if ns == lab.names.underlay:
        shaping.bridge_calls_iptables(ns)
    specs = {e.key: e.spec for e in chain if e.spec is not None}
    final = {q: (k, specs[k]) for k, q in queues.items()}
    # Old queues are still served while the rules switch, and dropped after: a packet never meets a rule
    # whose queue nobody serves (it would pass unshaped).
    staged = {**{q: kv for q, kv in current.items() if q not in final}, **final}
    device = UNDERLAY_BRIDGE if ns == lab.names.underlay else "eth0"
    proc = files.proc()
    if proc is None:
        _write_config(files, device, staged)
        _start_shaper(files)
    elif staged != current:
        _reload_shaper(files, proc, _write_config(files, device, staged))
    shaping.apply_chain(ns, chain, queues)
    if staged != final:
        proc = files.proc()
        generation = _write_config(files, device, final)
        if proc is not None:
            _reload_shaper(files, proc, generation)


def _clear_tc(t: Target) -> None:
    e = t.ends
    if netns.exists(e.netns):
        shaping.clear_tc(e.netns, e.device)
    if netns.exists(e.outer_netns) and shaping.link_state(e.outer_netns, e.outer_device) != "gone":
        shaping.clear_tc(e.outer_netns, e.outer_device)


def set_link(lab: LinkLab, target_text: str, peer_text: str | None, spec: LinkSpec) -> tuple[Target, Rule, str]:
    """``kmesh link set``: replace the settings of TARGET (toward PEER) with ``spec``. Returns the target,
    the rule and the mechanism that serves its delay (``""`` when it has none)."""
    target = resolve_target(lab, target_text)
    peer = resolve_node(lab, peer_text, "--to") if peer_text is not None else None
    if peer is not None and target.kind == "node" and peer == target.node:
        raise LinkUsage(f"{peer} is the target itself; --to names the other end", "--to")
    rule = Rule(peer, spec, lab.peer_addresses(peer) if peer else ())
    with _locked(lab):
        records = _prune(_records(lab))
        old = records.get(target.name)
        old_rules = _rules_of(old) if old else []
        rules = [r for r in old_rules if r.key != rule.key] + [rule]
        new = {**records, target.name: _record(target, rules)}
        netem = _netem_for(new)
        try:
            shaping.apply_tc(target.ends, rules, netem=netem)
            _reconcile(lab, new, netem)
        except (shaping.ShapingError, LinkFailure, netns.NetnsError, OSError) as exc:
            try:  # put back what was there
                shaping.apply_tc(target.ends, old_rules, netem=netem)
                _reconcile(lab, records, netem)
            except (shaping.ShapingError, LinkFailure, netns.NetnsError, OSError):
                pass
            raise LinkFailure(f"{target.name}: {exc}") from None
        _save_records(lab, new)
    mech = (shaping.MECH_NETEM if netem else shaping.MECH_DELAYER) if spec.delays else ""
    return target, rule, mech


def reset_links(lab: LinkLab, target_text: str | None) -> list[str]:
    """``kmesh link reset``: remove the settings of one target (or of all, and bring cut-off nodes back);
    what was done, one line each."""
    done: list[str] = []
    with _locked(lab):
        records = _records(lab)
        if target_text is not None:  # a recorded pod may be gone from the API: its record still says where
            key = target_text if "/" in target_text or target_text in lab.nodes else f"default/{target_text}"
            rec = records.get(key)
            todo = [Target.from_json(rec) if rec else resolve_target(lab, target_text)]
        else:
            todo = [Target.from_json(r) for r in records.values()]
            todo += [lab.node_target(n) for n in lab.nodes if n not in records]
        for t in todo:
            _clear_tc(t)
            if records.pop(t.name, None) is not None:
                done.append(f"{t.name}: settings removed")
        remaining = _prune(records)
        _reconcile(lab, remaining, _netem_for(remaining))
        for t in todo:
            if t.kind == "node" and shaping.link_state(t.ends.outer_netns, t.ends.outer_device) == "down":
                shaping.set_link_state(t.ends.outer_netns, t.ends.outer_device, True)
                done.append(f"{t.name}: back on the underlay")
        _save_records(lab, remaining)
    return done


def partition(lab: LinkLab, node_text: str, up: bool) -> str:
    """``kmesh link down|up NODE``: set the node's port on the underlay bridge down or up."""
    node = resolve_node(lab, node_text, "NODE")
    t = lab.node_target(node)
    with _locked(lab):
        before = shaping.link_state(t.ends.outer_netns, t.ends.outer_device)
        if before == "gone":
            raise LinkFailure(f"{node}'s port {t.ends.outer_device} is not on {UNDERLAY_BRIDGE} in "
                              f"{t.ends.outer_netns}")
        shaping.set_link_state(t.ends.outer_netns, t.ends.outer_device, up)
    if up:
        return f"{node} is back on the underlay" if before == "down" else f"{node} was on the underlay already"
    return (f"{node} is cut off the underlay (its port {t.ends.outer_device} on {UNDERLAY_BRIDGE} is down)"
            if before == "up" else f"{node} was cut off already")


# ---------------------------------------------------------------------------------------------- showing


def _direction_json(d: shaping.Direction | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {
        "delay": format_duration(d.delay_ns) if d.delay_ns else None, "delayNs": d.delay_ns,
        "jitter": format_duration(d.jitter_ns) if d.jitter_ns else None, "jitterNs": d.jitter_ns,
        "loss": d.loss, "rate": format_rate(d.rate_bps) if d.rate_bps else None, "rateBps": d.rate_bps,
        "delayBy": d.delay_by or None, "rateBy": d.rate_by or None,
    }


def show_links(lab: LinkLab) -> list[dict[str, Any]]:
    """``kmesh link show``: every node's link and every pod link with settings, read back from where they
    live: the qdiscs of both ends, the KMESH-LINK chains and the delayers' own settings."""
    records = _records(lab)
    targets = [lab.node_target(n) for n in lab.nodes]
    targets += [Target.from_json(r) for r in records.values() if r.get("kind") == "pod"]
    chain_rules: dict[str, list[tuple[str, shaping.ChainRule]]] = {}
    delayers: dict[str, dict[str, Any]] = {}
    for ns in sorted(_spaces(lab, records)):
        if not netns.exists(ns):
            continue
        for r in shaping.read_chain(ns):
            chain_rules.setdefault(r.target, []).append((ns, r))
        files = _files(lab, ns)
        if files.config.exists() or files.pid.exists():
            proc, status, entries = files.proc(), files.read_status(), files.entries()
            counters = status.get("queues") or {}
            delayers[ns] = {"namespace": ns, "pid": proc.pid if proc else None, "running": proc is not None,
                            "generation": status.get("generation"), "entries": entries,
                            "counters": {key: counters.get(str(q)) for q, (key, _) in entries.items()}}
    out = []
    for t in targets:
        ends = t.ends
        entry: dict[str, Any] = {"target": t.name, "kind": t.kind, "node": t.node, "ip": t.ip,
                                 "namespace": ends.netns, "device": ends.device,
                                 "outer": {"namespace": ends.outer_netns, "device": ends.outer_device}}
        if not netns.exists(ends.netns):
            out.append({**entry, "state": "gone", "rules": [], "delayers": []})
            continue
        state = shaping.link_state(ends.outer_netns, ends.outer_device) if t.kind == "node" else \
            shaping.link_state(ends.netns, ends.device)
        reading = shaping.read_link(ends)
        peers: dict[str, str] = {}
        used: list[dict[str, Any]] = []
        for ns, r in chain_rules.get(t.name, []):
            side = reading.out if r.way == "out" else reading.into
            addr = r.address or "*"
            if r.peer and r.address:
                peers[r.address] = r.peer
            if r.queue is None:
                continue
            d = side.setdefault(addr, shaping.Direction())
            d.delay_by = shaping.MECH_DELAYER
            delayer = delayers.get(ns)
            key_spec = (delayer or {}).get("entries", {}).get(r.queue)
            if key_spec is not None:
                spec = key_spec[1]
                d.delay_ns, d.jitter_ns, d.loss = spec.delay_ns, spec.jitter_ns, spec.loss
            if delayer is not None:
                counters = delayer["counters"].get(f"{t.name} {r.way} {r.peer or '*'}")
                summary = {k: v for k, v in delayer.items() if k not in ("entries", "counters")}
                mine = next((u for u in used if u["namespace"] == ns), None)
                if mine is None:
                    mine = {**summary, "queues": {}}
                    used.append(mine)
                mine["queues"][str(r.queue)] = {"way": r.way, "peer": r.peer, **(counters or {})}
        by_peer: dict[str, dict[str, Any]] = {}
        for addr in [*reading.out, *[a for a in reading.into if a not in reading.out]]:
            peer = "*" if addr == "*" else peers.get(addr) or lab.peer_of(addr)
            row = by_peer.setdefault(peer, {"peer": None if peer == "*" else peer, "addresses": [],
                                            "out": None, "in": None})
            if addr != "*":
                row["addresses"].append(addr)
            if row["out"] is None and addr in reading.out:
                row["out"] = _direction_json(reading.out[addr])
            if row["in"] is None and addr in reading.into:
                row["in"] = _direction_json(reading.into[addr])
        rules = sorted(by_peer.values(), key=lambda r: (r["peer"] is None, r["peer"] or ""))
        out.append({**entry, "state": state, "rules": rules, "delayers": used})
    return out


def describe(d: dict[str, Any] | None) -> tuple[str, str, str, str]:
    """(delay, loss, rate, by) cells of one direction."""
    if d is None:
        return "-", "-", "-", "-"
    delay = (d["delay"] or "-") + (f" ±{d['jitter']}" if d.get("jitter") else "")
    loss = format_loss(d["loss"]) if d.get("loss") else "-"
    by = [b for b in (d.get("delayBy"), d.get("rateBy")) if b]
    return delay, loss, d["rate"] or "-", " + ".join(by) or "-"
