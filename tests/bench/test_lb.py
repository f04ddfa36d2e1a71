"""The load-balancing experiment: counting and judging, the senders against real loopback servers,
Service/source resolution against a real API server, pod namespaces, and ``kmesh bench lb`` on a sim lab."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from kmesh.bench.lb import (
    Backend,
    Expectation,
    Outcome,
    Probe,
    ServiceTarget,
    UsageError,
    backends_from_slices,
    execute,
    expected_shares,
    judge,
    parse_expect,
    parse_http_answer,
    plan_lb,
    probe_once,
    resolve_source,
    send_requests,
    tally,
    warm_up,
)
from kmesh.bench.report import plot, split_table, summary
from kmesh.lab.datadir import ClusterInfo, NodeInfo

SERVER_NET = "127.244.250"  # loopback addresses of the test servers (a sim lab's pods use 127.244.<node>.x)
PODS = ["web-a", "web-b", "web-c"]

# ------------------------------------------------------------------ pure parts


def _target(ready: tuple[bool, ...] = (True, True, True), **kw: Any) -> ServiceTarget:
    eps = tuple(Backend(f"{SERVER_NET}.{i + 1}", 9376, name=n, ready=r, node=f"node-{i + 1}")
                for i, (n, r) in enumerate(zip(PODS, ready)))
    return ServiceTarget("default", "web", "127.96.250.10", 80, port_name="http", endpoints=eps, **kw)


def _outcomes(**per_answer: int) -> list[Outcome]:
    return [Outcome(a.replace("_", "-"), None, 0.001) for a, n in per_answer.items() for _ in range(n)]


def test_tally_maps_answers_and_lists_idle_endpoints() -> None:
    t = _target()
    outs = _outcomes(web_a=5, web_b=3) + [Outcome(f"{SERVER_NET}.1", None, 0.002)]  # an IP names its endpoint
    outs += [Outcome(None, "refused", 0.0), Outcome(None, "timeout", 2.0), Outcome(None, "refused", 0.0)]
    outs += [Outcome("somebody-else", None, 0.001)]
    got = tally(t.endpoints, outs)
    assert got.counts == {"web-a": 6, "web-b": 3, "web-c": 0}
    assert got.unknown == {"somebody-else": 1}
    assert got.errors == {"refused": 2, "timeout": 1}
    assert (got.answered, got.failed, len(got.latencies)) == (10, 3, 10)
    assert list(got.cells()) == ["web-a", "web-b", "web-c", "somebody-else"]


def test_backends_from_slices() -> None:
    def ep(ip: str, pod: str | None, **cond: Any) -> dict[str, Any]:
        e: dict[str, Any] = {"addresses": [ip], "conditions": cond, "nodeName": "n1"}
        if pod:
            e["targetRef"] = {"kind": "Pod", "name": pod}
        return e

    slices = [
        {"addressType": "IPv4", "ports": [{"name": "http", "port": 9376, "protocol": "TCP"}],
         "endpoints": [ep("10.0.0.2", "web-b", ready=True), ep("10.0.0.1", "web-a", ready=False, serving=True, terminating=True)]},
        {"addressType": "IPv4", "ports": [{"name": "http", "port": 9376, "protocol": "TCP"}],
         "endpoints": [ep("10.0.0.2", "web-b", ready=True), ep("10.0.0.3", None)]},  # duplicate; nil ready counts as ready
        {"addressType": "IPv4", "ports": [{"name": "metrics", "port": 9090, "protocol": "TCP"}],
         "endpoints": [ep("10.0.0.9", "other")]},
        {"addressType": "IPv6", "ports": [{"name": "http", "port": 9376}], "endpoints": [ep("fd00::1", "v6")]},
    ]
    got = backends_from_slices(slices, "http", "TCP")
    assert [(b.name, b.addr, b.ready, b.terminating) for b in got] == [
        ("10.0.0.3:9376", "10.0.0.3:9376", True, False),
        ("web-a", "10.0.0.1:9376", False, True),
        ("web-b", "10.0.0.2:9376", True, False),
    ]
    assert backends_from_slices(slices, "http", "UDP") == ()


def test_parse_expect() -> None:
    assert parse_expect("uniform") == Expectation("uniform")
    assert parse_expect(" sticky ") == Expectation("sticky")
    w = parse_expect("weights:web-a=1,web-b=2.5")
    assert w.weights == (("web-a", 1.0), ("web-b", 2.5)) and str(w) == "weights:web-a=1,web-b=2.5"
    for bad in ("random", "weights:", "weights:a", "weights:a=x", "weights:a=-1", "weights:a=0", "weights:a=1,a=2",
                "weights:=3", "weights:a=inf"):
        with pytest.raises(ValueError):
            parse_expect(bad)


def test_expected_shares() -> None:
    t = _target(ready=(True, False, True))
    assert expected_shares(t, Expectation("uniform")) == {"web-a": 0.5, "web-b": 0.0, "web-c": 0.5}
    w = expected_shares(t, parse_expect(f"weights:web-a=1,{SERVER_NET}.3=3"))  # by pod name or IP
    assert w == {"web-a": 0.25, "web-b": 0.0, "web-c": 0.75}
    assert expected_shares(t, Expectation("sticky")) == {}
    with pytest.raises(UsageError) as err:
        expected_shares(t, parse_expect("weights:web-z=1"))
    assert err.value.param == "--expect" and "web-z" in err.value.message and "web-a" in err.value.message
    # none ready: the serving terminating ones are usable (upstream's fallback)
    term = ServiceTarget("default", "web", "127.96.0.9", 80, endpoints=(
        Backend("127.244.9.1", 80, name="old", ready=False, serving=True, terminating=True),
        Backend("127.244.9.2", 80, name="gone", ready=False, serving=False, terminating=True)))
    assert expected_shares(term, Expectation("uniform")) == {"gone": 0.0, "old": 1.0}
    # internalTrafficPolicy Local: a client on node-1 reaches node-1's endpoints only
    local = _target(internal_local=True)
    assert expected_shares(local, Expectation("uniform"), "node-1") == {"web-a": 1.0, "web-b": 0.0, "web-c": 0.0}
    assert expected_shares(local, Expectation("uniform"), None) == expected_shares(_target(), Expectation("uniform"))
    with pytest.raises(UsageError) as err:
        expected_shares(local, Expectation("uniform"), "node-9")
    assert err.value.param == "--from" and "node-9" in err.value.message


def test_judge_uniform_weights_sticky() -> None:
    t = _target()
    uniform = Expectation("uniform")
    shares = expected_shares(t, uniform)
    even = judge(tally(t.endpoints, _outcomes(web_a=100, web_b=98, web_c=102)), shares, uniform)
    assert even.passed and even.test is not None and even.test.p_value > 0.9
    skewed = judge(tally(t.endpoints, _outcomes(web_a=150, web_b=100, web_c=50)), shares, uniform)
    assert not skewed.passed and skewed.test is not None and skewed.test.p_value < 1e-9 and "rejected" in skewed.reason

    w = parse_expect("weights:web-a=2,web-b=1")
    wv = judge(tally(t.endpoints, _outcomes(web_a=205, web_b=95)), expected_shares(t, w), w)
    assert wv.passed and wv.expected == {"web-a": pytest.approx(2 / 3), "web-b": pytest.approx(1 / 3), "web-c": 0.0}
    stray = judge(tally(t.endpoints, _outcomes(web_a=200, web_b=99, web_c=1)), expected_shares(t, w), w)
    assert not stray.passed and "web-c" in stray.reason

    sticky = Expectation("sticky")
    held = judge(tally(t.endpoints, _outcomes(web_b=300)), {}, sticky)
    assert held.passed and held.sticky_to == "web-b" and held.test is None and held.expected["web-b"] == 1.0
    broke = judge(tally(t.endpoints, _outcomes(web_b=299, web_c=1)), {}, sticky)
    assert not broke.passed and broke.sticky_to is None and "2 endpoints" in broke.reason

    outsider = judge(tally(t.endpoints, _outcomes(web_a=100, web_b=100, web_c=100, stranger=1)), shares, uniform)
    assert not outsider.passed and "stranger" in outsider.reason
    assert not judge(tally(t.endpoints, _outcomes(stranger=5)), {}, sticky).passed
    nothing = judge(tally(t.endpoints, [Outcome(None, "refused", 0.0)]), shares, uniform)
    assert not nothing.passed and nothing.reason == "no request got an answer"
    small = judge(tally(t.endpoints, _outcomes(web_a=2, web_b=2, web_c=2)), shares, uniform)
    assert small.small_counts


def test_parse_http_answer() -> None:
    assert parse_http_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nweb-a") == (200, "web-a")
    with pytest.raises(ValueError):
        parse_http_answer(b"web-a")


# ------------------------------------------------------------------ real servers on loopback


@dataclass
class Servers:
    """Name-answering servers (as agnhost serve-hostname) on 127.244.250.x, all on one port."""

    port: int
    ips: dict[str, str]  # pod name -> IP

    def backends(self) -> tuple[Backend, ...]:
        return tuple(Backend(ip, self.port, name=n, node="node-1") for n, ip in self.ips.items())


async def _tcp_server(sock: trio.socket.SocketType, name: bytes, http: bool) -> None:
    """Answer ``name`` on each connection: raw (write, close) or as the body of an HTTP response."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                if http:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = await stream.receive_some(4096)
                        if not chunk:
                            return
                        data += chunk
                    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(name)
                    await stream.send_all(head + name)
                else:
                    await stream.send_all(name)
            except trio.BrokenResourceError:
                pass

    await trio.serve_listeners(handle, [trio.SocketListener(sock)])


