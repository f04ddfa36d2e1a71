"""``kmesh bench lb --keepalive``: counting per connection, judging over connections, the views, the arguments,
and the sender against kmesh's own HTTP/1.1 server inside a namespace the test makes."""

from __future__ import annotations

import importlib.util
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from kmesh.bench.keepalive import (
    Connection,
    KeepaliveResult,
    judge_keepalive,
    quotas,
    send_keepalive,
    tally_connections,
)
from kmesh.bench.lb import (
    Backend,
    Expectation,
    Outcome,
    Plan,
    Probe,
    ServiceTarget,
    Source,
    UsageError,
    expected_shares,
    load_shape,
    plan_lb,
)

PODS = ["web-a", "web-b", "web-c"]


def _target() -> ServiceTarget:
    eps = tuple(Backend(f"10.244.{i + 1}.5", 8080, name=n, ready=True, node=f"node-{i + 1}")
                for i, n in enumerate(PODS))
    return ServiceTarget("default", "web", "10.96.0.20", 80, port_name="http", endpoints=eps)


def _plan(connections: int, requests: int, expect: str = "uniform") -> Plan:
    t = _target()
    e = Expectation(expect)  # type: ignore[arg-type]
    return Plan(t, Source(), Probe(t.cluster_ip, t.port, "http"), e, expected_shares(t, e), requests, connections,
                keepalive=True)


def _conn(index: int, client: int, *answers: str, ended: str | None = None) -> Connection:
    """A connection whose requests got ``answers`` in order (``!kind``: an error of that kind)."""
    outs = [Outcome(None, a[1:], 0.0) if a.startswith("!") else Outcome(a, None, 0.001) for a in answers]
    return Connection(index, client, outs, ended)


# ------------------------------------------------------------------ pure parts


def test_quotas_spread_requests_over_clients() -> None:
    assert quotas(300, 8) == [38, 38, 38, 38, 37, 37, 37, 37]
    assert sum(quotas(300, 8)) == 300
    assert quotas(24, 8) == [3] * 8
    assert quotas(2, 3) == [1, 1, 0]


def test_tally_connections_pinned_first_endpoint_reconnects() -> None:
    conns = [
        _conn(0, 0, *["web-a"] * 5),                                   # pinned
        _conn(1, 1, "web-b", "web-b", "!timeout", ended="timeout"),    # pinned (2 answers), then a timeout
        _conn(2, 1, "web-c", "web-a", "web-c"),                        # client 1 again: a reconnect; not pinned
        _conn(3, 2, "10.244.2.5"),                                     # an IP names its endpoint; one answer
        _conn(4, 3, "!refused", ended="refused"),                      # never opened
        _conn(5, 4, "stranger", "stranger"),                           # an answer naming no endpoint
    ]
    ct = tally_connections(_target().endpoints, conns)
    rows = {r.connection: r for r in ct.rows}
    assert [r.connection for r in ct.rows] == [0, 1, 2, 3, 4, 5]
    assert rows[0].endpoints == {"web-a": 5} and rows[0].pinned and rows[0].first == "web-a"
    assert rows[1].endpoints == {"web-b": 2} and rows[1].errors == {"timeout": 1} and rows[1].pinned
    assert rows[1].requests == 3 and rows[1].ended == "timeout"
    assert rows[2].endpoints == {"web-c": 2, "web-a": 1} and not rows[2].pinned and rows[2].first == "web-c"
    assert rows[3].endpoints == {"web-b": 1} and not rows[3].pinned and rows[3].first == "web-b"
    assert rows[4].endpoints == {} and rows[4].first is None and rows[4].errors == {"refused": 1}
    assert rows[5].endpoints == {"stranger": 2} and rows[5].pinned
    assert ct.reconnects == 1  # connection 2: client 1's second
    assert (ct.pinned, ct.multi) == (3, 4)
    assert ct.ended() == {"timeout": 1, "refused": 1}
    # the judge's sample: one draw per connection that got an answer, by its first endpoint
    assert ct.first.counts == {"web-a": 1, "web-b": 2, "web-c": 1} and ct.first.unknown == {"stranger": 1}


