"""The mesh experiments behind ``kmesh bench mesh`` (and ``benchmarks/mesh.py``): canary split, retries, the
latency a sidecar pair adds.

Each run brings its own workloads into a running netns (or host) lab, in
namespaces named for the run: ``bench-mesh-XXXX`` (annotated
``kmesh.io/inject: enabled``) and, for the latency experiment,
``bench-direct-XXXX`` (not meshed) and ``bench-plain-XXXX`` (meshed, and
``kmesh.io/mtls: disable``). Requests leave from a client pod's
network namespace (an agnhost ``pause`` pod on the first node; servers on the
second node when there is one), so a meshed client's redirect rules send them
through its sidecar. The namespaces are deleted at the end, also on Ctrl-C.

- **canary**: Services ``canary`` (the parent: selects v1 only), ``canary-v1``
  and ``canary-v2`` (agnhost netexec); an HTTPRoute with ``parentRefs`` to
  Service ``canary`` (GAMMA) splits 90/10 over v1 and v2. N requests from the
  meshed client; answers counted per Service and judged against the weights
  with a chi-square goodness-of-fit test, as ``kmesh bench lb`` does.
- **retries**: Service ``flaky`` (kmesh/echo ``--fail-ratio=0.5``: each
  request answered 503 with probability one half). An HTTPRoute attached to
  it, first without and then with ``retry: {codes: [503], attempts: 2}``;
  each phase sends N requests at a fixed rate and counts successes. With a
  failure probability p and ``attempts`` retries the success rate can reach
  1 - p^(attempts+1); the Service's retry budget (retries in flight at most
  20 % of the requests in flight, 3 always allowed) caps it when more retries
  would be in flight than that (at a few hundred requests per second here).
- **latency**: one client → server exchange (agnhost netexec ``/hostname``,
  one keep-alive connection at a time per request) on three paths: direct
  (un-meshed client and server), through the sidecar pair with mutual TLS,
  and through the pair in plaintext. Open loop at a fixed rate (500/s) and a
  closed-loop max rate (kmesh.bench.meshload). The plaintext pair is a meshed
  server in a namespace annotated ``kmesh.io/mtls: disable`` (Istio's
  PeerAuthentication DISABLE): the client's sidecar sends to it in plaintext,
  through both sidecars all the same. The client sidecar's metrics are read
  back to confirm which path ran with TLS.
"""

from __future__ import annotations

import json
import math
import secrets
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from kmesh.api import errors as E
from kmesh.bench import meshload
from kmesh.bench.lb import (
    DEFAULT_ALPHA,
    LbResult,
    Outcome,
    Plan,
    Probe,
    UsageError,
    execute,
    merge_targets,
    parse_expect,
    resolve_service,
    resolve_source,
    service_shares,
)
from kmesh.bench.meshload import ClosedLoop, OpenLoop, Target
from kmesh.bench.stats import percentile
from kmesh.gateway.httproute import RETRY_BACKOFF
from kmesh.l7.retrybudget import DEFAULT_MIN_CONCURRENCY, DEFAULT_PERCENT
from kmesh.lab.datadir import ClusterInfo

EXPERIMENTS = ("canary", "retries", "latency")
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.39"
ECHO = "kmesh/echo"
PATHS = ("direct", "mesh-mtls", "mesh-plain")
PATH_TITLES = {"direct": "direct (no mesh)", "mesh-mtls": "sidecar pair, mTLS", "mesh-plain": "sidecar pair, plaintext"}
PHASE_HEADER = "x-kmesh-bench-phase"
Progress = Callable[[str], None]


def parse_experiments(text: str) -> list[str]:
    """``canary,retries,latency`` (any of them, or ``all``) in the canonical order; UsageError otherwise."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise UsageError("EXPERIMENTS", "name at least one experiment (canary, retries, latency or all)")
    if "all" in items:
        return list(EXPERIMENTS)
    bad = [x for x in items if x not in EXPERIMENTS]
    if bad:
        raise UsageError("EXPERIMENTS", f"unknown experiment(s) {', '.join(bad)}: choose from "
                                        f"{', '.join(EXPERIMENTS)} or all")
    return [x for x in EXPERIMENTS if x in items]


def parse_weights(text: str) -> tuple[int, int]:
    """``90,10`` → (90, 10): the canary's weights for v1 and v2; UsageError (``--weights``) otherwise."""
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise UsageError("--weights", f"want two whole numbers V1,V2 (like 90,10), got {text!r}")
    w = int(parts[0]), int(parts[1])
    if sum(w) == 0 or max(w) > 1_000_000:
        raise UsageError("--weights", f"weights must not both be 0 (nor above 1000000), got {text!r}")
    return w