async def _udp_server(sock: trio.socket.SocketType, name: bytes) -> None:
    while True:
        _, peer = await sock.recvfrom(2048)
        await sock.sendto(name, peer)


async def start_servers(nursery: trio.Nursery, *, udp: bool = False, http: bool = False, base: int = 1) -> Servers:
    """One server per pod name in PODS, on 127.244.250.<base+i>, same port for all."""
    ips = {name: f"{SERVER_NET}.{base + i}" for i, name in enumerate(PODS)}
    port = 0
    for name, ip in ips.items():
        if udp:
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            await sock.bind((ip, port))
            nursery.start_soon(_udp_server, sock, name.encode())
        else:
            sock = trio.socket.socket()
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            await sock.bind((ip, port))
            sock.listen(128)
            nursery.start_soon(_tcp_server, sock, name.encode(), http)
        port = sock.getsockname()[1]
    return Servers(port, ips)


@pytest.mark.parametrize("proto", ["tcp", "http", "udp"])
async def test_send_to_one_endpoint(nursery: trio.Nursery, proto: str) -> None:
    srv = await start_servers(nursery, udp=proto == "udp", http=proto == "http", base=1 + 10 * ["tcp", "http", "udp"].index(proto))
    target = ServiceTarget("default", "web", "127.96.250.10", 80, endpoints=srv.backends())
    seen: list[Outcome] = []
    outs = await send_requests(Probe(srv.ips["web-b"], srv.port, proto), 120, 16, seen.append)  # type: ignore[arg-type]
    assert len(outs) == 120 and seen == outs
    t = tally(target.endpoints, outs)
    assert t.counts == {"web-a": 0, "web-b": 120, "web-c": 0} and not t.errors
    sticky = judge(t, {}, Expectation("sticky"))
    assert sticky.passed and sticky.sticky_to == "web-b"
    uniform = judge(t, expected_shares(target, Expectation("uniform")), Expectation("uniform"))
    assert not uniform.passed and uniform.test is not None and uniform.test.p_value < 1e-30


