"""The NetworkPolicy benchmark's pure parts: the planned world and its policies, the changes and what they do,
reading the probes, the latency verdict, finding a rule in a chain; and the prober's protocol on loopback."""

from __future__ import annotations

import copy
import ipaddress
import json
import math
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from kmesh.api import defaults, meta, validation
from kmesh.bench.netpol import (
    ALLOW_POLICY,
    CYCLE,
    PORT,
    SERVER_NS,
    _check_plan,
    change_plan,
    latency_report,
    latency_verdict,
    lock_policy,
    plan_world,
    policies_after,
    rule_position,
    sign_test,
    summary,
    transition,
)
from kmesh.bench.netpolprobe import latency
from kmesh.policy.agent import local_pods
from kmesh.policy.nftrules import render


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    return plan_world()


def test_the_world_has_the_planned_size_and_addresses(world) -> None:  # type: ignore[no-untyped-def]
    assert len(world.pods) == 300 and len(world.policies) == 100 and len(world.namespaces) == 10
    assert world.nodes == ["node-1", "node-2", "node-3"]
    assert len({(p.namespace, p.name) for p in world.pods}) == 300
    assert len({p.ip for p in world.pods}) == 300
    for p in world.pods:  # each in its node's /24, past the bridge's .1
        net = ipaddress.ip_network(f"10.244.{world.nodes.index(p.node) + 1}.0/24")
        assert ipaddress.ip_address(p.ip) in net and not p.ip.endswith(".1") and p.ports
    per_node = {n: sum(1 for p in world.pods if p.node == n) for n in world.nodes}
    assert max(per_node.values()) - min(per_node.values()) <= 1
    real = [(p.node, p.real) for p in world.pods if p.real]
    assert sorted(real) == sorted((n, r) for n in world.nodes for r in ("client", "server"))
    assert world.real("server", "node-2").ip == "10.244.2.3"
    assert {p["metadata"]["name"] for p in world.policies} >= {ALLOW_POLICY, "default-deny-ingress"}
    assert len({(p["metadata"]["namespace"], p["metadata"]["name"]) for p in world.policies}) == 100


def test_the_policies_are_varied_and_valid(world) -> None:  # type: ignore[no-untyped-def]
    text = json.dumps(world.policies)
    for needle in ('"ipBlock"', '"except"', '"endPort"', '"namespaceSelector"', '"podSelector"', '"matchExpressions"',
                   '"protocol": "UDP"', '"port": "metrics"', '"port": 8080', '"Egress"'):
        assert needle in text, needle
    peers = [peer for p in world.policies for r in p["spec"].get("ingress", []) + p["spec"].get("egress", [])
             for peer in r.get("from", []) + r.get("to", [])]
    assert any("namespaceSelector" in x and "podSelector" in x for x in peers)
    assert any("namespaceSelector" in x and "podSelector" not in x for x in peers)
    assert any("podSelector" in x and "namespaceSelector" not in x for x in peers)
    for pol in world.policies + [lock_policy()]:  # what the API server would say on create
        obj = copy.deepcopy(pol)
        defaults.apply_defaults("NetworkPolicy", obj)
        meta.prepare_create("NetworkPolicy", obj, obj["metadata"]["namespace"])
        assert validation.validate("NetworkPolicy", obj) == [], pol["metadata"]


def test_fewer_policies_or_pods(world) -> None:  # type: ignore[no-untyped-def]
    small = plan_world(nodes=2, pods=20, policies=10)
    assert len(small.pods) == 20 and len(small.policies) == 10 and small.nodes == ["node-1", "node-2"]
    assert small.policies == world.policies[:10]  # the probe server's policies come first
    with pytest.raises(ValueError):
        plan_world(nodes=1, pods=300)


def test_the_server_is_isolated_and_the_allowing_rule_is_not_first(world) -> None:  # type: ignore[no-untyped-def]
    client, server = world.real("client", "node-1"), world.real("server", "node-2")
    v = world.model().evaluate(client.ip, server.ip, PORT)
    assert v.allowed and v.ingress.isolated and not v.egress.isolated
    assert v.ingress.allowed_by == f"{SERVER_NS}/{ALLOW_POLICY} ingress rule 0"
    m = world.model()
    text, count = render(m, local_pods(m, "node-2"))
    assert count > 100
    pos = rule_position(text, f"{SERVER_NS}/{server.name}", "ingress", f"{SERVER_NS}/{ALLOW_POLICY} ingress rule 0")
    assert pos is not None and 1 < pos[0] < pos[1]
    assert rule_position(text, f"{SERVER_NS}/{server.name}", "egress", "x") is None
    assert rule_position(text, "nowhere/pod", "ingress", "x") is None


def test_changes_flip_the_connection_and_end_where_they_began(world) -> None:  # type: ignore[no-untyped-def]
    changes = change_plan(30)
    assert len(changes) == 32 and changes[:4] == list(CYCLE) and len(change_plan(1)) == 4
    assert [c.allowed_after for c in changes[:4]] == [False, True, False, True]
    assert {c.enforcer for c in changes} == {"client", "server"}
    _check_plan(world, changes, world.real("client", "node-1"), world.real("server", "node-2"))
    after = policies_after(world.policies, changes)
    assert json.dumps(sorted(after, key=lambda p: json.dumps(p)), sort_keys=True) == \
        json.dumps(sorted(world.policies, key=lambda p: json.dumps(p)), sort_keys=True)
    locked = policies_after(world.policies, changes[:1])
    assert len(locked) == 101 and not world.model(locked).evaluate(
        world.real("client", "node-1").ip, world.real("server", "node-1").ip, PORT).allowed
    # the other clients are not locked out
    assert world.model(locked).evaluate(world.real("client", "node-2").ip, world.real("server", "node-1").ip,
                                        PORT).allowed
    assert changes[0].label == "create egress lock (deny)"