def test_judge_keepalive_over_connections_beside_requests() -> None:
    # 9 connections, 3 per endpoint, each pinned, but with very different request counts: the per-request split
    # is lopsided, the per-connection one is uniform, and that is what is judged
    conns: list[Connection] = []
    for i in range(9):
        pod = PODS[i % 3]
        conns.append(_conn(i, i, *[pod] * (30 if pod == "web-a" else 3)))
    res = judge_keepalive(_plan(9, 108), conns, 1.5)
    assert isinstance(res, KeepaliveResult)
    assert res.tally.counts == {"web-a": 90, "web-b": 9, "web-c": 9}  # per request
    assert res.connections.first.counts == {"web-a": 3, "web-b": 3, "web-c": 3}
    assert res.passed and res.verdict.reason.startswith("over 9 connection(s): uniform holds")
    d = res.as_dict()
    json.dumps(d)
    assert d["keepalive"] is True and d["judged"] == "connections"
    assert (d["requests"], d["concurrency"], d["connections"], d["reconnects"]) == (108, 9, 9, 0)
    assert (d["pinned"], d["pinned_of"]) == (9, 9)
    assert [(e["name"], e["count"], e["connections"]) for e in d["endpoints"]] == [
        ("web-a", 90, 3), ("web-b", 9, 3), ("web-c", 9, 3)]
    assert d["per_connection"][0] == {"connection": 0, "client": 0, "requests": 30, "endpoints": {"web-a": 30},
                                      "errors": {}, "pinned": True, "ended": None}
    assert sum(r["requests"] for r in d["per_connection"]) == d["requests"]
    # all connections on one endpoint: uniform over connections fails, sticky holds
    one = [_conn(i, i, "web-b", "web-b") for i in range(8)]
    assert not judge_keepalive(_plan(8, 16), one, 1.0).passed
    sticky = judge_keepalive(_plan(8, 16, "sticky"), one, 1.0)
    assert sticky.passed and sticky.verdict.sticky_to == "web-b"


