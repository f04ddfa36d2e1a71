"""``bench churn``: the pure accounting (changes, who served while terminating, timeline, stale conntrack
flows, rollout status, the JSON adding up), the sender against a loopback HTTP/UDP server, the steady load on
trio's mock clock, and the CLI's refusals, which come before any lab is needed or touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from kmesh.bench.churn import (
    Change,
    ChurnOptions,
    ChurnResult,
    EndpointState,
    PodTimes,
    Sender,
    answers_by_pod,
    churn_timeline,
    deployment_for,
    parse_change,
    parse_conntrack,
    pick_victims,
    rollout_done,
    served_by_terminating,
    stale_flows,
)
from kmesh.bench.lb import Backend, Expectation, Plan, Probe, ServiceTarget, Source, UsageError
from kmesh.bench.load import ERROR_KINDS, Record, errors_by_class, kind_of, steady_load


def _r(start: float, answer: str | None = "web-a", error: str | None = None, took: float = 0.01) -> Record:
    return Record(start, start + took, None if error else answer, error)


def test_parse_change() -> None:
    assert parse_change("rollout") == Change("rollout") and str(parse_change(" rollout ")) == "rollout"
    assert parse_change("scale:5") == Change("scale", 5) and str(Change("scale", 5)) == "scale:5"
    assert parse_change("delete-pods:2") == Change("delete-pods", 2)
    assert Change("rollout").needs_deployment and Change("scale", 1).needs_deployment
    assert not Change("delete-pods", 1).needs_deployment
    for bad in ("", "restart", "scale", "scale:", "scale:x", "scale:-1", "delete-pods:1.5", "scale:2:3",
                "delete:1", "rollout now", "scale:99999"):
        with pytest.raises(UsageError) as exc:
            parse_change(bad)
        assert exc.value.param == "--during", bad
    with pytest.raises(UsageError) as exc:
        parse_change("scale:0")
    assert "nothing would answer" in exc.value.message
    with pytest.raises(UsageError) as exc:
        parse_change("delete-pods:0")
    assert "nothing would change" in exc.value.message


def test_error_classes() -> None:
    assert [kind_of(e) for e in ("refused", "reset", "timeout", "unreachable", "http 503", None)] == \
        ["refused", "reset", "timeout", "other", "other", "other"]
    recs = [_r(0), _r(1, error="refused"), _r(2, error="refused"), _r(3, error="closed"), _r(4, error="timeout")]
    assert errors_by_class(recs) == {"refused": 2, "reset": 0, "timeout": 1, "other": 1}
    assert tuple(errors_by_class([])) == ERROR_KINDS


def _pods() -> dict[str, PodTimes]:
    old = PodTimes("web-old-abcde", ip="10.244.1.5", node="node-1", deleting_at=10.0,
                   endpoint_terminating_at=10.4, endpoint_removed_at=13.0, gone_at=13.0)
    keep = PodTimes("web-keep-fghij", ip="10.244.2.5", node="node-2")
    new = PodTimes("web-new-klmno", ip="10.244.3.5", node="node-3", ready_at=9.0)
    return {p.name: p for p in (old, keep, new)}


def test_served_by_terminating_names_the_pod_and_compares_with_the_slice() -> None:
    pods = _pods()
    recs = [_r(9.0, "web-old-abcde"),  # before its deletion was seen: not counted
            _r(10.0, "web-old-abcde"), _r(10.2, "10.244.1.5"),  # after it, before the slice said terminating
            _r(10.5, "web-old-abcde"), _r(12.0, "web-old-abcde"),  # after the slice said terminating
            _r(11.0, "web-keep-fghij"), _r(11.5, "web-new-klmno"), _r(11.6, error="refused"), _r(11.7, "stranger")]
    sbt = served_by_terminating(recs, pods)
    assert sbt["requests"] == 4 and sbt["afterEndpointTerminating"] == 2
    (row,) = sbt["pods"]
    assert row["pod"] == "web-old-abcde" and row["requests"] == 4 and row["afterEndpointTerminating"] == 2
    assert row["first"] == 10.0 and row["last"] == 12.0
    assert row["deletingAt"] == 10.0 and row["endpointTerminatingAt"] == 10.4 and row["goneAt"] == 13.0
    assert answers_by_pod(recs, pods) == {"web-old-abcde": 5, "web-keep-fghij": 1, "web-new-klmno": 1,
                                          "stranger": 1}
    assert served_by_terminating([], pods) == {"requests": 0, "afterEndpointTerminating": 0, "pods": []}
    # a pod's hostname is its name cut at 63 characters: answers in that form name it too
    long = PodTimes("w" * 70, deleting_at=0.0)
    assert served_by_terminating([_r(1.0, "w" * 63)], {long.name: long})["requests"] == 1


def test_churn_timeline_adds_terminating_answers_and_endpoints() -> None:
    pods = _pods()
    recs = [_r(0.5, "web-keep-fghij"), _r(10.1, "web-old-abcde"), _r(10.6, error="refused"), _r(11.2, "web-new-klmno")]
    states = [EndpointState(0.0, 2, 0, 2), EndpointState(9.0, 3, 0, 3), EndpointState(10.4, 2, 1, 3),
              EndpointState(13.0, 2, 0, 2)]
    rows = churn_timeline(recs, pods, states)
    assert len(rows) == 12
    assert rows[10] == {"t": 10.0, "ok": 1, "refused": 1, "terminating": 1,
                        "endpoints": {"ready": 2, "terminating": 1}}
    assert rows[0]["endpoints"] == {"ready": 2, "terminating": 0} and rows[9]["endpoints"]["ready"] == 3
    assert rows[11] == {"t": 11.0, "ok": 1, "endpoints": {"ready": 2, "terminating": 1}}
    total = sum(r["ok"] + sum(v for k, v in r.items() if k not in ("t", "ok", "terminating", "endpoints"))
                for r in rows)
    assert total == len(recs)


CONNTRACK = """\
udp      17 28 src=10.244.1.7 dst=10.96.0.30 sport=40001 dport=53 src=10.244.2.9 dst=10.244.1.7 sport=8081 dport=40001 mark=0 use=1
udp      17 29 src=10.244.1.7 dst=10.96.0.30 sport=40002 dport=53 src=10.244.3.9 dst=10.244.1.7 sport=8081 dport=40002 [ASSURED] mark=0 use=1
udp      17 20 src=10.244.1.7 dst=10.96.0.30 sport=40003 dport=53 [UNREPLIED] src=10.96.0.30 dst=10.244.1.7 sport=53 dport=40003 mark=0 use=1
udp      17 27 src=10.244.1.7 dst=10.96.0.10 sport=40004 dport=53 src=10.244.0.3 dst=10.244.1.7 sport=53 dport=40004 mark=0 use=1
garbage line
"""


def test_conntrack_parse_and_stale_flows() -> None:
    entries = parse_conntrack(CONNTRACK)
    assert len(entries) == 4
    e = entries[0]
    assert (e.src, e.dst, e.sport, e.dport, e.reply_src, e.reply_sport) == \
        ("10.244.1.7", "10.96.0.30", 40001, 53, "10.244.2.9", 8081)
    # the flow DNATed to 10.244.2.9 (an endpoint that is gone) is stale; the one to a live endpoint is not,
    # nor the unanswered one that was never DNATed, nor a flow to another Service
    stale = stale_flows(entries, "10.96.0.30", 53, live={"10.244.3.9"})
    assert [s.sport for s in stale] == [40001]
    assert stale[0].as_dict()["endpoint"] == "10.244.2.9:8081"
    assert stale_flows(entries, "10.96.0.30", 53, live={"10.244.2.9", "10.244.3.9"}) == []
    assert parse_conntrack("") == []


def _dep(gen: int = 2, observed: int = 2, updated: int = 3, replicas: int = 3, available: int = 3) -> dict[str, Any]:
    return {"metadata": {"name": "web", "generation": gen},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "web", "tier": "x"}}}},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": replicas,
                       "availableReplicas": available}}


def test_rollout_done_is_kubectl_rollout_status() -> None:
    assert rollout_done(_dep(), 2, 3)
    assert not rollout_done(_dep(observed=1), 2, 3)  # the controller has not seen the new template yet
    assert not rollout_done(_dep(updated=2), 2, 3)
    assert not rollout_done(_dep(replicas=4), 2, 3)  # an old pod is still counted
    assert not rollout_done(_dep(available=2), 2, 3)
    assert not rollout_done(None, 1, 3)
    assert rollout_done(_dep(updated=5, replicas=5, available=5), 2, 5)


def test_deployment_for_and_victims() -> None:
    other = {"metadata": {"name": "db"}, "spec": {"template": {"metadata": {"labels": {"app": "db"}}}}}
    assert deployment_for([other, _dep()], {"app": "web"}, "default/web")["metadata"]["name"] == "web"
    for deps, sel, words in (([other], {"app": "web"}, "no Deployment"), ([_dep(), _dep()], {"app": "web"}, "several"),
                             ([_dep()], {}, "no selector")):
        with pytest.raises(UsageError) as exc:
            deployment_for(deps, sel, "default/web")
        assert exc.value.param == "SERVICE" and words in exc.value.message
    pods = [{"metadata": {"name": n}} for n in ("web-c", "web-a", "web-b")] + \
        [{"metadata": {"name": "web-d", "deletionTimestamp": "2026-01-01T00:00:00Z"}}]
    eps = [Backend("10.0.0.1", 80, name="web-c"), Backend("10.0.0.2", 80, name="web-a"),
           Backend("10.0.0.3", 80, name="web-b", ready=False), Backend("10.0.0.4", 80, name="web-d")]
    assert pick_victims(pods, eps, 2) == ["web-a", "web-c"]
    with pytest.raises(UsageError) as exc:
        pick_victims(pods, eps, 3)
    assert exc.value.param == "--during" and "2 ready pod(s)" in exc.value.message


def _result(records: list[Record], *, completed: bool = True, udp: bool = False) -> ChurnResult:
    from kmesh.bench.churn import CtEntry, StaleReport

    eps = (Backend("10.244.1.5", 8080, name="web-old-abcde", node="node-1"),)
    target = ServiceTarget("default", "web", "10.96.0.30", 80, port_name="http", endpoints=eps)
    probe = Probe("10.96.0.30", 80, "udp" if udp else "http", timeout=1.0)
    plan = Plan(target, Source("ns", None, "pod default/client-1", "node-1"), probe, Expectation("uniform"), {}, 1, 1)
    stale = None
    if udp:
        e = parse_conntrack(CONNTRACK)[0]
        stale = StaleReport("node node-1", 2, (CtEntry(*[getattr(e, f) for f in
                                                        ("src", "dst", "sport", "dport", "reply_src", "reply_sport",
                                                         "line")]),), endpoints={"10.244.2.9": "web-gone"})
    events = [(3.0, "change", "rollout restart deployment/web"), (10.0, "podDeleting", "pod web-old-abcde terminating")]
    if completed:
        events.append((14.0, "complete", "rollout complete"))
    return ChurnResult(plan, ChurnOptions(Change("rollout"), settle=2.0), records, _pods(), events,
                       [EndpointState(0.0, 2, 0, 2), EndpointState(10.4, 2, 1, 3)], 3.0, 14.0 if completed else None,
                       completed, stale, 20.0, "web")


def _records() -> list[Record]:
    recs = [_r(t / 10, "web-keep-fghij") for t in range(0, 200, 3)]
    recs += [_r(10.1, "web-old-abcde"), _r(10.5, "web-old-abcde"), _r(10.6, error="refused"),
             _r(10.7, error="refused"), _r(11.0, error="timeout", took=1.0), _r(11.5, error="unreachable")]
    return sorted(recs, key=lambda r: r.start)


def test_result_json_adds_up_and_the_views_render(tmp_path: Path) -> None:
    import importlib.util

    from rich.console import Console

    from kmesh.bench.report import churn_summary, churn_table, plot_churn

    res = _result(_records())
    d = res.as_dict()
    assert json.loads(json.dumps(d)) == d
    for key in ("requests", "ok", "errors", "longest_error_window_s", "served_by_terminating",
                "stale_udp_conntrack", "timeline"):
        assert key in d
    assert d["requests"] == len(d["records"]) == d["ok"] + sum(d["errors"].values())
    assert d["errors"] == {"refused": 2, "reset": 0, "timeout": 1, "other": 1}
    assert d["errorDetail"]["unreachable"] == 1
    assert d["longest_error_window_s"] == pytest.approx(12.0 - 10.6)  # the timeout (11.0 + 1.0) ends it
    assert d["served_by_terminating"]["requests"] == 2 and d["served_by_terminating"]["afterEndpointTerminating"] == 1
    assert d["stale_udp_conntrack"] is None and d["conntrack"] is None  # TCP: not asked
    assert d["passed"] and d["completed"] and "complete 11.0 s after the change" in d["reason"]
    tl = d["timeline"]
    assert sum(r["ok"] + sum(v for k, v in r.items() if k not in ("t", "ok", "terminating", "endpoints"))
               for r in tl) == d["requests"]
    assert sum(r.get("terminating", 0) for r in tl) == d["served_by_terminating"]["requests"]

    console = Console(record=True, width=200)
    console.print(churn_table(res))
    console.print(churn_summary(res))
    text = console.export_text()
    assert "web-old-abcde" in text and "served by terminating pods: 2 (web-old-abcde 2)" in text
    assert "refused 2" in text and "unreachable 1" in text and "PASS" in text
    assert d["portReused"] == 0 and "source port of an earlier failed one" not in text
    # a timed-out request's port, used again by a later one that failed: conntrack's entry, not the rules
    recs = _records()
    recs[recs.index(next(r for r in recs if r.error == "timeout"))] = Record(11.0, 12.0, None, "timeout", 41000)
    recs[recs.index(next(r for r in recs if r.error == "unreachable"))] = Record(11.5, 11.6, None, "unreachable",
                                                                                41000)
    again = _result(recs)
    assert again.as_dict()["portReused"] == 1
    console = Console(record=True, width=200)
    console.print(churn_summary(again))
    assert "1 of the failed requests left from the source port of an earlier failed one" in console.export_text()
    if importlib.util.find_spec("matplotlib") is not None:
        png = plot_churn(res, tmp_path / "churn.png")
        assert png.read_bytes()[:4] == b"\x89PNG"

    stuck = _result(_records(), completed=False)
    assert not stuck.passed and "did not complete" in stuck.reason()
    udp = _result(_records(), udp=True).as_dict()
    assert udp["stale_udp_conntrack"] == 1 and udp["conntrack"]["flows"][0]["pod"] == "web-gone"


# ------------------------------------------------------------------ the sender, on loopback


async def _http_server(nursery: trio.Nursery, *, close_after: int = 0) -> tuple[int, list[int]]:
    """A keep-alive HTTP server on 127.0.0.1 answering its name at /hostname; returns (port, requests per
    connection). ``close_after``: close each connection after that many answers (as a stopping server does)."""
    from kmesh.net.http import Response, serve_connection

    per_conn: list[int] = []

    async def conn(stream: trio.SocketStream) -> None:
        i = len(per_conn)
        per_conn.append(0)

        async def handle(req: Any) -> Response:
            per_conn[i] += 1
            if req.path != "/hostname":
                return Response(status=404)
            return Response(body="web-a", close=bool(close_after) and per_conn[i] >= close_after)

        await serve_connection(stream, handle)

    listeners = await nursery.start(partial(trio.serve_tcp, conn, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1], per_conn


def test_sender_http_new_connection_each_or_one_kept() -> None:
    async def main() -> None:
        async with trio.open_nursery() as n:
            port, per_conn = await _http_server(n)
            each = Sender(Probe("127.0.0.1", port, "http", timeout=2.0), "/hostname")
            outs = [await each() for _ in range(3)]
            assert [o[:2] for o in outs] == [("web-a", None)] * 3
            assert per_conn == [1, 1, 1] and each.connections == 3 and len({o[2] for o in outs}) == 3
            kept = Sender(Probe("127.0.0.1", port, "http", timeout=2.0), "/hostname", keepalive=True)
            outs = [await kept() for _ in range(4)]
            assert [o[:2] for o in outs] == [("web-a", None)] * 4
            assert per_conn[3:] == [4] and kept.connections == 1 and len({o[2] for o in outs}) == 1
            bad = Sender(Probe("127.0.0.1", port, "http", timeout=2.0), "/nope", keepalive=True)
            assert (await bad())[:2] == (None, "http 404")
            await kept.aclose()
            n.cancel_scope.cancel()

    trio.run(main)


def test_sender_keepalive_follows_a_server_that_closes() -> None:
    async def main() -> None:
        async with trio.open_nursery() as n:
            port, per_conn = await _http_server(n, close_after=2)
            kept = Sender(Probe("127.0.0.1", port, "http", timeout=2.0), "/hostname", keepalive=True)
            outs = [await kept() for _ in range(5)]
            assert [o[:2] for o in outs] == [("web-a", None)] * 5  # "Connection: close" heeded: a new connection
            assert len({o[2] for o in outs}) == 3  # each connection its own source port
            assert kept.connections == 3 and per_conn == [2, 2, 1]
            await kept.aclose()
            n.cancel_scope.cancel()

    trio.run(main)


def test_sender_refused_and_udp() -> None:
    async def main() -> None:
        probe_sock = trio.socket.socket()
        await probe_sock.bind(("127.0.0.1", 0))
        free = probe_sock.getsockname()[1]
        probe_sock.close()  # nothing listens there now
        for keepalive in (False, True):
            s = Sender(Probe("127.0.0.1", free, "http", timeout=2.0), keepalive=keepalive)
            answer, error, port = await s()
            assert (answer, error) == (None, "refused") and isinstance(port, int)
        udp = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
        await udp.bind(("127.0.0.1", 0))
        sources: list[int] = []

        async def echo() -> None:
            while True:
                data, peer = await udp.recvfrom(100)
                sources.append(peer[1])
                await udp.sendto(b"web-u " + data, peer)

        async with trio.open_nursery() as n:
            n.start_soon(echo)
            port = udp.getsockname()[1]
            kept = Sender(Probe("127.0.0.1", port, "udp", timeout=2.0), keepalive=True)
            assert [await kept() for _ in range(3)] == [("web-u hostname", None, sources[0])] * 3
            assert len(set(sources)) == 1  # one socket, one source port: one conntrack flow
            each = Sender(Probe("127.0.0.1", port, "udp", timeout=2.0))
            assert [await each() for _ in range(3)] == [("web-u hostname", None, p) for p in sources[3:]]
            assert len(set(sources[3:])) == 3
            await kept.aclose()
            n.cancel_scope.cancel()

    trio.run(main)


def test_steady_load_keeps_the_rate_on_a_mock_clock() -> None:
    async def run(concurrent: bool, took: float) -> list[Record]:
        records: list[Record] = []
        stop, done = trio.Event(), trio.Event()
        began = trio.current_time()

        async def send() -> tuple[str | None, str | None, int | None]:
            await trio.sleep(took)
            return "web-a", None, None

        async with trio.open_nursery() as n:
            n.start_soon(partial(steady_load, send, 10.0, lambda: trio.current_time() - began, records, None, stop,
                                 done, concurrent=concurrent))
            await trio.sleep(2.0)
            stop.set()
            await done.wait()
        return records

    for concurrent, took, want in ((True, 0.25, 20), (False, 0.01, 20), (False, 0.25, 8)):
        recs = trio.run(run, concurrent, took, clock=trio.testing.MockClock(autojump_threshold=0))
        assert len(recs) == want, (concurrent, took, len(recs))
        if not concurrent:  # one after the other: never two at once
            assert all(b.start >= a.end for a, b in zip(recs, recs[1:]))


def _kmesh(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([sys.executable, "-m", "kmesh.cli", *args], capture_output=True, text=True, timeout=60,
                          env=env)


def test_cli_refusals_need_no_lab(tmp_path: Path) -> None:
    d = str(tmp_path / "nolab")
    for args, param in ((["--during", "restart"], "--during"), (["--during", "scale:0"], "--during"),
                        (["--rate", "0"], "--rate"), (["--after", "-1"], "--after"),
                        (["--duration", "2", "--after", "3"], "--duration"), (["--path", "hostname"], "--path"),
                        (["--settle", "nan"], "--settle"), (["--timeout", "0"], "--timeout")):
        res = _kmesh("bench", "churn", "web", *args, "--data-dir", d)
        assert res.returncode == 2 and param in res.stderr, (args, res.stdout + res.stderr)
    res = _kmesh("bench", "churn", "web", "--data-dir", d)
    assert res.returncode == 2 and "--data-dir" in res.stderr and "no lab" in res.stderr
    assert not (tmp_path / "nolab").exists()


def test_watch_times_each_step_and_judges_completion() -> None:
    """The watch, fed the changes its informers would hand it (no API server): the times it records and when
    a delete-pods change counts as complete."""
    from kmesh.api.kinds import get as kind
    from kmesh.bench.churn import _complete, _Watch
    from kmesh.client.informer import Change as InformerChange

    now = [0.0]
    target = ServiceTarget("default", "web", "10.96.0.30", 80, port_name="http")
    plan = Plan(target, Source(), Probe("10.96.0.30", 80, "http"), Expectation("uniform"), {}, 1, 1)
    w = _Watch(None, plan, {"app": "web"}, None, lambda: now[0], 1000.0)
    pk = kind("Pod")

    def pod(name: str, ip: str, *, ready: bool = True, deleting: bool = False) -> dict[str, Any]:
        md: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"u-{name}"}
        if deleting:
            md.update(deletionTimestamp="1970-01-01T00:17:00Z", deletionGracePeriodSeconds=30)  # 1020 s
        return {"metadata": md, "spec": {"nodeName": "node-1"},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}

    def slices(*eps: tuple[str, str, bool, bool]) -> None:
        w.slices.cache[("default", "web-x")] = {
            "metadata": {"name": "web-x", "namespace": "default"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "targetRef": {"kind": "Pod", "name": n},
                           "conditions": {"ready": ready, "serving": True, "terminating": term}}
                          for n, ip, ready, term in eps]}
        w._update_slices()

    for p in (pod("web-a", "10.244.1.2"), pod("web-b", "10.244.1.3")):
        w._on_pod(InformerChange(pk, None, p))
    slices(("web-a", "10.244.1.2", True, False), ("web-b", "10.244.1.3", True, False))
    w.started = True
    done = lambda: _complete(w, Change("delete-pods", 1), None, 0, 0, ["web-a"], 2)  # noqa: E731
    assert w.ready_endpoints() == 2 and not done()  # web-a is not gone yet

    now[0] = 5.0
    w._on_pod(InformerChange(pk, pod("web-a", "10.244.1.2"), pod("web-a", "10.244.1.2", deleting=True)))
    now[0] = 5.2
    slices(("web-a", "10.244.1.2", False, True), ("web-b", "10.244.1.3", True, False))
    now[0] = 6.0
    w._on_pod(InformerChange(pk, None, pod("web-c", "10.244.1.4", ready=False)))
    w._on_pod(InformerChange(pk, pod("web-c", "10.244.1.4", ready=False), pod("web-c", "10.244.1.4")))
    now[0] = 7.0
    slices(("web-b", "10.244.1.3", True, False), ("web-c", "10.244.1.4", True, False))
    assert not done()  # the endpoint is out, but the pod still terminates
    now[0] = 7.5
    w._on_pod(InformerChange(pk, pod("web-a", "10.244.1.2", deleting=True), None))
    assert done()

    a, c = w.pods["web-a"], w.pods["web-c"]
    assert (a.deleting_at, a.endpoint_terminating_at, a.endpoint_removed_at, a.gone_at) == (5.0, 5.2, 7.0, 7.5)
    assert a.deletion_requested_at == pytest.approx(1020 - 30 - 1000) and a.ip == "10.244.1.2"
    assert c.ready_at == 6.0 and w.pods["web-b"].ready_at is None  # ready before the run: not an event
    assert [k for _, k, _ in w.events] == ["podDeleting", "endpointTerminating", "podReady", "endpointRemoved",
                                          "podGone"]
    assert [(s.t, s.ready, s.terminating, s.total) for s in w.states] == \
        [(0.0, 2, 0, 2), (5.2, 1, 1, 2), (7.0, 2, 0, 2)]
    assert w.live_ips == {"10.244.1.3", "10.244.1.4"}
