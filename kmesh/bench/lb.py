"""The load-balancing experiment behind ``kmesh bench lb``: how a Service spreads requests over its endpoints.

It sends N requests (a new TCP connection each, or one UDP datagram each)
to a Service's ClusterIP:port from one place in the lab — a pod's network
namespace (netns runtime), a pod's loopback address (sim runtime) or this
process — and asks every answer who served it (HTTP: ``GET /hostname``):
agnhost ``serve-hostname`` (and ``netexec``) answer their pod name, kmesh/echo's
and echo-basic's JSON name it in ``pod``. With ``keepalive`` the requests go
over persistent HTTP/1.1 connections instead (kmesh.bench.keepalive). With
``via`` they go, as HTTP, to a Gateway's or the ingress controller's
LoadBalancer address instead of the ClusterIP (kmesh.bench.via), and SERVICE
may list several Services (``v1,v2``) whose endpoints are all counted. The
answers are counted per endpoint of the Services' EndpointSlices (endpoints
that got nothing included) and the split is judged against what was
expected: ``uniform`` over the usable endpoints, explicit ``weights`` (per
endpoint, or per Service: ``weights:v1=90,v2=10`` judges the answers counted
per Service), or ``sticky`` (one client, one endpoint: sessionAffinity
ClientIP) — with a chi-square goodness-of-fit test where a p-value makes
sense.

The pieces are separate so tests can drive each: ``resolve_service`` and
``resolve_source`` read the API, ``send_requests`` only talks to sockets,
``tally`` and ``judge`` are pure.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import socket
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import trio

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.api.wellknown import ZONE_LABEL
from kmesh.bench.stats import ChiSquare, Latency, chisquare
from kmesh.lab.datadir import ClusterInfo
from kmesh.proxy import topology
from kmesh.proxy.convert import SERVICE_NAME_LABEL, slice_endpoints
from kmesh.proxy.model import Endpoint, usable

if TYPE_CHECKING:
    from kmesh.bench.via import Via

Protocol = Literal["tcp", "http", "udp"]
UDP_PAYLOAD = b"hostname"  # serve-hostname --udp answers anything; netexec's UDP server wants "hostname"
HTTP_PATH = "/hostname"  # serve-hostname and kmesh/echo answer any path with their pod; netexec wants /hostname
DEFAULT_CONNECTIONS = 8  # --keepalive without --connections
MAX_ANSWER = 64 * 1024
DEFAULT_ALPHA = 0.01


class UsageError(Exception):
    """A bad argument of the experiment; ``param`` names it (``SERVICE``, ``--from``, ``--expect``...)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


# ------------------------------------------------------------------ the Service


@dataclass(frozen=True, kw_only=True)
class Backend(Endpoint):
    """One endpoint of the Service port under test, as its EndpointSlice lists it: the proxy model's
    ``Endpoint`` and who answers for it."""

    name: str  # the pod name (targetRef) — what serve-hostname answers — else ip:port
    hostname: str = ""
    service: str = ""  # the Service it came from, as SERVICE names it (NAME, or NS/NAME outside --namespace)

    def aliases(self) -> set[str]:
        """Every answer that names this endpoint: pod name, its hostname form, endpoint hostname, IP."""
        out = {self.name, self.name[:63].rstrip("-."), self.ip, self.addr}
        if self.hostname:
            out.add(self.hostname)
        return out


@dataclass(frozen=True)
class ServiceTarget:
    """One port of one Service and its endpoints: what the experiment sends to and judges against."""

    namespace: str
    name: str
    cluster_ip: str
    port: int
    protocol: str = "TCP"
    port_name: str = ""
    app_protocol: str = ""
    session_affinity: bool = False
    internal_local: bool = False  # internalTrafficPolicy: Local
    endpoints: tuple[Backend, ...] = ()
    label: str = ""  # how to show it when it is several Services merged (``merge_targets``)

    def __str__(self) -> str:
        return self.label or f"{self.namespace}/{self.name}:{self.port_name or self.port}"

    def usable(self, node: str | None = None, zone: str = "") -> list[Backend]:
        """Where a proxy sends traffic: the ready endpoints, else the serving terminating ones (upstream's rule).

        With internalTrafficPolicy Local and a client on ``node``, only that node's endpoints; else, for a
        client on a node in ``zone``, those hinted for it when topology hints apply (kmesh.proxy.topology)."""
        if self.internal_local and node:
            return usable([b for b in self.endpoints if b.node == node])
        return topology.cluster_endpoints(self.endpoints, zone)

    def speaks_http(self) -> bool:
        """Whether the port says it is HTTP (appProtocol, or a port name ``http``/``http-*`` as Istio reads it)."""
        ap = self.app_protocol.lower()
        if ap in ("http", "kubernetes.io/h2c") or ap.startswith("http"):
            return True
        pn = self.port_name.lower()
        return pn == "http" or pn.startswith("http-")


