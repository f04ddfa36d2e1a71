"""A route entry's rule prepared for the hot path: filters sorted by what they do, weights made cumulative."""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence

from kmesh.l7.model import (Backend, Filter, HeaderModifier, RequestMirror, RequestRedirect, RouteEntry,
                            URLRewrite)


class FilterSet:
    """Filters of a rule or a backend, split by kind; request-side ones keep their order."""

    __slots__ = ("request", "response", "redirect", "mirrors")

    def __init__(self, filters: Sequence[Filter]) -> None:
        self.request: tuple[HeaderModifier | URLRewrite, ...] = tuple(
            f for f in filters if isinstance(f, URLRewrite) or isinstance(f, HeaderModifier) and not f.response)
        self.response: tuple[HeaderModifier, ...] = tuple(
            f for f in filters if isinstance(f, HeaderModifier) and f.response)
        self.redirect: RequestRedirect | None = next((f for f in filters if isinstance(f, RequestRedirect)), None)
        self.mirrors: tuple[RequestMirror, ...] = tuple(f for f in filters if isinstance(f, RequestMirror))


class BackendPlan:
    """One weighted backend with its key into the endpoint sets and its own filters."""

    __slots__ = ("backend", "key", "name", "filters", "h2c")

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.h2c = backend.app_protocol == "kubernetes.io/h2c"
        self.key = (backend.namespace, backend.service, backend.port)
        self.name = f"{backend.namespace}/{backend.service}:{backend.port}"
        self.filters = FilterSet(backend.filters)


class Plan:
    """What the engine does with a request that matched ``entry``."""

    __slots__ = ("entry", "rule", "name", "filters", "backends", "_cum", "_total")

    def __init__(self, entry: RouteEntry) -> None:
        self.entry = entry
        self.rule = entry.rule
        self.name = entry.rule.name
        self.filters = FilterSet(entry.rule.filters)
        self.backends = tuple(BackendPlan(b) for b in entry.rule.backends if b.weight > 0)
        cum: list[int] = []
        total = 0
        for b in self.backends:
            total += b.backend.weight
            cum.append(total)
        self._cum = cum
        self._total = total

    def pick(self) -> BackendPlan | None:
        """A backend chosen by weight (weight 0 never); None when the rule has none."""
        backends = self.backends
        if len(backends) <= 1:
            return backends[0] if backends else None
        return backends[bisect_right(self._cum, random.random() * self._total)]