async def test_errors_are_counted_not_raised(nursery: trio.Nursery) -> None:
    srv = await start_servers(nursery, base=40)
    free = trio.socket.socket()
    await free.bind((f"{SERVER_NET}.49", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    outs = await send_requests(Probe(f"{SERVER_NET}.49", port, "tcp"), 5, 2)
    assert [o.error for o in outs] == ["refused"] * 5
    udp = await send_requests(Probe(f"{SERVER_NET}.49", port, "udp", timeout=1.0), 3, 3)
    assert {o.error for o in udp} == {"refused"}  # ICMP port unreachable on loopback
    # a server that accepts and never answers: timeout
    mute = trio.socket.socket()
    await mute.bind((f"{SERVER_NET}.48", 0))
    mute.listen(8)
    with mute:
        outs = await send_requests(Probe(f"{SERVER_NET}.48", mute.getsockname()[1], "tcp", timeout=0.2), 2, 2)
    assert [o.error for o in outs] == ["timeout", "timeout"] and all(o.latency >= 0.2 for o in outs)
    # an HTTP request to a raw name server: the answer is not HTTP
    outs = await send_requests(Probe(srv.ips["web-a"], srv.port, "http"), 1)
    assert outs[0].error in ("not HTTP", "reset")


async def test_outcomes_name_their_source_port(nursery: trio.Nursery) -> None:
    """The port an outcome names is the one the server saw; a connect that timed out still names its port."""
    seen: list[int] = []
    lsock = trio.socket.socket()
    await lsock.bind((f"{SERVER_NET}.70", 0))
    lsock.listen(8)

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            seen.append(stream.socket.getpeername()[1])
            await stream.send_all(b"web-a")

    nursery.start_soon(trio.serve_listeners, answer, [trio.SocketListener(lsock)])
    outs = await send_requests(Probe(f"{SERVER_NET}.70", lsock.getsockname()[1], "tcp"), 4, 2)
    assert [o.answer for o in outs] == ["web-a"] * 4
    assert sorted(o.port for o in outs if o.port is not None) == sorted(seen) and len(seen) == 4
    # a listener whose accept queue is full drops SYNs: the connect times out, and its port is known
    full = socket.socket()
    full.bind((f"{SERVER_NET}.71", 0))
    full.listen(0)
    fillers = [socket.socket() for _ in range(2)]
    try:
        for f in fillers:
            f.setblocking(False)
            f.connect_ex(full.getsockname())
        out = await probe_once(Probe(f"{SERVER_NET}.71", full.getsockname()[1], "tcp", timeout=0.3))
    finally:
        for f in [*fillers, full]:
            f.close()
    assert out.error == "timeout" and isinstance(out.port, int) and out.port > 0
    assert out.port not in seen
    # UDP names the port too
    udp = await start_servers(nursery, udp=True, base=72)
    got = await probe_once(Probe(udp.ips["web-a"], udp.port, "udp"))
    assert got.answer == "web-a" and isinstance(got.port, int) and got.port > 0


async def test_warm_up_waits_for_a_first_answer(nursery: trio.Nursery) -> None:
    srv = await start_servers(nursery, base=80)
    got = await warm_up(Probe(srv.ips["web-a"], srv.port, "tcp"), 5.0)
    assert got is not None and got.answer == "web-a"
    free = trio.socket.socket()
    await free.bind((f"{SERVER_NET}.89", 0))
    port = free.getsockname()[1]
    free.close()
    start = trio.current_time()
    assert await warm_up(Probe(f"{SERVER_NET}.89", port, "tcp"), 0.3) is None
    assert trio.current_time() - start >= 0.3
    assert await warm_up(Probe(f"{SERVER_NET}.89", port, "tcp"), 0) is None  # 0: no warm-up at all


# ------------------------------------------------------------------ against a real API server


def _sim_info(tmp_path: Path, runtime: str = "sim", name: str = "kmesh") -> ClusterInfo:
    return ClusterInfo(name=name, api="", kubeconfig=str(tmp_path / "kubeconfig.yaml"), dns=None, runtime=runtime,
                       proxyMode="userspace", serviceCIDR="127.96.0.0/16", clusterCIDR="127.244.0.0/16",
                       nodes=[NodeInfo("node-1", "127.1.0.1", "127.244.0.0/24")])


async def _apply_service(client: Any, srv: Servers, *, name: str = "web", ready: bool = True,
                         affinity: bool = False, udp: bool = False) -> None:
    proto = "UDP" if udp else "TCP"
    await client.create({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name},
                 "sessionAffinity": "ClientIP" if affinity else "None",
                 "ports": [{"name": "http", "port": 80, "targetPort": 9376, "protocol": proto}]},
    })
    await client.create({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-1", "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": srv.port, "protocol": proto}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}, "nodeName": "node-1",
                       "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}}
                      for pod, ip in srv.ips.items()],
    })


