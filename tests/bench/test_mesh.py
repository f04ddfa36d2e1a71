"""The pure parts of ``kmesh bench mesh`` and ``benchmarks/mesh.py``: response parsing, pacing, pooling rounds,
the retries statistics, result shapes, the workloads' manifests; and the keep-alive client against a loopback
server (no lab)."""

from __future__ import annotations

import itertools
import math
import socket

import pytest
import trio
from click.testing import CliRunner

from kmesh.bench import meshload
from kmesh.bench.lb import UsageError
from kmesh.bench.mesh import (
    Fixture,
    LatencyResult,
    MeshOptions,
    PathResult,
    RetriesResult,
    RetryPhase,
    budget_success,
    canary_route,
    flaky_route,
    ideal_success,
    latency_rows,
    manifests,
    parse_experiments,
    parse_weights,
    signed,
    two_proportions,
)
from kmesh.bench.meshload import ClosedLoop, OpenLoop, Sample, Target, parse_head

# ------------------------------------------------------------------ parse_head


def test_parse_head_waits_for_the_whole_head() -> None:
    assert parse_head(b"") is None
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n") is None


def test_parse_head_reads_status_length_and_keepalive() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
    assert parse_head(head) == (200, 5, False, len(head) - 5)
    assert parse_head(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nConnection: close\r\n\r\n")[:3] == \
        (503, 0, True)


def test_parse_head_http10_closes_unless_keepalive() -> None:
    assert parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx")[2] is True
    assert parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nx")[2] is False


def test_parse_head_chunked_bodiless_and_close_delimited() -> None:
    assert parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")[1] == -1
    assert parse_head(b"HTTP/1.1 204 No Content\r\n\r\n")[1] == 0
    assert parse_head(b"HTTP/1.1 200 OK\r\n\r\n")[1:3] == (-2, True)


@pytest.mark.parametrize("bad", [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 20 OK\r\n\r\n", b"HTTP/2 200\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"])
def test_parse_head_refuses_what_is_not_http1(bad: bytes) -> None:
    with pytest.raises(ValueError):
        parse_head(bad)


def test_parse_head_bounds_the_head() -> None:
    with pytest.raises(ValueError):
        parse_head(b"HTTP/1.1 200 OK\r\nX: " + b"a" * meshload.MAX_HEAD)


# ------------------------------------------------------------------ pacing and pooling


def test_schedule_is_evenly_spaced_at_the_rate() -> None:
    due = meshload.schedule(500, 2)
    assert len(due) == 1000 and due[0] == 0.0
    assert all(math.isclose(b - a, 0.002) for a, b in itertools.pairwise(due))
    assert meshload.schedule(0.5, 1) == [0.0]  # at least one request
    with pytest.raises(ValueError):
        meshload.schedule(0, 1)


def test_samples_ok_and_errors() -> None:
    samples = [Sample(0, 0.001, 200), Sample(0.1, 0.002, 503), Sample(0.2, 0.5, None, "timeout"),
               Sample(0.3, 0.001, 301)]
    assert [s.ok for s in samples] == [True, False, False, True]
    assert meshload.errors_of(samples) == {"http 503": 1, "timeout": 1}


def test_open_loop_summary() -> None:
    run = OpenLoop(100, 1.0, [Sample(i / 100, 0.001 * (i + 1), 200) for i in range(100)], connections=4, elapsed=1.0,
                   cpu=0.05)
    d = run.as_dict()
    assert d["requests"] == 100 and d["failed"] == 0 and d["achieved_rps"] == 100.0
    assert d["latency"]["p50_ms"] == pytest.approx(50.5) and d["latency"]["max_ms"] == pytest.approx(100)
    assert d["node_cpu_ms_per_request"] == pytest.approx(0.5)


def test_merge_open_shifts_rounds_and_sums() -> None:
    a = OpenLoop(10, 1.0, [Sample(0.0, 0.01, 200), Sample(0.5, 0.02, 200)], 2, 1.0, cpu=0.1)
    b = OpenLoop(10, 1.0, [Sample(0.0, 0.03, 200)], 3, 1.1, cpu=None)
    m = meshload.merge_open([a, b])
    assert [s.due for s in m.samples] == [0.0, 0.5, 1.0]
    assert m.seconds == 2.0 and m.elapsed == pytest.approx(2.1) and m.connections == 3 and m.cpu == pytest.approx(0.1)
    with pytest.raises(ValueError):
        meshload.merge_open([])


def test_merge_closed_pools() -> None:
    a = ClosedLoop(8, 1.0, [0.001, 0.002], {"reset": 1}, 1.0)
    b = ClosedLoop(8, 1.0, [0.003], {"reset": 2, "timeout": 1}, 1.0)
    m = meshload.merge_closed([a, b])
    assert m.latencies == [0.001, 0.002, 0.003] and m.errors == {"reset": 3, "timeout": 1}
    assert m.rps == pytest.approx(1.5)


def test_rotations_put_every_path_first_in_turn() -> None:
    assert meshload.rotations(["a", "b", "c"], 4) == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                                      ["a", "b", "c"]]
    with pytest.raises(ValueError):
        meshload.rotations(["a"], 0)


def test_added_and_goal() -> None:
    from kmesh.bench.stats import Latency

    direct = Latency(10, 0.001, 0.002, 0.003, 0.004)
    pair = Latency(10, 0.0018, 0.003, 0.0055, 0.01)
    add = meshload.added(pair, direct)
    assert add == {"p50_ms": pytest.approx(0.8), "p99_ms": pytest.approx(2.5)}
    assert meshload.meets_goal(add)
    assert not meshload.meets_goal({"p50_ms": 1.2, "p99_ms": 1.0})
    assert not meshload.meets_goal({"p50_ms": 0.5, "p99_ms": 3.1})
    assert not meshload.meets_goal({"p50_ms": None, "p99_ms": 1.0})


# ------------------------------------------------------------------ retries statistics


def test_ideal_and_budget_success() -> None:
    assert ideal_success(0.5, 2) == pytest.approx(0.875)
    assert ideal_success(0.5, 1) == pytest.approx(0.75)
    # 2 ms answers, backoffs 25 and 50 ms: a failed request holds a retry 0.027 + 0.5 * 0.052 = 0.053 s.
    # 10/s: 0.265 retries in flight, 3 always allowed: the budget does not bind.
    assert budget_success(0.5, 2, 10, 0.002) == pytest.approx(0.875)
    # 1000/s: 26.5 retries in flight, 5.7 allowed (20 % of 28.5 requests): that share of failures retries.
    assert budget_success(0.5, 2, 1000, 0.002) == pytest.approx(0.5 + 0.5 * (5.7 / 26.5) * 0.75)
    # 300/s: 7.95 in flight, the 3 always allowed bind.
    assert budget_success(0.5, 2, 300, 0.002) == pytest.approx(0.5 + 0.5 * (3 / 7.95) * 0.75)
    assert budget_success(0.0, 2, 1000, 0.002) == 1.0


def test_two_proportions() -> None:
    z, p = two_proportions(50, 100, 85, 100)
    assert z == pytest.approx(5.284, abs=0.001) and p < 1e-6  # pooled: 0.35 / sqrt(.675 * .325 * .02)
    z, p = two_proportions(50, 100, 50, 100)
    assert z == 0 and p == pytest.approx(0.5)
    assert two_proportions(0, 10, 0, 10) == (0.0, 1.0)
    assert math.isnan(two_proportions(0, 0, 1, 1)[1])


def test_retries_result_verdict_and_shape() -> None:
    without = RetryPhase("without retries", [Sample(i, 0.001, 200 if i % 2 else 503) for i in range(100)])
    with_retry = RetryPhase("retry", [Sample(i, 0.001, 200 if i % 8 else 503) for i in range(100)])
    res = RetriesResult(0.5, 2, 10.0, without, with_retry)
    assert res.passed and "raised" in res.reason()
    d = res.as_dict()
    assert [p["success_rate"] for p in d["phases"]] == [0.5, 0.87]
    assert d["expected"] == {"without": 0.5, "with_retry_no_budget": 0.875, "with_retry_budget": 0.875}
    refused = RetriesResult(0.5, 2, 10.0, without, RetryPhase("retry"), unsupported="422")
    assert not refused.passed and refused.as_dict()["unsupported"] == "422"
    same = RetriesResult(0.5, 2, 10.0, without, RetryPhase("retry", list(without.samples)))
    assert not same.passed


# ------------------------------------------------------------------ latency result


def _path(name: str, lat_ms: float, cpu: float | None = None) -> PathResult:
    samples = [Sample(i / 100, lat_ms / 1000, 200) for i in range(100)]
    return PathResult(name, OpenLoop(500, 1.0, samples, 8, 1.0, cpu=cpu),
                      ClosedLoop(8, 1.0, [lat_ms / 1000] * 1000, {}, 1.0), tls=None if name == "direct" else True)


def test_latency_result_added_goal_and_rows() -> None:
    res = LatencyResult({"direct": _path("direct", 1.0, 0.03), "mesh-mtls": _path("mesh-mtls", 1.5, 0.09)}, 500, 1.0)
    assert res.added("mesh-mtls") == {"p50_ms": pytest.approx(0.5), "p99_ms": pytest.approx(0.5)}
    assert res.passed and res.rps_ratio("mesh-mtls") == 1.0 and res.added_cpu_ms("mesh-mtls") == pytest.approx(0.6)
    d = res.as_dict()
    assert d["added"]["mesh-mtls"]["meets_goal"] is True and d["goal"]["added_p99_ms"] == 3.0
    assert "Linkerd" in d["goal"]["anchor"]
    rows = latency_rows(res)
    assert rows[0][0] == "direct (no mesh)" and rows[1][6] == "+0.50 ms" and rows[1][8] == "✓"
    slow = LatencyResult({"direct": _path("direct", 1.0), "mesh-mtls": _path("mesh-mtls", 5.0)}, 500, 1.0)
    assert not slow.passed and latency_rows(slow)[1][8] == "✗"
    assert signed(-3.637) == "-3.64 ms" and signed(None) == "-"


def test_latency_result_fails_on_errors() -> None:
    res = LatencyResult({"direct": _path("direct", 1.0), "mesh-mtls": _path("mesh-mtls", 1.1)}, 500, 1.0)
    res.paths["mesh-mtls"].open.samples.append(Sample(1.0, 2.0, None, "timeout"))
    assert not res.passed


# ------------------------------------------------------------------ arguments and manifests


def test_parse_experiments_and_weights() -> None:
    assert parse_experiments("all") == ["canary", "retries", "latency"]
    assert parse_experiments("latency,canary") == ["canary", "latency"]
    for bad in ("", "speed", "canary,speed"):
        with pytest.raises(UsageError):
            parse_experiments(bad)
    assert parse_weights("90,10") == (90, 10) and parse_weights(" 1 , 0 ") == (1, 0)
    for bad in ("90", "0,0", "a,b", "90,10,5", "-1,2"):
        with pytest.raises(UsageError):
            parse_weights(bad)


@pytest.mark.parametrize("field,value,param", [("requests", 0, "--requests"), ("rate", 0.0, "--rate"),
                                               ("alpha", 1.0, "--alpha"), ("fail_ratio", 1.0, "--fail-ratio"),
                                               ("closed_seconds", -1.0, "--closed-seconds"),
                                               ("rounds", 0, "--rounds"), ("seconds", math.inf, "--seconds")])
def test_options_checked(field: str, value: object, param: str) -> None:
    MeshOptions().check()
    with pytest.raises(UsageError) as e:
        MeshOptions(**{field: value}).check()  # type: ignore[arg-type]
    assert e.value.param == param


def test_manifests_of_each_experiment() -> None:
    fx = Fixture("bench-mesh-ab12", "bench-direct-ab12", "node-1", "node-2")
    canary = manifests(fx, ["canary"], weights=(80, 20))
    assert canary[0]["metadata"]["annotations"] == {"kmesh.io/inject": "enabled"}
    assert {o["metadata"]["namespace"] for o in canary[1:]} == {"bench-mesh-ab12"}
    route = next(o for o in canary if o["kind"] == "HTTPRoute")
    assert route["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": "canary", "port": 80}]
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [80, 20]
    parent = next(o for o in canary if o["kind"] == "Service" and o["metadata"]["name"] == "canary")
    assert parent["spec"]["selector"] == {"app": "canary-v1"}  # v2 answers only through the route
    pods = [o for o in canary if o["kind"] == "Pod"]
    assert pods[0]["spec"]["nodeName"] == "node-1"
    deploys = [o for o in canary if o["kind"] == "Deployment"]
    assert all(d["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "node-2"} for d in deploys)

    fx = Fixture("bench-mesh-ab12", "bench-direct-ab12", "node-1", "node-2", "bench-plain-ab12")
    assert fx.namespaces == ("bench-mesh-ab12", "bench-direct-ab12", "bench-plain-ab12")
    lat = manifests(fx, ["latency"])
    ns = [o for o in lat if o["kind"] == "Namespace"]
    assert [n["metadata"]["name"] for n in ns] == ["bench-mesh-ab12", "bench-direct-ab12", "bench-plain-ab12"]
    assert "annotations" not in ns[1]["metadata"]
    assert ns[2]["metadata"]["annotations"] == {"kmesh.io/inject": "enabled", "kmesh.io/mtls": "disable"}
    assert {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in lat if o["kind"] == "Service"} == {
        ("bench-direct-ab12", "server"), ("bench-mesh-ab12", "server"), ("bench-plain-ab12", "server")}
    assert not any(o["kind"] == "Namespace" and "plain" in o["metadata"]["name"] for o in manifests(fx, ["canary"]))

    flaky = next(o for o in manifests(fx, ["retries"], fail_ratio=0.25) if o["kind"] == "Deployment")
    c = flaky["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "kmesh/echo" and c["args"] == ["--fail-ratio=0.25"] and "tcpSocket" in c["readinessProbe"]


def test_routes_for_the_retries_phases() -> None:
    plain = flaky_route("ns", "plain")
    assert "retry" not in plain["spec"]["rules"][0]
    retry = flaky_route("ns", "retry", {"codes": [503], "attempts": 2})
    rule = retry["spec"]["rules"][0]
    assert rule["retry"] == {"codes": [503], "attempts": 2}
    assert rule["filters"][0]["requestHeaderModifier"]["set"] == [{"name": "x-kmesh-bench-phase", "value": "retry"}]
    assert canary_route("ns", (90, 10))["metadata"] == {"name": "canary", "namespace": "ns"}


def test_cli_refuses_bad_arguments_before_looking_for_a_lab(tmp_path) -> None:
    from kmesh.cli import main

    r = CliRunner().invoke(main, ["bench", "mesh", "speed", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2 and "unknown experiment" in r.output
    r = CliRunner().invoke(main, ["bench", "mesh", "canary", "--weights", "0,0", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2 and "--weights" in r.output
    r = CliRunner().invoke(main, ["bench", "mesh", "canary", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2 and "no lab is running" in r.output


# ------------------------------------------------------------------ the client, on loopback


async def _server(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED, close_every: int = 0) -> None:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 answering ``ok``; every ``close_every``-th answer closes."""
    listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    count = 0

    async def serve(sock: trio.socket.SocketType) -> None:
        nonlocal count
        with sock:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await sock.recv(4096)
                    if not data:
                        return
                    buf += data
                buf = buf.split(b"\r\n\r\n", 1)[1]
                count += 1
                close = close_every and count % close_every == 0
                await sock.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" +
                                (b"Connection: close\r\n" if close else b"") + b"\r\nok")
                if close:
                    return

    with listener:
        async with trio.open_nursery() as n:
            task_status.started(listener.getsockname()[1])
            while True:
                sock, _ = await listener.accept()
                n.start_soon(serve, sock)


async def test_open_loop_sends_every_request_due() -> None:
    async with trio.open_nursery() as n:
        port = await n.start(_server)
        seen: list[Sample] = []
        run = await meshload.open_loop(Target("127.0.0.1", port), 200, 0.5, connections=4, on_sample=seen.append)
        n.cancel_scope.cancel()
    assert len(run.samples) == 100 == len(seen) and run.failed == 0
    assert [s.due for s in run.samples] == meshload.schedule(200, 0.5)
    assert run.connections == 4  # the pool was enough: no connection opened during the run


async def test_a_closed_connection_is_reopened() -> None:
    async with trio.open_nursery() as n:
        port = await n.start(lambda task_status: _server(task_status, close_every=3))
        run = await meshload.open_loop(Target("127.0.0.1", port), 100, 0.3, connections=1)
        closed = await meshload.closed_loop(Target("127.0.0.1", port), 2, 0.2)
        n.cancel_scope.cancel()
    assert run.failed == 0 and run.connections > 1
    assert not closed.errors and closed.latencies


async def test_errors_are_named_not_raised() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn, status, _, error = await meshload.fetch(None, Target("127.0.0.1", port, timeout=1.0))
    assert conn is None and status is None and error == "refused"
    assert not await meshload.warm_up(Target("127.0.0.1", port, timeout=0.2), within=0.3)


def test_median_round_p99_ignores_one_spoiled_turn() -> None:
    def turn(ms: float) -> OpenLoop:
        return OpenLoop(500, 1.0, [Sample(i / 100, ms / 1000, 200) for i in range(100)], 8, 1.0)

    direct = PathResult("direct", meshload.merge_open([turn(1), turn(1), turn(1)]), rounds=[turn(1), turn(1), turn(1)])
    pair = PathResult("mesh-mtls", meshload.merge_open([turn(2), turn(50), turn(2)]),
                      rounds=[turn(2), turn(50), turn(2)])
    res = LatencyResult({"direct": direct, "mesh-mtls": pair}, 500, 3.0, 3)
    assert pair.round_p99() == pytest.approx(2.0) and res.added_round_p99("mesh-mtls") == pytest.approx(1.0)
    assert res.added("mesh-mtls")["p99_ms"] == pytest.approx(49.0)  # the pooled tail keeps the spoiled turn
    d = res.as_dict()
    assert [r["p99_ms"] for r in d["paths"][1]["rounds"]] == [2.0, 50.0, 2.0]
    assert d["added"]["mesh-mtls"]["median_round_p99_ms"] == pytest.approx(1.0)


async def test_a_signal_cancels_the_work_and_its_finally_runs() -> None:
    import os
    import signal

    from kmesh.bench.mesh import run_until_signalled

    cleaned: list[str] = []

    async def work() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await trio.sleep(30)
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0)
                cleaned.append("teardown")

    assert await run_until_signalled(work) is True and cleaned == ["teardown"]
    assert await run_until_signalled(lambda: trio.sleep(0)) is False