def _pick_port(svc: Obj, port: str | None, udp: bool) -> Obj:
    ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
    want = "UDP" if udp else "TCP"
    ports: list[Obj] = (svc.get("spec") or {}).get("ports") or []
    listed = ", ".join(f"{p.get('name') or '-'}={p.get('port')}/{p.get('protocol') or 'TCP'}" for p in ports) or "none"
    if port is not None:
        match = [p for p in ports if str(p.get("port")) == port or (p.get("name") or "") == port]
        if not match:
            raise UsageError("--port", f"Service {ns}/{name} has no port {port!r} (ports: {listed})")
        same = [p for p in match if (p.get("protocol") or "TCP") == want]
        if not same:
            hint = "drop --udp" if udp else "add --udp"
            raise UsageError("--port", f"port {port!r} of Service {ns}/{name} is not {want} ({listed}); {hint}?")
        return same[0]
    same = [p for p in ports if (p.get("protocol") or "TCP") == want]
    if not same:
        hint = "; drop --udp?" if udp else "; add --udp?"
        raise UsageError("--udp" if ports else "SERVICE", f"Service {ns}/{name} has no {want} port (ports: {listed})"
                         + (hint if ports else ""))
    return same[0]


def backends_from_slices(slices: Sequence[Obj], port_name: str, protocol: str,
                         service: str = "") -> tuple[Backend, ...]:
    """The endpoints of one Service port across its IPv4 EndpointSlices (de-duplicated, sorted by name),
    each marked as coming from ``service``."""
    seen: dict[str, Backend] = {}
    for ep, e in slice_endpoints(slices, port_name, protocol):
        ref = ep.get("targetRef") or {}
        b = Backend(
            name=ref.get("name") or f"{e.ip}:{e.port}", ip=e.ip, port=e.port, ready=e.ready, serving=e.serving,
            terminating=e.terminating, node=e.node, zone=e.zone, zone_hints=e.zone_hints,
            hostname=ep.get("hostname") or "", service=service,
        )
        seen.setdefault(b.addr, b)
    return tuple(sorted(seen.values(), key=lambda b: (b.name, b.addr)))


async def _get_or_usage_error(client: Any, kind: str, name: str, namespace: str, param: str, missing: str) -> Obj:
    """The object from the API; a 404 becomes ``UsageError(param, missing)`` (the argument named a thing that is not there)."""
    try:
        return await client.get(kind, name, namespace)  # type: ignore[no-any-return]
    except E.APIError as exc:
        if exc.code == 404:
            raise UsageError(param, missing) from None
        raise


async def node_zone(client: Any, node: str | None) -> str:
    """The ``topology.kubernetes.io/zone`` label of ``node`` ("" without a node, label or Node)."""
    if not node:
        return ""
    try:
        obj = await client.get("Node", node)
    except E.APIError as exc:
        if exc.code == 404:
            return ""
        raise
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(ZONE_LABEL) or "")


async def resolve_service(client: Any, namespace: str, service: str, port: str | None = None, udp: bool = False) -> ServiceTarget:
    """The Service port to test and its endpoints, read from the API; ``UsageError`` names what is wrong."""
    svc = await _get_or_usage_error(client, "Service", service, namespace,
                                    "SERVICE", f"no Service {service!r} in namespace {namespace!r}")
    spec = svc.get("spec") or {}
    cip = spec.get("clusterIP") or ""
    if not cip or cip == "None":
        raise UsageError("SERVICE", f"Service {namespace}/{service} has no ClusterIP (headless or ExternalName): "
                                    "nothing load-balances it")
    sp = _pick_port(svc, port, udp)
    protocol = sp.get("protocol") or "TCP"
    slices, _ = await client.list_all("EndpointSlice", namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}")
    backends = backends_from_slices(slices, sp.get("name") or "", protocol, service)
    target = ServiceTarget(
        namespace=namespace, name=service, cluster_ip=cip, port=int(sp["port"]), protocol=protocol,
        port_name=sp.get("name") or "", app_protocol=sp.get("appProtocol") or "",
        session_affinity=spec.get("sessionAffinity") == "ClientIP",
        internal_local=spec.get("internalTrafficPolicy") == "Local", endpoints=backends,
    )
    if not target.usable():
        what = f"{len(backends)} endpoint(s), none ready" if backends else "no endpoints"
        raise UsageError("SERVICE", f"Service {target} has {what}: nothing to balance over "
                                    "(do its pods run and pass their readiness probes?)")
    return target


def parse_services(text: str, namespace: str) -> list[tuple[str, str]]:
    """SERVICE as given: one Service or a comma list (``v1,v2``), each ``NAME`` (in ``namespace``) or ``NS/NAME``;
    ``[(namespace, name), ...]`` in order. ``UsageError`` (``SERVICE``) for an empty or repeated entry."""
    out: list[tuple[str, str]] = []
    for item in text.split(","):
        ns, slash, name = item.strip().rpartition("/")
        ns = ns if slash else namespace
        if not name or not ns or "/" in ns:
            raise UsageError("SERVICE", f"{text!r} is not a Service or a comma list of them ([NS/]NAME,...)")
        if (ns, name) in out:
            raise UsageError("SERVICE", f"Service {ns}/{name} is listed twice in {text!r}")
        out.append((ns, name))
    return out


def service_key(ns: str, name: str, namespace: str) -> str:
    """How a Service is named in the output and in ``--expect weights:``: NAME in ``namespace``, else NS/NAME."""
    return name if ns == namespace else f"{ns}/{name}"