async def _running_pod(client: Any, name: str, ip: str, node: str = "node-1") -> dict[str, Any]:
    pod = await client.create({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "kmesh/echo"}]},
    })
    pod.setdefault("status", {}).update({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]})
    return await client.update_status(pod)


@pytest.fixture
async def api(nursery: trio.Nursery, tmp_path: Path) -> Any:
    """An in-process API server that accepts loopback endpoints (as a sim lab's)."""
    from tests.support.cluster import start_cluster

    c = await start_cluster(nursery, tmp_path, loopback_ok=True, service_cidr="127.96.0.0/16")
    try:
        yield c
    finally:
        await c.client.aclose()


@pytest.mark.parametrize("proto", ["http", "udp"])
async def test_engine_through_the_api(api: Any, nursery: trio.Nursery, tmp_path: Path, proto: str) -> None:
    udp = proto == "udp"
    srv = await start_servers(nursery, udp=udp, http=not udp, base=60 if udp else 50)
    await _apply_service(api.client, srv, udp=udp)
    info = _sim_info(tmp_path)
    await _running_pod(api.client, "client", f"{SERVER_NET}.99")
    sticky = await plan_lb(api.client, info, "web", udp=udp, requests=60, concurrency=4, expect="sticky",
                           from_pod="client", target=(srv.ips["web-c"], srv.port))
    assert sticky.probe.protocol == proto  # the port is named http: auto picks HTTP for TCP
    assert sticky.source.bind_ip == f"{SERVER_NET}.99" and sticky.source.netns is None
    assert [b.name for b in sticky.target.endpoints] == PODS and sticky.target.cluster_ip.startswith("127.96.")
    res = await execute(sticky)
    assert res.passed and res.verdict.sticky_to == "web-c" and res.tally.counts["web-c"] == 60
    assert res.latency.count == 60 and 0 < res.latency.p50 <= res.latency.p99 <= res.latency.max

    uniform = await plan_lb(api.client, info, "web", port="80" if not udp else "http", udp=udp, requests=60,
                            target=(srv.ips["web-c"], srv.port))
    assert uniform.source.bind_ip is None  # sim default: this process
    res = await execute(uniform)
    assert not res.passed and res.tally.counts == {"web-a": 0, "web-b": 0, "web-c": 60}
    doc = json.loads(json.dumps(res.as_dict()))
    assert doc["passed"] is False and doc["protocol"] == proto and doc["chi_square"]["df"] == 2
    assert [(e["name"], e["count"], e["expected"]) for e in doc["endpoints"]] == [
        ("web-a", 0, pytest.approx(1 / 3)), ("web-b", 0, pytest.approx(1 / 3)), ("web-c", 60, pytest.approx(1 / 3))]

    # the report renders both outcomes; the plot is a PNG
    from rich.console import Console

    con = Console(record=True, width=160)
    con.print(split_table(res))
    con.print(summary(res))
    text = con.export_text()
    assert "web-a" in text and "FAIL" in text and "p-value" in text
    png = plot(res, tmp_path / "out" / "lb.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_usage_errors_name_the_argument(api: Any, nursery: trio.Nursery, tmp_path: Path) -> None:
    srv = await start_servers(nursery, http=True, base=70)
    await _apply_service(api.client, srv)
    await _apply_service(api.client, Servers(srv.port, {"sleepy": f"{SERVER_NET}.79"}), name="sleepy", ready=False)
    info = _sim_info(tmp_path)

    async def param_of(service: str, **kw: Any) -> str:
        with pytest.raises(UsageError) as err:
            await plan_lb(api.client, info, service, **kw)
        assert err.value.message
        return err.value.param

    assert await param_of("nope") == "SERVICE"
    assert await param_of("web", namespace="elsewhere") == "SERVICE"
    assert await param_of("sleepy") == "SERVICE"  # no ready endpoint
    assert await param_of("web", port="8080") == "--port"
    assert await param_of("web", udp=True) == "--udp"  # no UDP port at all
    assert await param_of("web", from_pod="ghost") == "--from"
    assert await param_of("web", expect="roundrobin") == "--expect"
    assert await param_of("web", expect="weights:web-z=1") == "--expect"
    assert await param_of("web", requests=0) == "--requests"
    assert await param_of("web", concurrency=0) == "--concurrency"
    pending = await api.client.create({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pending", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "kmesh/echo"}]}})
    assert pending["metadata"]["name"] == "pending"
    assert await param_of("web", from_pod="default/pending") == "--from"


async def test_netns_source_names(api: Any, tmp_path: Path) -> None:
    """In the netns runtime the source is the pod's namespace named by LabNames; default: a running non-endpoint pod."""
    from kmesh.lab.topology import LabNames

    info = _sim_info(tmp_path, runtime="netns", name="bt")
    backend = await _running_pod(api.client, "web-a", "10.244.0.5")
    other = await _running_pod(api.client, "client", "10.244.0.6")
    ns_of = {p["metadata"]["name"]: LabNames("bt").pod("node-1", p["metadata"]["name"], p["metadata"]["uid"])
             for p in (backend, other)}
    made = set(ns_of.values())
    target = ServiceTarget("default", "web", "10.96.0.20", 80, endpoints=(Backend("10.244.0.5", 9376, name="web-a"),))
    src = await resolve_source(api.client, info, "default", "web-a", target, exists=made.__contains__)
    assert src.netns == ns_of["web-a"] and src.bind_ip is None and src.node == "node-1"
    for _ in range(5):
        src = await resolve_source(api.client, info, "default", None, target, exists=made.__contains__)
        assert src.netns == ns_of["client"]  # prefers a pod that is not an endpoint
    with pytest.raises(UsageError) as err:
        await resolve_source(api.client, info, "default", "client", target, exists=lambda ns: False)
    assert err.value.param == "--from" and ns_of["client"] in err.value.message


async def test_probe_from_inside_a_namespace(nursery: trio.Nursery) -> None:
    """Sockets of a netns source are opened in that namespace: its own 127.0.0.1 answers."""
    from kmesh.net import netns
    from kmesh.net.netns_check import netns_usable
    from tests.conftest import require

    require(netns_usable(), "root and network namespaces")
    ns = f"kmt-{uuid.uuid4().hex[:6]}-lb"
    netns.add(ns)
    try:
        sock = await netns.open_socket(ns)
        await sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        async with trio.open_nursery() as n:
            n.start_soon(_tcp_server, sock, b"inside", False)
            outs = await send_requests(Probe("127.0.0.1", port, "tcp", netns=ns), 10, 3)
            n.cancel_scope.cancel()
        assert [o.answer for o in outs] == ["inside"] * 10
    finally:
        netns.delete(ns)


# ------------------------------------------------------------------ the CLI on a sim lab


def _kmesh(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kmesh.cli", *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env=dict(os.environ, COLUMNS="200"))


@pytest.fixture(scope="module")
def sim_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``kmesh up --runtime sim --nodes 3 --demo`` for this module's CLI tests; down afterwards."""
    d = tmp_path_factory.mktemp("lb") / "lab"
    up = _kmesh("up", "--runtime", "sim", "--nodes", "3", "--demo", "--port", "0", "--data-dir", str(d))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield d
    finally:
        _kmesh("down", "--data-dir", str(d))


def test_cli_usage_errors_exit_2(sim_lab: Path) -> None:
    for args, param in ((["nope"], "SERVICE"), (["web", "--expect", "fair"], "--expect"),
                        (["web", "--from", "ghost"], "--from"), (["web", "--port", "81"], "--port")):
        res = _kmesh("bench", "lb", *args, "--requests", "5", "--data-dir", str(sim_lab))
        assert res.returncode == 2, res.stdout + res.stderr
        assert param in res.stderr
    res = _kmesh("bench", "lb", "web", "--data-dir", str(sim_lab / "missing"))
    assert res.returncode == 2 and "--data-dir" in res.stderr


async def _demo_pods(kubeconfig: Path) -> list[dict[str, Any]]:
    from kmesh.client.api import Client

    async with Client.from_kubeconfig(kubeconfig) as c:
        pods, _ = await c.list_all("Pod", "default", label_selector="app=web")
    return pods


USERSPACE = importlib.util.find_spec("kmesh.proxy.userspace") is not None


@pytest.mark.skipif(not USERSPACE, reason="kmesh.proxy.userspace does not exist yet: sim Services do not answer")
def test_cli_bench_lb_on_demo(sim_lab: Path) -> None:
    png = sim_lab.parent / "web.png"
    res = _kmesh("bench", "lb", "web", "--requests", "300", "--alpha", "0.0001", "--data-dir", str(sim_lab), "--plot", str(png))
    assert res.returncode == 0, res.stdout + res.stderr
    pods = trio.run(_demo_pods, sim_lab / "kubeconfig.yaml")
    assert len(pods) == 3
    for p in pods:
        assert p["metadata"]["name"] in res.stdout
    assert "PASS" in res.stdout and "p-value" in res.stdout and "errors: none" in res.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"
    # one client, no session affinity: the split is not sticky
    res = _kmesh("bench", "lb", "web", "--requests", "60", "--expect", "sticky", "--data-dir", str(sim_lab))
    assert res.returncode == 1 and "not sticky" in res.stdout
    # keep-alive through the userspace proxy: it picks a pod per client connection, so each connection is pinned
    res = _kmesh("bench", "lb", "web", "--keepalive", "--connections", "4", "--per-connection", "10", "--json",
                 "--data-dir", str(sim_lab))
    assert res.returncode in (0, 1), res.stdout + res.stderr  # 4 connections over 3 pods: the test has little power
    doc = json.loads(res.stdout)
    assert doc["connections"] == 4 and doc["pinned"] == 4 and sum(e["count"] for e in doc["endpoints"]) == 40
    # sessionAffinity ClientIP (set from the start, so the warm-up answer means it is in): one client, one endpoint
    sticky_svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-sticky", "namespace": "default"},
                  "spec": {"selector": {"app": "web"}, "sessionAffinity": "ClientIP",
                           "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]}}  # ≥ 1024: plain users too
    trio.run(_apply_and_wait, sim_lab / "kubeconfig.yaml", [sticky_svc], "web-sticky", 3)
    res = _kmesh("bench", "lb", "web-sticky", "--requests", "60", "--expect", "sticky", "--data-dir", str(sim_lab))
    assert res.returncode == 0 and "PASS: sticky: all 60 answers from web-" in " ".join(res.stdout.split()), \
        res.stdout + res.stderr


UDP_APP = [
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "udp", "namespace": "default"},
     "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "udp"}},
              "template": {"metadata": {"labels": {"app": "udp"}}, "spec": {"containers": [{
                  "name": "s", "image": "registry.k8s.io/e2e-test-images/agnhost:2.39",
                  "args": ["serve-hostname", "--udp", "--http=false"],
                  "ports": [{"containerPort": 9376, "protocol": "UDP"}]}]}}}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "udp", "namespace": "default"},
     "spec": {"selector": {"app": "udp"}, "sessionAffinity": "ClientIP",
              "ports": [{"port": 53, "targetPort": 9376, "protocol": "UDP"}]}},
]


async def _apply_and_wait(kubeconfig: Path, objects: list[dict[str, Any]], service: str, ready: int) -> list[str]:
    """Create ``objects``; wait until ``service`` has ``ready`` ready endpoints; the pod names of the demo ``web``."""
    from kmesh.client.api import Client
    from kmesh.client.informer import Informer

    async with Client.from_kubeconfig(kubeconfig) as c:
        for obj in objects:
            await c.create(obj)
        async with trio.open_nursery() as n:
            slices = Informer(c, "EndpointSlice", namespace="default")
            await n.start(slices.run)

            def enough(inf: Informer) -> bool:
                eps = [e for s in inf.list("default")
                       if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == service
                       for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")]
                return len(eps) >= ready

            with trio.fail_after(60):
                await slices.wait_for(enough)
            n.cancel_scope.cancel()
        pods: Any = (await c.list_all("Pod", "default", label_selector="app=web"))[0]
    return sorted(p["metadata"]["name"] for p in pods)


NETEXEC_APP = [
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "netexec", "namespace": "default"},
     "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "netexec"}},
              "template": {"metadata": {"labels": {"app": "netexec"}}, "spec": {"containers": [{
                  "name": "s", "image": "registry.k8s.io/e2e-test-images/agnhost:2.39",
                  "args": ["netexec", "--http-port=8080", "--udp-port=-1"],
                  "ports": [{"containerPort": 8080}]}]}}}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "netexec", "namespace": "default"},
     "spec": {"selector": {"app": "netexec"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
]


@dataclass
class NetnsLab:
    """A 2-node netns lab (iptables mode) with the demo ``web``, ``udp`` and ``netexec`` (3 pods each)."""

    name: str
    root: Path
    web: list[str]  # the demo's pod names


@pytest.fixture(scope="module")
def netns_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsLab]:
    """One netns lab for this module's lab tests; down afterwards."""
    from kmesh.net.netns_check import netns_usable
    from tests.conftest import require

    require(netns_usable(), "root and network namespaces")
    lab, d = f"lb{uuid.uuid4().hex[:4]}", tmp_path_factory.mktemp("lbnetns") / "lab"
    up = _kmesh("up", "--runtime", "netns", "--nodes", "2", "--demo", "--name", lab, "--port", "0", "--data-dir", str(d))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        web = trio.run(_apply_and_wait, d / "kubeconfig.yaml", UDP_APP + NETEXEC_APP, "udp", 3)
        trio.run(_apply_and_wait, d / "kubeconfig.yaml", [], "netexec", 3)
        yield NetnsLab(lab, d, web)
    finally:
        _kmesh("down", "--data-dir", str(d))


