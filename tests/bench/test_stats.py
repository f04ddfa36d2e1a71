"""kmesh.bench.stats against known values and identities of the incomplete gamma function."""

from __future__ import annotations

import math

import pytest

from kmesh.bench.stats import (
    Latency,
    chi2_sf,
    chisquare,
    gammainc_lower,
    gammainc_upper,
    percentile,
    shares,
)

A_VALUES = [0.1, 0.5, 1.0, 1.5, 2.0, 3.0, 7.5, 20.0, 100.0]
X_VALUES = [1e-6, 0.01, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 120.0]


@pytest.mark.parametrize(
    ("observed", "expected", "statistic", "p_value"),
    [
        # scipy.stats.chisquare's documented examples
        ([16, 18, 16, 14, 12, 12], None, 2.0, 0.84914503608460956),
        ([16, 18, 16, 14, 12, 12], [16, 16, 16, 16, 16, 8], 3.5, 0.62338762774958223),
        # df = 2: the survival function is exp(-x/2) exactly
        ([100, 80, 120], None, 8.0, math.exp(-4.0)),
        ([290, 5, 5], None, 541.5, math.exp(-541.5 / 2)),
        # weights given as probabilities, rescaled to the observed total
        ([10, 20, 30, 40], [0.1, 0.2, 0.3, 0.4], 0.0, 1.0),
        ([43, 52, 54, 40], None, 2.9365079365079363, 0.4015183527259283),
    ],
)
def test_chisquare_known_tables(observed: list[int], expected: list[float] | None, statistic: float, p_value: float) -> None:
    res = chisquare(observed, expected)
    assert res.statistic == pytest.approx(statistic, rel=1e-12, abs=1e-12)
    assert res.df == len(observed) - 1
    assert res.p_value == pytest.approx(p_value, rel=1e-9)


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [(3.841458820694124, 1, 0.05), (6.6348966010212145, 1, 0.01), (5.991464547107979, 2, 0.05),
     (11.070497693516351, 5, 0.05), (23.209251158954356, 10, 0.01)],
)
def test_chi2_critical_values(x: float, df: int, p: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-10)


def test_chi2_tails_and_edges() -> None:
    assert chi2_sf(0.0, 3) == 1.0 and chi2_sf(-1.0, 3) == 1.0
    assert chi2_sf(math.inf, 3) == 0.0
    assert chi2_sf(1000.0, 10) == pytest.approx(1.870290720915977e-208, rel=1e-9)  # deep tail, no cancellation
    for x in (0.1, 1.0, 4.0, 25.0):
        assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-12)
        assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-12)
    with pytest.raises(ValueError):
        chi2_sf(1.0, 0)


@pytest.mark.parametrize("a", A_VALUES)
@pytest.mark.parametrize("x", X_VALUES)
def test_gamma_p_plus_q_is_one(a: float, x: float) -> None:
    assert gammainc_lower(a, x) + gammainc_upper(a, x) == pytest.approx(1.0, abs=1e-13)
    assert 0.0 <= gammainc_upper(a, x) <= 1.0


@pytest.mark.parametrize("x", X_VALUES)
def test_gamma_closed_forms(x: float) -> None:
    assert gammainc_upper(1.0, x) == pytest.approx(math.exp(-x), rel=1e-12)
    assert gammainc_upper(0.5, x) == pytest.approx(math.erfc(math.sqrt(x)), rel=1e-11, abs=1e-300)
    for n in (2, 3, 6, 15):  # integer a: Q(n, x) = e^-x * sum_{k<n} x^k / k!
        poisson = math.exp(-x) * sum(x**k / math.factorial(k) for k in range(n))
        assert gammainc_upper(n, x) == pytest.approx(poisson, rel=1e-11, abs=1e-300)


@pytest.mark.parametrize("a", A_VALUES)
@pytest.mark.parametrize("x", X_VALUES)
def test_gamma_recurrence(a: float, x: float) -> None:
    # Q(a+1, x) = Q(a, x) + x^a e^-x / Gamma(a+1)
    step = math.exp(a * math.log(x) - x - math.lgamma(a + 1))
    assert gammainc_upper(a + 1, x) == pytest.approx(gammainc_upper(a, x) + step, rel=1e-11, abs=1e-300)


def test_gamma_edges() -> None:
    assert gammainc_upper(2.0, 0.0) == 1.0 and gammainc_lower(2.0, 0.0) == 0.0
    assert gammainc_upper(2.0, math.inf) == 0.0 and gammainc_lower(2.0, math.inf) == 1.0
    for a, x in ((0.0, 1.0), (-1.0, 1.0), (1.0, -0.5)):
        with pytest.raises(ValueError):
            gammainc_upper(a, x)


def test_against_scipy() -> None:
    special = pytest.importorskip("scipy.special", reason="scipy is not installed (optional cross-check)")
    for a in A_VALUES + [500.0]:
        for x in X_VALUES + [600.0]:
            want = float(special.gammaincc(a, x))
            assert gammainc_upper(a, x) == pytest.approx(want, rel=1e-10, abs=1e-300)


def test_chisquare_zero_expected_cells() -> None:
    # an endpoint expected to get nothing that got something: the split is impossible
    res = chisquare([50, 50, 1], [1, 1, 0])
    assert res.statistic == math.inf and res.p_value == 0.0
    # empty cells expected empty do not count as degrees of freedom
    assert chisquare([50, 50, 0], [1, 1, 0]) == chisquare([50, 50], [1, 1])
    # a single possible outcome: nothing to test
    one = chisquare([30, 0], [1, 0])
    assert one.df == 0 and one.p_value == 1.0
    with pytest.raises(ValueError):
        chisquare([1, 2], [1])
    with pytest.raises(ValueError):
        chisquare([1, 2], [0, 0])
    with pytest.raises(ValueError):
        chisquare([-1, 2])


def test_chisquare_verdicts() -> None:
    assert chisquare([100, 100, 100]).passes(0.01)
    assert not chisquare([300, 0, 0]).passes(0.01)
    assert chisquare([200, 100], [2, 1]).passes(0.01)


def test_percentiles_and_latency() -> None:
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(xs, 0) == 1.0 and percentile(xs, 100) == 5.0 and percentile(xs, 50) == 3.0
    assert percentile([1.0, 2.0], 90) == pytest.approx(1.9)  # linear interpolation, as numpy
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(xs, 101)
    lat = Latency.of([i / 1000 for i in range(1, 101)])
    assert (lat.count, lat.max) == (100, 0.1)
    assert lat.p50 == pytest.approx(0.0505) and lat.p90 == pytest.approx(0.0901) and lat.p99 == pytest.approx(0.09901)
    assert math.isnan(Latency.of([]).p99)
    assert shares({"a": 1, "b": 3}) == {"a": 0.25, "b": 0.75}
    assert shares({"a": 0}) == {"a": 0.0}
