"""How many retries a backend may take at once: a budget, so retries cannot multiply the load on a failing Service.

The budget is Envoy's (a cluster's ``circuit_breakers.thresholds.retry_budget``,
which Istio and Envoy Gateway build on): the retries in flight to a Service may
be at most ``percent`` % of the requests in flight to it (20 % by default), and
``min_concurrency`` retries (3 by default) are always allowed, so a Service
with little traffic can still be retried. It bounds the extra load retries add
to 20 % however many requests fail, and a client that sends one request at a
time is never refused. Linkerd's and the Gateway API's (GEP-3388) budgets count
retries over a time window instead; a window penalises a quick series of
requests that each needed retries (as the Gateway API's own retry conformance
tests send), which a bound on concurrency does not.
"""

from __future__ import annotations

DEFAULT_PERCENT = 20.0
DEFAULT_MIN_CONCURRENCY = 3


class RetryBudget:
    """The retry budget of one backend Service: counts its requests and retries in flight, and says whether
    one more retry is allowed now."""

    __slots__ = ("percent", "min_concurrency", "active", "retrying", "retried", "refused")

    def __init__(self, percent: float = DEFAULT_PERCENT, min_concurrency: int = DEFAULT_MIN_CONCURRENCY) -> None:
        self.percent = percent
        self.min_concurrency = min_concurrency
        self.active = 0
        """Requests in flight to the Service under a retry policy."""
        self.retrying = 0
        """Of those, the ones that are being retried."""
        self.retried = 0
        self.refused = 0
        """Retries the budget allowed and refused so far (for metrics and experiments)."""

    def start(self) -> None:
        """A request to the Service begins."""
        self.active += 1

    def end(self, retried: bool) -> None:
        """A request ends; ``retried`` when the budget let it retry (it then held a retry until now)."""
        self.active -= 1
        if retried:
            self.retrying -= 1

    def try_retry(self, holding: bool) -> bool:
        """Whether a request may retry now. A request ``holding`` a retry already (it was let retry before)
        may go on; otherwise it takes one if the budget has room."""
        if holding:
            self.retried += 1
            return True
        if self.retrying < max(self.min_concurrency, self.active * self.percent / 100.0):
            self.retrying += 1
            self.retried += 1
            return True
        self.refused += 1
        return False
