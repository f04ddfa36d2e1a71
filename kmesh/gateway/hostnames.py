"""Hostname patterns of the Gateway API and Ingress: matching, intersection and specificity.

A pattern is an exact name (``foo.example.com``), a wildcard (``*.example.com``)
or absent (every host). The Gateway API's wildcard stands for one or more
labels; Ingress's for exactly one (both as their API docs say).
"""

from __future__ import annotations

from kmesh.l7.model import HostMatch


def is_wildcard(pattern: str) -> bool:
    """Whether ``pattern`` is a ``*.suffix`` wildcard."""
    return pattern.startswith("*.")


def matches(pattern: str | None, host: str) -> bool:
    """Whether ``host`` (an exact name) is covered by ``pattern`` (Gateway API rule: ``*`` = one or more labels)."""
    if not pattern:
        return True
    if is_wildcard(pattern):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def intersect(listener: str | None, route_hosts: list[str]) -> list[str] | None:
    """The hostnames a route serves on a listener: ``[]`` = every host the listener serves, None = no overlap.

    Each route hostname that the listener's covers is kept; a route wildcard
    that covers the listener's exact name (or a narrower wildcard) gives the
    listener's own name.
    """
    if not route_hosts:
        return [listener] if listener else []
    if not listener:
        return list(route_hosts)
    out: list[str] = []
    for h in route_hosts:
        if is_wildcard(h) and is_wildcard(listener):
            if h[1:].endswith(listener[1:]):
                out.append(h)
            elif listener[1:].endswith(h[1:]):
                out.append(listener)
        elif matches(listener, h):
            out.append(h)
        elif matches(h, listener):
            out.append(listener)
    return list(dict.fromkeys(out)) or None


def host_match(pattern: str | None, *, one_label: bool = False) -> HostMatch:
    """The L7 engine's form of a pattern (``one_label`` for Ingress's wildcards)."""
    if not pattern:
        return HostMatch("any")
    if is_wildcard(pattern):
        return HostMatch("wildcard-one" if one_label else "wildcard", pattern)
    return HostMatch("exact", pattern)


def specificity(pattern: str | None) -> tuple[int, int]:
    """A sort key, smallest first: exact names, then wildcards (longest first), then no hostname."""
    if not pattern:
        return (2, 0)
    return (1 if is_wildcard(pattern) else 0, -len(pattern))