def test_keepalive_views_render() -> None:
    from rich.console import Console

    from kmesh.bench.report import connection_table, describe_plan, keepalive_summary, keepalive_table

    conns = [_conn(i, i, *[PODS[i % 3]] * 4) for i in range(6)]
    conns.append(_conn(6, 0, "web-a", "web-c", ended="close"))
    res = judge_keepalive(_plan(6, 26), conns, 0.5)
    buf = io.StringIO()
    con = Console(file=buf, width=200, color_system=None)
    for view in (keepalive_table, connection_table, keepalive_summary):
        con.print(view(res))
    out = buf.getvalue()
    assert "7 connection(s) (1 reconnect(s))" in out
    assert "pinned: 6 of 7 connection(s) with 2+ answers" in out
    assert "reconnects: 1 (1 connection(s) ended by the server or an error: Connection: close 1)" in out
    assert "chi-square" in out and "over connections" in out and "PASS: over 7 connection(s)" in out
    assert "web-a 1, web-c 1" in out or "web-c 1, web-a 1" in out
    assert describe_plan(res.plan).startswith("26 http request(s) over 6 keep-alive connection(s) (4-5 each)")


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib not installed")
def test_keepalive_plot(tmp_path: Path) -> None:
    from kmesh.bench.report import plot_keepalive

    conns = [_conn(i, i, *[PODS[i % 3]] * 5, "!reset") for i in range(8)]
    png = plot_keepalive(judge_keepalive(_plan(8, 48), conns, 1.0), tmp_path / "k.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_keepalive_arguments() -> None:
    def shape(requests: int = 300, connections: int | None = None, per_connection: int | None = None,
              **kw: Any) -> tuple[int, int]:
        return load_shape(requests, 8, keepalive=True, connections=connections, per_connection=per_connection, **kw)

    assert shape() == (300, 8)
    assert shape(300, 4, 10) == (40, 4)  # --per-connection wins over --requests
    assert load_shape(300, 3) == (300, 3)  # no keep-alive: as given
    for kwargs, param in (({"udp": True}, "--keepalive"), ({"protocol": "tcp"}, "--keepalive"),
                          ({"connections": 0}, "--connections"), ({"per_connection": 0}, "--per-connection"),
                          ({"requests": 5}, "--requests")):
        with pytest.raises(UsageError) as err:
            shape(**kwargs)
        assert err.value.param == param, kwargs
    with pytest.raises(UsageError) as err:
        load_shape(300, 8, per_connection=5)
    assert err.value.param == "--per-connection" and "only goes with --keepalive" in err.value.message

    async def plan(**kw: Any) -> Plan:  # argument errors come before any API call (client None)
        return await plan_lb(None, None, "web", **kw)  # type: ignore[arg-type]

    for kw, param in (({"keepalive": True, "udp": True}, "--keepalive"),
                      ({"keepalive": True, "per_connection": 0}, "--per-connection"),
                      ({"per_connection": 5}, "--per-connection"), ({"connections": 4}, "--connections")):
        with pytest.raises(UsageError) as err:
            trio.run(lambda: plan(**kw))
        assert err.value.param == param, kw


def test_cli_keepalive_usage_errors_exit_2(tmp_path: Path) -> None:
    """Bad --keepalive arguments are refused (exit 2, naming the option) before any lab is needed."""
    from click.testing import CliRunner

    from kmesh.cli import main

    runner = CliRunner()
    for args, param in ((["--keepalive", "--udp"], "--keepalive"), (["--keepalive", "--per-connection", "0"],
                                                                    "--per-connection"),
                        (["--keepalive", "--concurrency", "4"], "--concurrency"),
                        (["--keepalive", "--during", "link down node-2"], "--keepalive")):
        res = runner.invoke(main, ["bench", "lb", "web", "--data-dir", str(tmp_path / "none"), *args])
        assert res.exit_code == 2, (args, res.output)
        assert param in res.output, (args, res.output)


# ------------------------------------------------------------------ the sender, inside a namespace


async def _serve(nursery: trio.Nursery, ns: str, name: str, *, close_each: bool = False,
                 drop_after: int = 0) -> int:
    """kmesh's HTTP/1.1 server (as agnhost netexec's) answering ``name`` on 127.0.0.1 in ``ns``; its port.

    ``close_each``: Connection: close on every answer; ``drop_after``: close a connection silently (no answer)
    when its request number drop_after + 1 comes, as a server dropping idle keep-alive connections."""
    from kmesh.net import netns
    from kmesh.net.http import CloseConnection, Request, Response, serve_connection

    sock = await netns.open_socket(ns)
    await sock.bind(("127.0.0.1", 0))
    sock.listen(64)

    async def conn(stream: trio.SocketStream) -> None:
        served = 0

        async def handler(req: Request) -> Response:
            nonlocal served
            if drop_after and served == drop_after:
                raise CloseConnection()
            served += 1
            return Response(body=name if req.path == "/hostname" else "NOW")

        await serve_connection(stream, handler, close_each=close_each)

    nursery.start_soon(trio.serve_listeners, conn, [trio.SocketListener(sock)])
    return int(sock.getsockname()[1])


async def test_send_keepalive_inside_a_namespace(nursery: trio.Nursery) -> None:
    from kmesh.net import netns
    from kmesh.net.netns_check import netns_usable
    from tests.conftest import require

    require(netns_usable(), "root and network namespaces")
    ns = f"kmt-{uuid.uuid4().hex[:6]}-ka"
    netns.add(ns)
    try:
        keep = await _serve(nursery, ns, "web-a")
        close = await _serve(nursery, ns, "web-b", close_each=True)
        drop = await _serve(nursery, ns, "web-c", drop_after=3)
        seen: list[Outcome] = []
        conns = await send_keepalive(Probe("127.0.0.1", keep, "http", netns=ns), quotas(40, 4), seen.append)
        assert len(seen) == 40 and all(o.answer == "web-a" for o in seen)
        assert len(conns) == 4 and [len(c.outcomes) for c in conns] == [10] * 4
        assert all(c.ended is None for c in conns)  # kept open until the client was done
        # Connection: close on every answer: each request on its own connection
        conns = await send_keepalive(Probe("127.0.0.1", close, "http", netns=ns), [5, 5])
        ct = tally_connections((Backend("127.0.0.1", close, name="web-b"),), conns)
        assert len(ct.rows) == 10 and ct.reconnects == 8 and all(r.ended == "close" for r in ct.rows)
        assert sum(r.endpoints.get("web-b", 0) for r in ct.rows) == 10 and ct.multi == 0
        # a server dropping idle connections after 3 answers: the request is sent again on a new connection
        conns = await send_keepalive(Probe("127.0.0.1", drop, "http", netns=ns), [10])
        assert [len(c.outcomes) for c in conns] == [3, 3, 3, 1]
        assert all(o.answer == "web-c" for c in conns for o in c.outcomes)
        assert [c.ended for c in conns[:3]] in (["eof"] * 3, ["reset"] * 3) and conns[3].ended is None
        # nothing listening: every request is a refused connection attempt, counted, not raised
        free = await netns.open_socket(ns)
        await free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        conns = await send_keepalive(Probe("127.0.0.1", port, "http", netns=ns, timeout=1.0), [3])
        assert [(c.ended, [o.error for o in c.outcomes]) for c in conns] == [("refused", ["refused"])] * 3
    finally:
        netns.delete(ns)
