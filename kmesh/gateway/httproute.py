"""One HTTPRoute's rules in the L7 engine's terms: matches, filters, weighted backends, timeouts.

Also the Gateway API's precedence key for a match and the resolution of
backend references (kind, ReferenceGrant, existence), whose failures become
the route's ``ResolvedRefs`` condition and 500s on the data path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kmesh.gateway.refgrants import GATEWAY_GROUP, permitted
from kmesh.gateway.world import Obj, World, meta
from kmesh.l7.model import (
    Backend, Filter, HeaderMatch, HeaderModifier, Match, PathMatch, PathModifier, QueryMatch, RequestMirror,
    RequestRedirect, Retry, Rule, URLRewrite,
)

SUPPORTED_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite",
                     "RequestMirror")
_DURATION = re.compile(r"^(?:([0-9]{1,5})(h|ms|m|s))+$")
_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
RETRY_ATTEMPTS = 2
"""Retries when a rule's ``retry`` leaves ``attempts`` out (the Gateway API leaves it to implementations;
2 is Istio's default retry policy)."""
RETRY_BACKOFF = 0.025
"""The first backoff when ``retry.backoff`` is left out (Envoy's base retry interval)."""


def duration(value: str) -> float:
    """Seconds of a Gateway API duration (``1h``, ``500ms``, ``1m30s``); ValueError if it is not one."""
    if not isinstance(value, str) or not _DURATION.match(value):
        raise ValueError(f"not a Gateway API duration: {value!r}")
    return sum(int(n) * _UNIT[u] for n, u in _PART.findall(value))


@dataclass(frozen=True)
class RefProblem:
    """Why a reference did not resolve: the ``ResolvedRefs`` reason and a message."""

    reason: str
    message: str


@dataclass
class CompiledRule:
    """One route rule: its matches (each a line of the listener's table) and what to do."""

    index: int
    matches: list[Match]
    rule: Rule


@dataclass
class CompiledRoute:
    """A route's rules plus what went wrong resolving them."""

    rules: list[CompiledRule] = field(default_factory=list)
    problems: list[RefProblem] = field(default_factory=list)
    unsupported: str | None = None


def precedence(m: Match) -> tuple[int, int, int, int, int]:
    """Sort key of a match, smallest first: Exact paths, then regular expressions, then the longest prefix;
    then a method match, more header matches, more query matches (the spec's order; where it leaves
    regular expressions to the implementation, kmesh puts them between Exact and PathPrefix, as Envoy
    Gateway does)."""
    rank = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}[m.path.kind]
    return (rank, -len(m.path.value), 0 if m.method else 1, -len(m.headers), -len(m.query))


def _match(m: Obj) -> Match:
    path = m.get("path") or {"type": "PathPrefix", "value": "/"}
    return Match(
        path=PathMatch(path.get("type") or "PathPrefix", path.get("value") or "/"),
        headers=tuple(HeaderMatch(h["name"], h.get("value", ""), h.get("type") or "Exact")
                      for h in m.get("headers") or []),
        query=tuple(QueryMatch(q["name"], q.get("value", ""), q.get("type") or "Exact")
                    for q in m.get("queryParams") or []),
        method=m.get("method") or None,
    )


def _pairs(items: Any) -> tuple[tuple[str, str], ...]:
    return tuple((h["name"], h.get("value", "")) for h in items or [])


def _modifier(spec: Obj, response: bool) -> HeaderModifier:
    return HeaderModifier(set=_pairs(spec.get("set")), add=_pairs(spec.get("add")),
                          remove=tuple(spec.get("remove") or ()), response=response)


def _path_modifier(p: Obj | None) -> PathModifier | None:
    if not p:
        return None
    if p.get("type") == "ReplaceFullPath":
        return PathModifier("ReplaceFullPath", p.get("replaceFullPath") or "/")
    return PathModifier("ReplacePrefixMatch", p.get("replacePrefixMatch") or "/")