# ------------------------------------------------------------------ statistics of the retries experiment


def ideal_success(p: float, attempts: int) -> float:
    """The success rate when every request may be retried ``attempts`` times and each try fails with ``p``."""
    return 1.0 - p ** (attempts + 1)


def budget_success(p: float, attempts: int, rate: float, latency: float, backoff: float = RETRY_BACKOFF,
                   percent: float = DEFAULT_PERCENT, min_concurrency: int = DEFAULT_MIN_CONCURRENCY) -> float:
    """The success rate the engine's retry budget (``kmesh.l7.retrybudget``: retries in flight at most
    ``percent`` % of the requests in flight, ``min_concurrency`` always allowed) leaves in a steady state, an
    estimate by Little's law: a request whose first try failed holds a retry for its backoffs and retried
    tries (each ``latency`` long), so about ``rate * p * hold`` retries are in flight, beside
    ``rate * (latency + p * hold)`` requests. When more retries would be in flight than allowed, only that
    share of failed requests retries. Without a binding budget it is ``ideal_success``."""
    hold = sum(p ** (k - 1) * (min(backoff * 2 ** (k - 1), backoff * 10) + latency) for k in range(1, attempts + 1))
    retrying = rate * p * hold
    allowed = max(min_concurrency, percent / 100.0 * rate * (latency + p * hold))
    if retrying <= allowed:
        return ideal_success(p, attempts)
    return (1 - p) + p * (allowed / retrying) * (1 - p ** attempts)


def two_proportions(ok_a: int, n_a: int, ok_b: int, n_b: int) -> tuple[float, float]:
    """One-sided two-proportion z-test that b's success rate is above a's: ``(z, p-value)``."""
    if n_a <= 0 or n_b <= 0:
        return math.nan, math.nan
    pa, pb = ok_a / n_a, ok_b / n_b
    pool = (ok_a + ok_b) / (n_a + n_b)
    se = math.sqrt(pool * (1 - pool) * (1 / n_a + 1 / n_b))
    if se == 0:
        return (0.0, 1.0) if pa == pb else (math.copysign(math.inf, pb - pa), 0.0 if pb > pa else 1.0)
    z = (pb - pa) / se
    return z, 0.5 * math.erfc(z / math.sqrt(2))


# ------------------------------------------------------------------ results


@dataclass
class RetryPhase:
    """One phase of the retries experiment: what the route said and what came back."""

    name: str
    samples: list[meshload.Sample] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> int:
        return sum(s.ok for s in self.samples)

    @property
    def success(self) -> float:
        return self.ok / len(self.samples) if self.samples else math.nan

    @property
    def median_latency(self) -> float:
        """The median seconds to an answer (0 when nothing was sent)."""
        return percentile([s.latency for s in self.samples], 50) if self.samples else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"phase": self.name, "requests": len(self.samples), "succeeded": self.ok,
                "success_rate": None if math.isnan(self.success) else round(self.success, 4),
                "errors": meshload.errors_of(self.samples), "note": self.note or None}


@dataclass
class RetriesResult:
    """Success rates without and with the route's retry rule, beside what theory allows."""

    fail_ratio: float
    attempts: int
    rate: float
    without: RetryPhase
    with_retry: RetryPhase
    alpha: float = DEFAULT_ALPHA
    unsupported: str = ""  # why the retry phase could not run (the API refused the rule)

    @property
    def test(self) -> tuple[float, float]:
        return two_proportions(self.without.ok, len(self.without.samples), self.with_retry.ok,
                               len(self.with_retry.samples))

    @property
    def passed(self) -> bool:
        if self.unsupported or not self.with_retry.samples:
            return False
        _, p = self.test
        return not math.isnan(p) and p < self.alpha

    def reason(self) -> str:
        if self.unsupported:
            return f"no retry phase: {self.unsupported}"
        z, p = self.test
        if self.passed:
            return f"retries raised the success rate (z = {z:.2f}, p = {p:.3g} < alpha {self.alpha:g})"
        return f"retries did not raise the success rate significantly (z = {z:.2f}, p = {p:.3g})"

    def as_dict(self) -> dict[str, Any]:
        z, p = self.test
        return {"experiment": "retries", "fail_ratio": self.fail_ratio, "attempts": self.attempts, "rate": self.rate,
                "phases": [self.without.as_dict(), self.with_retry.as_dict()],
                "expected": {"without": round(1 - self.fail_ratio, 4),
                             "with_retry_no_budget": round(ideal_success(self.fail_ratio, self.attempts), 4),
                             "with_retry_budget": round(budget_success(self.fail_ratio, self.attempts, self.rate,
                                                                       self.without.median_latency), 4)},
                "z": None if math.isnan(z) or math.isinf(z) else round(z, 3),
                "p_value": None if math.isnan(p) else p, "alpha": self.alpha, "passed": self.passed,
                "reason": self.reason(), "unsupported": self.unsupported or None}


