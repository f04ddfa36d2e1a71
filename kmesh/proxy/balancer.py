"""Choosing an endpoint per connection: upstream userspace kube-proxy's round robin with ClientIP affinity.

The relays in ``kmesh.proxy.relay`` ask a ``Picker`` for an endpoint per
new connection (or UDP session) and give it back with ``release`` when the
connection ends, so connection-counting schedulers (IPVS ``lc``, ``wlc``...)
can plug in beside ``RoundRobin``. ``pick(client_ip, retry=True)`` means the
previous pick for this client could not be connected: upstream then ignores
session affinity (``sessionAffinityReset``) and takes the next endpoint.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from kmesh.proxy.model import Endpoint


@runtime_checkable
class Picker(Protocol):
    """A selection policy for one service port (round robin, an IPVS scheduler...)."""

    def pick(self, client_ip: str, retry: bool = False) -> Endpoint | None:
        """The endpoint for a new connection from ``client_ip``; None when there is none."""
        ...

    def release(self, endpoint: Endpoint) -> None:
        """A connection to ``endpoint`` (returned by ``pick``) ended or failed to connect."""
        ...


@dataclass
class _Sticky:
    endpoint: Endpoint
    last_used: float


class AffinityMap:
    """ClientIP session affinity: client IP → endpoint, forgotten ``timeout`` seconds after last use."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._map: dict[str, _Sticky] = {}

    def get(self, client_ip: str) -> Endpoint | None:
        """The endpoint ``client_ip`` is pinned to (refreshing its timer), or None (unknown or expired)."""
        entry = self._map.get(client_ip)
        if entry is None:
            return None
        now = self._clock()
        if now - entry.last_used > self.timeout:
            del self._map[client_ip]
            return None
        entry.last_used = now
        return entry.endpoint

    def set(self, client_ip: str, endpoint: Endpoint) -> None:
        """Pin ``client_ip`` to ``endpoint``."""
        self._map[client_ip] = _Sticky(endpoint, self._clock())

    def keep_only(self, alive: set[str]) -> None:
        """Forget clients pinned to endpoints whose ``addr`` is not in ``alive``."""
        for ip in [ip for ip, e in self._map.items() if e.endpoint.addr not in alive]:
            del self._map[ip]

    def clear(self) -> None:
        """Forget every client."""
        self._map.clear()

    def __len__(self) -> int:
        return len(self._map)

    def items(self) -> list[tuple[str, Endpoint]]:
        """(client IP, endpoint) pairs, for ``rules()`` and tests."""
        return [(ip, e.endpoint) for ip, e in sorted(self._map.items())]


class RoundRobin:
    """Upstream's userspace load balancer for one service port.

    Exact round robin over the endpoints in a shuffled order (shuffled again
    whenever the set of endpoints changes, so that many proxies do not all
    start with the same endpoint); with ClientIP affinity, a client keeps its
    endpoint until ``affinity_timeout`` seconds pass without a connection.
    An endpoint update keeps the pins of clients whose endpoint survives.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint] = (),
        *,
        affinity_timeout: float | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rng = rng or random.Random()
        self._clock = clock
        self._endpoints: list[Endpoint] = []
        self._index = 0
        self.affinity: AffinityMap | None = None
        self.update(endpoints, affinity_timeout=affinity_timeout)

    @property
    def endpoints(self) -> list[Endpoint]:
        """The endpoints in round-robin order."""
        return list(self._endpoints)

    def update(self, endpoints: Sequence[Endpoint], *, affinity_timeout: float | None = None) -> bool:
        """Take a new endpoint list and affinity setting (None: no affinity); True when the set changed."""
        if affinity_timeout is None:
            self.affinity = None
        elif self.affinity is None:
            self.affinity = AffinityMap(affinity_timeout, self._clock)
        else:
            self.affinity.timeout = affinity_timeout
        new = {e.addr: e for e in endpoints}
        if set(new) == {e.addr for e in self._endpoints}:
            # same endpoints: keep the order and position; pick up changed conditions
            self._endpoints = [new[e.addr] for e in self._endpoints]
            return False
        order = sorted(new.values(), key=lambda e: e.addr)
        self._rng.shuffle(order)
        self._endpoints = order
        self._index = 0
        if self.affinity is not None:
            self.affinity.keep_only(set(new))
        return True

    def pick(self, client_ip: str, retry: bool = False) -> Endpoint | None:
        """The pinned endpoint (unless ``retry``), else the next one in turn."""
        if not self._endpoints:
            return None
        if self.affinity is not None and not retry:
            pinned = self.affinity.get(client_ip)
            if pinned is not None:
                return pinned
        ep = self._endpoints[self._index % len(self._endpoints)]
        self._index = (self._index + 1) % len(self._endpoints)
        if self.affinity is not None:
            self.affinity.set(client_ip, ep)
        return ep

    def release(self, endpoint: Endpoint) -> None:
        """Round robin does not count connections."""
