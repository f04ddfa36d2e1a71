"""``kmesh bench lb --via``: the arguments (SERVICE lists, --via, --host, --path), expectations by Service, the
keep-alive judge over requests, the views, and a plan resolved against a real API server and sent to a real
HTTP server on loopback standing where a Gateway's loopback forward would be."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from kmesh.bench.keepalive import Connection, judge_keepalive
from kmesh.bench.lb import (
    Backend,
    Outcome,
    Plan,
    Probe,
    ServiceTarget,
    Source,
    Tally,
    UsageError,
    by_service,
    check_host,
    check_request_args,
    execute,
    judge,
    merge_targets,
    parse_expect,
    parse_services,
    plan_lb,
    request_path,
    service_shares,
    tally,
)
from kmesh.bench.via import Via, address_for, parse_via
from kmesh.lab.datadir import ClusterInfo, NodeInfo

V1 = ("v1-aaaaa", "v1-bbbbb")
V2 = ("v2-ccccc",)


def _svc(name: str, pods: tuple[str, ...], net: int) -> ServiceTarget:
    eps = tuple(Backend(f"10.244.{net}.{i + 1}", 8080, name=p, service=name, node="node-1")
                for i, p in enumerate(pods))
    return ServiceTarget("default", name, f"10.96.0.{net}", 80, port_name="http", endpoints=eps)


def _canary() -> ServiceTarget:
    return merge_targets([_svc("v1", V1, 1), _svc("v2", V2, 2)])


def _param(fn: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(UsageError) as err:
        fn(*args, **kw)
    assert err.value.message
    return err.value.param


# ------------------------------------------------------------------ arguments


def test_parse_via() -> None:
    assert parse_via(None) is None and parse_via("") is None and parse_via("service") is None
    assert parse_via("gateway/canary", "shop") == Via("gateway", "shop", "canary")
    gw = parse_via("gateway/infra/canary", "shop")
    assert gw == Via("gateway", "infra", "canary") and gw.spec() == "gateway/infra/canary"
    assert gw.lb_service() == "infra/canary-kmesh"  # the Service the Gateway controller makes
    ing = parse_via("ingress")
    assert ing is not None and ing.spec() == "ingress" and ing.lb_service() == "kmesh-system/kmesh-ingress-controller"
    for bad in ("gateway", "gateway/", "gateway/a/b/c", "gateway//x", "gw/x", "ingress/x", "nodeport"):
        assert _param(parse_via, bad) == "--via", bad


def test_parse_services() -> None:
    assert parse_services("web", "default") == [("default", "web")]
    assert parse_services("v1, v2", "shop") == [("shop", "v1"), ("shop", "v2")]
    assert parse_services("v1,canary/v2", "shop") == [("shop", "v1"), ("canary", "v2")]
    for bad in ("", "v1,,v2", "v1,v1", "v1,shop/v1", "a/b/c", "/v1"):
        assert _param(parse_services, bad, "shop") == "SERVICE", bad


def test_path_and_host() -> None:
    assert request_path(None) == "/hostname" and request_path("/") == "/hostname"
    assert request_path("/canary/") == "/canary/hostname"  # a prefix: hostname under it
    assert request_path("/whoami") == "/whoami" and request_path("/echo?msg=x") == "/echo?msg=x"
    for bad in ("hostname", "", "/a b", "/a\r\nX: y", "/x#y"):
        assert _param(request_path, bad) == "--path", bad
    for good in (None, "a.example", "a.example:8080", "10.0.0.1"):
        check_host(good)
    for bad in ("", "a b", "a/b", "a\r\nb", "u@h"):
        assert _param(check_host, bad) == "--host", bad


def test_check_request_args() -> None:
    route, names, path, proto = check_request_args("v1,v2", via="gateway/canary", host="c.example", path="/")
    assert route == Via("gateway", "default", "canary") and names == [("default", "v1"), ("default", "v2")]
    assert (path, proto) == ("/hostname", "http")  # --via speaks HTTP whatever the port says
    assert check_request_args("web")[0] is None and check_request_args("web", keepalive=True)[3] == "http"
    for kw, param in (({}, "SERVICE"),  # several Services need --via: a ClusterIP is one Service's
                      ({"via": "ingress", "udp": True}, "--udp"),
                      ({"via": "ingress", "protocol": "tcp"}, "--protocol"),
                      ({"via": "gateway/a/b/c"}, "--via")):
        assert _param(check_request_args, "v1,v2", **kw) == param, kw
    for kw, param in (({"udp": True, "host": "a"}, "--host"), ({"protocol": "tcp", "path": "/"}, "--path"),
                      ({"path": "x"}, "--path"), ({"host": "a b"}, "--host")):
        assert _param(check_request_args, "web", **kw) == param, kw


# ------------------------------------------------------------------ several Services, weights by Service


def test_merge_targets_keeps_each_endpoints_service() -> None:
    t = _canary()
    assert [(b.service, b.name) for b in t.endpoints] == [("v1", "v1-aaaaa"), ("v1", "v1-bbbbb"), ("v2", "v2-ccccc")]
    assert str(t) == "default/v1:http, default/v2:http" and t.cluster_ip == ""
    one = _svc("v1", V1, 1)
    assert merge_targets([one]) is one and str(one) == "default/v1:http"


def test_service_shares_and_per_service_judge() -> None:
    t, parts = _canary(), [_svc("v1", V1, 1), _svc("v2", V2, 2)]
    shares = service_shares(parts, ("v1", "v2"), parse_expect("weights:v1=90,v2=10"))
    assert shares == {"v1": pytest.approx(0.9), "v2": pytest.approx(0.1)}
    assert service_shares(parts, ("v1", "v2"), parse_expect("weights:default/v2=1")) == {"v1": 0.0, "v2": 1.0}
    assert service_shares(parts, ("v1", "v2"), parse_expect("weights:v1-aaaaa=1,v2-ccccc=1")) is None  # by pod
    assert service_shares(parts, ("v1", "v2"), parse_expect("uniform")) is None
    assert _param(service_shares, parts, ("v1", "v2"), parse_expect("weights:v1=9,v2-ccccc=1")) == "--expect"
    shared = [_svc("v1", V1, 1), _svc("all", V1, 1)]  # two Services selecting the same pods
    assert _param(service_shares, shared, ("v1", "all"), parse_expect("weights:v1=1,all=1")) == "--expect"

    def answers(**n: int) -> list[Outcome]:
        return [Outcome(k.replace("_", "-"), None, 0.001) for k, c in n.items() for _ in range(c)]

    expect = parse_expect("weights:v1=90,v2=10")
    outs = answers(v1_aaaaa=136, v1_bbbbb=134, v2_ccccc=30) + [Outcome(None, "http 503", 0.0)]
    per = by_service(tally(t.endpoints, outs), t.endpoints, ("v1", "v2"))
    assert per.counts == {"v1": 270, "v2": 30} and per.errors == {"http 503": 1} and len(per.latencies) == 300
    v = judge(per, shares, expect, 0.0001)
    assert v.passed and v.test is not None and v.test.df == 1 and v.expected == shares
    even = by_service(tally(t.endpoints, answers(v1_aaaaa=75, v1_bbbbb=75, v2_ccccc=150)), t.endpoints, ("v1", "v2"))
    assert not judge(even, shares, expect, 0.0001).passed
    stray = by_service(Tally({"v1-aaaaa": 9}, {"other-pod": 1}), t.endpoints, ("v1", "v2"))
    assert stray.counts == {"v1": 9, "v2": 0} and "outside" in judge(stray, shares, expect).reason


# ------------------------------------------------------------------ keep-alive through an L7 proxy


def _gateway_plan(requests: int, connections: int, expect: str = "weights:v1=90,v2=10") -> Plan:
    t = _canary()
    e = parse_expect(expect)
    shares = service_shares([_svc("v1", V1, 1), _svc("v2", V2, 2)], ("v1", "v2"), e)
    assert shares is not None
    via = Via("gateway", "default", "canary", "192.168.56.241")
    return Plan(t, Source(), Probe(via.address, 80, "http"), e, shares, requests, connections, 0.0001, True, via,
                ("v1", "v2"), True)


def test_keepalive_via_a_gateway_is_judged_over_requests_per_service() -> None:
    # two connections of 20: round robin over v1's pods within each, one in ten to v2
    pattern = ["v1-aaaaa", "v1-bbbbb"] * 9 + ["v2-ccccc", "v2-ccccc"]
    conns = [Connection(i, i, [Outcome(a, None, 0.001) for a in pattern]) for i in range(2)]
    res = judge_keepalive(_gateway_plan(40, 2), conns, 0.5)
    assert res.passed and res.verdict.reason.startswith("over 40 request(s): weights:v1=90,v2=10 holds")
    d = json.loads(json.dumps(res.as_dict()))
    assert d["judged"] == "requests" and d["cells"] == "services" and d["via"] == "gateway/default/canary"
    assert (d["spread"], d["pinned"], d["pinned_of"]) == (2, 0, 2)
    assert [(s["name"], s["endpoints"], s["count"], s["expected"]) for s in d["services"]] == [
        ("v1", 2, 36, pytest.approx(0.9)), ("v2", 1, 4, pytest.approx(0.1))]
    assert [(e["name"], e["service"], e["count"], e["expected"]) for e in d["endpoints"]] == [
        ("v1-aaaaa", "v1", 18, None), ("v1-bbbbb", "v1", 18, None), ("v2-ccccc", "v2", 4, None)]

    from rich.console import Console

    from kmesh.bench.report import _views, connection_table, describe_plan, keepalive_summary, keepalive_table

    buf = io.StringIO()
    con = Console(file=buf, width=220, color_system=None)
    for view in _views(res.plan, keepalive_table, connection_table, keepalive_summary):
        con.print(view(res))
    out = buf.getvalue()
    assert "per Service (judged)" in out and "Services default/v1:http, default/v2:http" in out
    assert "spread: 2 of 2 connection(s) with 2+ answers got answers from 2+ endpoints, 0 pinned" in out
    assert "per Service over requests" in out and "PASS: over 40 request(s)" in out
    line = describe_plan(res.plan)
    assert "to Gateway default/canary (192.168.56.241:80), Host 192.168.56.241, GET /hostname" in line
    assert line.endswith("expecting weights:v1=90,v2=10 per Service over requests")


@pytest.mark.skipif(__import__("importlib").util.find_spec("matplotlib") is None, reason="matplotlib not installed")
def test_via_plots(tmp_path: Path) -> None:
    from kmesh.bench.report import plot, plot_keepalive

    conns = [Connection(i, i, [Outcome(a, None, 0.001) for a in ["v1-aaaaa", "v1-bbbbb", "v2-ccccc"] * 3])
             for i in range(3)]
    res = judge_keepalive(_gateway_plan(27, 3), conns, 0.5)
    assert plot_keepalive(res, tmp_path / "k.png").read_bytes()[:4] == b"\x89PNG"
    assert plot(res, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_address_from_a_pod_or_through_the_loopback_forward(tmp_path: Path) -> None:
    via = Via("gateway", "default", "canary", "192.168.56.241")
    info = _info(tmp_path, {"default/canary-kmesh": {"ip": "192.168.56.241", "ports": {"80": "127.0.0.1:41234"}}})
    assert address_for(via, Source(), info) == ("127.0.0.1", 41234)  # this process: the forward
    assert address_for(via, Source("kmesh-x-pod", None, "pod"), info) == ("192.168.56.241", 80)  # a pod: direct
    assert address_for(via, Source(), _info(tmp_path, {})) == ("192.168.56.241", 80)  # no forward listed


# ------------------------------------------------------------------ against a real API server


def _info(tmp_path: Path, lbs: dict[str, Any]) -> ClusterInfo:
    return ClusterInfo(name="kmesh", api="", kubeconfig=str(tmp_path / "kubeconfig.yaml"), dns=None, runtime="sim",
                       proxyMode="userspace", serviceCIDR="127.96.0.0/16", clusterCIDR="127.244.0.0/16",
                       nodes=[NodeInfo("node-1", "127.1.0.1", "127.244.0.0/24")], loadBalancers=lbs)


@pytest.fixture
async def api(nursery: trio.Nursery, tmp_path: Path) -> Any:
    """An in-process API server that accepts loopback endpoints (as a sim lab's)."""
    from tests.support.cluster import start_cluster

    c = await start_cluster(nursery, tmp_path, loopback_ok=True, service_cidr="127.96.0.0/16")
    try:
        yield c
    finally:
        await c.client.aclose()


async def _service(client: Any, name: str, pods: dict[str, str]) -> None:
    await client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                         "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80,
                                                                          "targetPort": 8080}]}})
    await client.create({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-1", "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}, "nodeName": "node-1",
                       "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}} for pod, ip in pods.items()],
    })