def merge_targets(targets: Sequence[ServiceTarget]) -> ServiceTarget:
    """Several Services as one target: the endpoints of them all (an endpoint two of them share counted once,
    for the first); the first one's port and policies. One target is returned as it is."""
    if len(targets) == 1:
        return targets[0]
    seen: dict[str, Backend] = {}
    for t in targets:
        for b in t.endpoints:
            seen.setdefault(b.addr, b)
    first = targets[0]
    return replace(first, name=",".join(t.name for t in targets), cluster_ip="",
                   endpoints=tuple(sorted(seen.values(), key=lambda b: (b.service, b.name, b.addr))),
                   label=", ".join(str(t) for t in targets))


# ------------------------------------------------------------------ where requests come from


@dataclass(frozen=True)
class Source:
    """Where the requests leave from: a network namespace and/or a source address (None: this process)."""

    netns: str | None = None
    bind_ip: str | None = None
    description: str = "this process (loopback)"
    node: str | None = None  # the node the client is on (None: outside the cluster)


def _running(pod: Obj) -> bool:
    st = pod.get("status") or {}
    return st.get("phase") == "Running" and bool(st.get("podIP")) and not (pod.get("metadata") or {}).get("deletionTimestamp")


def _pod_netns(info: ClusterInfo, pod: Obj) -> str:
    from kmesh.lab.topology import LabNames

    names = LabNames(info.name)
    spec = pod.get("spec") or {}
    node = spec.get("nodeName") or ""
    if spec.get("hostNetwork"):
        return names.node(node)
    return names.pod(node, pod["metadata"]["name"], pod["metadata"].get("uid") or "")


def _source_of(info: ClusterInfo, pod: Obj, exists: Callable[[str], bool]) -> Source:
    md = pod["metadata"]
    label = f"pod {md.get('namespace')}/{md['name']}"
    if not _running(pod):
        phase = (pod.get("status") or {}).get("phase") or "Pending"
        raise UsageError("--from", f"{label} is not running ({phase})")
    ip = pod["status"]["podIP"]
    node = (pod.get("spec") or {}).get("nodeName") or None
    if info.runtime not in ("netns", "host"):
        return Source(None, ip, f"{label} ({ip})", node)
    ns = _pod_netns(info, pod)
    if not exists(ns):
        raise UsageError("--from", f"{label} has no network namespace {ns}; is it running on this machine?")
    return Source(ns, None, f"{label} ({ip}, netns {ns})", node)


async def resolve_source(
    client: Any, info: ClusterInfo, namespace: str, from_pod: str | None, target: ServiceTarget | None = None,
    *, rng: random.Random | None = None, exists: Callable[[str], bool] | None = None, avoid: Collection[str] = (),
) -> Source:
    """Where to send from: ``from_pod`` (``POD`` in ``namespace`` or ``NS/POD``), else a default.

    The default in the netns and host runtimes is a random running pod whose
    namespace is on this machine (one that is not an endpoint of ``target``
    nor has an address in ``avoid``, if there is one), else a node's namespace (host: this machine itself); in
    the sim runtime it is this process on loopback."""
    if exists is None:
        from kmesh.net import netns

        exists = netns.exists
    if from_pod:
        ns, _, name = from_pod.rpartition("/")
        ns = ns or namespace
        pod = await _get_or_usage_error(client, "Pod", name, ns, "--from", f"pod {ns}/{name} not found")
        return _source_of(info, pod, exists)
    if info.runtime not in ("netns", "host"):
        return Source()
    pods, _ = await client.list_all("Pod")
    backends = {b.ip for b in (target.endpoints if target else ())} | set(avoid)
    candidates = [p for p in pods if _running(p) and not (p.get("spec") or {}).get("hostNetwork")
                  and exists(_pod_netns(info, p))]
    outside = [p for p in candidates if p["status"]["podIP"] not in backends]
    pool = outside or candidates
    if pool:
        pod = (rng or random).choice(sorted(pool, key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"])))
        return _source_of(info, pod, exists)
    for node in info.nodes:
        if node.netns and exists(node.netns):
            return Source(node.netns, None, f"node {node.name} (netns {node.netns})", node.name)
    if info.runtime == "host":  # no pod of this machine: the machine itself, through its kube-proxy
        return Source(None, None, f"this machine ({info.nodes[0].name if info.nodes else 'host'})",
                      info.nodes[0].name if info.nodes else None)
    raise UsageError("--from", "no running pod (nor node namespace) to send from; give --from POD")


# ------------------------------------------------------------------ sending


@dataclass(frozen=True)
class Probe:
    """How one request is made: where to, which protocol, from where, how long to wait."""

    host: str
    port: int
    protocol: Protocol = "tcp"
    netns: str | None = None
    bind_ip: str | None = None
    timeout: float = 2.0
    http_host: str = ""
    path: str = HTTP_PATH  # what HTTP requests ask for


@dataclass(frozen=True)
class Outcome:
    """One request: the answer (who served it) or the error, and how long it took (seconds)."""

    answer: str | None
    error: str | None
    latency: float
    port: int | None = None  # the source port it left from (None: not known)


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, trio.BrokenResourceError)):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno == errno.ECONNREFUSED:
            return "refused"
        if exc.errno in (errno.ECONNRESET, errno.EPIPE):
            return "reset"
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "unreachable"
        return errno.errorcode.get(exc.errno, str(exc.errno)).lower()
    return type(exc).__name__


async def _open(probe: Probe, kind: int) -> trio.socket.SocketType:
    if probe.netns is None:
        sock = trio.socket.socket(socket.AF_INET, kind)
    else:
        from kmesh.net import netns

        sock = await netns.open_socket(probe.netns, socket.AF_INET, kind)
    if probe.bind_ip:
        try:
            await sock.bind((probe.bind_ip, 0))
        except OSError:
            sock.close()
            raise
    return sock


