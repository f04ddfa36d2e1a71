"""Golden metrics of a running lab's mesh (``kmesh mesh stat``) and its live requests (``kmesh mesh tap``).

Every meshed pod's sidecar serves, on its admin port inside the pod's network
namespace, ``/metrics`` (``kmesh_requests_total`` and the
``kmesh_request_duration_seconds`` histogram, one series per peer, route and
code) and ``/tap`` (one JSON line per finished request). This module finds the
meshed pods (one list of pods, ReplicaSets and Deployments), reaches each
admin port through a socket opened in the pod's namespace, and turns what the
sidecars counted into rows, as ``linkerd viz stat`` does:

- ``deploy``: a Deployment's own pods' *inbound* series (what its servers saw);
- ``svc``: every sidecar's *outbound* series towards a Service (what the
  clients saw, wherever they run);
- ``route``: the same, per (Service, route).

Over a window the rows are the differences of two scrapes (a counter that went
down is a restarted sidecar: its new value counts, as Prometheus' ``rate``
does); without one they are the totals since each sidecar started. Latency
quantiles are computed from the histogram buckets the way Prometheus'
``histogram_quantile`` does (linear inside the bucket).

The parsing and arithmetic are pure functions (tested without a lab); the
functions at the bottom do the I/O. For scripts and tests:

- ``stat_rows(info, resource, namespace, name, window) -> list[dict]``
- ``tap_events(info, target, namespace, max_events, timeout) -> list[dict]``
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import h11
import trio
from prometheus_client.parser import text_string_to_metric_families

from kmesh.apiserver.meshinject import ADMIN_PORT, TLS_MODE, TLS_MODE_LABEL

RESOURCES = ("deploy", "svc", "route")
RESOURCE_ALIASES = {"deploy": "deploy", "deployment": "deploy", "deployments": "deploy", "deploy.apps": "deploy",
                    "svc": "svc", "service": "svc", "services": "svc", "route": "route", "routes": "route",
                    "rt": "route"}
REQUESTS = "kmesh_requests_total"
DURATION = "kmesh_request_duration_seconds"
QUANTILES = (0.5, 0.95, 0.99)
DEFAULT_ROUTE = "[DEFAULT]"  # how a row shows requests that matched no named route (Linkerd's name)
MAX_BODY = 16 << 20  # a /metrics answer larger than this is refused
MAX_TAP_LINE = 1 << 20  # one /tap line larger than this ends that pod's tap

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]  # (sample name, sorted labels)
Scrape = dict[SeriesKey, float]  # one sidecar's series of interest at one moment
Warn = Callable[[str], None]


class MeshStatError(Exception):
    """Nothing to show, or the lab cannot be asked: the message says why, for the user."""


class MeshUsage(ValueError):
    """Bad input; ``param`` names the argument (``RESOURCE``, ``TARGET``, ``--window``)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(f"{param}: {message}")
        self.message = message
        self.param = param


# ---------------------------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class MeshedPod:
    """A running meshed pod, and the Deployment it belongs to ("" for none)."""

    namespace: str
    name: str
    workload: str
    obj: dict[str, Any] = field(compare=False, hash=False, repr=False, default_factory=dict)

    @property
    def key(self) -> str:
        """``NS/NAME``, how warnings and tap lines name it."""
        return f"{self.namespace}/{self.name}"


@dataclass
class Mesh:
    """The meshed pods of a lab (all namespaces) and how many of each Deployment's running pods are meshed."""

    pods: list[MeshedPod]
    workloads: dict[tuple[str, str], tuple[int, int]]  # (namespace, deployment) → (meshed, running)
    all_pods: set[tuple[str, str]] = field(default_factory=set)  # (namespace, name) of every running pod


