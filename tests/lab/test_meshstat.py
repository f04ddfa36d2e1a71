"""``kmesh mesh stat`` and ``tap`` without a lab: the sidecars' /metrics text as prometheus_client writes it
(two pods of Deployment ``web``, one ``frontend`` client, scraped twice 10 s apart), added up and checked
against numbers worked out by hand; the tap line; the commands' bad arguments."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from rich.text import Text

from kmesh.lab import meshstat as M
from kmesh.lab.meshcmd import mesh as mesh_cmd
from kmesh.lab.meshcmd import render_stat

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25)  # + Inf
LABELS = ["direction", "source_workload", "source_namespace", "destination_workload", "destination_namespace",
          "destination_service", "route", "tls"]


def sidecar(series: list[tuple[dict[str, str], dict[str, int], list[int]]]) -> str:
    """The /metrics text of a sidecar that counted ``series``: (labels, {code: requests}, cumulative bucket
    counts for BOUNDS and +Inf), written by prometheus_client as the real sidecar's registry writes it."""
    reg = CollectorRegistry()
    req = Counter("kmesh_requests", "Requests.", [*LABELS, "response_code"], registry=reg)
    dur = Histogram("kmesh_request_duration_seconds", "Request duration.", LABELS, buckets=BOUNDS, registry=reg)
    for labels, codes, cumulative in series:
        full = {k: labels.get(k, "") for k in LABELS}
        for code, n in codes.items():
            req.labels(**full, response_code=code).inc(n)
        prev_count, prev_bound = 0, 0.0
        for bound, count in zip([*BOUNDS, math.inf], cumulative):
            inside = (prev_bound + bound) / 2 if bound != math.inf else 1.0
            for _ in range(count - prev_count):
                dur.labels(**full).observe(inside)
            prev_count, prev_bound = count, bound
    return generate_latest(reg).decode()


WEB_FROM_FRONTEND = {"direction": "inbound", "source_workload": "frontend", "source_namespace": "default",
                     "destination_workload": "web", "destination_namespace": "default",
                     "destination_service": "default/web:8080", "tls": "true"}
WEB_FROM_OUTSIDE = {**WEB_FROM_FRONTEND, "source_workload": "", "source_namespace": "", "tls": "false"}
WEB_TO_DB = {"direction": "outbound", "source_workload": "web", "source_namespace": "default",
             "destination_workload": "db", "destination_namespace": "default",
             "destination_service": "default/db:8080", "tls": "true"}
FRONTEND_TO_WEB = {**WEB_FROM_FRONTEND, "direction": "outbound", "destination_workload": ""}
FRONTEND_TO_CART = {**FRONTEND_TO_WEB, "destination_service": "shop/cart:80", "destination_namespace": "shop",
                    "route": "list"}

# Scrape A, then scrape B 10 s later: every number is cumulative since the sidecar started.
METRICS = {
    "A": {
        "web-a": sidecar([(WEB_FROM_FRONTEND, {"200": 40, "500": 1}, [10, 30, 39, 40, 41, 41, 41]),
                          ({**WEB_TO_DB, "route": "get-item"}, {"200": 20}, [20, 20, 20, 20, 20, 20, 20]),
                          (WEB_TO_DB, {"200": 10}, [10, 10, 10, 10, 10, 10, 10])]),
        "web-b": sidecar([(WEB_FROM_OUTSIDE, {"200": 60}, [30, 50, 56, 58, 58, 59, 60])]),
        "frontend-x": sidecar([(FRONTEND_TO_WEB, {"200": 40, "500": 1}, [0, 20, 40, 41, 41, 41, 41]),
                               (FRONTEND_TO_CART, {"200": 3}, [3, 3, 3, 3, 3, 3, 3])]),
    },
    "B": {
        "web-a": sidecar([(WEB_FROM_FRONTEND, {"200": 100, "500": 4}, [30, 70, 96, 100, 103, 104, 104]),
                          ({**WEB_TO_DB, "route": "get-item"}, {"200": 50}, [50, 50, 50, 50, 50, 50, 50]),
                          (WEB_TO_DB, {"200": 10, "503": 2}, [12, 12, 12, 12, 12, 12, 12])]),
        "web-b": sidecar([(WEB_FROM_OUTSIDE, {"200": 96}, [50, 80, 90, 93, 94, 95, 96])]),
        "frontend-x": sidecar([(FRONTEND_TO_WEB, {"200": 100, "500": 4}, [0, 50, 100, 104, 104, 104, 104]),
                               (FRONTEND_TO_CART, {"200": 7}, [7, 7, 7, 7, 7, 7, 7])]),
    },
}


