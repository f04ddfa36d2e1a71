"""Weighted backends (chi-square with a tiny alpha) and per-request balancing over one keep-alive connection."""

from __future__ import annotations

import httpx
import pytest
import trio
from scipy.stats import chisquare

from kmesh.l7.model import Config, HostMatch, Listener, Match, RouteEntry, Rule
from kmesh.l7.plan import Plan
from kmesh.l7.upstream import EndpointSet
from kmesh.l7.model import Endpoint
from tests.l7.support import Backend, ref, set_backends, start_engine, url

ALPHA = 1e-6  # a correct split fails this test about once in a million runs


def test_weighted_pick_follows_weights() -> None:
    plan = Plan(RouteEntry(HostMatch(), Match(), Rule((ref("a", 70), ref("b", 20), ref("c", 10), ref("z", 0)))))
    n = 20000
    counts = {"a": 0, "b": 0, "c": 0, "z": 0}
    for _ in range(n):
        picked = plan.pick()
        assert picked is not None
        counts[picked.backend.service] += 1
    assert counts["z"] == 0
    assert chisquare([counts["a"], counts["b"], counts["c"]], [0.7 * n, 0.2 * n, 0.1 * n]).pvalue > ALPHA


async def test_weights_through_the_proxy(nursery: trio.Nursery) -> None:
    a = await Backend("a").start(nursery)
    b = await Backend("b").start(nursery)
    cfg = Config((Listener(80, (RouteEntry(HostMatch(), Match(), Rule((ref(a, 3), ref(b, 1)))),)),))
    engine = await start_engine(nursery, cfg)
    set_backends(engine, a, b)
    n = 400
    async with httpx.AsyncClient() as client:
        for _ in range(n):
            assert (await client.get(url(engine))).status_code == 200
    assert chisquare([len(a.requests), len(b.requests)], [0.75 * n, 0.25 * n]).pvalue > ALPHA


@pytest.mark.parametrize("policy", ["round_robin", "least_request"])
async def test_one_keepalive_connection_spreads_per_request(nursery: trio.Nursery, policy: str) -> None:
    backends = [await Backend(f"e{i}").start(nursery) for i in range(3)]
    cfg = Config((Listener(80, (RouteEntry(HostMatch(), Match(), Rule((ref("svc"),))),)),))
    engine = await start_engine(nursery, cfg, policy=policy)
    engine.set_endpoints("default", "svc", 80, [b.endpoint() for b in backends])
    n = 300
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(limits=limits) as client:
        for _ in range(n):
            assert (await client.get(url(engine))).status_code == 200
    assert engine.metrics.connections["80"] == 1
    counts = [len(b.requests) for b in backends]
    if policy == "round_robin":
        assert counts == [n // 3] * 3
    else:
        assert chisquare(counts).pvalue > ALPHA
    # upstream connections are pooled: one request at a time needs one connection per endpoint
    assert [b.connections for b in backends] == [1, 1, 1]


def test_round_robin_skips_the_excluded_endpoint() -> None:
    eps = EndpointSet([Endpoint("127.0.0.1", 1), Endpoint("127.0.0.1", 2)])
    first = eps.pick()
    assert eps.pick(exclude=first) != first
    assert EndpointSet([Endpoint("127.0.0.1", 1)]).pick(exclude=0) == -1
    assert EndpointSet([]).pick() == -1


def test_least_request_avoids_the_endpoint_with_requests_in_flight() -> None:
    """The mesh's policy: of two endpoints sampled, the one with fewer requests in flight (a slow pod
    collects in-flight requests, so it gets fewer new ones); with three, the busiest is never picked."""
    eps = EndpointSet([Endpoint("127.0.0.1", 1), Endpoint("127.0.0.1", 2)], "least_request")
    eps.active[0] = 5
    assert {eps.pick() for _ in range(50)} == {1}
    eps3 = EndpointSet([Endpoint("127.0.0.1", p) for p in (1, 2, 3)], "least_request")
    eps3.active[:] = [0, 4, 9]
    picks = [eps3.pick() for _ in range(300)]
    assert 2 not in picks and picks.count(0) > picks.count(1)