async def _read_all(sock: trio.socket.SocketType, done: Callable[[bytes], bool] | None = None) -> bytes:
    data = b""
    while len(data) < MAX_ANSWER:
        chunk = await sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if done is not None and done(data):
            break
    return data


def _http_complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length" and v.strip().isdigit():
            return len(body) >= int(v.strip())
    return False


def parse_http_answer(data: bytes) -> tuple[int, str]:
    """(status, body text) of a whole HTTP/1.x response; ValueError when it is not one."""
    head, sep, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") or not status_line[1].isdigit():
        raise ValueError("not an HTTP response")
    return int(status_line[1]), body.decode(errors="replace")


async def connect(sock: trio.socket.SocketType, address: tuple[str, int],
                  ports: list[int]) -> trio.socket.SocketType:
    """``sock`` (consumed) connected to ``address``; the source port goes into ``ports`` as soon as the kernel
    has picked it, so a connect that times out still names the port it left from (trio's own ``connect``
    closes the socket when cancelled, port and all). That port is what a later request on the same port
    meets in conntrack."""
    raw = socket.socket(fileno=sock.detach())
    try:
        raw.setblocking(False)
        err = raw.connect_ex(address)
        if port := raw.getsockname()[1]:
            ports.append(port)
        if err in (errno.EINPROGRESS, errno.EAGAIN):
            await trio.lowlevel.wait_writable(raw)
            err = raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        raw.close()
        raise
    return trio.socket.from_stdlib_socket(raw)


async def _exchange(probe: Probe, ports: list[int]) -> str:
    kind = socket.SOCK_DGRAM if probe.protocol == "udp" else socket.SOCK_STREAM
    with await connect(await _open(probe, kind), (probe.host, probe.port), ports) as sock:
        if probe.protocol == "udp":
            await sock.send(UDP_PAYLOAD)
            return (await sock.recv(65535)).decode(errors="replace")
        if probe.protocol == "tcp":
            return (await _read_all(sock)).decode(errors="replace")
        host = probe.http_host or probe.host
        await sock.send(f"GET {probe.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kmesh-bench\r\n"
                        "Connection: close\r\n\r\n".encode())
        data = await _read_all(sock, _http_complete)
    if not data:
        return ""
    return pod_of_http(data)


def pod_of_http(data: bytes) -> str:
    """The pod a complete HTTP answer names; ``_BadAnswer`` for anything but HTTP 200."""
    try:
        status, body = parse_http_answer(data)
    except ValueError:
        raise _BadAnswer("not HTTP") from None
    if status != 200:
        raise _BadAnswer(f"http {status}")
    return _named(body)


def _named(body: str) -> str:
    """The answer's name of its pod: kmesh/echo's JSON ``{"pod": ...}``, else the body (serve-hostname, netexec)."""
    if body.startswith("{"):
        try:
            doc = json.loads(body)
        except ValueError:
            return body
        if isinstance(doc, dict) and isinstance(doc.get("pod"), str):
            return doc["pod"]
    return body


class _BadAnswer(Exception):
    """The server answered something that names no pod."""


async def probe_once(probe: Probe) -> Outcome:
    """Make one request; never raises for network trouble (it is the error of the ``Outcome``)."""
    start = time.perf_counter()
    ports: list[int] = []

    def out(answer: str | None, error: str | None) -> Outcome:
        return Outcome(answer, error, time.perf_counter() - start, ports[0] if ports else None)

    try:
        with trio.fail_after(probe.timeout):
            answer = (await _exchange(probe, ports)).strip()
    except _BadAnswer as exc:
        return out(None, str(exc))
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        return out(None, _error_name(exc))
    return out(answer, None) if answer else out(None, "empty")