@pytest.mark.netns
@pytest.mark.slow
def test_cli_bench_lb_netns_lab(netns_lab: NetnsLab) -> None:
    """A netns lab: requests leave from pod namespaces (default and --from), TCP through iptables, UDP with affinity."""
    lab, d, web = netns_lab.name, netns_lab.root, netns_lab.web
    res = _kmesh("bench", "lb", "web", "--requests", "300", "--alpha", "0.0001", "--data-dir", str(d))  # random split: 1 in 10000 false alarms
    assert res.returncode == 0, res.stdout + res.stderr
    said = " ".join(res.stdout.split())  # the console wraps long lines (a long pod name moves the break)
    assert f"netns kmesh-{lab}-node-" in said and "errors: none" in said, res.stdout
    assert all(name in res.stdout for name in web)
    res = _kmesh("bench", "lb", "web", "--requests", "100", "--from", web[0], "--expect", "sticky", "--data-dir", str(d))
    assert res.returncode == 1 and f"from pod default/{web[0]}" in " ".join(res.stdout.split()), res.stdout + res.stderr
    res = _kmesh("bench", "lb", "udp", "--udp", "--requests", "100", "--from", web[1], "--expect", "sticky",
                 "--data-dir", str(d))
    assert res.returncode == 0 and "PASS: sticky: all 100 answers from udp-" in " ".join(res.stdout.split()), \
        res.stdout + res.stderr