async def _gateway(client: Any, name: str, address: str | None, port: int = 80) -> None:
    gw = await client.create({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"gatewayClassName": "kmesh", "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}]}})
    if address:
        gw["status"] = {"addresses": [{"type": "IPAddress", "value": address}]}
        await client.update_status(gw)


async def _echo_basic(nursery: trio.Nursery, pods: list[str], seen: list[tuple[str, str]]) -> int:
    """An HTTP/1.1 server on 127.0.0.1 answering as echo-basic does (JSON naming ``pod``), a pod per request
    from ``pods`` in turn; it records each request's (path, Host). Its port."""
    from kmesh.net.http import Request, Response, serve_connection

    turn = iter(range(1 << 30))

    async def handler(req: Request) -> Response:
        seen.append((req.target, req.headers.get("host", "")))
        body = {"path": req.target, "host": req.headers.get("host", ""), "pod": pods[next(turn) % len(pods)]}
        return Response(body=json.dumps(body), content_type="application/json")

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, lambda s: serve_connection(s, handler), listeners)
    return int(listeners[0].socket.getsockname()[1])


async def test_plan_via_a_gateway_through_the_api(api: Any, nursery: trio.Nursery, tmp_path: Path) -> None:
    c = api.client
    await _service(c, "v1", {"v1-aaaaa": "127.244.251.1", "v1-bbbbb": "127.244.251.2"})
    await _service(c, "v2", {"v2-ccccc": "127.244.251.3"})
    await _gateway(c, "canary", "192.168.56.241")
    seen: list[tuple[str, str]] = []
    port = await _echo_basic(nursery, ["v1-aaaaa", "v1-bbbbb"] * 9 + ["v2-ccccc", "v2-ccccc"], seen)
    info = _info(tmp_path, {"default/canary-kmesh": {"ip": "192.168.56.241", "ports": {"80": f"127.0.0.1:{port}"}}})
    plan = await plan_lb(c, info, "v1,v2", via="gateway/canary", host="canary.example", path="/",
                         expect="weights:v1=90,v2=10", requests=200, concurrency=4, alpha=0.0001)
    assert plan.via == Via("gateway", "default", "canary", "192.168.56.241") and plan.per_service
    assert (plan.probe.host, plan.probe.port, plan.probe.protocol) == ("127.0.0.1", port, "http")
    assert [b.name for b in plan.target.endpoints] == ["v1-aaaaa", "v1-bbbbb", "v2-ccccc"]
    res = await execute(plan)
    assert set(seen) == {("/hostname", "canary.example")}  # --path / asks /hostname, with --host
    assert res.passed and res.tally.counts == {"v1-aaaaa": 90, "v1-bbbbb": 90, "v2-ccccc": 20}
    d = res.as_dict()
    assert (d["via"], d["host"], d["path"], d["cells"]) == ("gateway/default/canary", "canary.example", "/hostname",
                                                            "services")
    assert [(s["name"], s["count"]) for s in d["services"]] == [("v1", 180), ("v2", 20)]
    # weighed by pod instead: the same answers judged per endpoint
    per_pod = await plan_lb(c, info, "v1,v2", via="gateway/default/canary", requests=50,
                            expect="weights:v1-aaaaa=1,v1-bbbbb=1")
    assert not per_pod.per_service and per_pod.shares == {"v1-aaaaa": 0.5, "v1-bbbbb": 0.5, "v2-ccccc": 0.0}
    assert per_pod.probe.http_host == "192.168.56.241"  # no --host: the Gateway's address


async def test_via_usage_errors_name_the_option(api: Any, tmp_path: Path) -> None:
    c = api.client
    await _service(c, "v1", {"v1-aaaaa": "127.244.252.1"})
    await _gateway(c, "pending", None)
    await _gateway(c, "tls-only", "192.168.56.242", port=443)
    await _gateway(c, "ok", "192.168.56.243")
    info = _info(tmp_path, {})

    async def param_of(service: str, **kw: Any) -> str:
        with pytest.raises(UsageError) as err:
            await plan_lb(c, info, service, **kw)
        assert err.value.message
        return err.value.param

    assert await param_of("v1", via="gateway/missing") == "--via"
    assert await param_of("v1", via="gateway/pending") == "--via"  # no address yet
    assert await param_of("v1", via="gateway/tls-only") == "--via"  # no HTTP listener on 80
    assert await param_of("v1", via="ingress") == "--via"  # this API server has no ingress controller
    assert await param_of("v1,v9", via="gateway/missing") == "SERVICE"  # the Services are looked up first
    assert await param_of("v1", via="gateway/ok", expect="weights:v1=1,v1-aaaaa=1") == "--expect"  # mixed


def test_cli_via_usage_errors_exit_2(tmp_path: Path) -> None:
    """Bad --via, SERVICE lists, --host and --path are refused (exit 2, naming the option) before any lab is needed."""
    from click.testing import CliRunner

    from kmesh.cli import main

    runner = CliRunner()
    for args, param in ((["v1", "--via", "gw/canary"], "--via"), (["v1,v2"], "SERVICE"),
                        (["v1", "--via", "ingress", "--udp"], "--udp"), (["v1", "--path", "hostname"], "--path"),
                        (["v1", "--host", "a b"], "--host"),
                        (["v1", "--via", "ingress", "--during", "link down node-2"], "--via")):
        res = runner.invoke(main, ["bench", "lb", *args, "--data-dir", str(tmp_path / "none")])
        assert res.exit_code == 2, (args, res.output)
        assert param in res.output, (args, res.output)
