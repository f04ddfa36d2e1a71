"""Upstream's userspace load balancer: exact round robin, ClientIP affinity, updates, retry order."""

from __future__ import annotations

import random
from collections import Counter

from kmesh.proxy.balancer import AffinityMap, Picker, RoundRobin
from kmesh.proxy.model import Endpoint

EPS = [Endpoint(f"10.244.1.{i}", 8080) for i in range(1, 4)]


class Clock:
    """A hand-driven clock for affinity timeouts."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_is_a_picker() -> None:
    assert isinstance(RoundRobin(EPS), Picker)


def test_exact_round_robin_over_a_shuffled_order() -> None:
    rr = RoundRobin(EPS, rng=random.Random(7))
    order = rr.endpoints
    assert sorted(e.addr for e in order) == sorted(e.addr for e in EPS)
    picks = [rr.pick(f"10.0.0.{i % 5}") for i in range(300)]
    assert picks[:3] == order and picks[3:6] == order  # strictly in turn, whoever asks
    assert Counter(p.addr for p in picks if p) == {e.addr: 100 for e in EPS}


def test_shuffle_differs_between_balancers() -> None:
    orders = {tuple(e.addr for e in RoundRobin(EPS, rng=random.Random(seed)).endpoints) for seed in range(20)}
    assert len(orders) > 1


def test_no_endpoints() -> None:
    rr = RoundRobin([])
    assert rr.pick("10.0.0.1") is None
    rr.update(EPS)
    assert rr.pick("10.0.0.1") is not None
    rr.update([])
    assert rr.pick("10.0.0.1") is None


def test_affinity_pins_until_timeout() -> None:
    clock = Clock()
    rr = RoundRobin(EPS, affinity_timeout=10, clock=clock)
    first = rr.pick("10.0.0.1")
    other = rr.pick("10.0.0.2")
    assert first != other
    for _ in range(5):
        clock.now += 9  # each use refreshes the timer
        assert rr.pick("10.0.0.1") == first
    clock.now += 11
    assert rr.pick("10.0.0.1") != first or len(EPS) == 1  # expired: the next in turn
    assert rr.affinity is not None and len(rr.affinity) == 2


def test_retry_skips_affinity_and_repins() -> None:
    rr = RoundRobin(EPS, affinity_timeout=100, clock=Clock())
    first = rr.pick("10.0.0.1")
    second = rr.pick("10.0.0.1", retry=True)  # the first could not be connected
    assert second != first
    assert rr.pick("10.0.0.1") == second


def test_retry_order_walks_the_ring() -> None:
    rr = RoundRobin(EPS, rng=random.Random(1))
    order = rr.endpoints
    got = [rr.pick("c", retry=i > 0) for i in range(4)]
    assert got == order + order[:1]


def test_update_keeps_affinity_of_survivors_and_reshuffles() -> None:
    rr = RoundRobin(EPS, affinity_timeout=100, clock=Clock(), rng=random.Random(3))
    pins = {f"10.0.0.{i}": rr.pick(f"10.0.0.{i}") for i in range(3)}
    gone = EPS[0]
    assert rr.update(EPS[1:] + [Endpoint("10.244.2.9", 8080)], affinity_timeout=100)
    for client, ep in pins.items():
        if ep == gone:
            assert rr.pick(client) != gone
        else:
            assert rr.pick(client) == ep


def test_update_with_same_set_keeps_position() -> None:
    rr = RoundRobin(EPS, rng=random.Random(5))
    order = rr.endpoints
    rr.pick("c")
    assert not rr.update(list(reversed(EPS)))
    assert rr.endpoints == order
    assert rr.pick("c") == order[1]


def test_update_turns_affinity_on_and_off() -> None:
    rr = RoundRobin(EPS)
    assert rr.affinity is None
    rr.update(EPS, affinity_timeout=30)
    first = rr.pick("c")
    assert rr.pick("c") == first
    rr.update(EPS, affinity_timeout=None)
    assert rr.affinity is None


def test_affinity_map_keep_only() -> None:
    m = AffinityMap(10, Clock())
    m.set("a", EPS[0])
    m.set("b", EPS[1])
    m.keep_only({EPS[1].addr})
    assert m.items() == [("b", EPS[1])]