@pytest.mark.netns
@pytest.mark.slow
def test_cli_bench_lb_keepalive_netns_lab(netns_lab: NetnsLab) -> None:
    """--keepalive in iptables mode: 8 connections over agnhost netexec's 3 pods, each connection pinned to the
    endpoint it opened on, the per-request totals adding up."""
    d, png = netns_lab.root, netns_lab.root.parent / "keepalive.png"
    res = _kmesh("bench", "lb", "netexec", "--keepalive", "--connections", "8", "--per-connection", "20",
                 "--alpha", "0.0001", "--json", "--plot", str(png), "--data-dir", str(d))
    assert res.returncode == 0, res.stdout + res.stderr  # uniform over 8 connections: fails 1 in ~2000 (8 on one)
    doc = json.loads(res.stdout)
    pods = trio.run(_pod_names, d / "kubeconfig.yaml", "app=netexec")
    assert len(pods) == 3 and sorted(e["name"] for e in doc["endpoints"]) == pods
    assert (doc["requests"], doc["connections"], doc["reconnects"], doc["errors"]) == (160, 8, 0, {})
    rows = doc["per_connection"]
    assert [r["requests"] for r in rows] == [20] * 8
    for r in rows:  # pinned: every request of a connection to the endpoint chosen when it opened
        assert len(r["endpoints"]) == 1 and sum(r["endpoints"].values()) == 20 and r["pinned"], r
    assert doc["pinned"] == doc["pinned_of"] == 8
    by_endpoint = {e["name"]: e for e in doc["endpoints"]}
    for name in pods:  # per request, the totals are the connections' requests added up
        assert by_endpoint[name]["count"] == sum(r["endpoints"].get(name, 0) for r in rows)
        assert by_endpoint[name]["connections"] == sum(name in r["endpoints"] for r in rows)
    assert sum(e["count"] for e in doc["endpoints"]) == 160
    assert png.read_bytes()[:4] == b"\x89PNG"


async def _pod_names(kubeconfig: Path, selector: str) -> list[str]:
    from kmesh.client.api import Client

    async with Client.from_kubeconfig(kubeconfig) as c:
        pods, _ = await c.list_all("Pod", "default", label_selector=selector)
    return sorted(p["metadata"]["name"] for p in pods)