def _running(pod: Mapping[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    return (pod.get("status") or {}).get("phase") == "Running" and not meta.get("deletionTimestamp")


def is_meshed(pod: Mapping[str, Any]) -> bool:
    """A pod whose sidecar answers on the admin port: labelled ``security.kmesh.io/tlsMode=kmesh`` and Running."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get(TLS_MODE_LABEL) == TLS_MODE and _running(pod)


def _owner(obj: Mapping[str, Any], kind: str) -> str:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("name"):
            return str(ref["name"])
    return ""


def workload_of(pod: Mapping[str, Any], rs_owner: Mapping[tuple[str, str], str],
                deployments: Iterable[Mapping[str, Any]]) -> str:
    """The Deployment of a pod: through its ReplicaSet's owner, else the one Deployment of its namespace whose
    selector matches its labels ("" when none or several do)."""
    from kmesh.api.selectors import from_selector_object

    meta = pod.get("metadata") or {}
    ns = meta.get("namespace", "")
    rs = _owner(pod, "ReplicaSet")
    if rs and (ns, rs) in rs_owner:
        return rs_owner[(ns, rs)]
    labels = meta.get("labels") or {}
    found = [str((d.get("metadata") or {}).get("name", "")) for d in deployments
             if (d.get("metadata") or {}).get("namespace") == ns
             and from_selector_object((d.get("spec") or {}).get("selector")).matches(labels)]
    return found[0] if len(found) == 1 else ""


def discover(pods: list[dict[str, Any]], replicasets: list[dict[str, Any]],
             deployments: list[dict[str, Any]]) -> Mesh:
    """The mesh of a lab from one listing of its pods, ReplicaSets and Deployments (all namespaces)."""
    rs_owner = {((r.get("metadata") or {}).get("namespace", ""), (r.get("metadata") or {}).get("name", "")):
                _owner(r, "Deployment") for r in replicasets}
    rs_owner = {k: v for k, v in rs_owner.items() if v}
    meshed: list[MeshedPod] = []
    counts: dict[tuple[str, str], list[int]] = {}
    running: set[tuple[str, str]] = set()
    for pod in pods:
        if not _running(pod):
            continue
        meta = pod.get("metadata") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        running.add((ns, name))
        wl = workload_of(pod, rs_owner, deployments)
        m = is_meshed(pod)
        if wl:
            c = counts.setdefault((ns, wl), [0, 0])
            c[0] += m
            c[1] += 1
        if m:
            meshed.append(MeshedPod(ns, name, wl, pod))
    meshed.sort(key=lambda p: (p.namespace, p.name))
    return Mesh(meshed, {k: (v[0], v[1]) for k, v in counts.items() if v[0]}, running)


# ---------------------------------------------------------------------------------------------- parsing


def parse_metrics(text: str) -> Scrape:
    """The ``kmesh_requests_total`` and ``kmesh_request_duration_seconds_*`` samples of one /metrics answer."""
    wanted = {REQUESTS, f"{DURATION}_bucket", f"{DURATION}_sum", f"{DURATION}_count"}
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in wanted:
                out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def delta(before: Scrape, after: Scrape) -> Scrape:
    """What happened between two scrapes of one sidecar; a series that went down restarted (its value counts)."""
    out: Scrape = {}
    for key, value in after.items():
        d = value - before.get(key, 0.0)
        out[key] = value if d < 0 else d
    return out


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' ``histogram_quantile``: ``buckets`` maps upper bound (``le``, +Inf included) to cumulative
    count. The rank's bucket is interpolated linearly from its lower bound (0 for the first); a rank in the
    +Inf bucket gives the highest finite bound. None without observations."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]) or len(bounds) < 2:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for i, le in enumerate(bounds):
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return bounds[-2]
            if i == 0 and le <= 0:
                return le
            in_bucket = count - prev_count
            if in_bucket <= 0:
                return le
            return prev_bound + (le - prev_bound) * (rank - prev_count) / in_bucket
        prev_bound, prev_count = le, count
    return bounds[-2]


# ---------------------------------------------------------------------------------------------- aggregation


@dataclass
class Totals:
    """What a group of series adds up to: requests, failures, the merged histogram."""

    requests: float = 0.0
    failures: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)

    def add(self, name: str, labels: Mapping[str, str], value: float) -> None:
        """Count one sample of a series of this group."""
        if name == REQUESTS:
            self.requests += value
            if not _success(labels.get("response_code", "")):
                self.failures += value
        elif name == f"{DURATION}_bucket":
            le = float(labels.get("le", "+Inf"))
            self.buckets[le] = self.buckets.get(le, 0.0) + value


def _success(code: str) -> bool:
    """A response below 500 (an answer that never came, code "" or 0, is a failure)."""
    try:
        return 0 < int(code) < 500
    except ValueError:
        return False


def split_service(dest: str) -> tuple[str, str, str]:
    """``NS/NAME:PORT`` (the ``destination_service`` label) as (namespace, name, port)."""
    ns, _, rest = dest.partition("/")
    name, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    return ns, name, port


def group_key(resource: str, pod: MeshedPod, labels: Mapping[str, str]) -> tuple[str, ...] | None:
    """The row a series of ``pod``'s sidecar belongs to, or None when it belongs to none."""
    direction = labels.get("direction")
    if resource == "deploy":
        if direction != "inbound" or not pod.workload:
            return None
        return (pod.namespace, pod.workload)
    if direction != "outbound" or not labels.get("destination_service"):
        return None
    ns, name, _ = split_service(labels["destination_service"])
    if resource == "svc":
        return (ns, name)
    return (ns, name, labels.get("route") or DEFAULT_ROUTE)


def aggregate(resource: str, scrapes: Mapping[MeshedPod, Scrape]) -> dict[tuple[str, ...], Totals]:
    """Every sidecar's series summed into one ``Totals`` per row of ``resource``."""
    out: dict[tuple[str, ...], Totals] = {}
    for pod, scrape in scrapes.items():
        for (name, labels), value in scrape.items():
            d = dict(labels)
            key = group_key(resource, pod, d)
            if key is not None:
                out.setdefault(key, Totals()).add(name, d, value)
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def stats_of(t: Totals, elapsed: float | None) -> dict[str, Any]:
    """The numbers of one row: success (0..1), rps, latency quantiles in ms (None without requests), requests."""
    n = round(t.requests)
    return {
        "success": round((t.requests - t.failures) / t.requests, 6) if t.requests > 0 else None,
        "rps": round(t.requests / elapsed, 3) if elapsed else None,
        **{f"latency_p{int(q * 100)}_ms": _ms(quantile(q, t.buckets)) for q in QUANTILES},
        "requests": n,
    }


def build_rows(resource: str, mesh: Mesh, scrapes: Mapping[MeshedPod, Scrape], elapsed: float | None,
               namespace: str | None, name: str | None) -> list[dict[str, Any]]:
    """The rows of ``kmesh mesh stat`` (the ``--json`` document) from the sidecars' series; ``namespace``
    None means all, ``name`` None every Deployment/Service. Every meshed Deployment gets a row, traffic or
    not; a Service or route gets one once a client has sent to it."""
    groups = aggregate(resource, scrapes)
    rows: list[dict[str, Any]] = []
    if resource == "deploy":
        for (ns, wl), (meshed, pods) in sorted(mesh.workloads.items()):
            if (namespace is None or ns == namespace) and (name is None or wl == name):
                rows.append({"namespace": ns, "name": wl, "meshed": meshed, "pods": pods,
                             **stats_of(groups.get((ns, wl), Totals()), elapsed)})
        return rows
    for key in sorted(groups):
        ns, svc = key[0], key[1]
        if (namespace is None or ns == namespace) and (name is None or svc == name):
            head = {"namespace": ns, "name": svc} if resource == "svc" else {"namespace": ns, "service": svc,
                                                                           "route": key[2]}
            rows.append({**head, **stats_of(groups[key], elapsed)})
    return rows


def normalize_resource(text: str) -> str:
    """``deploy``/``svc``/``route`` from what a user typed (kubectl's aliases too); ``MeshUsage`` otherwise."""
    r = RESOURCE_ALIASES.get(text.lower())
    if r is None:
        raise MeshUsage(f"unknown resource type {text!r} (one of: {', '.join(RESOURCES)})", "RESOURCE")
    return r


def pods_to_scrape(resource: str, mesh: Mesh, namespace: str | None, name: str | None) -> list[MeshedPod]:
    """The sidecars to ask: a Deployment's own pods for ``deploy``, every meshed pod (the clients may be
    anywhere) for ``svc`` and ``route``; ``MeshStatError`` when there are none."""
    where = "any namespace" if namespace is None else f"namespace {namespace}"
    if resource != "deploy":
        if not mesh.pods:
            raise MeshStatError("no meshed pods in the lab (label a namespace kmesh.io/inject=enabled, then "
                                "restart its Deployments)")
        return list(mesh.pods)
    pods = [p for p in mesh.pods if p.workload and (namespace is None or p.namespace == namespace)
            and (name is None or p.workload == name)]
    if not pods:
        what = f"deployment {name}" if name else "Deployments"
        raise MeshStatError(f"no meshed pods of {what} in {where}")
    return pods


# ---------------------------------------------------------------------------------------------- rendering


def fmt_success(v: float | None) -> str:
    """``99.50%`` or ``-``."""
    return "-" if v is None else f"{v * 100:.2f}%"


def fmt_rps(v: float | None) -> str:
    """``12.3rps`` or ``-``."""
    return "-" if v is None else f"{v:.1f}rps"


def fmt_ms(v: float | None) -> str:
    """``1.23ms`` (three significant figures at most, none after the point from 100 ms) or ``-``."""
    if v is None:
        return "-"
    return f"{v:.2f}ms" if v < 10 else f"{v:.1f}ms" if v < 100 else f"{v:.0f}ms"


def table_rows(resource: str, rows: list[dict[str, Any]], all_namespaces: bool) -> tuple[list[str], list[list[str]]]:
    """The header and cells of the stat table (what the command prints with rich)."""
    head = ["NAMESPACE"] if all_namespaces else []
    head += {"deploy": ["NAME", "MESHED"], "svc": ["NAME"], "route": ["ROUTE", "SERVICE"]}[resource]
    head += ["SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "REQUESTS"]
    cells: list[list[str]] = []
    for r in rows:
        c = [r["namespace"]] if all_namespaces else []
        if resource == "deploy":
            c += [r["name"], f"{r['meshed']}/{r['pods']}"]
        elif resource == "svc":
            c += [r["name"]]
        else:
            c += [r["route"], r["service"]]
        c += [fmt_success(r["success"]), fmt_rps(r["rps"]), fmt_ms(r["latency_p50_ms"]),
              fmt_ms(r["latency_p95_ms"]), fmt_ms(r["latency_p99_ms"]), str(r["requests"])]
        cells.append(c)
    return head, cells


def tap_text(event: Mapping[str, Any], pod: str = "") -> str:
    """One tap event as a line: time, direction, source → destination, request, status, latency, 🔒 for TLS.

    Rich markup: the status is green below 400, yellow below 500, red from 500 (or without one)."""
    ts = event.get("ts")
    when = "--:--:--.---"
    if isinstance(ts, (int, float)) and math.isfinite(ts):
        when = time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"
    direction = str(event.get("direction", "?"))
    src, dst = event.get("source") or {}, event.get("destination") or {}

    def who(end: Mapping[str, Any], service: bool) -> str:
        name = end.get("workload") or (end.get("service") if service else "") or end.get("ip") or "?"
        ns = end.get("namespace")
        return _esc(f"{ns}/{name}" if ns and "/" not in str(name) else str(name))

    status = event.get("status")
    code = status if isinstance(status, int) else 0
    color = "green" if 0 < code < 400 else "yellow" if 0 < code < 500 else "red"
    latency = event.get("latency_ms")
    lat = fmt_ms(float(latency)) if isinstance(latency, (int, float)) else "-"
    lock = " 🔒" if event.get("tls") else ""
    arrows = {"inbound": "[cyan]in [/cyan]", "outbound": "[magenta]out[/magenta]"}
    arrow = arrows.get(direction, _esc(direction[:3]))
    at = f"[dim]{_esc(pod)}[/dim] " if pod else ""
    req = f"{event.get('method', '?')} {event.get('authority', '')}{event.get('path', '')}"
    return (f"[dim]{when}[/dim] {at}{arrow} {who(src, False)} → {who(dst, True)}  {_esc(req)}  "
            f"[{color}]{status if status is not None else '-'}[/{color}] {lat}{lock}")


def _esc(text: str) -> str:
    return text.replace("[", "\\[")


def parse_tap_target(text: str) -> tuple[str, str]:
    """(``pod``|``deploy``|``any``, NAME) of a tap TARGET; ``MeshUsage`` naming ``TARGET`` otherwise."""
    kind, slash, name = text.partition("/")
    if not slash:
        kind, name = "any", text
    else:
        kind = {"deploy": "deploy", "deployment": "deploy", "deployments": "deploy", "deploy.apps": "deploy",
                "pod": "pod", "pods": "pod", "po": "pod"}.get(kind.lower(), "")
        if not kind:
            raise MeshUsage(f"{text!r}: the resource type must be deploy or pod (deploy/NAME, pod/NAME)", "TARGET")
    if not name or "/" in name:
        raise MeshUsage(f"{text!r}: give deploy/NAME, pod/NAME or NAME", "TARGET")
    return kind, name


def tap_pods(mesh: Mesh, kind: str, name: str, namespace: str) -> list[MeshedPod]:
    """The meshed pods a tap TARGET means (a bare NAME is a pod, else a Deployment); ``MeshStatError`` if none."""
    if kind in ("pod", "any"):
        pods = [p for p in mesh.pods if p.namespace == namespace and p.name == name]
        if pods:
            return pods
        if kind == "pod" or (namespace, name) in mesh.all_pods:
            why = "is not meshed" if (namespace, name) in mesh.all_pods else "is not running"
            raise MeshStatError(f"pod {namespace}/{name} {why}")
    pods = [p for p in mesh.pods if p.namespace == namespace and p.workload == name]
    if not pods:
        what = f"deployment or pod {name!r}" if kind == "any" else f"deployment {name!r}"
        raise MeshStatError(f"no meshed pods of {what} in namespace {namespace}")
    return pods


# ---------------------------------------------------------------------------------------------- talking to the lab


async def load_mesh(info: Any) -> Mesh:
    """List the lab's pods, ReplicaSets and Deployments once (all namespaces) and find its mesh."""
    from kmesh.api import errors as E
    from kmesh.client.api import APIUnavailable, Client

    try:
        async with Client.from_kubeconfig(info.kubeconfig) as c:
            pods, _ = await c.list_all("Pod")
            rss, _ = await c.list_all("ReplicaSet")
            deps, _ = await c.list_all("Deployment")
    except E.APIError as exc:
        raise MeshStatError(exc.message) from None
    except APIUnavailable as exc:
        raise MeshStatError(f"the API server does not answer: {exc}") from None
    return discover(pods, rss, deps)


def check_runtime(info: Any) -> None:
    """Sidecars are reached through the pods' own namespaces: the netns and host runtimes only."""
    if info.runtime not in ("netns", "host"):
        raise MeshStatError(f"the lab runs the {info.runtime} runtime; kmesh mesh needs the netns or host "
                            "runtime (pods with network namespaces of their own)")


def locate(info: Any, pods: list[MeshedPod], warn: Warn) -> dict[MeshedPod, str]:
    """Each pod's network namespace; a pod whose namespace is not on this machine is warned about and left out."""
    from kmesh.lab.podns import PodNetnsError, pod_netns

    out: dict[MeshedPod, str] = {}
    for p in pods:
        try:
            where = pod_netns(info, p.obj)
        except PodNetnsError as exc:
            warn(f"{p.key}: {exc}")
            continue
        if where.netns is None or where.host_network:
            warn(f"{p.key}: uses the node's network, no sidecar")
            continue
        out[p] = where.netns
    return out


class AdminError(Exception):
    """A sidecar's admin port did not answer as it should."""


async def _next_event(conn: h11.Connection, stream: trio.SocketStream) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(65536))


async def _admin_get(netns_name: str, path: str) -> tuple[trio.SocketStream, h11.Connection]:
    """GET ``path`` from the admin port of the sidecar in ``netns_name`` (the socket is opened in that namespace,
    never here); the stream and connection once the 200 response's head arrived."""
    from kmesh.net import netns

    sock = await netns.open_socket(netns_name, socket.AF_INET, socket.SOCK_STREAM)
    try:
        await sock.connect(("127.0.0.1", ADMIN_PORT))
        stream = trio.SocketStream(sock)
        conn = h11.Connection(h11.CLIENT)
        req = h11.Request(method="GET", target=path, headers=[("Host", f"127.0.0.1:{ADMIN_PORT}"),
                                                              ("Connection", "close")])
        await stream.send_all(conn.send(req) + conn.send(h11.EndOfMessage()))
        while True:
            event = await _next_event(conn, stream)
            if isinstance(event, h11.Response):
                if event.status_code != 200:
                    raise AdminError(f"GET {path} answered {event.status_code}")
                return stream, conn
    except BaseException:
        sock.close()
        raise


async def fetch_metrics(netns_name: str) -> str:
    """The /metrics text of the sidecar in ``netns_name`` (the socket is opened in that namespace, never here)."""
    from kmesh.net import netns
    from kmesh.net.http import BodyTooLarge, http_get

    sock = await netns.open_socket(netns_name, socket.AF_INET, socket.SOCK_STREAM)
    try:
        status, body = await http_get(sock, "127.0.0.1", ADMIN_PORT, "/metrics", max_body=MAX_BODY)
    except BodyTooLarge as exc:
        raise AdminError(str(exc)) from None
    finally:
        sock.close()
    if status != 200:
        raise AdminError(f"GET /metrics answered {status}")
    return body.decode("utf-8", errors="replace")


_FAILURES = (OSError, AdminError, h11.ProtocolError, trio.TooSlowError, ValueError)


async def scrape_all(where: Mapping[MeshedPod, str], warn: Warn, timeout: float = 5.0) -> dict[MeshedPod, Scrape]:
    """Scrape every sidecar at once; one that fails is warned about and missing from the result."""
    from kmesh.net.netns import NetnsError

    out: dict[MeshedPod, Scrape] = {}
    limit = trio.CapacityLimiter(32)

    async def one(pod: MeshedPod, ns: str) -> None:
        async with limit:
            try:
                with trio.fail_after(timeout):
                    out[pod] = parse_metrics(await fetch_metrics(ns))
            except (*_FAILURES, NetnsError) as exc:
                warn(f"{pod.key}: sidecar admin port {ADMIN_PORT}: {exc or type(exc).__name__}")

    async with trio.open_nursery() as nursery:
        for pod, ns in where.items():
            nursery.start_soon(one, pod, ns)
    return out


async def collect_stat(info: Any, resource: str, namespace: str | None, name: str | None, window: float,
                       warn: Warn) -> list[dict[str, Any]]:
    """``kmesh mesh stat``'s rows: scrape, wait ``window`` seconds (0: no wait, totals since start), scrape
    again, aggregate the differences. ``MeshStatError`` with no meshed pod or none answering."""
    resource = normalize_resource(resource)
    if window < 0 or not math.isfinite(window):
        raise MeshUsage("must be a number of seconds >= 0", "--window")
    check_runtime(info)
    mesh = await load_mesh(info)
    where = locate(info, pods_to_scrape(resource, mesh, namespace, name), warn)
    scrapes = await scrape_all(where, warn)
    elapsed: float | None = None
    if window > 0 and scrapes:
        t0 = trio.current_time()
        await trio.sleep(window)
        later = await scrape_all({p: where[p] for p in scrapes}, warn)
        elapsed = trio.current_time() - t0
        scrapes = {p: delta(scrapes[p], s) for p, s in later.items()}
    if not scrapes:
        raise MeshStatError("no sidecar answered on its admin port")
    return build_rows(resource, mesh, scrapes, elapsed, namespace, name)


def stat_rows(info: Any, resource: str = "deploy", namespace: str | None = "default", name: str | None = None,
              window: float = 0.0, warn: Warn | None = None) -> list[dict[str, Any]]:
    """``collect_stat`` from synchronous code (scripts, the lab's e2e tests); warnings are dropped unless
    ``warn`` is given. ``info`` is ``DataDir(...).read_cluster()``; ``namespace`` None means all."""
    return trio.run(collect_stat, info, resource, namespace, name, window, warn or (lambda _: None))


@dataclass(frozen=True)
class TapEvent:
    """One finished request a sidecar reported: the pod it came from, the decoded object, the raw line."""

    pod: str
    data: dict[str, Any]
    raw: str


def decode_tap(buf: bytes, pod: str, warn: Warn) -> tuple[list[TapEvent], bytes]:
    """The complete NDJSON lines at the start of ``buf`` as events, and the incomplete rest; a line that is
    not a JSON object is warned about and skipped, one longer than ``MAX_TAP_LINE`` is an ``AdminError``."""
    *lines, rest = buf.split(b"\n")
    if len(rest) > MAX_TAP_LINE:
        raise AdminError(f"a /tap line is longer than {MAX_TAP_LINE} bytes")
    events: list[TapEvent] = []
    for line in lines:
        raw = line.decode("utf-8", errors="replace").strip()
        if not raw:
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            warn(f"{pod}: /tap sent a line that is not a JSON object: {raw[:80]!r}")
            continue
        events.append(TapEvent(pod, data, raw))
    return events, rest


async def _tap_one(pod: MeshedPod, ns: str, send: trio.MemorySendChannel[TapEvent], warn: Warn,
                   connect_timeout: float) -> None:
    """Stream one sidecar's /tap into ``send`` until it ends, fails, or the caller is done."""
    from kmesh.net.netns import NetnsError

    async with send:
        try:
            with trio.fail_after(connect_timeout):
                stream, conn = await _admin_get(ns, "/tap")
            async with stream:
                buf = b""
                while True:
                    event = await _next_event(conn, stream)
                    if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                        return
                    if not isinstance(event, h11.Data):
                        continue
                    events, buf = decode_tap(buf + event.data, pod.key, warn)
                    for ev in events:
                        await send.send(ev)
        except (*_FAILURES, NetnsError) as exc:
            warn(f"{pod.key}: /tap on admin port {ADMIN_PORT}: {exc or type(exc).__name__}")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the reader is done


async def prepare_tap(info: Any, target: str, namespace: str, warn: Warn) -> dict[MeshedPod, str]:
    """The sidecars a tap TARGET means and their network namespaces; ``MeshUsage`` or ``MeshStatError``
    when there is nothing to tap (raised here, before any connection is open)."""
    kind, name = parse_tap_target(target)
    check_runtime(info)
    mesh = await load_mesh(info)
    where = locate(info, tap_pods(mesh, kind, name, namespace), warn)
    if not where:
        raise MeshStatError(f"no sidecar of {target} can be reached from this machine")
    return where


async def run_tap(info: Any, target: str, namespace: str, max_events: int | None,
                  on_event: Callable[[TapEvent], None], warn: Warn, connect_timeout: float = 5.0) -> int:
    """Follow the /tap of every meshed pod of ``target`` (``deploy/NAME``, ``pod/NAME``, ``NAME``) and call
    ``on_event`` for each request as it arrives, until ``max_events`` in total (None: until cancelled) or
    every tap ended; returns how many were seen."""
    where = await prepare_tap(info, target, namespace, warn)
    return await follow_tap(where, max_events, on_event, warn, connect_timeout)


async def follow_tap(where: Mapping[MeshedPod, str], max_events: int | None, on_event: Callable[[TapEvent], None],
                     warn: Warn, connect_timeout: float = 5.0) -> int:
    """``run_tap`` once the sidecars are known: all connections live in one nursery and close with it."""
    seen = 0
    send, recv = trio.open_memory_channel[TapEvent](256)
    async with trio.open_nursery() as nursery:
        async with send:
            for pod, ns in where.items():
                nursery.start_soon(_tap_one, pod, ns, send.clone(), warn, connect_timeout)
        async with recv:
            async for event in recv:
                on_event(event)
                seen += 1
                if max_events is not None and seen >= max_events:
                    break
        nursery.cancel_scope.cancel()
    return seen


def tap_events(info: Any, target: str, namespace: str = "default", max_events: int = 10,
               timeout: float = 30.0, warn: Warn | None = None) -> list[dict[str, Any]]:
    """``run_tap`` from synchronous code: the decoded events, at most ``max_events``, or those seen within
    ``timeout`` seconds."""
    events: list[dict[str, Any]] = []

    async def main() -> None:
        with trio.move_on_after(timeout):
            await run_tap(info, target, namespace, max_events, lambda e: events.append(e.data),
                          warn or (lambda _: None))

    trio.run(main)
    return events