@dataclass
class PathResult:
    """One path of the latency experiment."""

    name: str
    open: OpenLoop
    closed: ClosedLoop | None = None
    tls: bool | None = None  # what the client sidecar's metrics say (None: not meshed, or not seen)
    rounds: list[OpenLoop] = field(default_factory=list)  # the open loop's turns, before pooling

    def round_p99(self) -> float | None:
        """The median over the turns of each turn's p99, in ms: a burst of other load on the machine spoils
        one turn's tail, not this."""
        p99s = sorted(r.latency.p99 for r in self.rounds if r.samples)
        return meshload.ms(p99s[len(p99s) // 2]) if p99s else None

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.name, "title": PATH_TITLES.get(self.name, self.name), "tls": self.tls,
                "open_loop": self.open.as_dict(), "closed_loop": self.closed.as_dict() if self.closed else None,
                "rounds": [{"p50_ms": meshload.ms(r.latency.p50), "p99_ms": meshload.ms(r.latency.p99),
                            "failed": r.failed} for r in self.rounds],
                "median_round_p99_ms": self.round_p99()}


@dataclass
class LatencyResult:
    """The latency experiment: every path, and what each meshed path adds to the direct one."""

    paths: dict[str, PathResult]
    rate: float
    seconds: float
    rounds: int = 1

    def added(self, name: str) -> dict[str, float | None]:
        return meshload.added(self.paths[name].open.latency, self.paths["direct"].open.latency)

    def added_round_p99(self, name: str) -> float | None:
        """What the path adds to direct at the median over the turns of each turn's p99, in ms."""
        d, p = self.paths["direct"].round_p99(), self.paths[name].round_p99()
        return None if d is None or p is None else round(p - d, 3)

    def added_cpu_ms(self, name: str) -> float | None:
        """Node CPU milliseconds per request the path costs beyond the direct one."""
        d, p = self.paths["direct"].open.cpu_per_request, self.paths[name].open.cpu_per_request
        return None if d is None or p is None else round((p - d) * 1000, 4)

    def rps_ratio(self, name: str) -> float | None:
        d, p = self.paths["direct"].closed, self.paths[name].closed
        if d is None or p is None or not d.rps > 0:
            return None
        return round(p.rps / d.rps, 3)

    @property
    def meshed(self) -> list[str]:
        return [k for k in self.paths if k != "direct"]

    @property
    def passed(self) -> bool:
        """The goal: the mTLS pair adds ≤ 1 ms at p50 and ≤ 3 ms at p99 at the goal's rate, with no errors."""
        if "mesh-mtls" not in self.paths or any(p.open.failed for p in self.paths.values()):
            return False
        return meshload.meets_goal(self.added("mesh-mtls"))

    def as_dict(self) -> dict[str, Any]:
        return {"experiment": "latency", "rate": self.rate, "seconds": self.seconds, "rounds": self.rounds,
                "goal": {"rate": meshload.GOAL_RATE, "added_p50_ms": meshload.GOAL_ADDED_P50_MS,
                         "added_p99_ms": meshload.GOAL_ADDED_P99_MS, "anchor": meshload.ANCHOR},
                "paths": [p.as_dict() for p in self.paths.values()],
                "added": {k: {**self.added(k), "meets_goal": meshload.meets_goal(self.added(k)),
                              "closed_loop_rps_ratio": self.rps_ratio(k),
                              "median_round_p99_ms": self.added_round_p99(k),
                              "node_cpu_ms_per_request": self.added_cpu_ms(k)} for k in self.meshed},
                "passed": self.passed}


@dataclass
class MeshResult:
    """What one ``bench mesh`` run found, experiment by experiment."""

    canary: LbResult | None = None
    retries: RetriesResult | None = None
    latency: LatencyResult | None = None
    namespaces: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        done = [r for r in (self.canary, self.retries, self.latency) if r is not None]
        return bool(done) and all(r.passed for r in done)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"namespaces": list(self.namespaces)}
        if self.canary is not None:
            out["canary"] = {"experiment": "canary", **self.canary.as_dict()}
        if self.retries is not None:
            out["retries"] = self.retries.as_dict()
        if self.latency is not None:
            out["latency"] = self.latency.as_dict()
        out["passed"] = self.passed
        return out


# ------------------------------------------------------------------ the workloads