async def send_requests(
    probe: Probe, requests: int, concurrency: int = 1, on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """``requests`` requests by ``concurrency`` workers; outcomes in completion order."""
    if requests < 0 or concurrency < 1:
        raise ValueError("requests must be >= 0 and concurrency >= 1")
    outcomes: list[Outcome] = []
    todo = iter(range(requests))

    async def worker() -> None:
        for _ in todo:
            out = await probe_once(probe)
            outcomes.append(out)
            if on_outcome is not None:
                on_outcome(out)

    async with trio.open_nursery() as n:
        for _ in range(min(concurrency, max(requests, 1))):
            n.start_soon(worker)
    return outcomes


async def warm_up(probe: Probe, within: float, every: float = 0.1) -> Outcome | None:
    """Probe until one request gets an answer, for at most ``within`` seconds; that answer, or None.

    A proxy programs a Service a moment after its endpoints turn ready, and
    nothing outside it says when: polling is the only way to know. Warm-up
    requests are not counted."""
    if within <= 0:
        return None
    with trio.move_on_after(within):
        while True:
            out = await probe_once(replace(probe, timeout=min(probe.timeout, within)))
            if out.answer is not None:
                return out
            await trio.sleep(every)
    return None


# ------------------------------------------------------------------ counting and judging


@dataclass
class Tally:
    """What came back: answers per endpoint (every endpoint listed), answers naming no endpoint, errors."""

    counts: dict[str, int]
    unknown: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def answered(self) -> int:
        """Requests that got an answer (from an endpoint or not)."""
        return sum(self.counts.values()) + sum(self.unknown.values())

    @property
    def failed(self) -> int:
        """Requests that got an error."""
        return sum(self.errors.values())

    def cells(self) -> dict[str, int]:
        """Counts per endpoint, then per unknown answer (the chi-square cells)."""
        return {**self.counts, **self.unknown}


def tally(endpoints: Sequence[Backend], outcomes: Sequence[Outcome]) -> Tally:
    """Count ``outcomes`` per endpoint, mapping each answer to the endpoint it names."""
    by_alias: dict[str, str] = {}
    for b in endpoints:
        for a in b.aliases():
            by_alias.setdefault(a, b.name)
    t = Tally(counts={b.name: 0 for b in endpoints})
    for o in outcomes:
        if o.answer is None:
            key = o.error or "error"
            t.errors[key] = t.errors.get(key, 0) + 1
            continue
        t.latencies.append(o.latency)
        name = by_alias.get(o.answer)
        if name is None:
            t.unknown[o.answer] = t.unknown.get(o.answer, 0) + 1
        else:
            t.counts[name] += 1
    return t


@dataclass(frozen=True)
class Expectation:
    """What split is expected: ``uniform``, ``sticky`` or ``weights`` (endpoint name or IP → weight)."""

    kind: Literal["uniform", "sticky", "weights"]
    weights: tuple[tuple[str, float], ...] = ()

    def __str__(self) -> str:
        if self.kind == "weights":
            return "weights:" + ",".join(f"{k}={v:g}" for k, v in self.weights)
        return self.kind


def parse_expect(text: str) -> Expectation:
    """``uniform``, ``sticky`` or ``weights:a=1,b=2``; ValueError says what is wrong."""
    t = text.strip()
    if t in ("uniform", "sticky"):
        return Expectation(t)  # type: ignore[arg-type]
    if not t.startswith("weights:"):
        raise ValueError(f"{text!r} is not uniform, sticky or weights:NAME=W,...")
    pairs: list[tuple[str, float]] = []
    for item in t[len("weights:"):].split(","):
        name, eq, w = item.strip().partition("=")
        name = name.strip()
        try:
            weight = float(w)
        except ValueError:
            weight = math.nan
        if not eq or not name or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"bad weight {item.strip()!r} in {text!r} (want NAME=W with W >= 0)")
        if any(name == k for k, _ in pairs):
            raise ValueError(f"endpoint {name!r} is weighted twice in {text!r}")
        pairs.append((name, weight))
    if not sum(w for _, w in pairs) > 0:
        raise ValueError(f"the weights in {text!r} add up to 0")
    return Expectation("weights", tuple(pairs))


def expected_shares(target: ServiceTarget, expect: Expectation, node: str | None = None,
                    zone: str = "") -> dict[str, float]:
    """The expected share of each endpoint (0 for those that should get nothing); sticky: {} (decided by the data).

    Uniform is over the endpoints a client on ``node`` (in ``zone``) may reach (``ServiceTarget.usable``).
    Weights name endpoints by pod name or IP; unnamed endpoints get 0. ``UsageError``
    (``--expect``) for a name that is not an endpoint."""
    names = [b.name for b in target.endpoints]
    if expect.kind == "sticky":
        return {}
    if expect.kind == "uniform":
        usable = {b.name for b in target.usable(node, zone)}
        if not usable:
            raise UsageError("--from", f"Service {target} has internalTrafficPolicy Local and no usable endpoint "
                                       f"on node {node}: a client there gets nothing")
        return {n: (1 / len(usable) if n in usable else 0.0) for n in names}
    by_alias = {a: b.name for b in target.endpoints for a in b.aliases()}
    w = {n: 0.0 for n in names}
    for key, weight in expect.weights:
        name = by_alias.get(key)
        if name is None:
            raise UsageError("--expect", f"{key!r} is not an endpoint of Service {target} "
                                         f"(endpoints: {', '.join(names) or 'none'})")
        w[name] += weight
    total = sum(w.values())
    return {n: v / total for n, v in w.items()}


def service_shares(targets: Sequence[ServiceTarget], services: Sequence[str], expect: Expectation,
                   namespace: str = "default") -> dict[str, float] | None:
    """The expected share of each Service (``targets``, named ``services``) when ``expect`` weighs Services
    (``weights:v1=90,v2=10``, a key being NAME or NS/NAME); None when it weighs endpoints or is not ``weights``.
    Services not named get 0.

    ``UsageError`` (``--expect``) when the keys mix Services and endpoints, or when two of the Services share an
    endpoint (its answers could not be told apart)."""
    if expect.kind != "weights":
        return None
    alias = {k: k for k in services}
    alias.update({f"{namespace}/{k}": k for k in services if "/" not in k})
    named = [k for k, _ in expect.weights if k in alias]
    if not named:
        return None
    others = [k for k, _ in expect.weights if k not in alias]
    if others:
        raise UsageError("--expect", f"weights name Services ({', '.join(named)}) and something else "
                                     f"({', '.join(others)}): weigh Services ({', '.join(services)}) or endpoints, "
                                     "not both")
    owners: dict[str, set[str]] = {}
    for t, key in zip(targets, services):
        for b in t.endpoints:
            owners.setdefault(b.addr, set()).add(key)
    shared = [a for a, o in owners.items() if len(o) > 1]
    if shared:
        raise UsageError("--expect", f"the Services share endpoint(s) {', '.join(shared)}: "
                                     "a split per Service cannot be told apart")
    w = {k: 0.0 for k in services}
    for key, weight in expect.weights:
        w[alias[key]] += weight
    total = sum(w.values())
    return {k: v / total for k, v in w.items()}