def test_transition_reads_the_switch() -> None:
    # allowed, allowed, then denied from 10.004 on; written at 10.0
    runs = [[9.90, 10.003, True, 104], [10.004, 10.5, False, 497]]
    t = transition(runs, False, 10.0)
    assert t.seconds == pytest.approx(0.004) and t.lower == pytest.approx(0.003) and t.flaps == 0
    assert t.probes == 601 and t.resolution == pytest.approx(0.001)
    # a flap: one denied probe, then allowed again, then denied for good
    runs = [[9.9, 10.1, True, 10], [10.11, 10.11, False, 1], [10.12, 10.2, True, 5], [10.21, 10.4, False, 9]]
    t = transition(runs, False, 10.0)
    assert t.seconds == pytest.approx(0.21) and t.lower == pytest.approx(0.2) and t.flaps == 1
    # allowing: the first answered probe after the last dropped one
    t = transition([[0.0, 0.5, False, 500], [0.501, 0.6, True, 99]], True, 0.2)
    assert t.seconds == pytest.approx(0.301) and t.lower == pytest.approx(0.3)
    never = transition([[0.0, 1.0, True, 9]], False, 0.5)
    assert never.seconds is None and never.resolution is None and never.flaps == 0
    already = transition([[0.0, 1.0, False, 9]], False, 0.5)
    assert already.seconds == pytest.approx(-0.5) and already.lower is None


def test_latency_verdict_sign_test_and_summary() -> None:
    base = [[40e-6] * 50 + [41e-6] * 50, [40.5e-6] * 100, [40.2e-6] * 100]
    mixed = [[40.6e-6] * 100, [40.2e-6] * 100, [40.3e-6] * 100]  # +0.1, -0.3, +0.1 per round: no pattern
    v = latency_verdict(base, mixed)
    assert v.diffs == pytest.approx((0.1e-6, -0.3e-6, 0.1e-6)) and v.diff == pytest.approx(0.1e-6)
    assert not v.measurable and v.p_value == 1.0
    slower = latency_verdict(base * 2, [[45e-6] * 100] * 6)  # six rounds all slower: p = 2/64
    assert slower.measurable and slower.p_value == pytest.approx(0.03125) and slower.diff == pytest.approx(4.5e-6)
    assert not latency_verdict(base, [[45e-6] * 100] * 3).measurable  # three rounds cannot show it (p = 0.25)
    assert json.loads(json.dumps(slower.json()))["measurable"] is True
    assert sign_test([]) == 1.0 and sign_test([0.0, 0.0]) == 1.0
    assert sign_test([1, 1, 1, 1, 1, -1]) == pytest.approx(14 / 64)
    s = summary([0.1 * i for i in range(1, 11)])
    assert s.count == 10 and s.p50 == pytest.approx(0.55) and s.max == pytest.approx(1.0)
    empty = summary([])
    assert empty.count == 0 and math.isnan(empty.p50) and math.isnan(empty.max)


def test_latency_report_puts_kmesh_beside_the_anchor() -> None:
    rounds = {"none": [[40e-6] * 100] * 2, "kmesh": [[41e-6] * 100] * 2, "anchor": [[50e-6] * 100] * 2}
    r = latency_report(rounds)
    assert r["verdict"]["p50_diff"] == pytest.approx(1e-6) and r["anchor"]["p50_diff"] == pytest.approx(10e-6)
    assert r["added_vs_anchor"] == pytest.approx(0.1)
    assert [x["count"] for x in r["rounds"]["anchor"]] == [100, 100]
    free = latency_report({**rounds, "anchor": rounds["none"]})  # an anchor that adds nothing: no ratio
    assert math.isnan(free["added_vs_anchor"])


@pytest.fixture
def listener() -> Iterator[int]:
    """A loopback server accepting and closing (as ``netpolprobe serve``)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(512)

    def accept() -> None:
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield lsock.getsockname()[1]
    lsock.close()


def test_prober_latency_and_flip_protocol(listener: int) -> None:
    samples = latency(("127.0.0.1", listener), 50)
    assert len(samples) == 50 and all(0 < s < 1 for s in samples)
    proc = subprocess.run(
        [sys.executable, "-m", "kmesh.bench.netpolprobe", "probe"], check=True, capture_output=True, text=True, timeout=30,
        input="\n".join(json.dumps(c) for c in (
            {"op": "latency", "dst": ["127.0.0.1", listener], "count": 5},
            {"op": "flip", "dst": ["127.0.0.1", listener], "want": False, "interval": 0.002, "timeout": 0.05,
             "max": 0.2},
            {"op": "nonsense", "dst": ["127.0.0.1", 1]})) + "\n")
    lines = [json.loads(x) for x in proc.stdout.splitlines()[1:]]
    assert len(lines[0]["samples"]) == 5
    assert lines[1] == {"ready": True}  # it answers: the old behaviour (allowed) holds
    assert lines[2]["gave_up"] and all(r[2] for r in lines[2]["runs"]) and sum(r[3] for r in lines[2]["runs"]) > 10
    assert "error" in lines[3]
