"""Statistics for load-balancing experiments: chi-square goodness of fit and latency percentiles.

scipy is not a dependency, so the chi-square survival function is computed
here from the regularized upper incomplete gamma function Q(a, x) (series for
small x, Lentz's continued fraction for large x, as in Numerical Recipes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 10_000


def _check(a: float, x: float) -> None:
    if not a > 0:
        raise ValueError(f"incomplete gamma: a must be > 0, got {a}")
    if x < 0 or math.isnan(x):
        raise ValueError(f"incomplete gamma: x must be >= 0, got {x}")


def _lower_series(a: float, x: float) -> float:
    """P(a, x) by its power series; converges fast for x < a + 1."""
    term = total = 1.0 / a
    ap = a
    for _ in range(_MAX_ITER):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _upper_fraction(a: float, x: float) -> float:
    """Q(a, x) by its continued fraction (modified Lentz); converges fast for x >= a + 1."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def gammainc_lower(a: float, x: float) -> float:
    """The regularized lower incomplete gamma P(a, x) = γ(a, x) / Γ(a)."""
    _check(a, x)
    if x == 0:
        return 0.0
    if math.isinf(x):
        return 1.0
    if x < a + 1.0:
        return min(1.0, _lower_series(a, x))
    return 1.0 - _upper_fraction(a, x)


def gammainc_upper(a: float, x: float) -> float:
    """The regularized upper incomplete gamma Q(a, x) = Γ(a, x) / Γ(a) = 1 - P(a, x)."""
    _check(a, x)
    if x == 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    if x < a + 1.0:
        return max(0.0, 1.0 - _lower_series(a, x))
    return _upper_fraction(a, x)


def chi2_sf(x: float, df: float) -> float:
    """P(X >= x) for X chi-square distributed with ``df`` degrees of freedom (the p-value of a statistic x)."""
    if not df > 0:
        raise ValueError(f"chi-square: degrees of freedom must be > 0, got {df}")
    if math.isnan(x):
        raise ValueError("chi-square: statistic is NaN")
    if x <= 0:
        return 1.0
    return gammainc_upper(df / 2.0, x / 2.0)


@dataclass(frozen=True)
class ChiSquare:
    """The outcome of a goodness-of-fit test."""

    statistic: float
    df: int
    p_value: float

    def passes(self, alpha: float) -> bool:
        """True when the observed split is compatible with the expected one at significance ``alpha``."""
        return self.p_value >= alpha


def chisquare(observed: Sequence[float], expected: Sequence[float] | None = None) -> ChiSquare:
    """Pearson's chi-square goodness-of-fit test of ``observed`` counts.

    ``expected`` are weights (counts or probabilities; rescaled to the observed
    total); None means uniform. A cell expected to get nothing but that got
    something makes the statistic infinite (p = 0); cells expected and observed
    empty do not count towards the degrees of freedom."""
    obs = [float(o) for o in observed]
    if any(o < 0 for o in obs):
        raise ValueError("chi-square: observed counts must be >= 0")
    weights = [1.0] * len(obs) if expected is None else [float(e) for e in expected]
    if len(weights) != len(obs):
        raise ValueError(f"chi-square: {len(obs)} observed cells but {len(weights)} expected")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("chi-square: expected weights must be >= 0 and not all 0")
    n = sum(obs)
    scale = n / sum(weights)
    stat = 0.0
    cells = 0
    for o, w in zip(obs, weights):
        e = w * scale
        if e == 0:
            if o > 0:
                stat = math.inf
            continue
        cells += 1
        stat += (o - e) ** 2 / e
    df = max(cells - 1, 0)
    if math.isinf(stat):
        return ChiSquare(stat, df, 0.0)
    if df == 0:
        return ChiSquare(stat, 0, 1.0)  # one possible outcome: nothing to test
    return ChiSquare(stat, df, chi2_sf(stat, df))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Latency:
    """Latency summary in seconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Latency:
        """Summarize ``values`` (NaN everywhere when empty)."""
        return cls(
            len(values), percentile(values, 50), percentile(values, 90), percentile(values, 99),
            max(values) if values else math.nan,
        )


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    """Each key's fraction of the total (0 everywhere when the total is 0)."""
    total = sum(counts.values())
    return {k: (v / total if total else 0.0) for k, v in counts.items()}