def by_service(t: Tally, endpoints: Sequence[Backend], services: Sequence[str]) -> Tally:
    """The tally counted per Service (in ``services``' order) instead of per endpoint; unknown answers, errors and
    latencies as they were."""
    of = {b.name: b.service for b in endpoints}
    counts = {k: 0 for k in services}
    for name, c in t.counts.items():
        key = of.get(name, "")
        counts[key] = counts.get(key, 0) + c
    return Tally(counts, dict(t.unknown), dict(t.errors), list(t.latencies))


@dataclass(frozen=True)
class Verdict:
    """Whether the split matched the expectation, and why."""

    expect: Expectation
    passed: bool
    reason: str
    expected: dict[str, float]  # share per cell (sticky: 1.0 on the endpoint that got the most)
    test: ChiSquare | None = None  # None for sticky (it holds or not, exactly)
    alpha: float = DEFAULT_ALPHA
    sticky_to: str | None = None
    small_counts: bool = False  # some expected count < 5: the chi-square approximation is rough


def judge(t: Tally, shares: dict[str, float], expect: Expectation, alpha: float = DEFAULT_ALPHA) -> Verdict:
    """Test the tally against the expected shares (chi-square), or check stickiness."""
    cells = t.cells()
    n = t.answered
    if n == 0:
        return Verdict(expect, False, "no request got an answer", dict(shares), alpha=alpha)
    if expect.kind == "sticky":
        top = max(cells, key=lambda k: cells[k])
        expected = {k: (1.0 if k == top else 0.0) for k in cells}
        got = [k for k, v in cells.items() if v]
        if top in t.unknown:
            return Verdict(expect, False, f"answers from outside the Service's endpoints: {', '.join(sorted(t.unknown))}",
                           expected, alpha=alpha)
        if len(got) == 1:
            return Verdict(expect, True, f"sticky: all {n} answers from {top}", expected, alpha=alpha, sticky_to=top)
        return Verdict(expect, False, f"not sticky: answers from {len(got)} endpoints ({cells[top]} of {n} from {top})",
                       expected, alpha=alpha)
    expected = {k: shares.get(k, 0.0) for k in cells}
    res = chisquare([cells[k] for k in cells], [expected[k] for k in cells])
    small = any(0 < e * n < 5 for e in expected.values())
    if t.unknown:
        reason = f"answers from outside the Service's endpoints: {', '.join(sorted(t.unknown))}"
        return Verdict(expect, False, reason, expected, res, alpha, small_counts=small)
    stray = [k for k in cells if cells[k] and expected[k] == 0]
    if stray:
        return Verdict(expect, False, f"endpoints expected to get nothing answered: {', '.join(stray)}",
                       expected, res, alpha, small_counts=small)
    if res.passes(alpha):
        return Verdict(expect, True, f"{expect} holds (p = {res.p_value:.3g} >= alpha {alpha:g})",
                       expected, res, alpha, small_counts=small)
    return Verdict(expect, False, f"{expect} rejected (p = {res.p_value:.3g} < alpha {alpha:g})",
                   expected, res, alpha, small_counts=small)


# ------------------------------------------------------------------ the whole experiment


@dataclass(frozen=True)
class Plan:
    """Everything decided before the first request."""

    target: ServiceTarget
    source: Source
    probe: Probe
    expect: Expectation
    shares: dict[str, float]
    requests: int
    concurrency: int  # with keepalive: the number of connections, open at the same time
    alpha: float = DEFAULT_ALPHA
    keepalive: bool = False  # HTTP/1.1 requests over persistent connections (kmesh.bench.keepalive)
    via: Via | None = None  # requests to a Gateway or the ingress controller instead of the ClusterIP
    services: tuple[str, ...] = ()  # the Services whose endpoints are counted, as SERVICE names them
    per_service: bool = False  # the expectation weighs Services: judged over answers counted per Service

    def cells(self, t: Tally) -> Tally:
        """What the judge tests: ``t`` per endpoint, or per Service when the expectation weighs Services."""
        return by_service(t, self.target.endpoints, self.services) if self.per_service else t

    def service_counts(self, t: Tally) -> dict[str, int]:
        """Answers per Service (every Service of the plan listed)."""
        return by_service(t, self.target.endpoints, self.services).counts if self.services else {}