def pod(name: str, owner: str | None, meshed: bool = True, phase: str = "Running") -> dict[str, Any]:
    labels = {"app": name.rsplit("-", 1)[0]}
    if meshed:
        labels["security.kmesh.io/tlsMode"] = "kmesh"
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": labels}
    if owner:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": owner, "controller": True}]
    return {"metadata": meta, "spec": {"nodeName": "node-1"}, "status": {"phase": phase}}


def rs(name: str, deploy: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default",
                         "ownerReferences": [{"kind": "Deployment", "name": deploy, "controller": True}]}}


def deploy(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": name}}}}


@pytest.fixture
def mesh() -> M.Mesh:
    return M.discover(
        [pod("web-a", "web-5d8f"), pod("web-b", "web-5d8f"), pod("web-c", "web-5d8f", meshed=False),
         pod("web-d", "web-5d8f", phase="Pending"), pod("frontend-x", "frontend-77c"),
         pod("lonely", None, meshed=False)],
        [rs("web-5d8f", "web"), rs("frontend-77c", "frontend")],
        [deploy("web"), deploy("frontend")],
    )


def scrapes(mesh: M.Mesh, at: str) -> dict[M.MeshedPod, M.Scrape]:
    return {p: M.parse_metrics(METRICS[at][p.name]) for p in mesh.pods}


def window(mesh: M.Mesh) -> dict[M.MeshedPod, M.Scrape]:
    a, b = scrapes(mesh, "A"), scrapes(mesh, "B")
    return {p: M.delta(a[p], b[p]) for p in mesh.pods}


# ---------------------------------------------------------------------------------------------- discovery


def test_discovery_finds_meshed_running_pods_and_their_deployments(mesh: M.Mesh) -> None:
    assert [(p.name, p.workload) for p in mesh.pods] == [("frontend-x", "frontend"), ("web-a", "web"),
                                                         ("web-b", "web")]
    assert mesh.workloads == {("default", "web"): (2, 3), ("default", "frontend"): (1, 1)}


def test_a_pod_without_replicaset_falls_back_to_the_deployment_selector() -> None:
    m = M.discover([pod("web-z", None)], [], [deploy("web"), deploy("db")])
    assert m.pods[0].workload == "web"


# ---------------------------------------------------------------------------------------------- parsing and math


def test_parse_keeps_requests_and_histogram_but_not_created() -> None:
    text = """# HELP kmesh_requests_total Requests.
# TYPE kmesh_requests_total counter
kmesh_requests_total{direction="inbound",response_code="200",route=""} 3.0
kmesh_requests_created{direction="inbound",response_code="200",route=""} 1.7e9
# HELP kmesh_request_duration_seconds Request duration.
# TYPE kmesh_request_duration_seconds histogram
kmesh_request_duration_seconds_bucket{direction="inbound",route="",le="0.01"} 2.0
kmesh_request_duration_seconds_bucket{direction="inbound",route="",le="+Inf"} 3.0
kmesh_request_duration_seconds_count{direction="inbound",route=""} 3.0
kmesh_request_duration_seconds_sum{direction="inbound",route=""} 0.5
# HELP process_cpu_seconds_total CPU.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.0
"""
    s = M.parse_metrics(text)
    assert sorted({name for name, _ in s}) == ["kmesh_request_duration_seconds_bucket",
                                               "kmesh_request_duration_seconds_count",
                                               "kmesh_request_duration_seconds_sum", "kmesh_requests_total"]
    key = ("kmesh_request_duration_seconds_bucket", (("direction", "inbound"), ("le", "+Inf"), ("route", "")))
    assert s[key] == 3.0


def test_quantile_interpolates_inside_the_bucket_as_prometheus_does() -> None:
    b = {0.005: 80.0, 0.01: 150.0, 0.025: 186.0, 0.05: 193.0, 0.1: 197.0, 0.25: 199.0, math.inf: 200.0}
    assert M.quantile(0.5, b) == pytest.approx(0.005 + 0.005 * 20 / 70)
    assert M.quantile(0.95, b) == pytest.approx(0.025 + 0.025 * 4 / 7)
    assert M.quantile(0.99, b) == pytest.approx(0.1 + 0.15 * 1 / 2)
    assert M.quantile(0.999, b) == 0.25  # in the +Inf bucket: the highest finite bound
    assert M.quantile(0.1, b) == pytest.approx(0.005 * 20 / 80)  # first bucket: from 0
    assert M.quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert M.quantile(0.5, {}) is None


def test_a_counter_that_went_down_is_a_restarted_sidecar() -> None:
    k1, k2, k3 = ("c", (("a", "1"),)), ("c", (("a", "2"),)), ("c", (("a", "3"),))
    assert M.delta({k1: 10.0, k2: 50.0}, {k1: 15.0, k2: 4.0, k3: 2.0}) == {k1: 5.0, k2: 4.0, k3: 2.0}


# ---------------------------------------------------------------------------------------------- stat rows


def test_deploy_since_start_adds_both_pods_inbound(mesh: M.Mesh) -> None:
    rows = M.build_rows("deploy", mesh, scrapes(mesh, "B"), None, "default", None)
    assert [r["name"] for r in rows] == ["frontend", "web"]
    frontend, web = rows
    assert frontend == {"namespace": "default", "name": "frontend", "meshed": 1, "pods": 1, "success": None,
                        "rps": None, "latency_p50_ms": None, "latency_p95_ms": None, "latency_p99_ms": None,
                        "requests": 0}
    # web-a 100 + 4 (500) inbound, web-b 96; web-a's outbound requests to db are not web's
    assert web["requests"] == 200 and web["meshed"] == 2 and web["pods"] == 3
    assert web["success"] == pytest.approx(196 / 200)
    assert web["rps"] is None
    # merged buckets 80, 150, 186, 193, 197, 199, 200
    assert web["latency_p50_ms"] == pytest.approx(6.429, abs=1e-3)
    assert web["latency_p95_ms"] == pytest.approx(39.286, abs=1e-3)
    assert web["latency_p99_ms"] == pytest.approx(175.0, abs=1e-3)


def test_deploy_over_a_window_uses_the_differences(mesh: M.Mesh) -> None:
    rows = M.build_rows("deploy", mesh, window(mesh), 10.0, "default", "web")
    assert len(rows) == 1
    web = rows[0]
    # web-a: 60 + 3 failed, web-b: 36 → 99; buckets 40, 70, 91, 95, 98, 99, 99
    assert web["requests"] == 99
    assert web["success"] == pytest.approx(96 / 99, abs=1e-6)
    assert web["rps"] == pytest.approx(9.9)
    assert web["latency_p50_ms"] == pytest.approx(5 + 5 * 9.5 / 30, abs=1e-3)
    assert web["latency_p95_ms"] == pytest.approx(25 + 25 * 3.05 / 4, abs=1e-3)
    assert web["latency_p99_ms"] == pytest.approx(100 + 150 * 0.01 / 1, abs=1e-3)


def test_svc_rows_come_from_the_clients_outbound_series(mesh: M.Mesh) -> None:
    rows = M.build_rows("svc", mesh, scrapes(mesh, "B"), None, "default", None)
    assert [(r["name"], r["requests"]) for r in rows] == [("db", 62), ("web", 104)]
    db, web = rows
    assert db["success"] == pytest.approx(60 / 62)
    assert web["success"] == pytest.approx(100 / 104)
    assert web["latency_p50_ms"] == pytest.approx(10 + 15 * 2 / 50, abs=1e-3)  # buckets 0, 50, 100, 104...
    shop = M.build_rows("svc", mesh, scrapes(mesh, "B"), None, "shop", None)
    assert [(r["namespace"], r["name"], r["requests"]) for r in shop] == [("shop", "cart", 7)]
    everywhere = M.build_rows("svc", mesh, window(mesh), 10.0, None, None)
    assert [(r["namespace"], r["name"], r["requests"], r["rps"]) for r in everywhere] == [
        ("default", "db", 32, 3.2), ("default", "web", 63, 6.3), ("shop", "cart", 4, 0.4)]


def test_route_rows_split_a_service_by_route(mesh: M.Mesh) -> None:
    rows = M.build_rows("route", mesh, scrapes(mesh, "B"), None, "default", "db")
    assert [(r["service"], r["route"], r["requests"], r["success"]) for r in rows] == [
        ("db", "[DEFAULT]", 12, pytest.approx(10 / 12)), ("db", "get-item", 50, 1.0)]


def test_no_data_gives_rows_without_numbers(mesh: M.Mesh) -> None:
    empty = {p: {} for p in mesh.pods}
    assert M.build_rows("svc", mesh, empty, None, "default", None) == []
    rows = M.build_rows("deploy", mesh, empty, 5.0, "default", None)
    assert [(r["name"], r["requests"], r["success"], r["rps"], r["latency_p99_ms"]) for r in rows] == [
        ("frontend", 0, None, 0.0, None), ("web", 0, None, 0.0, None)]


def test_which_pods_are_asked(mesh: M.Mesh) -> None:
    assert [p.name for p in M.pods_to_scrape("deploy", mesh, "default", "web")] == ["web-a", "web-b"]
    assert len(M.pods_to_scrape("svc", mesh, "shop", None)) == 3  # clients may be anywhere
    with pytest.raises(M.MeshStatError, match="no meshed pods of deployment db in namespace default"):
        M.pods_to_scrape("deploy", mesh, "default", "db")
    with pytest.raises(M.MeshStatError, match="no meshed pods"):
        M.pods_to_scrape("svc", M.Mesh([], {}), None, None)


def test_the_table(mesh: M.Mesh) -> None:
    head, cells = M.table_rows("deploy", M.build_rows("deploy", mesh, window(mesh), 10.0, "default", None), False)
    assert head == ["NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "REQUESTS"]
    assert cells == [["frontend", "1/1", "-", "0.0rps", "-", "-", "-", "0"],
                     ["web", "2/3", "96.97%", "9.9rps", "6.58ms", "44.1ms", "102ms", "99"]]
    head, cells = M.table_rows("route", M.build_rows("route", mesh, scrapes(mesh, "B"), None, None, None), True)
    assert head[:3] == ["NAMESPACE", "ROUTE", "SERVICE"]
    assert cells[-1][:5] == ["shop", "list", "cart", "100.00%", "-"]
    assert render_stat("deploy", M.build_rows("deploy", mesh, window(mesh), 10.0, "default", None), False)


async def test_collect_stat_scrapes_twice_a_window_apart(mesh: M.Mesh, monkeypatch: pytest.MonkeyPatch,
                                                         autojump_clock: Any) -> None:
    rounds: dict[str, int] = {}

    async def load_mesh(info: Any) -> M.Mesh:
        return mesh

    async def fetch(ns: str) -> str:
        if ns == "gone":
            raise OSError("connection refused")
        rounds[ns] = rounds.get(ns, 0) + 1
        return METRICS["A" if rounds[ns] == 1 else "B"][ns]

    def locate(info: Any, pods: list[M.MeshedPod], warn: M.Warn) -> dict[M.MeshedPod, str]:
        return {p: p.name for p in pods} | {M.MeshedPod("default", "web-gone", "web"): "gone"}

    monkeypatch.setattr(M, "load_mesh", load_mesh)
    monkeypatch.setattr(M, "fetch_metrics", fetch)
    monkeypatch.setattr(M, "locate", locate)
    warnings: list[str] = []
    info = type("Info", (), {"runtime": "netns"})()
    rows = await M.collect_stat(info, "deployment", "default", "web", 10.0, warnings.append)
    assert rows[0]["requests"] == 99 and rows[0]["rps"] == pytest.approx(9.9, rel=1e-3)
    assert rounds == {"web-a": 2, "web-b": 2}
    assert warnings == ["default/web-gone: sidecar admin port 15020: connection refused"]
    rounds.update({"web-a": 1, "web-b": 1, "frontend-x": 1})  # every sidecar is at B now
    rows = await M.collect_stat(info, "svc", "default", None, 0, warnings.append)
    assert [(r["name"], r["requests"], r["rps"]) for r in rows] == [("db", 62, None), ("web", 104, None)]


# ---------------------------------------------------------------------------------------------- tap


EVENT = {"ts": 1700000000.25, "direction": "inbound", "method": "GET", "authority": "web.shop", "path": "/x",
         "status": 200, "latency_ms": 1.234, "tls": True, "route": "",
         "source": {"workload": "frontend", "namespace": "shop", "ip": "10.244.1.5"},
         "destination": {"workload": "web", "namespace": "shop", "service": "shop/web:8080", "ip": "10.244.2.7",
                         "port": 8080}}


def test_tap_line() -> None:
    line = M.tap_text(EVENT, "shop/web-a")
    plain = Text.from_markup(line).plain
    assert plain.endswith("shop/web-a in  shop/frontend → shop/web  GET web.shop/x  200 1.23ms 🔒")
    assert "[green]200[/green]" in line
    unmeshed = {**EVENT, "status": 503, "tls": False, "direction": "outbound",
                "source": {"workload": "", "namespace": "", "ip": "10.244.1.9"},
                "destination": {"workload": "", "namespace": "shop", "service": "shop/web:8080"}}
    line = M.tap_text(unmeshed)
    assert Text.from_markup(line).plain.split(" ", 1)[1] == "out 10.244.1.9 → shop/web:8080  GET web.shop/x  503 1.23ms"
    assert "[red]503[/red]" in line
    assert "--:--:--.---" in Text.from_markup(M.tap_text({})).plain


def test_tap_stream_is_split_into_lines_and_keeps_the_raw_text() -> None:
    warnings: list[str] = []
    raw = json.dumps(EVENT)
    events, rest = M.decode_tap(f"{raw}\n\nnot json\n[1]\n{raw[:10]}".encode(), "shop/web-a", warnings.append)
    assert [(e.pod, e.data["path"], e.raw) for e in events] == [("shop/web-a", "/x", raw)]
    assert rest == raw[:10].encode() and len(warnings) == 2
    events, rest = M.decode_tap(rest + raw[10:].encode() + b"\n", "shop/web-a", warnings.append)
    assert [e.raw for e in events] == [raw] and rest == b""
    with pytest.raises(M.AdminError):
        M.decode_tap(b"x" * (M.MAX_TAP_LINE + 1), "p", warnings.append)


def test_tap_targets(mesh: M.Mesh) -> None:
    assert M.parse_tap_target("deploy/web") == ("deploy", "web")
    assert M.parse_tap_target("po/web-a") == ("pod", "web-a")
    assert M.parse_tap_target("web") == ("any", "web")
    assert [p.name for p in M.tap_pods(mesh, "any", "web", "default")] == ["web-a", "web-b"]
    assert [p.name for p in M.tap_pods(mesh, "any", "web-b", "default")] == ["web-b"]
    with pytest.raises(M.MeshStatError, match="pod default/web-c is not meshed"):
        M.tap_pods(mesh, "any", "web-c", "default")
    with pytest.raises(M.MeshStatError, match="no meshed pods of deployment 'web' in namespace shop"):
        M.tap_pods(mesh, "deploy", "web", "shop")


# ---------------------------------------------------------------------------------------------- the commands


@pytest.mark.parametrize("args, param", [
    (["stat", "pods"], "RESOURCE"),
    (["stat", "--window", "soon"], "--window"),
    (["stat", "--window", "-5"], "--window"),
    (["stat", "svc", "--window", "2d"], "--window"),
    (["tap", "svc/web"], "TARGET"),
    (["tap", "deploy/"], "TARGET"),
    (["tap", "web", "--max", "0"], "--max"),
])
def test_bad_arguments_are_named(args: list[str], param: str, tmp_path: Path) -> None:
    out = CliRunner().invoke(mesh_cmd, ["--data-dir", str(tmp_path), *args])
    assert out.exit_code == 2, out.output
    assert param in out.output


def test_no_lab(tmp_path: Path) -> None:
    out = CliRunner().invoke(mesh_cmd, ["stat", "--data-dir", str(tmp_path), "svc", "--window", "1m"])
    assert out.exit_code == 1 and f"no lab is running in {tmp_path}" in out.output


def test_the_group_is_a_kmesh_command() -> None:
    from kmesh.cli import main

    out = CliRunner().invoke(main, ["mesh", "--help"])
    assert out.exit_code == 0 and "stat" in out.output and "tap" in out.output


async def test_follow_tap_reads_every_sidecar_and_stops_at_max(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two fake sidecars on loopback stream chunked NDJSON (and never end); --max 5 stops the lot."""
    import socket
    from functools import partial

    import trio

    from kmesh.net import netns

    served: list[str] = []
    closed = trio.Event()
    open_conns = 0

    async def sidecar_tap(stream: trio.SocketStream) -> None:
        nonlocal open_conns
        open_conns += 1
        try:
            head = await stream.receive_some(4096)
            served.append(head.split(b" ")[1].decode())
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n")
            for i in range(1000):
                line = json.dumps({**EVENT, "path": f"/{i}"}).encode() + b"\n"
                half = len(line) // 2  # a line split over two chunks
                for part in (line[:half], line[half:]):
                    await stream.send_all(b"%x\r\n%s\r\n" % (len(part), part))
                await trio.sleep(0.01)
        except trio.BrokenResourceError:
            pass
        finally:
            open_conns -= 1
            if open_conns == 0:
                closed.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, sidecar_tap, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]

        async def here(name: str | None, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
                       proto: int = 0) -> trio.socket.SocketType:
            return trio.socket.socket(family, type, proto)

        monkeypatch.setattr(netns, "open_socket", here)
        monkeypatch.setattr(M, "ADMIN_PORT", port)
        got: list[M.TapEvent] = []
        pods = {M.MeshedPod("shop", "web-a", "web"): "ns-a", M.MeshedPod("shop", "web-b", "web"): "ns-b"}
        with trio.fail_after(10):
            n = await M.follow_tap(pods, 5, got.append, lambda w: pytest.fail(w))
            await closed.wait()  # both connections were closed by the tap
        assert n == 5 and len(got) == 5 and served == ["/tap", "/tap"]
        assert {e.pod for e in got} <= {"shop/web-a", "shop/web-b"}
        assert all(json.loads(e.raw) == e.data for e in got)
        nursery.cancel_scope.cancel()
