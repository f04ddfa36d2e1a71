"""The API server's Prometheus metrics, with kube-apiserver's names and labels.

``request_info`` reads what a request is from its method, path and query,
before it is handled, as kube-apiserver's RequestInfo filter does; the
labels follow upstream's metrics code:

- ``verb``: ``GET`` (one object), ``LIST``, ``WATCH`` (``?watch=true``),
  ``POST``, ``PUT``, ``PATCH`` (``APPLY`` for a server-side apply body),
  ``DELETE``, ``DELETECOLLECTION``, ``CONNECT`` (the ``log``, ``exec``,
  ``attach``, ``portforward`` and ``proxy`` subresources); the HTTP method
  for non-resource paths (``/version``, discovery, ``/metrics``);
- ``group``, ``version``, ``resource``, ``subresource`` ("" where none);
- ``scope``: ``resource`` (a named object, or a create), ``namespace``,
  ``cluster``, or "" for non-resource paths;
- ``dry_run``: ``All`` or ""; ``component``: ``apiserver``; ``code``: the
  HTTP status sent.

Watches are counted when they end (as upstream does) and meanwhile show in
``apiserver_longrunning_requests``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

COMPONENT = "apiserver"
APPLY_PATCH = "application/apply-patch+yaml"
CONNECT_SUBRESOURCES = frozenset({"log", "exec", "portforward", "attach", "proxy"})
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
LONG_RUNNING = frozenset({"WATCH", "CONNECT"})
DURATION_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30,
                    45, 60)
RESPONSE_SIZE_BUCKETS = tuple(1000.0 * 10**i for i in range(7))


@dataclass(frozen=True)
class RequestInfo:
    """What one request is about, as its metric labels name it."""

    verb: str
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    scope: str = ""
    dry_run: str = ""

    @property
    def long_running(self) -> bool:
        """Watches and streamed subresources (logs)."""
        return self.verb in LONG_RUNNING


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() not in ("", "0", "false")


def request_info(method: str, path: str, query: dict[str, str], content_type: str = "") -> RequestInfo:
    """Classify a request by its method, path (not yet unquoted is fine) and query, before it is handled."""
    method = method.upper()
    dry_run = "All" if query.get("dryRun") == "All" else ""
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return RequestInfo(verb=method, dry_run=dry_run)
    watch = False
    if rest[0] == "watch":  # the deprecated /api/v1/watch/... form
        watch, rest = True, rest[1:]
        if not rest:
            return RequestInfo(verb=method, dry_run=dry_run)
    namespace = name = subresource = ""
    if rest[0] == "namespaces" and len(rest) >= 2:
        namespace = rest[1]
        if len(rest) >= 3 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]  # /namespaces/{ns}/{resource}/...
    resource = rest[0]
    if len(rest) >= 2:
        name = rest[1]
    if len(rest) >= 3:
        subresource = rest[2]
    verb = _verb(method, bool(name), watch or _truthy(query.get("watch")), subresource, content_type)
    if name or verb == "POST":
        scope = "resource"
    elif namespace:
        scope = "namespace"
    else:
        scope = "cluster"
    return RequestInfo(verb, group, version, resource, subresource, scope, dry_run)


def _verb(method: str, named: bool, watch: bool, subresource: str, content_type: str) -> str:
    if subresource in CONNECT_SUBRESOURCES:
        return "CONNECT"
    if method in ("GET", "HEAD"):
        if watch:
            return "WATCH"
        return "GET" if named else "LIST"
    if method == "DELETE" and not named:
        return "DELETECOLLECTION"
    if method == "PATCH" and content_type.split(";")[0].strip().lower() == APPLY_PATCH:
        return "APPLY"
    return method


class Metrics:
    """kube-apiserver's request metrics in a registry of their own (served on the API port's ``/metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, "
            "component, and HTTP response code.",
            ["verb", "dry_run", "group", "version", "resource", "subresource", "scope", "component", "code"],
            registry=self.registry)
        self.duration = Histogram(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group, version, resource, "
            "subresource, scope and component.",
            ["verb", "dry_run", "group", "version", "resource", "subresource", "scope", "component"],
            buckets=DURATION_BUCKETS, registry=self.registry)
        self.response_sizes = Histogram(
            "apiserver_response_sizes",
            "Response size distribution in bytes for each group, version, verb, resource, subresource, scope and "
            "component.", ["verb", "group", "version", "resource", "subresource", "scope", "component"],
            buckets=RESPONSE_SIZE_BUCKETS, registry=self.registry)
        self.long_running = Gauge(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope "
            "and component. Not all requests are tracked this way.",
            ["verb", "group", "version", "resource", "subresource", "scope", "component"], registry=self.registry)

    def _short(self, info: RequestInfo) -> tuple[str, ...]:
        return (info.verb, info.group, info.version, info.resource, info.subresource, info.scope, COMPONENT)

    def started(self, info: RequestInfo) -> None:
        """A request began (long-running ones are counted as active until ``finished``)."""
        if info.long_running:
            self.long_running.labels(*self._short(info)).inc()

    def finished(self, info: RequestInfo, code: int, seconds: float, size: int) -> None:
        """A request ended with HTTP ``code`` after ``seconds``, having sent ``size`` body bytes
        (``code`` 0: it ended before answering, e.g. the server stopped; not counted)."""
        if info.long_running:
            self.long_running.labels(*self._short(info)).dec()
        if not code:
            return
        labels = (info.verb, info.dry_run, info.group, info.version, info.resource, info.subresource, info.scope,
                  COMPONENT)
        self.requests.labels(*labels, str(code)).inc()
        self.duration.labels(*labels).observe(seconds)
        if not info.long_running:
            self.response_sizes.labels(*self._short(info)).observe(size)
