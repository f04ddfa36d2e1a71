"""Controller expectations: creates and deletes a controller made that its cache has not shown yet.

A ReplicaSet controller that created three pods must not count pods again
until its informer has seen those three, or it would create them twice.
``satisfied`` is False until every expected create and delete was observed
(or the expectation timed out, as upstream's five minutes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Iterable

import trio

DEFAULT_TIMEOUT = 300.0


@dataclass
class _Expected:
    adds: int = 0
    dels: set[Hashable] = field(default_factory=set)
    since: float = 0.0


class Expectations:
    """Pending creates (counted) and deletes (by pod key) per controller key."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._exp: dict[Hashable, _Expected] = {}

    def satisfied(self, key: Hashable) -> bool:
        """True when nothing is pending for ``key`` (or the wait timed out)."""
        e = self._exp.get(key)
        if e is None or (e.adds <= 0 and not e.dels):
            return True
        return trio.current_time() - e.since > self.timeout

    def expect_creations(self, key: Hashable, n: int) -> None:
        """``n`` creates are about to be sent."""
        self._exp[key] = _Expected(adds=n, since=trio.current_time())

    def expect_deletions(self, key: Hashable, pods: Iterable[Hashable]) -> None:
        """These pods are about to be deleted."""
        self._exp[key] = _Expected(dels=set(pods), since=trio.current_time())

    def creation_observed(self, key: Hashable) -> None:
        """One expected create showed up in the cache (or was never sent)."""
        e = self._exp.get(key)
        if e is not None and e.adds > 0:
            e.adds -= 1

    def deletion_observed(self, key: Hashable, pod: Hashable) -> None:
        """A pod showed up as terminating or gone (or its delete failed)."""
        e = self._exp.get(key)
        if e is not None:
            e.dels.discard(pod)

    def delete(self, key: Hashable) -> None:
        """Forget ``key`` (its controller is gone)."""
        self._exp.pop(key, None)
