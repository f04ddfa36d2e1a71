"""The metrics object: counters by labels and a latency histogram with Prometheus bucket bounds."""

from __future__ import annotations

from kmesh.l7.metrics import LATENCY_BUCKETS, Metrics


def test_counts_and_histogram() -> None:
    m = Metrics()
    for d in (0.0005, 0.001, 0.003, 20.0):
        m.observe("web", "HTTPRoute default/r rule 0", "default/a:80", 200, d)
    m.observe("web", "HTTPRoute default/r rule 0", "default/a:80", 503, 0.2)
    assert m.count(listener="web") == 5
    assert m.count(status=200) == 4 and m.count(status=503, backend="default/a:80") == 1
    hist = m.latency[("web", "HTTPRoute default/r rule 0")]
    assert hist[0] == 2  # <= 1ms, bound included
    assert hist[LATENCY_BUCKETS.index(0.005)] == 1
    assert hist[LATENCY_BUCKETS.index(0.25)] == 1
    assert hist[len(LATENCY_BUCKETS)] == 1  # +Inf
    assert abs(hist[-1] - 20.2045) < 1e-9
