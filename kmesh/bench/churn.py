"""``kmesh bench churn SERVICE --during rollout|scale:N|delete-pods:K``: a steady load while the endpoints change.

The question behind it is the one of kubernetes#19029, #48370, #125467 and
their duplicates: *what happens to my traffic during a rollout?* A steady
load (``rate`` requests per second: a new connection each, or one persistent
connection with ``keepalive``) goes through the Service's ClusterIP while,
after ``after`` seconds of baseline, its endpoints change:

- ``rollout``: the Deployment behind the Service gets a new pod template
  annotation ``kubectl.kubernetes.io/restartedAt`` (what ``kubectl rollout
  restart`` does) and rolls its pods;
- ``scale:N``: the Deployment is scaled to N replicas;
- ``delete-pods:K``: K of the Service's pods are deleted.

Watches on the pods, the EndpointSlices and the Deployment time each step:
a pod marked for deletion (``deletionTimestamp``), its endpoint turning
``terminating`` (and not ready) in the EndpointSlice, the pod gone, new pods
ready, the change complete. Every answer names the pod that served it, so a
request served by a pod that was already terminating is counted against
that pod, beside the times the run saw. The load goes on until the change is
complete and no request failed for ``settle`` seconds (or for ``duration``
seconds in all). For UDP, the source pod's node is then asked for the
conntrack entries of flows to the Service that still point at an endpoint
that no longer exists (``conntrack -L``): what kube-proxy's flush after a
sync should have removed.

What graceful termination buys shows in the errors: without a preStop delay a
pod stops listening as soon as it is told to stop, while the proxies still
send it traffic until the EndpointSlice change reaches them (refused
connections); with ``preStop: {sleep: ...}`` it keeps serving until they have.

The accounting (``parse_change``, ``PodTimes``, ``served_by_terminating``,
``churn_timeline``, ``parse_conntrack``, ``stale_flows``) is pure, for tests;
``run_churn`` does the experiment.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from kmesh.api.obj import Obj
from kmesh.bench.lb import (
    UDP_PAYLOAD,
    Plan,
    Probe,
    UsageError,
    _BadAnswer,
    _error_name,
    _http_complete,
    _open,
    _pod_netns,
    _read_all,
    _running,
    backends_from_slices,
    connect,
    pod_of_http,
    probe_once,
)
from kmesh.bench.load import (
    LoadRecords,
    Record,
    ended_by,
    errors_by_class,
    errors_by_kind,
    leaves,
    longest,
    port_reused,
    quiet_started,
    steady_load,
    timeline,
)
from kmesh.lab.datadir import ClusterInfo
from kmesh.proxy.convert import SERVICE_NAME_LABEL

CHANGE_FORMS = "rollout, scale:N or delete-pods:K"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
MAX_CHANGE = 1000  # at most this many replicas / pods to delete: a lab's size


# ------------------------------------------------------------------ what changes


@dataclass(frozen=True)
class Change:
    """The change to the Service's endpoints: ``rollout``, ``scale`` (to ``count``) or ``delete-pods`` (``count``)."""

    kind: str
    count: int = 0

    def __str__(self) -> str:
        return self.kind if self.kind == "rollout" else f"{self.kind}:{self.count}"

    @property
    def needs_deployment(self) -> bool:
        return self.kind in ("rollout", "scale")


def parse_change(text: str) -> Change:
    """``rollout``, ``scale:N`` (N >= 1) or ``delete-pods:K`` (K >= 1); ``UsageError`` naming ``--during`` otherwise."""
    t = text.strip()
    if t == "rollout":
        return Change("rollout")
    kind, sep, num = t.partition(":")
    if sep and kind in ("scale", "delete-pods"):
        if not num.strip().isdigit():
            raise UsageError("--during", f"{t!r}: {kind}: needs a whole number, e.g. {kind}:2")
        n = int(num)
        if n < 1:
            why = "nothing would answer the load" if kind == "scale" else "nothing would change"
            raise UsageError("--during", f"{t!r}: {kind}:{n}: {why}; give a number >= 1")
        if n > MAX_CHANGE:
            raise UsageError("--during", f"{t!r}: at most {MAX_CHANGE}")
        return Change(kind, n)
    raise UsageError("--during", f"{text!r} is not one of {CHANGE_FORMS}")


# ------------------------------------------------------------------ pods and who answered