def _service_ref(ref: Obj, route_ns: str, world: World, weight: int = 1,
                 filters: tuple[Filter, ...] = (), mesh: bool = False) -> tuple[Backend, RefProblem | None]:
    """A backendRef as a Backend; an unresolvable one is marked invalid (its requests get 500). ``mesh``: the
    route serves a Service's clients (GAMMA), where a cross-namespace backendRef needs no ReferenceGrant."""
    group, kind = ref.get("group") or "", ref.get("kind") or "Service"
    ns, name, port = ref.get("namespace") or route_ns, ref.get("name") or "", int(ref.get("port") or 0)
    problem = None
    if group != "" or kind != "Service":
        problem = RefProblem("InvalidKind", f"backendRef {name}: kind {group or 'core'}/{kind} is not supported")
    elif not mesh and not permitted(world.grants, from_group=GATEWAY_GROUP, from_kind="HTTPRoute", from_namespace=route_ns,
                       to_group="", to_kind="Service", to_namespace=ns, to_name=name):
        problem = RefProblem("RefNotPermitted", f"backendRef {ns}/{name}: no ReferenceGrant in {ns} allows "
                                                f"HTTPRoutes from {route_ns} to refer to it")
    elif (ns, name) not in world.services:
        problem = RefProblem("BackendNotFound", f"backendRef {ns}/{name}: Service not found")
    else:
        ports = ((world.services[(ns, name)].get("spec") or {}).get("ports") or [])
        if not any(int(p.get("port") or 0) == port for p in ports):
            problem = RefProblem("BackendNotFound", f"backendRef {ns}/{name}: Service has no port {port}")
    app_protocol = None
    if problem is None:
        for p in (world.services[(ns, name)].get("spec") or {}).get("ports") or []:
            if int(p.get("port") or 0) == port:
                app_protocol = p.get("appProtocol")
    return Backend(ns, name, port, weight, app_protocol, filters,
                   invalid=problem.reason if problem else None), problem


def _filters(items: Any, route_ns: str, world: World, out: CompiledRoute, mesh: bool) -> tuple[Filter, ...]:
    result: list[Filter] = []
    for f in items or []:
        t = f.get("type")
        if t not in SUPPORTED_FILTERS:
            out.unsupported = f"filter type {t} is not supported"
            continue
        if t == "RequestHeaderModifier":
            result.append(_modifier(f.get("requestHeaderModifier") or {}, False))
        elif t == "ResponseHeaderModifier":
            result.append(_modifier(f.get("responseHeaderModifier") or {}, True))
        elif t == "RequestRedirect":
            r = f.get("requestRedirect") or {}
            result.append(RequestRedirect(scheme=r.get("scheme"), hostname=r.get("hostname"),
                                          path=_path_modifier(r.get("path")), port=r.get("port"),
                                          status_code=int(r.get("statusCode") or 302)))
        elif t == "URLRewrite":
            r = f.get("urlRewrite") or {}
            result.append(URLRewrite(hostname=r.get("hostname"), path=_path_modifier(r.get("path"))))
        else:
            r = f.get("requestMirror") or {}
            backend, problem = _service_ref(r.get("backendRef") or {}, route_ns, world, mesh=mesh)
            if problem:
                out.problems.append(problem)
                continue
            percent = 100.0
            if r.get("percent") is not None:
                percent = float(r["percent"])
            elif r.get("fraction"):
                fr = r["fraction"]
                percent = 100.0 * int(fr.get("numerator") or 0) / int(fr.get("denominator") or 100)
            result.append(RequestMirror(backend, percent))
    return tuple(result)


def _retry(spec: Obj | None) -> Retry | None:
    """A rule's ``retry`` (GEP-1731) in the engine's terms; None when the rule has none."""
    if spec is None:
        return None
    backoff = spec.get("backoff")
    return Retry(codes=frozenset(int(c) for c in spec.get("codes") or ()),
                 attempts=int(spec.get("attempts") or RETRY_ATTEMPTS),
                 backoff=duration(backoff) if backoff else RETRY_BACKOFF)


def compile_route(route: Obj, world: World, mesh: bool = False) -> CompiledRoute:
    """The rules of one HTTPRoute (defaults already applied by the API server); ``mesh``: as its Service
    parents apply it (GEP-1294: backendRefs to other namespaces need no ReferenceGrant)."""
    out = CompiledRoute()
    ns, name = meta(route).get("namespace") or "", meta(route).get("name") or ""
    for i, r in enumerate((route.get("spec") or {}).get("rules") or [{}]):
        filters = _filters(r.get("filters"), ns, world, out, mesh)
        backends = []
        for ref in r.get("backendRefs") or []:
            bf = _filters(ref.get("filters"), ns, world, out, mesh)
            b, problem = _service_ref(ref, ns, world, int(ref.get("weight", 1)), bf, mesh)
            backends.append(b)
            if problem:
                out.problems.append(problem)
        timeouts = r.get("timeouts") or {}
        rt = timeouts.get("request")
        bt = timeouts.get("backendRequest")
        rule = Rule(backends=tuple(backends), filters=filters,
                    request_timeout=duration(rt) or None if rt else None,
                    backend_timeout=duration(bt) or None if bt else None,
                    retry=_retry(r.get("retry")),
                    name=f"HTTPRoute {ns}/{name} rule {r.get('name') or i}")
        matches = [_match(m) for m in r.get("matches") or [{}]]
        out.rules.append(CompiledRule(i, matches, rule))
    return out
