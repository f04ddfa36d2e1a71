"""``bench lb --during``: the pure parts (parsing, error windows, timeline, grace period in force, convergence
test) and the CLI's refusals, which come before any lab is needed or touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kmesh.bench.lb import UsageError
from kmesh.bench.load import (
    Record,
    ended_by,
    error_windows,
    errors_by_kind,
    longest,
    port_reused,
    quiet_started,
    timeline,
)
from kmesh.bench.partition import DEFAULT_GRACE, During, grace_in_force, parse_during
from kmesh.lab.datadir import DataDir


def _r(start: float, error: str | None = None, took: float = 0.01) -> Record:
    return Record(start, start + took, None if error else "web-a", error)


def test_parse_during() -> None:
    assert parse_during("link down node-2") == During("down", "node-2")
    assert parse_during("  link   down\tnode-2 ", ["node-1", "node-2"]) == During("down", "node-2")
    assert str(parse_during("link down node-3")) == "link down node-3"
    for bad in ("", "link", "link down", "link down node-1 node-2", "down node-1", "Link down node-1",
                "link cut node-1", "ifdown node-1", "link down node-1; rm -rf /"):
        with pytest.raises(UsageError) as exc:
            parse_during(bad)
        assert exc.value.param == "--during"
        assert "link down NODE" in exc.value.message
    with pytest.raises(UsageError) as exc:
        parse_during("link up node-1")
    assert exc.value.param == "--during" and "'link up'" in exc.value.message
    with pytest.raises(UsageError) as exc:
        parse_during("link down node-9", ["node-1", "node-2"])
    assert exc.value.param == "--during" and "node-9" in exc.value.message and "node-1, node-2" in exc.value.message


def test_error_windows_group_until_steady_success() -> None:
    ok = [_r(t / 10) for t in range(0, 300)]  # 30 s of answers, 10/s
    fails = [_r(10.0, "timeout", 2.0), _r(10.5, "timeout", 2.0), _r(14.0, "timeout", 2.0),  # gaps < settle 5
             _r(25.0, "refused", 0.001)]  # 9 s after the last ended: a window of its own
    recs = sorted(ok + fails, key=lambda r: r.start)
    ws = error_windows(recs, settle=5.0)
    assert [(w.start, w.end, w.failed) for w in ws] == [(10.0, 16.0, 3), (25.0, 25.001, 1)]
    assert ws[0].errors == {"timeout": 3} and ws[1].errors == {"refused": 1}
    assert ws[0].seconds == pytest.approx(6.0)
    assert longest(ws) is ws[0]
    assert errors_by_kind(recs) == {"timeout": 3, "refused": 1}
    assert sum(w.failed for w in ws) == sum(r.failed for r in recs)
    # a shorter settle splits the first window where the gap between failures reaches it
    assert [w.failed for w in error_windows(recs, settle=1.0)] == [2, 1, 1]
    # a failure that ends later than the next one starts stretches the window to its end
    assert [(w.start, w.end) for w in error_windows([_r(1.0, "timeout", 5.0), _r(2.0, "reset", 0.1)], 1.0)] == \
        [(1.0, 6.0)]
    assert error_windows(ok, 5.0) == [] and longest([]) is None


def test_timeline_buckets_by_start() -> None:
    recs = [_r(0.1), _r(0.5, "timeout"), _r(1.2), _r(3.9, "reset"), _r(3.95, "reset")]
    assert timeline(recs) == [{"t": 0.0, "ok": 1, "timeout": 1}, {"t": 1.0, "ok": 1}, {"t": 2.0, "ok": 0},
                              {"t": 3.0, "ok": 0, "reset": 2}]
    assert timeline([]) == []
    assert [r["t"] for r in timeline(recs, bucket=2.0)] == [0.0, 2.0]
    with pytest.raises(ValueError):
        timeline(recs, bucket=0)


def test_port_reused_names_failures_on_an_unanswered_port() -> None:
    def r(start: float, port: int, error: str | None = None) -> Record:
        return Record(start, start + 1.0, None if error else "web-a", error, port)

    first = r(1.0, 40000, "timeout")
    again = r(9.0, 40000, "timeout")  # the port of a failed request: conntrack's entry sent it the same way
    recs = [first, r(2.0, 40002), r(3.0, 40002, "timeout"),  # a port that succeeded before is not stale
            again, r(10.0, 40004, "timeout"), r(200.0, 40004, "timeout"),  # the entry timed out (120 s) meanwhile
            r(11.0, 40000), Record(12.0, 13.0, None, "timeout"),  # a success on it; a failure without a port
            r(20.0, 40006, "refused"), r(21.0, 40006, "timeout"),  # a refused one's entry was closed by the RST
            r(22.0, 40008, "unreachable"), r(23.0, 40008, "refused")]  # ICMP left the entry unanswered
    assert port_reused(recs) == [again, recs[-1]]
    assert port_reused(recs, lifetime=500.0) == [again, recs[-1], recs[5]]  # in order of start


def test_quiet_started_judges_by_start_and_does_not_change_later() -> None:
    recs = [_r(1.0, "timeout", 2.0), _r(2.0), _r(4.0)]
    assert quiet_started(recs, since=0.0, until=4.0, settle=2.0)  # 2.0 and 4.0 started in [2, 4]: both answered
    assert not quiet_started(recs, since=0.0, until=3.0, settle=2.5)  # the timeout started at 1.0, in [0.5, 3]
    assert not quiet_started(recs, since=3.0, until=4.0, settle=2.0)  # the window reaches before the change
    assert not quiet_started([_r(1.0)], since=0.0, until=9.0, settle=2.0)  # nothing started in [7, 9]
    # a request that started in the window and fails after the question was asked turns the answer, as it must;
    # asked a timeout late (as churn does), every such request has already ended
    late = recs + [_r(3.5, "timeout", 4.5)]
    assert not quiet_started(late, since=0.0, until=4.0, settle=2.0)
    # asked at 5.5 with a 1 s timeout, it judges up to 4.0: every request started by then has ended
    assert ended_by(5.5, 1.0) == 4.0 and not quiet_started(late, 0.0, ended_by(5.5, 1.0), 2.0)


def test_grace_in_force(tmp_path: Path) -> None:
    dd = DataDir(tmp_path)
    assert grace_in_force(dd) == (DEFAULT_GRACE, "the controllers' default (kmesh up --node-grace-period)")
    (tmp_path / "up.json").write_text(json.dumps({"node_grace_period": 20.0}))
    assert grace_in_force(dd) == (20.0, "kmesh up --node-grace-period (D/up.json)")
    (tmp_path / "up.json").write_text("{not json")
    assert grace_in_force(dd)[0] == DEFAULT_GRACE


def _kmesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kmesh.cli", *args], capture_output=True, text=True, timeout=60,
                          check=False, env=dict(os.environ, COLUMNS="200"))


def test_cli_refuses_bad_during_and_stray_options(tmp_path: Path) -> None:
    """Checked before any lab is looked at: nothing can have changed."""
    d = str(tmp_path / "nolab")
    for during in ("link up node-1", "link down", "reboot node-1"):
        res = _kmesh("bench", "lb", "web", "--during", during, "--data-dir", d)
        assert res.returncode == 2 and "--during" in res.stderr, res.stdout + res.stderr
    for args, param in ((["--rate", "10"], "--rate"), (["--no-restore"], "--no-restore"),
                        (["--during", "link down node-1", "--rate", "0"], "--rate"),
                        (["--during", "link down node-1", "--during-after", "-1"], "--during-after")):
        res = _kmesh("bench", "lb", "web", *args, "--data-dir", d)
        assert res.returncode == 2 and param in res.stderr, res.stdout + res.stderr
    res = _kmesh("bench", "lb", "web", "--during", "link down node-1", "--data-dir", d)
    assert res.returncode == 2 and "--data-dir" in res.stderr and "no lab" in res.stderr
    assert not (tmp_path / "nolab").exists()


def _result() -> object:
    from kmesh.bench.lb import Backend, Expectation, Plan, Probe, ServiceTarget, Source
    from kmesh.bench.partition import Events, PartitionOptions, PartitionResult

    eps = (Backend("10.244.2.5", 9376, name="web-2", node="node-2"), Backend("10.244.3.5", 9376, name="web-3", node="node-3"))
    target = ServiceTarget("default", "web", "10.96.0.20", 80, port_name="http", endpoints=eps)
    plan = Plan(target, Source("ns", None, "pod default/client-1", "node-1"), Probe("10.96.0.20", 80, "http", timeout=1.0),
                Expectation("uniform"), {}, 1, 1)
    recs = [_r(t / 10) for t in range(0, 600)]
    recs += [Record(5.0 + i, 6.0 + i, None, "timeout", 40000 + i) for i in range(0, 30, 2)]  # every other s, 5-33
    recs.append(Record(36.0, 37.0, None, "timeout", 40000))  # after the endpoint left: the port of the first failure
    ev = Events(cut=5.0, node_not_ready=33.0, endpoints_not_ready=33.4, restored=45.0, node_ready=46.0,
                endpoints_ready=47.5, lease_renewed=-6.0)
    return PartitionResult(plan, PartitionOptions(During("down", "node-2"), settle=3.0), sorted(recs, key=lambda r: r.start),
                           ev, 40.0, "the controllers' default", 1, True, True, 50.0)


def test_result_json_table_and_plot(tmp_path: Path) -> None:
    import importlib.util

    from rich.console import Console

    from kmesh.bench.report import partition_summary, partition_table, plot_partition

    res: Any = _result()
    d = res.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["nodeNotReadyAfter"] == 28.0 and d["endpointsNotReadyAfter"] == 28.4
    assert d["nodeReadyAfterRestore"] == 1.0 and d["endpointsReadyAfterRestore"] == 2.5
    assert d["leaseRenewedBeforeCut"] == -11.0 and d["restoredAfter"] == 40.0
    assert d["failed"] == 16 == len([r for r in d["records"] if r["error"]]) == d["errors"]["timeout"]
    assert d["errorWindow"] == {"start": 5.0, "end": 37.0, "seconds": 32.0, "failed": 16, "errors": {"timeout": 16}}
    assert d["portReused"] == 1 and [r["port"] for r in d["records"] if r["error"]][-1] == 40000
    assert [e["event"] for e in d["events"]] == ["cut", "nodeNotReady", "endpointsNotReady", "restored",
                                                 "nodeReady", "endpointsReady"]
    assert d["passed"] and d["reason"].startswith("converged: errors for 32.0 s, node NotReady 28.0 s after the cut")
    con = Console(record=True, width=200)
    con.print(partition_table(res))
    con.print(partition_summary(res))
    text = con.export_text()
    assert "longest error window: 32.0 s" in text and "node grace period 40 s" in text
    assert "1 of the failed requests left from the source port of an earlier failed one" in text
    assert "node-2's Lease was last renewed 11.0 s before the cut" in text and "PASS" in text
    assert "Node node-2 NotReady" in text and "2.5 s after link up" in text
    if importlib.util.find_spec("matplotlib") is not None:
        png = plot_partition(res, tmp_path / "p.png")
        assert png.read_bytes()[:4] == b"\x89PNG"