@dataclass
class PodTimes:
    """One pod of the Service as the run saw it: seconds since the load began (None: not seen)."""

    name: str
    ip: str = ""
    node: str = ""
    uid: str = ""
    seen_at: float | None = None
    ready_at: float | None = None  # first seen Ready during the run (None for pods ready before it)
    deleting_at: float | None = None  # the watch saw its deletionTimestamp
    deletion_timestamp: str = ""  # as the API set it: the time the grace period ends
    deletion_requested_at: float | None = None  # deletionTimestamp - deletionGracePeriodSeconds, made relative
    endpoint_terminating_at: float | None = None  # its EndpointSlice endpoint said terminating
    endpoint_removed_at: float | None = None  # its endpoint left the EndpointSlices
    gone_at: float | None = None  # the pod left the API

    def aliases(self) -> set[str]:
        """Every answer that names this pod: its name, its hostname form (63 characters), its IP."""
        out = {self.name, self.name[:63].rstrip("-.")}
        if self.ip:
            out.add(self.ip)
        return out

    def terminating_at(self, t: float) -> bool:
        """Whether the pod was known to be terminating at ``t`` (the watch had seen its deletion)."""
        return self.deleting_at is not None and t >= self.deleting_at

    def as_dict(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {"pod": self.name, "ip": self.ip, "node": self.node, "readyAt": r(self.ready_at),
                "deletingAt": r(self.deleting_at), "deletionTimestamp": self.deletion_timestamp or None,
                "deletionRequestedAt": r(self.deletion_requested_at),
                "endpointTerminatingAt": r(self.endpoint_terminating_at),
                "endpointRemovedAt": r(self.endpoint_removed_at), "goneAt": r(self.gone_at)}


def answerers(pods: dict[str, PodTimes]) -> dict[str, str]:
    """Answer text → pod name, for every alias of every pod (the first pod wins a shared alias)."""
    out: dict[str, str] = {}
    for p in sorted(pods.values(), key=lambda p: p.name):
        for a in p.aliases():
            out.setdefault(a, p.name)
    return out


def served_by_terminating(records: Sequence[Record], pods: dict[str, PodTimes]) -> dict[str, Any]:
    """Answers that came from a pod after the run had seen it marked for deletion, per pod: ``requests``
    (after its deletionTimestamp was seen), ``afterEndpointTerminating`` (after its EndpointSlice endpoint
    said terminating, when the proxies were told to stop choosing it) and when each thing happened."""
    who = answerers(pods)
    per: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.failed:
            continue
        name = who.get(r.answer or "")
        p = pods.get(name or "")
        if p is None or not p.terminating_at(r.start):
            continue
        row = per.setdefault(p.name, {**p.as_dict(), "requests": 0, "afterEndpointTerminating": 0,
                                      "first": r.start, "last": r.start})
        row["requests"] += 1
        if p.endpoint_terminating_at is not None and r.start >= p.endpoint_terminating_at:
            row["afterEndpointTerminating"] += 1
        row["first"] = min(row["first"], r.start)
        row["last"] = max(row["last"], r.start)
    rows = sorted(per.values(), key=lambda d: d["pod"])
    for d in rows:
        d["first"], d["last"] = round(d["first"], 3), round(d["last"], 3)
    return {"requests": sum(d["requests"] for d in rows),
            "afterEndpointTerminating": sum(d["afterEndpointTerminating"] for d in rows), "pods": rows}


def answers_by_pod(records: Sequence[Record], pods: dict[str, PodTimes]) -> dict[str, int]:
    """Answers per pod (answers naming no known pod under their own text)."""
    who = answerers(pods)
    out: dict[str, int] = {}
    for r in records:
        if not r.failed:
            key = who.get(r.answer or "", r.answer or "")
            out[key] = out.get(key, 0) + 1
    return out


@dataclass(frozen=True)
class EndpointState:
    """The Service port's endpoints at ``t``: how many ready, how many terminating, how many listed."""

    t: float
    ready: int
    terminating: int
    total: int


def churn_timeline(records: Sequence[Record], pods: dict[str, PodTimes], states: Sequence[EndpointState],
                   bucket: float = 1.0) -> list[dict[str, Any]]:
    """The load's timeline (``t``, ``ok``, a count per error) plus, per bucket, ``terminating``: answers
    from pods already marked for deletion, and ``endpoints``: ready/terminating endpoints at the bucket's end."""
    rows = timeline(records, bucket)
    who = answerers(pods)
    for r in records:
        if r.failed:
            continue
        p = pods.get(who.get(r.answer or "", ""))
        if p is not None and p.terminating_at(r.start):
            row = rows[int(r.start // bucket)]
            row["terminating"] = row.get("terminating", 0) + 1
    ordered = sorted(states, key=lambda s: s.t)
    for row in rows:
        end = row["t"] + bucket
        cur = [s for s in ordered if s.t < end]
        if cur:
            row["endpoints"] = {"ready": cur[-1].ready, "terminating": cur[-1].terminating}
    return rows


# ------------------------------------------------------------------ stale UDP conntrack entries


@dataclass(frozen=True)
class CtEntry:
    """One conntrack entry: the original direction and the reply's source (the endpoint after DNAT)."""

    src: str
    dst: str
    sport: int
    dport: int
    reply_src: str
    reply_sport: int
    line: str

    def as_dict(self) -> dict[str, Any]:
        return {"src": self.src, "sport": self.sport, "dst": self.dst, "dport": self.dport,
                "endpoint": f"{self.reply_src}:{self.reply_sport}", "line": self.line}


_CT_PAIR = re.compile(r"\b(src|dst|sport|dport)=(\S+)")


def parse_conntrack(text: str) -> list[CtEntry]:
    """The entries of ``conntrack -L`` output (lines without both directions are skipped)."""
    out: list[CtEntry] = []
    for line in text.splitlines():
        pairs = _CT_PAIR.findall(line)
        if len(pairs) < 8:
            continue
        orig, reply = dict(pairs[:4]), dict(pairs[4:8])
        try:
            out.append(CtEntry(orig["src"], orig["dst"], int(orig["sport"]), int(orig["dport"]), reply["src"],
                               int(reply["sport"]), " ".join(line.split())))
        except (KeyError, ValueError):
            continue
    return out


def stale_flows(entries: Sequence[CtEntry], service_ip: str, port: int, live: set[str]) -> list[CtEntry]:
    """The flows to ``service_ip:port`` that were DNATed to an address not in ``live`` (the endpoints there
    are now): every later datagram of such a flow still goes to the endpoint that is gone."""
    return [e for e in entries if e.dst == service_ip and e.dport == port and e.reply_src != service_ip
            and e.reply_src not in live]


@dataclass(frozen=True)
class StaleReport:
    """What ``conntrack -L`` in the source's node said after the change settled (``error``: why it could not)."""

    where: str
    entries: int = 0
    stale: tuple[CtEntry, ...] = ()
    error: str = ""
    endpoints: dict[str, str] = field(default_factory=dict)  # stale endpoint IP → the pod it was, when known

    def as_dict(self) -> dict[str, Any]:
        return {"where": self.where, "entries": self.entries, "stale": len(self.stale), "error": self.error or None,
                "flows": [{**e.as_dict(), "pod": self.endpoints.get(e.reply_src)} for e in self.stale]}


async def check_conntrack(info: ClusterInfo, plan: Plan, live: set[str], pods: dict[str, PodTimes]) -> StaleReport:
    """``conntrack -L -p udp`` where the source's traffic is NATed (its node's namespace), read for stale flows."""
    import shutil

    from kmesh.net import netns

    node = plan.source.node
    if info.runtime == "sim":
        return StaleReport("-", error="sim runtime: the userspace proxy makes no conntrack entries")
    ns = next((n.netns for n in info.nodes if n.name == node), None)
    if info.runtime == "netns" and not ns:
        return StaleReport("-", error=f"no network namespace known for node {node}")
    where = f"node {node}" + (f" (netns {ns})" if ns else "")
    if shutil.which("conntrack") is None:
        return StaleReport(where, error="conntrack not found (apt package conntrack)")
    proc = await netns.run(ns, ["conntrack", "-L", "-p", "udp"], check=False)
    if proc.returncode != 0:
        return StaleReport(where, error=proc.stderr.decode(errors="replace").strip() or f"exit {proc.returncode}")
    entries = parse_conntrack(proc.stdout.decode(errors="replace"))
    t = plan.target
    mine = [e for e in entries if e.dst == t.cluster_ip and e.dport == t.port]
    stale = stale_flows(mine, t.cluster_ip, t.port, live)
    by_ip = {p.ip: p.name for p in pods.values() if p.ip}
    return StaleReport(where, len(mine), tuple(stale), endpoints={e.reply_src: by_ip.get(e.reply_src, "")
                                                                   for e in stale})


# ------------------------------------------------------------------ sending


class Sender:
    """One request at a time, as the load makes them: ``(answer, error, source port)``, never raising for
    network trouble.

    A new connection (datagram socket) per request, or with ``keepalive`` one kept open across requests
    (HTTP/1.1 keep-alive; for UDP one socket, so one source port: one conntrack flow) and opened again
    after an error. HTTP asks for ``path``."""

    def __init__(self, probe: Probe, path: str = "/hostname", keepalive: bool = False) -> None:
        self.probe = probe
        self.path = path
        self.keepalive = keepalive
        self.sock: trio.socket.SocketType | None = None
        self.port: int | None = None  # the source port of the last connection
        self.connections = 0

    async def __call__(self) -> tuple[str | None, str | None, int | None]:
        p = self.probe
        if p.protocol == "tcp" or (p.protocol == "udp" and not self.keepalive):
            out = await probe_once(p)
            return out.answer, out.error, out.port
        ports: list[int] = []
        try:
            with trio.fail_after(p.timeout):
                answer = (await (self._udp(ports) if p.protocol == "udp" else self._http(ports))).strip()
        except _BadAnswer as exc:
            self._drop()
            return None, str(exc), self.port
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            if p.protocol != "udp":  # a lost datagram leaves the UDP socket as it was (one flow, as a client keeps)
                self._drop()
            return None, _error_name(exc), ports[0] if ports else self.port
        except BaseException:
            self._drop()
            raise
        return (answer, None, self.port) if answer else (None, "empty", self.port)

    def _drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def aclose(self) -> None:
        self._drop()

    async def _connected(self, kind: int, ports: list[int]) -> tuple[trio.socket.SocketType, bool]:
        """The open socket (reused: True) or a new one connected to the Service (its port put in ``ports``)."""
        if self.sock is not None:
            return self.sock, True
        sock = await connect(await _open(self.probe, kind), (self.probe.host, self.probe.port), ports)
        self.port = ports[0] if ports else None
        self.connections += 1
        if self.keepalive:
            self.sock = sock
        return sock, False

    async def _udp(self, ports: list[int]) -> str:
        sock, _ = await self._connected(socket.SOCK_DGRAM, ports)
        await sock.send(UDP_PAYLOAD)
        return (await sock.recv(65535)).decode(errors="replace")

    async def _http(self, ports: list[int]) -> str:
        sock, reused = await self._connected(socket.SOCK_STREAM, ports)
        try:
            host = self.probe.http_host or self.probe.host
            conn = "keep-alive" if self.keepalive else "close"
            await sock.send(f"GET {self.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kmesh-bench\r\n"
                            f"Connection: {conn}\r\n\r\n".encode())
            data = await _read_all(sock, _http_complete)
        finally:
            if not self.keepalive:
                sock.close()
        if not data:
            raise _BadAnswer("closed" if reused else "empty")  # a kept connection the server closed meanwhile
        if self.keepalive and _closes(data):
            self._drop()
        return pod_of_http(data)


def _closes(data: bytes) -> bool:
    head = data.partition(b"\r\n\r\n")[0].lower()
    return any(line.replace(b" ", b"") == b"connection:close" for line in head.split(b"\r\n")[1:])


# ------------------------------------------------------------------ the Service's pods and Deployment


def service_selector(svc: Obj) -> dict[str, str]:
    return dict((svc.get("spec") or {}).get("selector") or {})


def _matches(selector: dict[str, str], labels: dict[str, str] | None) -> bool:
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


def deployment_for(deployments: Sequence[Obj], selector: dict[str, str], service: str) -> Obj:
    """The one Deployment whose pods the Service selects; ``UsageError`` when none or several."""
    if not selector:
        raise UsageError("SERVICE", f"Service {service} has no selector: no Deployment's pods are its endpoints")
    hits = [d for d in deployments
            if _matches(selector, ((((d.get("spec") or {}).get("template") or {}).get("metadata") or {})
                                   .get("labels")))]
    if not hits:
        raise UsageError("SERVICE", f"no Deployment in the namespace makes pods that Service {service} selects "
                                    f"({_fmt_selector(selector)})")
    if len(hits) > 1:
        names = ", ".join(sorted(d["metadata"]["name"] for d in hits))
        raise UsageError("SERVICE", f"several Deployments make pods that Service {service} selects ({names}): "
                                    "which one to change?")
    return hits[0]


def _fmt_selector(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def pick_victims(pods: Sequence[Obj], endpoints: Sequence[Any], count: int) -> list[str]:
    """``count`` pods to delete: the Service's ready endpoints' pods, by name; ``UsageError`` if too few."""
    live = {p["metadata"]["name"] for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")}
    names = sorted({b.name for b in endpoints if b.ready and b.name in live})
    if len(names) < count:
        raise UsageError("--during", f"delete-pods:{count}: the Service has {len(names)} ready pod(s)")
    return names[:count]


async def pick_source(client: Any, info: ClusterInfo, namespace: str, selector: dict[str, str],
                      from_pod: str | None) -> str | None:
    """Where to send from: ``from_pod`` unless it is one of the pods the change affects (``UsageError``), else a
    running pod the Service does not select (None: let ``plan_lb`` choose, e.g. a node's namespace)."""
    from kmesh.bench.lb import _get_or_usage_error
    from kmesh.net import netns

    if from_pod:
        ns, _, name = from_pod.rpartition("/")
        ns = ns or namespace
        pod = await _get_or_usage_error(client, "Pod", name, ns, "--from", f"pod {ns}/{name} not found")
        if ns == namespace and _matches(selector, pod["metadata"].get("labels")):
            raise UsageError("--from", f"pod {ns}/{name} is one of the Service's own pods: the change would "
                                       "stop it; send from another pod")
        return f"{ns}/{name}"
    if info.runtime not in ("netns", "host"):
        return None
    pods, _ = await client.list_all("Pod")
    pool = [p for p in pods if _running(p) and not (p.get("spec") or {}).get("hostNetwork")
            and not ((p["metadata"].get("namespace") or "default") == namespace
                     and _matches(selector, p["metadata"].get("labels")))
            and netns.exists(_pod_netns(info, p))]
    if not pool:
        return None
    best = sorted(pool, key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"]))[0]["metadata"]
    return f"{best.get('namespace') or 'default'}/{best['name']}"


# ------------------------------------------------------------------ the experiment


@dataclass(frozen=True)
class ChurnOptions:
    """How the churn experiment runs."""

    change: Change
    rate: float = 20.0  # requests per second
    after: float = 3.0  # seconds of baseline before the change
    settle: float = 3.0  # seconds without a failure that end a window (and, after the change, the run)
    max_wait: float = 120.0  # at most this long after the change for it to complete and the errors to stop
    duration: float | None = None  # run this long in all instead (the change still at ``after``)
    keepalive: bool = False
    path: str = "/hostname"


@dataclass
class ChurnResult(LoadRecords):
    """What the experiment saw."""

    plan: Plan
    options: ChurnOptions
    records: list[Record]
    pods: dict[str, PodTimes]
    events: list[tuple[float, str, str]]  # (t, event, what)
    endpoint_states: list[EndpointState]
    changed_at: float | None
    completed_at: float | None
    settled: bool
    stale: StaleReport | None
    duration: float
    deployment: str | None = None
    victims: tuple[str, ...] = ()
    connections: int = 0

    @property
    def passed(self) -> bool:
        return self.completed_at is not None and self.settled

    def reason(self) -> str:
        o = self.options
        bound = f"{o.duration:g} s run" if o.duration is not None else f"{o.max_wait:g} s of the change"
        if self.changed_at is None:
            return "the change was not made"
        if self.completed_at is None:
            return f"{o.change} did not complete within {bound}"
        if not self.settled:
            return f"requests still failed in the last {o.settle:g} s (within {bound})"
        w = longest(self.windows)
        span = f"longest error window {w.seconds:.1f} s" if w else "no errors"
        return f"{o.change} complete {self.completed_at - self.changed_at:.1f} s after the change; {span}"

    def as_dict(self) -> dict[str, Any]:
        o, probe = self.options, self.plan.probe
        w = longest(self.windows)
        stale = self.stale
        return {
            "service": str(self.plan.target), "target": f"{probe.host}:{probe.port}", "protocol": probe.protocol,
            "path": o.path if probe.protocol == "http" else None, "keepalive": o.keepalive,
            "source": self.plan.source.description, "during": str(o.change), "deployment": self.deployment,
            "deletedPods": list(self.victims), "rate": o.rate, "timeout": probe.timeout, "after": o.after,
            "settle": o.settle, "maxWait": o.max_wait, "durationAsked": o.duration, "duration": round(self.duration, 3),
            "changedAt": None if self.changed_at is None else round(self.changed_at, 3),
            "completedAt": None if self.completed_at is None else round(self.completed_at, 3),
            "requests": len(self.records), "ok": len(self.records) - self.failed, "failed": self.failed,
            "errors": errors_by_class(self.records), "errorDetail": errors_by_kind(self.records),
            "longest_error_window_s": 0.0 if w is None else round(w.seconds, 3),
            "errorWindow": None if w is None else w.as_dict(), "windows": [x.as_dict() for x in self.windows],
            "portReused": len(port_reused(self.records)),
            "served_by_terminating": served_by_terminating(self.records, self.pods),
            "answers": answers_by_pod(self.records, self.pods),
            "stale_udp_conntrack": None if stale is None or stale.error else len(stale.stale),
            "conntrack": None if stale is None else stale.as_dict(),
            "connections": self.connections,
            "pods": [p.as_dict() for p in sorted(self.pods.values(), key=lambda p: p.name)],
            "events": [{"at": round(t, 3), "event": k, "what": what} for t, k, what in self.events],
            "completed": self.completed_at is not None, "settled": self.settled, "passed": self.passed,
            "reason": self.reason(),
            "timeline": churn_timeline(self.records, self.pods, self.endpoint_states),
            "records": [r.as_dict() for r in self.records],
        }


def rollout_done(dep: Obj | None, generation: int, replicas: int) -> bool:
    """``kubectl rollout status``'s test: the Deployment saw its new spec and all its replicas are updated and
    available, with no old one left."""
    if dep is None:
        return False
    st = dep.get("status") or {}
    return (int(st.get("observedGeneration") or 0) >= generation and int(st.get("updatedReplicas") or 0) == replicas
            and int(st.get("replicas") or 0) == replicas and int(st.get("availableReplicas") or 0) >= replicas)


class _Watch:
    """Pods, EndpointSlices and (when there is one) the Deployment, turned into the experiment's times."""

    def __init__(self, client: Any, plan: Plan, selector: dict[str, str], deployment: str | None,
                 clock: Callable[[], float], wall0: float) -> None:
        from kmesh.client.informer import Informer

        t = plan.target
        self.plan, self.clock, self.wall0, self.deployment = plan, clock, wall0, deployment
        self.pod_informer = Informer(client, "Pod", namespace=t.namespace, label_selector=_fmt_selector(selector))
        self.slices = Informer(client, "EndpointSlice", namespace=t.namespace,
                               label_selector=f"{SERVICE_NAME_LABEL}={t.name}")
        self.deps = Informer(client, "Deployment", namespace=t.namespace) if deployment else None
        self.pods: dict[str, PodTimes] = {}
        self.events: list[tuple[float, str, str]] = []
        self.states: list[EndpointState] = []
        self.listed: set[str] = set()  # endpoint pod names in the slices now
        self.live_ips: set[str] = set()
        self.changed = trio.Event()
        self.started = False
        self.replaced = True  # delete-pods: a controller makes new pods for the deleted ones
        self.pod_informer.add_handler(self._on_pod)
        self.slices.add_handler(lambda ch: self._update_slices())
        if self.deps is not None:
            self.deps.add_handler(lambda ch: self._wake())

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def event(self, key: str, what: str, at: float | None = None) -> None:
        self.events.append((self.clock() if at is None else at, key, what))

    def _pod(self, obj: Obj) -> PodTimes:
        md = obj.get("metadata") or {}
        name = md.get("name") or ""
        p = self.pods.get(name)
        if p is None or (md.get("uid") and p.uid and md.get("uid") != p.uid):
            p = self.pods[name] = PodTimes(name, uid=md.get("uid") or "", seen_at=self.clock())
        return p

    def _on_pod(self, ch: Any) -> None:
        obj, now = ch.obj, self.clock()
        p = self._pod(obj)
        st, md = obj.get("status") or {}, obj.get("metadata") or {}
        p.ip = st.get("podIP") or p.ip
        p.node = (obj.get("spec") or {}).get("nodeName") or p.node
        if ch.type == "DELETED":
            if p.gone_at is None:
                p.gone_at = now
                self.event("podGone", f"pod {p.name} gone")
        elif md.get("deletionTimestamp") and p.deleting_at is None:
            p.deleting_at = now
            p.deletion_timestamp = md["deletionTimestamp"]
            from kmesh.controllers.podutil import parse_time

            deadline = parse_time(md["deletionTimestamp"])
            if deadline is not None:
                p.deletion_requested_at = deadline - float(md.get("deletionGracePeriodSeconds") or 0) - self.wall0
            self.event("podDeleting", f"pod {p.name} terminating")
        elif p.ready_at is None and self.started and _pod_ready(obj):
            p.ready_at = now
            self.event("podReady", f"pod {p.name} ready")
        self._wake()

    def _update_slices(self) -> None:
        t, now = self.plan.target, self.clock()
        bs = backends_from_slices(self.slices.list(), t.port_name, t.protocol)
        names = {b.name for b in bs}
        for b in bs:
            p = self.pods.get(b.name)
            if p is None:
                p = self.pods[b.name] = PodTimes(b.name, ip=b.ip, node=b.node or "", seen_at=now)
            if b.terminating and p.endpoint_terminating_at is None:
                p.endpoint_terminating_at = now
                self.event("endpointTerminating", f"endpoint {b.name} terminating")
        for gone in sorted(self.listed - names):
            p = self.pods.get(gone)
            if p is not None and p.endpoint_removed_at is None:
                p.endpoint_removed_at = now
                self.event("endpointRemoved", f"endpoint {gone} removed")
        self.listed = names
        self.live_ips = {b.ip for b in bs}
        state = EndpointState(now, sum(b.ready for b in bs), sum(b.terminating for b in bs), len(bs))
        if not self.states or (self.states[-1].ready, self.states[-1].terminating, self.states[-1].total) != \
                (state.ready, state.terminating, state.total):
            self.states.append(state)
        self._wake()

    def terminating_pods(self) -> list[str]:
        return [p.name for p in self.pods.values() if p.deleting_at is not None and p.gone_at is None]

    def ready_endpoints(self) -> int:
        return self.states[-1].ready if self.states else 0

    def terminating_endpoints(self) -> int:
        return self.states[-1].terminating if self.states else 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as n:
            await n.start(self.pod_informer.run)
            await n.start(self.slices.run)
            if self.deps is not None:
                await n.start(self.deps.run)
            for obj in self.pod_informer.list():
                p = self._pod(obj)
                p.ip = (obj.get("status") or {}).get("podIP") or p.ip
                p.node = (obj.get("spec") or {}).get("nodeName") or p.node
            self._update_slices()
            self.started = True
            task_status.started()


def _pod_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _apply(client: Any, plan: Plan, change: Change, deployment: Obj | None, victims: Sequence[str]) -> int:
    """Make the change; the Deployment's new generation (0 for delete-pods)."""
    ns = plan.target.namespace
    if change.kind == "rollout":
        assert deployment is not None
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: _now_rfc3339()}}}}}
        obj = await client.patch("Deployment", deployment["metadata"]["name"], patch, ns)
        return int((obj.get("metadata") or {}).get("generation") or 0)
    if change.kind == "scale":
        assert deployment is not None
        obj = await client.patch("Deployment", deployment["metadata"]["name"], {"spec": {"replicas": change.count}},
                                 ns)
        return int((obj.get("metadata") or {}).get("generation") or 0)
    from kmesh.api import errors as E

    for name in victims:
        try:
            await client.delete("Pod", name, ns)
        except E.APIError as exc:
            if exc.code != 404:  # gone already: that is what was asked
                raise
    return 0


def _complete(watch: _Watch, change: Change, deployment: str | None, generation: int, replicas: int,
              victims: Sequence[str], before_ready: int) -> bool:
    """Whether the change is done: the rollout (scale) finished, no pod of the Service is still terminating and
    the EndpointSlices list as many ready endpoints as there should be, none terminating."""
    if watch.terminating_pods() or watch.terminating_endpoints():
        return False
    if change.kind == "delete-pods":
        if any(watch.pods.get(v) is None or watch.pods[v].gone_at is None for v in victims):
            return False
        return watch.ready_endpoints() >= before_ready or not watch.replaced
    assert watch.deps is not None and deployment is not None
    return rollout_done(watch.deps.get(deployment, watch.plan.target.namespace), generation, replicas) \
        and watch.ready_endpoints() == replicas


async def run_churn(
    client: Any, info: ClusterInfo, plan: Plan, options: ChurnOptions, selector: dict[str, str],
    deployment: Obj | None, victims: Sequence[str], *, on_record: Callable[[Record], None] | None = None,
    on_event: Callable[[str], None] | None = None, replaced: bool = True,
) -> ChurnResult:
    """The experiment: load, baseline, the change, its completion, ``settle`` quiet seconds (or ``duration``);
    then, for UDP, the stale conntrack entries."""
    say = on_event or (lambda s: None)
    change = options.change
    dep_name = deployment["metadata"]["name"] if deployment else None
    if change.kind == "scale":
        replicas = change.count
    elif deployment is not None:
        replicas = int((deployment.get("spec") or {}).get("replicas") or 1)
    else:
        replicas = 0
    began, wall0 = trio.current_time(), time.time()

    def clock() -> float:
        return trio.current_time() - began

    watch = _Watch(client, plan, selector, dep_name, clock, wall0)
    watch.replaced = replaced
    sender = Sender(plan.probe, options.path, options.keepalive)
    records: list[Record] = []
    stop, done = trio.Event(), trio.Event()
    changed_at: float | None = None
    completed_at: float | None = None
    end_at = None if options.duration is None else began + options.duration
    stopped_at = math.inf
    try:
        async with trio.open_nursery() as n:
            await n.start(watch.run)
            before_ready = watch.ready_endpoints()
            n.start_soon(partial(steady_load, sender, options.rate, clock, records, on_record, stop, done,
                                 concurrent=not options.keepalive))
            await trio.sleep(options.after)  # the baseline: a span of time, not an event
            say(str(change))
            changed_at = clock()  # when the request left: the watch may see its effect before the answer comes
            watch.event("change", _describe(change, dep_name, victims), changed_at)
            generation = await _apply(client, plan, change, deployment, victims)
            limit = end_at if end_at is not None else began + changed_at + options.max_wait
            with trio.move_on_at(limit):
                while completed_at is None:
                    if _complete(watch, change, dep_name, generation, replicas, victims, before_ready):
                        completed_at = clock()
                        watch.event("complete", f"{change} complete")
                        say(f"{change} complete")
                        break
                    with trio.move_on_after(0.25):
                        await watch.changed.wait()
                # Quiet: the requests started in the last `settle` seconds up to `ended_by` all succeeded; every
                # request started by then has ended (each within its timeout), so the verdict below agrees.
                while end_at is None and not quiet_started(records, changed_at, ended_by(clock(), plan.probe.timeout),
                                                            options.settle):
                    await trio.sleep(0.1)
            if end_at is not None:
                await trio.sleep_until(end_at)
            stopped_at = clock()
            stop.set()
            with trio.move_on_after(plan.probe.timeout + 1.0):
                await done.wait()  # the requests in flight end (each within its timeout)
            n.cancel_scope.cancel()  # and the watches
    except BaseExceptionGroup as eg:  # one failure (a refused patch, Ctrl-C) is raised as itself
        ls = leaves(eg)
        if len(ls) == 1:
            raise ls[0] from None
        raise
    finally:
        await sender.aclose()
    duration = clock()
    settled = changed_at is not None and quiet_started(records, changed_at, ended_by(stopped_at, plan.probe.timeout),
                                                       options.settle)
    stale = None
    if plan.probe.protocol == "udp":
        stale = await check_conntrack(info, plan, watch.live_ips, watch.pods)
    return ChurnResult(plan, options, sorted(records, key=lambda r: r.start), watch.pods,
                       sorted(watch.events, key=lambda e: e[0]), watch.states, changed_at, completed_at, settled,
                       stale, duration, dep_name, tuple(victims), sender.connections)


def _describe(change: Change, deployment: str | None, victims: Sequence[str]) -> str:
    if change.kind == "rollout":
        return f"rollout restart deployment/{deployment}"
    if change.kind == "scale":
        return f"scale deployment/{deployment} to {change.count}"
    return "delete pod " + ", ".join(victims)


async def prepare(client: Any, info: ClusterInfo, service: str, change: Change, *, namespace: str = "default",
                  from_pod: str | None = None, keepalive: bool = False, **options: Any) -> tuple[
                      Plan, dict[str, str], Obj | None, list[str], bool]:
    """Everything decided before the load: the plan (``plan_lb``'s), the Service's selector, the Deployment
    (rollout, scale), the pods to delete (delete-pods) and whether something replaces them; ``UsageError``
    for bad arguments, before any change."""
    from kmesh.bench.lb import _get_or_usage_error, plan_lb

    svc = await _get_or_usage_error(client, "Service", service, namespace, "SERVICE",
                                    f"no Service {service!r} in namespace {namespace!r}")
    selector = service_selector(svc)
    deployment = None
    if change.needs_deployment:
        deps, _ = await client.list_all("Deployment", namespace)
        deployment = deployment_for(deps, selector, f"{namespace}/{service}")
    source = await pick_source(client, info, namespace, selector, from_pod)
    plan = await plan_lb(client, info, service, namespace=namespace, from_pod=source, requests=1, concurrency=1,
                         **options)
    if keepalive and plan.probe.protocol == "tcp":
        raise UsageError("--keepalive", f"Service {plan.target} is spoken to as raw TCP (the server talks first and "
                                        "closes): keep-alive needs --protocol http (or --udp)")
    victims: list[str] = []
    replaced = True
    if change.kind == "delete-pods":
        pods, _ = await client.list_all("Pod", namespace, label_selector=_fmt_selector(selector)) \
            if selector else ([], "")
        victims = pick_victims(pods, plan.target.endpoints, change.count)
        by_name = {p["metadata"]["name"]: p for p in pods}
        replaced = all(any(r.get("controller") for r in by_name[v]["metadata"].get("ownerReferences") or [])
                       for v in victims)
    return plan, selector, deployment, victims, replaced