@dataclass(frozen=True)
class Fixture:
    """Where this run's workloads live."""

    mesh_ns: str
    direct_ns: str
    client_node: str
    server_node: str
    plain_ns: str = ""

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(ns for ns in (self.mesh_ns, self.direct_ns, self.plain_ns) if ns)

    @classmethod
    def new(cls, info: ClusterInfo) -> Fixture:
        if info.runtime not in ("netns", "host"):
            raise UsageError("--data-dir", f"the lab runs the {info.runtime} runtime: the mesh needs netns or host "
                                           "(kmesh up --runtime netns)")
        if not info.nodes:
            raise UsageError("--data-dir", "the lab has no nodes")
        suffix = secrets.token_hex(2)
        nodes = [n.name for n in info.nodes]
        return cls(f"bench-mesh-{suffix}", f"bench-direct-{suffix}", nodes[0], nodes[1] if len(nodes) > 1 else nodes[0],
                   f"bench-plain-{suffix}")


def _namespace(name: str, meshed: bool, mtls: str = "") -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/created-by": "kmesh-bench-mesh"}}
    if meshed:
        md["annotations"] = {"kmesh.io/inject": "enabled", **({"kmesh.io/mtls": mtls} if mtls else {})}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": md}


def _client(ns: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": ns, "labels": {"app": "client"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": AGNHOST, "args": ["pause"]}]}}


def _deployment(ns: str, name: str, node: str, *, image: str = AGNHOST, args: Sequence[str] | None = None,
                probe: dict[str, Any] | None = None) -> dict[str, Any]:
    args = list(args) if args is not None else ["netexec", "--http-port=8080", "--udp-port=-1"]
    probe = probe or {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                                           "containers": [{"name": "main", "image": image, "args": args,
                                                           "ports": [{"containerPort": 8080}],
                                                           "readinessProbe": probe}]}}}}


def _service(ns: str, name: str, app: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": app or name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def canary_route(ns: str, weights: tuple[int, int]) -> dict[str, Any]:
    """The HTTPRoute splitting Service ``canary``'s HTTP over canary-v1 and canary-v2 (GAMMA)."""
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "canary", "namespace": ns},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "canary", "port": 80}],
                     "rules": [{"backendRefs": [{"name": "canary-v1", "port": 80, "weight": weights[0]},
                                                {"name": "canary-v2", "port": 80, "weight": weights[1]}]}]}}


def flaky_route(ns: str, phase: str, retry: dict[str, Any] | None = None) -> dict[str, Any]:
    """The HTTPRoute in front of Service ``flaky``; every phase adds its name as a request header (kmesh/echo
    echoes it back, which tells when the sidecar has the phase's route) and the retry phase a ``retry``."""
    rule: dict[str, Any] = {
        "filters": [{"type": "RequestHeaderModifier",
                     "requestHeaderModifier": {"set": [{"name": PHASE_HEADER, "value": phase}]}}],
        "backendRefs": [{"name": "flaky", "port": 80}],
    }
    if retry is not None:
        rule["retry"] = retry
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "flaky", "namespace": ns},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "flaky", "port": 80}], "rules": [rule]}}


def manifests(fx: Fixture, experiments: Sequence[str], *, weights: tuple[int, int] = (90, 10),
              fail_ratio: float = 0.5) -> list[dict[str, Any]]:
    """Every object a run creates, in creation order (namespaces first)."""
    m, d = fx.mesh_ns, fx.direct_ns
    objs: list[dict[str, Any]] = [_namespace(m, True)]
    if "latency" in experiments:
        objs.append(_namespace(d, False))
        if fx.plain_ns:
            objs.append(_namespace(fx.plain_ns, True, "disable"))
    objs.append(_client(m, fx.client_node))
    if "canary" in experiments:
        objs += [_deployment(m, "canary-v1", fx.server_node), _deployment(m, "canary-v2", fx.server_node),
                 _service(m, "canary", "canary-v1"), _service(m, "canary-v1"), _service(m, "canary-v2"),
                 canary_route(m, weights)]
    if "retries" in experiments:
        objs += [_deployment(m, "flaky", fx.server_node, image=ECHO, args=[f"--fail-ratio={fail_ratio}"],
                             probe={"tcpSocket": {"port": 8080}, "periodSeconds": 1}),
                 _service(m, "flaky"), flaky_route(m, "plain")]
    if "latency" in experiments:
        objs += [_client(d, fx.client_node), _deployment(d, "server", fx.server_node), _service(d, "server"),
                 _deployment(m, "server", fx.server_node), _service(m, "server")]
        if fx.plain_ns:
            objs += [_deployment(fx.plain_ns, "server", fx.server_node), _service(fx.plain_ns, "server")]
    return objs