@dataclass(frozen=True)
class LbResult:
    """The outcome of a run: the tally, latency summary, verdict and how long it took."""

    plan: Plan
    tally: Tally
    latency: Latency
    verdict: Verdict
    duration: float

    @property
    def passed(self) -> bool:
        """True when the split matched the expectation."""
        return self.verdict.passed

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able data, for scripts comparing runs (proxy modes, endpoint churn)."""
        t, v, lat, probe = self.tally, self.verdict, self.latency, self.plan.probe
        by_name = {b.name: b for b in self.plan.target.endpoints}

        def num(x: float) -> float | None:
            return None if math.isnan(x) or math.isinf(x) else x

        plan = self.plan
        per_service = plan.service_counts(t)
        return {
            "service": str(plan.target), "target": f"{probe.host}:{probe.port}", "protocol": probe.protocol,
            "via": plan.via.spec() if plan.via else "service",
            "host": probe.http_host if probe.protocol == "http" else None,
            "path": probe.path if probe.protocol == "http" else None,
            "source": plan.source.description, "requests": plan.requests,
            "concurrency": plan.concurrency, "duration": self.duration,
            "cells": "services" if plan.per_service else "endpoints",
            "endpoints": [
                {"name": k, "service": by_name[k].service if k in by_name else None,
                 "address": by_name[k].addr if k in by_name else None,
                 "node": by_name[k].node if k in by_name else None, "count": c,
                 "expected": None if plan.per_service else v.expected.get(k)}
                for k, c in t.cells().items()
            ],
            "services": [
                {"name": k, "endpoints": sum(b.service == k for b in plan.target.endpoints), "count": c,
                 "expected": v.expected.get(k) if plan.per_service else None}
                for k, c in per_service.items()
            ],
            "errors": dict(t.errors),
            "latency": {"p50": num(lat.p50), "p90": num(lat.p90), "p99": num(lat.p99), "max": num(lat.max)},
            "expect": str(v.expect), "alpha": v.alpha, "passed": v.passed, "reason": v.reason,
            "chi_square": None if v.test is None else {"statistic": num(v.test.statistic), "df": v.test.df,
                                                       "p_value": v.test.p_value},
            "sticky_to": v.sticky_to,
        }


async def _check_can_enter(source: Source) -> None:
    """Open (and close) one socket in the source namespace now, so a missing privilege is a usage error."""
    from kmesh.net import netns

    try:
        sock = await netns.open_socket(source.netns)
    except (netns.NetnsError, OSError) as exc:
        hint = " (entering another network namespace needs root)" if os.geteuid() != 0 else ""
        raise UsageError("--from", f"cannot send from {source.description}: {exc}{hint}") from None
    sock.close()


def choose_protocol(target: ServiceTarget, udp: bool, protocol: str = "auto") -> Protocol:
    """udp with --udp; else ``protocol``, where auto means http for ports that say so and raw tcp otherwise."""
    if udp:
        return "udp"
    if protocol in ("tcp", "http"):
        return protocol  # type: ignore[return-value]
    return "http" if target.speaks_http() else "tcp"


def load_shape(requests: int, concurrency: int, *, keepalive: bool = False, connections: int | None = None,
               per_connection: int | None = None, udp: bool = False, protocol: str = "auto") -> tuple[int, int]:
    """``(requests, concurrency)`` to send, checked (``UsageError`` names the argument; no lab needed).

    With ``keepalive`` the concurrency is the number of connections: ``connections`` (default 8), each
    carrying ``per_connection`` requests, else ``requests`` spread over them."""
    if requests < 1:
        raise UsageError("--requests", f"must be at least 1, got {requests}")
    if concurrency < 1:
        raise UsageError("--concurrency", f"must be at least 1, got {concurrency}")
    if not keepalive:
        if connections is not None or per_connection is not None:
            raise UsageError("--connections" if connections is not None else "--per-connection",
                             "only goes with --keepalive")
        return requests, concurrency
    if udp:
        raise UsageError("--keepalive", "keeps HTTP/1.1 connections open, over TCP: drop --udp")
    if protocol == "tcp":
        raise UsageError("--keepalive", "sends HTTP requests over each connection: drop --protocol tcp")
    conns = DEFAULT_CONNECTIONS if connections is None else connections
    if conns < 1:
        raise UsageError("--connections", f"must be at least 1, got {conns}")
    if per_connection is not None:
        if per_connection < 1:
            raise UsageError("--per-connection", f"must be at least 1, got {per_connection}")
        return per_connection * conns, conns
    if requests < conns:
        raise UsageError("--requests", f"{requests} request(s) cannot fill {conns} connections: send more, "
                                       "or give fewer --connections")
    return requests, conns


def request_path(path: str | None) -> str:
    """The path HTTP requests ask for: ``path`` (``--path``), where one ending in ``/`` is a prefix under which
    ``hostname`` is asked (``/`` → ``/hostname``, where agnhost netexec names its pod; echo-basic answers any
    path); None: ``/hostname``. ``UsageError`` (``--path``) for anything but an absolute path without spaces."""
    if path is None:
        return HTTP_PATH
    if not path.startswith("/") or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in path) or "#" in path:
        raise UsageError("--path", f"must be an absolute path (starting with /) without spaces, got {path!r}")
    return path + "hostname" if path.endswith("/") else path


def check_host(host: str | None) -> None:
    """``UsageError`` (``--host``) unless ``host`` is None or a Host header value (a name or address, maybe a
    port)."""
    if host is None:
        return
    if not host or any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in "/?#@" for c in host):
        raise UsageError("--host", f"must be a host name or address (maybe with :PORT), got {host!r}")


def check_request_args(
    service: str, *, namespace: str = "default", via: str | None = None, host: str | None = None,
    path: str | None = None, udp: bool = False, protocol: str = "auto", keepalive: bool = False,
) -> tuple[Via | None, list[tuple[str, str]], str, str]:
    """SERVICE, ``--via``, ``--host`` and ``--path`` checked together, with no lab needed: ``(via or None, the
    Services as (namespace, name), the HTTP path, the protocol: http with --via or --keepalive)``; ``UsageError``
    naming the argument (several Services without --via, --via with --udp, --host with raw TCP...)."""
    from kmesh.bench.via import parse_via

    route = parse_via(via, namespace)
    names = parse_services(service, namespace)
    if len(names) > 1 and route is None:
        raise UsageError("SERVICE", f"{service!r} lists {len(names)} Services: a ClusterIP belongs to one; send "
                                    "through what splits between them with --via gateway/[NS/]NAME or --via ingress")
    if route is not None:
        if udp:
            raise UsageError("--udp", f"--via {route.spec()} takes HTTP requests: drop --udp")
        if protocol == "tcp":
            raise UsageError("--protocol", f"--via {route.spec()} takes HTTP requests: drop --protocol tcp")
        protocol = "http"
    if keepalive:
        protocol = "http"
    if udp or protocol == "tcp":
        for flag, given in (("--host", host), ("--path", path)):
            if given is not None:
                raise UsageError(flag, "only goes with HTTP requests (not --udp nor --protocol tcp)")
    check_host(host)
    return route, names, request_path(path), protocol


async def plan_lb(
    client: Any, info: ClusterInfo, service: str, *, namespace: str = "default", port: str | None = None,
    udp: bool = False, protocol: str = "auto", requests: int = 300, concurrency: int = 8, from_pod: str | None = None,
    expect: str = "uniform", timeout: float = 2.0, alpha: float = DEFAULT_ALPHA,
    target: tuple[str, int] | None = None, keepalive: bool = False, connections: int | None = None,
    per_connection: int | None = None, via: str | None = None, host: str | None = None, path: str | None = None,
) -> Plan:
    """Resolve Service(s), endpoints, source and expectation into a ``Plan`` (``UsageError`` on bad arguments).

    ``service`` is one Service or a comma list; several need ``via``: ``gateway/[NS/]NAME`` or ``ingress``
    sends HTTP to that Gateway's (the lab's ingress controller's) LoadBalancer address, port 80, with ``host``
    as Host header and ``path`` (``request_path``), and counts the answers over the endpoints of every Service
    listed. ``target`` sends to that ``(ip, port)`` instead (tests; a look at one endpoint).
    ``keepalive``: HTTP over ``connections`` persistent connections (``load_shape``)."""
    from kmesh.bench.via import address_for, proxy_addresses, resolve_via

    requests, concurrency = load_shape(requests, concurrency, keepalive=keepalive, connections=connections,
                                       per_connection=per_connection, udp=udp, protocol=protocol)
    route, names, http_path, protocol = check_request_args(service, namespace=namespace, via=via, host=host,
                                                           path=path, udp=udp, protocol=protocol, keepalive=keepalive)
    if not 0 < alpha < 1:
        raise UsageError("--alpha", f"must be between 0 and 1, got {alpha}")
    try:
        expectation = parse_expect(expect)
    except ValueError as exc:
        raise UsageError("--expect", str(exc)) from None
    targets: list[ServiceTarget] = []
    for ns, name in names:
        t = await resolve_service(client, ns, name, port, udp)
        key = service_key(ns, name, namespace)
        targets.append(replace(t, endpoints=tuple(replace(b, service=key) for b in t.endpoints)))
    svc = merge_targets(targets)
    keys = tuple(service_key(ns, name, namespace) for ns, name in names)
    avoid: set[str] = set()
    if route is not None:
        route = await resolve_via(client, route)
        avoid = await proxy_addresses(client, route)  # not from the proxy's own pod: it would call itself
    source = await resolve_source(client, info, namespace, from_pod, svc, avoid=avoid)
    per_service = service_shares(targets, keys, expectation, namespace)
    shares = per_service if per_service is not None else \
        expected_shares(svc, expectation, source.node, await node_zone(client, source.node))
    if source.netns is not None:
        await _check_can_enter(source)
    if target is not None:
        dest = target
    elif route is not None:
        dest = address_for(route, source, info)
    else:
        dest = (svc.cluster_ip, svc.port)
    default_host = route.address if route is not None else f"{names[0][1]}.{names[0][0]}"
    probe = Probe(host=dest[0], port=dest[1], protocol=choose_protocol(svc, udp, protocol), netns=source.netns,
                  bind_ip=source.bind_ip, timeout=timeout, http_host=host or default_host, path=http_path)
    return Plan(svc, source, probe, expectation, shares, requests, concurrency, alpha, keepalive, route, keys,
                per_service is not None)


async def execute(plan: Plan, on_outcome: Callable[[Outcome], None] | None = None, warmup: float = 0.0) -> LbResult:
    """Send the plan's requests and judge what came back (after up to ``warmup`` s waiting for a first answer)."""
    await warm_up(plan.probe, warmup)
    start = time.perf_counter()
    outcomes = await send_requests(plan.probe, plan.requests, plan.concurrency, on_outcome)
    duration = time.perf_counter() - start
    t = tally(plan.target.endpoints, outcomes)
    verdict = judge(plan.cells(t), plan.shares, plan.expect, plan.alpha)
    return LbResult(plan, t, Latency.of(t.latencies), verdict, duration)


def with_target(plan: Plan, host: str, port: int) -> Plan:
    """The same plan aimed at ``host:port`` instead."""
    return replace(plan, probe=replace(plan.probe, host=host, port=port))