def _ready(pod: dict[str, Any]) -> bool:
    st = pod.get("status") or {}
    if st.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])


async def wait_pods(client: Any, namespace: str, count: int, within: float = 180.0) -> list[dict[str, Any]]:
    """The namespace's pods once ``count`` of them are Ready; RuntimeError naming the laggards after ``within`` s."""
    pods: list[dict[str, Any]] = []
    with trio.move_on_after(within):
        while True:
            pods, _ = await client.list_all("Pod", namespace)
            if sum(_ready(p) for p in pods) >= count:
                return pods
            await trio.sleep(0.5)
    waiting = [f"{p['metadata']['name']} ({(p.get('status') or {}).get('phase', 'Pending')})"
               for p in pods if not _ready(p)]
    raise RuntimeError(f"pods of {namespace} not ready after {within:.0f} s: {', '.join(waiting) or 'none created'}")


async def set_up(client: Any, fx: Fixture, experiments: Sequence[str], progress: Progress, *,
                 weights: tuple[int, int] = (90, 10), fail_ratio: float = 0.5,
                 created: list[str] | None = None) -> None:
    """Create the run's workloads and wait until every pod is Ready; each namespace this call created is
    appended to ``created`` as soon as it exists (what the teardown may delete)."""
    objs = manifests(fx, experiments, weights=weights, fail_ratio=fail_ratio)
    spaces = [o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"]
    progress(f"creating {len(objs)} objects in {', '.join(spaces)}")
    for obj in objs:
        await client.create(obj)
        if obj["kind"] == "Namespace" and created is not None:
            created.append(obj["metadata"]["name"])
    for ns in spaces:
        count = sum(o["kind"] in ("Pod", "Deployment") for o in objs if o["metadata"].get("namespace") == ns)
        progress(f"waiting for {count} pod(s) of {ns} to be ready")
        await wait_pods(client, ns, count)


async def tear_down(client: Any, names: Sequence[str], within: float = 60.0) -> None:
    """Delete the run's namespaces ``names`` (and so everything in them); wait until they are gone."""
    for ns in names:
        try:
            await client.delete("Namespace", ns)
        except E.APIError as exc:
            if exc.code != 404:
                raise
    with trio.move_on_after(within):
        while True:
            left = 0
            for ns in names:
                try:
                    await client.get("Namespace", ns)
                    left += 1
                except E.APIError as exc:
                    if exc.code != 404:
                        raise
            if not left:
                return
            await trio.sleep(0.5)


async def client_netns(client: Any, info: ClusterInfo, namespace: str) -> str:
    """The network namespace of the run's client pod in ``namespace``."""
    src = await resolve_source(client, info, namespace, f"{namespace}/client")
    if src.netns is None:
        raise UsageError("--data-dir", f"pod {namespace}/client has no network namespace on this machine")
    return src.netns


async def _cluster_ip(client: Any, ns: str, name: str) -> str:
    svc = await client.get("Service", name, ns)
    return str(svc["spec"]["clusterIP"])


# ------------------------------------------------------------------ canary


async def run_canary(client: Any, info: ClusterInfo, fx: Fixture, progress: Progress, *, requests: int = 1000,
                     weights: tuple[int, int] = (90, 10), concurrency: int = 4, alpha: float = DEFAULT_ALPHA,
                     on_outcome: Callable[[Outcome], None] | None = None) -> LbResult:
    """Send ``requests`` from the meshed client to Service ``canary`` and judge the split per Service."""
    ns = fx.mesh_ns
    targets = []
    for name in ("canary-v1", "canary-v2"):
        t = await resolve_service(client, ns, name)
        targets.append(replace(t, endpoints=tuple(replace(b, service=name) for b in t.endpoints)))
    svc = merge_targets(targets)
    keys = ("canary-v1", "canary-v2")
    expect = parse_expect(f"weights:canary-v1={weights[0]},canary-v2={weights[1]}")
    shares = service_shares(targets, keys, expect, ns)
    assert shares is not None
    source = await resolve_source(client, info, ns, f"{ns}/client")
    cip = await _cluster_ip(client, ns, "canary")
    probe = Probe(host=cip, port=80, protocol="http", netns=source.netns, timeout=5.0, http_host=f"canary.{ns}",
                  path="/hostname")
    plan = Plan(svc, source, probe, expect, shares, requests, concurrency, alpha, services=keys, per_service=True)
    # The route is in effect once v2 answers (the parent Service alone selects v1 only).
    v2 = {b.name for b in targets[1].endpoints}
    if weights[1] > 0:
        progress("canary: waiting for the route to reach the client's sidecar")
        target = Target(cip, 80, source.netns, f"canary.{ns}", "/hostname", 5.0)
        if not await meshload.warm_up(target, 60.0, lambda st, body: st == 200 and body.decode().strip() in v2,
                                      every=0.02):
            raise RuntimeError("canary: no answer from canary-v2 within 60 s: the HTTPRoute is not in effect")
    progress(f"canary: {requests} requests to Service canary (weights v1={weights[0]}, v2={weights[1]})")
    return await execute(plan, on_outcome)


# ------------------------------------------------------------------ retries


def _phase_seen(phase: str) -> Callable[[int, bytes], bool]:
    def ok(status: int, body: bytes) -> bool:
        if status != 200:
            return False
        try:
            doc = json.loads(body)
        except ValueError:
            return False
        headers = {str(k).lower(): v for k, v in ((doc.get("headers") or {}) if isinstance(doc, dict) else {}).items()}
        return headers.get(PHASE_HEADER) == phase

    return ok


async def run_retries(client: Any, info: ClusterInfo, fx: Fixture, progress: Progress, *, requests: int = 200,
                      rate: float = 10.0, attempts: int = 2, fail_ratio: float = 0.5, alpha: float = DEFAULT_ALPHA,
                      on_sample: Callable[[meshload.Sample], None] | None = None) -> RetriesResult:
    """Both phases of the retries experiment (see the module docstring)."""
    ns = fx.mesh_ns
    netns = await client_netns(client, info, ns)
    target = Target(await _cluster_ip(client, ns, "flaky"), 80, netns, f"flaky.{ns}", "/", 5.0)
    res = RetriesResult(fail_ratio, attempts, rate, RetryPhase("without retries"), RetryPhase(f"retry on 503, {attempts} attempts"),
                        alpha)
    seconds = requests / rate

    async def phase(name: str, into: RetryPhase) -> None:
        progress(f"retries: waiting for the {name} route to reach the client's sidecar")
        if not await meshload.warm_up(target, 60.0, _phase_seen(name), every=0.05):
            raise RuntimeError(f"retries: the {name} route did not take effect within 60 s")
        progress(f"retries: {requests} requests at {rate:g}/s, {into.name}")
        run = await meshload.open_loop(target, rate, seconds, connections=0, on_sample=on_sample)
        into.samples = run.samples

    await phase("plain", res.without)
    route = await client.get("HTTPRoute", "flaky", ns)
    new = flaky_route(ns, "retry", {"codes": [503], "attempts": attempts})
    route["spec"] = new["spec"]
    try:
        stored = await client.update(route)
    except E.APIError as exc:
        res.unsupported = f"the API server refused the HTTPRoute retry rule: {exc}"
        return res
    if "retry" not in ((stored.get("spec") or {}).get("rules") or [{}])[0]:
        res.unsupported = "the API server dropped the HTTPRoute retry rule (not served by this version)"
        return res
    await phase("retry", res.with_retry)
    if res.with_retry.samples and abs(res.with_retry.success - res.without.success) < 0.02:
        res.with_retry.note = "about the same as without: does the sidecar apply HTTPRoute retries yet?"
    return res


# ------------------------------------------------------------------ latency


async def _outbound_tls(netns: str) -> dict[str, set[str]]:
    """Per destination Service (``ns/name:port``), the ``tls`` label values the client sidecar counted
    requests under (its /metrics on 15020, read from the pod's network namespace)."""
    from kmesh.bench.meshload import Conn

    conn = await Conn.open(Target("127.0.0.1", 15020, netns))
    try:
        with trio.fail_after(5):
            status, body = await conn.get(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
    finally:
        conn.close()
    out: dict[str, set[str]] = {}
    if status != 200:
        return out
    import re

    for line in body.decode(errors="replace").splitlines():
        if not line.startswith("kmesh_requests_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("direction") == "outbound":
            out.setdefault(labels.get("destination_service", ""), set()).add(labels.get("tls", ""))
    return out


def node_processes(info: ClusterInfo) -> list[int]:
    """The processes in the lab's node namespaces (the agents: their apps and sidecars run as their tasks);
    none in the host runtime (the machine's own namespace holds everything else too)."""
    from kmesh.lab.topology import processes_in

    spaces = [n.netns for n in info.nodes if n.netns]
    return processes_in(spaces) if spaces else []


async def run_latency(client: Any, info: ClusterInfo, fx: Fixture, progress: Progress, *,
                      rate: float = meshload.GOAL_RATE, seconds: float = 10.0, closed_seconds: float = 5.0,
                      connections: int = 8, rounds: int = 5, paths: Sequence[str] = PATHS,
                      on_sample: Callable[[meshload.Sample], None] | None = None,
                      on_answer: Callable[[], None] | None = None) -> LatencyResult:
    """Every path, open loop at ``rate`` for ``seconds`` and closed loop on ``connections`` for
    ``closed_seconds`` (0: no closed loop), in ``rounds`` interleaved slices (``meshload.rotations``): on a
    shared machine, load from elsewhere then falls on every path alike."""
    where = {"direct": (fx.direct_ns, "server"), "mesh-mtls": (fx.mesh_ns, "server"),
             "mesh-plain": (fx.plain_ns, "server")}
    source = {"direct": fx.direct_ns, "mesh-mtls": fx.mesh_ns, "mesh-plain": fx.mesh_ns}  # the client's namespace
    targets: dict[str, Target] = {}
    for name in paths:
        ns, svc = where[name]
        targets[name] = Target(await _cluster_ip(client, ns, svc), 80, await client_netns(client, info, source[name]),
                               f"{svc}.{ns}", "/hostname", 5.0)
    for name, target in targets.items():
        progress(f"latency: warming up {PATH_TITLES[name]}")
        if not await meshload.warm_up(target, 60.0, every=0.05):
            raise RuntimeError(f"latency: no answer on the {name} path within 60 s")
        await meshload.closed_loop(target, 2, 1.0)  # warm both ends (first requests, code paths, TLS)
    pids = node_processes(info)
    opened: dict[str, list[OpenLoop]] = {k: [] for k in targets}
    closed: dict[str, list[ClosedLoop]] = {k: [] for k in targets}
    for i, order in enumerate(meshload.rotations(list(targets), rounds)):
        for name in order:
            target = targets[name]
            progress(f"latency: round {i + 1}/{rounds}, {PATH_TITLES[name]}, {rate:g} requests/s for "
                     f"{seconds / rounds:g} s")
            before = meshload.cpu_seconds(pids) if pids else None
            run = await meshload.open_loop(target, rate, seconds / rounds, connections=connections,
                                           on_sample=on_sample)
            if before is not None:
                run.cpu = meshload.cpu_seconds(pids) - before
            opened[name].append(run)
            if closed_seconds > 0:
                progress(f"latency: round {i + 1}/{rounds}, {PATH_TITLES[name]}, max rate on {connections} "
                         "connections")
                closed[name].append(await meshload.closed_loop(target, connections, closed_seconds / rounds,
                                                               on_answer))
    result = LatencyResult({}, rate, seconds, rounds)
    for name in targets:
        result.paths[name] = PathResult(name, meshload.merge_open(opened[name]),
                                        meshload.merge_closed(closed[name]) if closed[name] else None,
                                        rounds=opened[name])
    meshed = {name: t for name, t in targets.items() if name != "direct"}
    if meshed:
        seen = await _outbound_tls(next(iter(meshed.values())).netns or "")
        for name in meshed:
            ns, svc = where[name]
            labels = seen.get(f"{ns}/{svc}:80", set())
            result.paths[name].tls = True if labels == {"true"} else False if labels == {"false"} else None
    return result


# ------------------------------------------------------------------ the whole run


@dataclass
class MeshOptions:
    """What ``kmesh bench mesh`` was asked to do."""

    experiments: tuple[str, ...] = EXPERIMENTS
    requests: int = 1000  # canary
    weights: tuple[int, int] = (90, 10)
    concurrency: int = 4
    retry_requests: int = 200
    retry_rate: float = 10.0
    attempts: int = 2
    fail_ratio: float = 0.5
    rate: float = meshload.GOAL_RATE
    seconds: float = 10.0
    closed_seconds: float = 5.0
    connections: int = 8
    rounds: int = 5
    alpha: float = DEFAULT_ALPHA
    keep: bool = False  # leave the workloads in place

    def check(self) -> None:
        """``UsageError`` naming the option for anything out of range (no lab needed)."""
        for flag, value, low in (("--requests", self.requests, 1), ("--concurrency", self.concurrency, 1),
                                 ("--retry-requests", self.retry_requests, 1), ("--connections", self.connections, 1),
                                 ("--rounds", self.rounds, 1),
                                 ("--attempts", self.attempts, 1)):
            if value < low:
                raise UsageError(flag, f"must be at least {low}, got {value}")
        for flag, x in (("--retry-rate", self.retry_rate), ("--rate", self.rate), ("--seconds", self.seconds)):
            if not (x > 0 and math.isfinite(x)):
                raise UsageError(flag, f"must be a number above 0, got {x}")
        if not (self.closed_seconds >= 0 and math.isfinite(self.closed_seconds)):
            raise UsageError("--closed-seconds", f"must be 0 or more, got {self.closed_seconds}")
        if not 0 < self.alpha < 1:
            raise UsageError("--alpha", f"must be between 0 and 1, got {self.alpha}")
        if not 0 < self.fail_ratio < 1:
            raise UsageError("--fail-ratio", f"must be between 0 and 1, got {self.fail_ratio}")
        if self.rate * self.seconds > 1_000_000:
            raise UsageError("--seconds", "more than a million requests per path: shorten --seconds or --rate")


async def run_mesh(client: Any, info: ClusterInfo, opts: MeshOptions, progress: Progress, *,
                   fixture: Fixture | None = None, result: MeshResult | None = None,
                   on_outcome: Callable[[Any], None] | None = None) -> MeshResult:
    """Set up, run each experiment asked for, tear down (unless ``opts.keep``), also when cancelled.
    ``result`` is filled as experiments finish (a caller interrupted midway keeps what was done)."""
    fx = fixture or Fixture.new(info)
    res = result if result is not None else MeshResult()
    res.namespaces = fx.namespaces if "latency" in opts.experiments else (fx.mesh_ns,)
    created: list[str] = []
    try:
        await set_up(client, fx, opts.experiments, progress, weights=opts.weights, fail_ratio=opts.fail_ratio,
                     created=created)
        if "canary" in opts.experiments:
            res.canary = await run_canary(client, info, fx, progress, requests=opts.requests, weights=opts.weights,
                                          concurrency=opts.concurrency, alpha=opts.alpha, on_outcome=on_outcome)
        if "retries" in opts.experiments:
            res.retries = await run_retries(client, info, fx, progress, requests=opts.retry_requests,
                                            rate=opts.retry_rate, attempts=opts.attempts, fail_ratio=opts.fail_ratio,
                                            alpha=opts.alpha, on_sample=on_outcome)
        if "latency" in opts.experiments:
            res.latency = await run_latency(client, info, fx, progress, rate=opts.rate, seconds=opts.seconds,
                                            closed_seconds=opts.closed_seconds, connections=opts.connections,
                                            rounds=opts.rounds,
                                            on_sample=on_outcome, on_answer=(lambda: on_outcome(None)) if on_outcome else None)
    finally:
        if not opts.keep and created:
            with trio.CancelScope(shield=True):
                progress(f"removing {', '.join(created)}")
                with trio.move_on_after(90):
                    await tear_down(client, created)
    return res


def signed(x: float | None, unit: str = " ms") -> str:
    """``+0.55 ms``, ``-3.64 ms``, ``-`` for None."""
    return "-" if x is None else f"{x:+.2f}{unit}"


async def run_until_signalled(work: Callable[[], Awaitable[Any]],
                              signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> bool:
    """Run ``work`` until it ends or one of ``signals`` arrives; whether a signal cut it short. The work is
    cancelled, so its ``finally`` clauses (``run_mesh``'s teardown) run; a signal the shell had set to be
    ignored (a background job's SIGINT) is caught all the same."""
    stopped = False
    with trio.open_signal_receiver(*signals) as received:
        async with trio.open_nursery() as n:
            async def watch() -> None:
                nonlocal stopped
                async for _ in received:
                    stopped = True
                    n.cancel_scope.cancel()
                    return

            n.start_soon(watch)
            await work()
            n.cancel_scope.cancel()
    return stopped


def latency_rows(res: LatencyResult) -> list[list[str]]:
    """The latency table's rows: path, TLS, p50, p99, max, errors, added p50/p99 vs the goal, max rate."""
    def f(x: float | None, unit: str = " ms") -> str:
        return "-" if x is None else f"{x:.2f}{unit}"

    rows = []
    for name, p in res.paths.items():
        lat = p.open.latency
        add = res.added(name) if name != "direct" else None
        goal = "" if add is None else ("✓" if meshload.meets_goal(add) else "✗")
        closed = p.closed
        ratio = res.rps_ratio(name) if name != "direct" else None
        rows.append([
            PATH_TITLES.get(name, name), "-" if p.tls is None else ("yes" if p.tls else "no"),
            f(meshload.ms(lat.p50)), f(meshload.ms(lat.p99)), f(meshload.ms(lat.max)), str(p.open.failed),
            "-" if add is None else signed(add["p50_ms"]), "-" if add is None else signed(add["p99_ms"]), goal,
            "-" if closed is None else f"{closed.rps:.0f}", "-" if ratio is None else f"{ratio:.2f}×",
            "-" if p.open.cpu_per_request is None else f"{p.open.cpu_per_request * 1000:.2f} ms",
        ])
    return rows


LATENCY_COLUMNS = ("path", "TLS", "p50", "p99", "max", "errors", "added p50", "added p99", "goal", "max req/s",
                   "vs direct", "node CPU/req")
