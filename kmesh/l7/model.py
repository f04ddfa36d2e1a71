"""What the L7 proxy is told to do: listeners, ordered route entries, filters and weighted backends.

This is the contract between the controllers that read Kubernetes objects
(``kmesh/gateway``: Ingress and the Gateway API; later ``kmesh/mesh``) and the
engine that serves HTTP (``kmesh/l7``). It is plain immutable data with no
Kubernetes wire types in it: the controllers translate their API's semantics
(hostname intersection, Ingress longest match, the Gateway API's precedence
rules) into an *ordered* list of entries, and the engine serves the first entry
that matches a request. Endpoints are not in here: the engine resolves a
:class:`Backend` to the Service's ready endpoints at request time, from what it
was last given (``Engine.set_endpoints``), so endpoint churn never recompiles
routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

HostKind = Literal["exact", "wildcard", "wildcard-one", "any"]
PathKind = Literal["Exact", "PathPrefix", "RegularExpression"]
ValueKind = Literal["Exact", "RegularExpression"]


@dataclass(frozen=True)
class HostMatch:
    """Which request hosts (the Host header or :authority, port and trailing dot dropped, lower case) an entry serves.

    ``exact``: equal to ``value``. ``wildcard``: ``value`` is ``*.suffix`` and the
    host ends in ``.suffix`` with one or more labels before it (the Gateway
    API's rule). ``wildcard-one``: the same with exactly one label before it
    (Ingress's rule). ``any``: every host.
    """

    kind: HostKind = "any"
    value: str = ""


@dataclass(frozen=True)
class PathMatch:
    """A path condition. ``PathPrefix`` matches whole segments: ``/foo`` matches ``/foo`` and ``/foo/bar``,
    not ``/foobar``; a trailing ``/`` in ``value`` is ignored (``/`` matches every path). ``RegularExpression``
    must match the whole path (``re.fullmatch``). The path compared is the request target without its query."""

    kind: PathKind = "PathPrefix"
    value: str = "/"


@dataclass(frozen=True)
class HeaderMatch:
    """A request header condition: the header's name compares case-insensitively; if it appears more than
    once, its values are joined with ``,`` before comparing."""

    name: str
    value: str
    kind: ValueKind = "Exact"


@dataclass(frozen=True)
class QueryMatch:
    """A query parameter condition; the name compares exactly; the first value of a repeated parameter counts."""

    name: str
    value: str
    kind: ValueKind = "Exact"


@dataclass(frozen=True)
class Match:
    """All conditions must hold (AND). An empty Match matches every request."""

    path: PathMatch = field(default_factory=PathMatch)
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[QueryMatch, ...] = ()
    method: str | None = None


@dataclass(frozen=True)
class HeaderModifier:
    """Set (replace), add (append a value) and remove headers; names are case-insensitive.
    ``response`` False: on the request to the backend; True: on the response to the client."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()
    response: bool = False


@dataclass(frozen=True)
class PathModifier:
    """``ReplaceFullPath``: the path becomes ``value``. ``ReplacePrefixMatch``: the part of the path the rule's
    ``PathPrefix`` match matched is replaced by ``value`` (segment-wise; ``/foo`` → ``/bar`` turns ``/foo/x``
    into ``/bar/x``, and ``/foo`` → ``/`` turns ``/foo/x`` into ``/x``). The query string is kept."""

    kind: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    value: str


@dataclass(frozen=True)
class RequestRedirect:
    """Answer with a redirect instead of proxying. Fields left None keep the request's own value; ``port`` None
    means the scheme's well-known port when ``scheme`` changes, else the listener's port; a well-known port
    (80 for http, 443 for https) is left out of the Location."""

    scheme: str | None = None
    hostname: str | None = None
    path: PathModifier | None = None
    port: int | None = None
    status_code: int = 302


@dataclass(frozen=True)
class URLRewrite:
    """Rewrite the Host and/or path sent to the backend."""

    hostname: str | None = None
    path: PathModifier | None = None


@dataclass(frozen=True)
class Backend:
    """One weighted destination: a Service port, resolved to its ready endpoints per request.

    ``invalid`` set means the reference could not be resolved (unknown kind or
    Service, a cross-namespace reference without a ReferenceGrant): requests
    that pick this backend get a 500, as the Gateway API requires. A valid
    backend with no ready endpoints gets a 503. ``app_protocol``
    ``kubernetes.io/h2c`` means the backend speaks HTTP/2 over cleartext.
    ``filters`` apply to requests sent to this backend only (after the rule's).
    """

    namespace: str
    service: str
    port: int
    weight: int = 1
    app_protocol: str | None = None
    filters: tuple[Filter, ...] = ()
    invalid: str | None = None


@dataclass(frozen=True)
class RequestMirror:
    """Also send a copy of the request to ``backend``; the copy's answer is ignored.
    ``percent`` of requests are mirrored (100 = all)."""

    backend: Backend
    percent: float = 100.0


Filter = Union[HeaderModifier, RequestRedirect, URLRewrite, RequestMirror]


@dataclass(frozen=True)
class Retry:
    """Send a failed request again: on a connection error (refused, reset or closed before an answer), on a
    backend timeout, and on an answer whose status is in ``codes``; at most ``attempts`` more times, each
    to another endpoint when there is one, waiting ``backoff`` seconds before the first retry and twice as
    long before each next (at most ten times ``backoff``). The Service's retry budget may refuse a retry;
    then the client gets what the last attempt got."""

    codes: frozenset[int] = frozenset()
    attempts: int = 2
    backoff: float = 0.025


@dataclass(frozen=True)
class Rule:
    """What to do with a request that matched: filters in order, then one backend picked by weight.

    No backends (or all weights 0) with no redirect: 500. ``direct`` set: answer with that status and an
    empty body without proxying (the controllers use it to fence a listener's hostname: 404 for a host a
    more specific listener owns, even where a less specific listener's entries would match). ``request_timeout``
    bounds the whole exchange as the client sees it, ``backend_timeout`` each
    request to a backend; on expiry the client gets 504. ``name`` says where the
    rule came from (``HTTPRoute ns/name rule 0``), for logs, metrics and the
    ``kmesh trace`` view. ``retry`` set: failed requests are sent again (see :class:`Retry`).
    """

    backends: tuple[Backend, ...] = ()
    filters: tuple[Filter, ...] = ()
    request_timeout: float | None = None
    backend_timeout: float | None = None
    name: str = ""
    direct: int | None = None
    retry: Retry | None = None


@dataclass(frozen=True)
class RouteEntry:
    """One (host, match) → rule line of a listener's table."""

    host: HostMatch
    match: Match
    rule: Rule


@dataclass(frozen=True)
class Certificate:
    """A certificate chain and key (PEM) served to clients whose SNI matches ``host`` (``any`` = the default)."""

    cert_pem: bytes
    key_pem: bytes
    host: HostMatch = field(default_factory=HostMatch)


@dataclass(frozen=True)
class Listener:
    """One port the proxy serves. Requests go to the first entry of ``routes`` whose host and match hold;
    none: 404. ``certificates`` non-empty means TLS (HTTPS): the certificate is chosen by SNI, the first
    ``any`` one (else the first) when no SNI or no certificate matches. ``routes`` may be shared by
    several listeners on the same port only through one Listener (the controllers merge them)."""

    port: int
    routes: tuple[RouteEntry, ...] = ()
    certificates: tuple[Certificate, ...] = ()
    name: str = ""

    @property
    def tls(self) -> bool:
        """Whether this listener terminates TLS."""
        return bool(self.certificates)


@dataclass(frozen=True)
class Config:
    """Everything one proxy serves; applied as a whole (``Engine.apply``)."""

    listeners: tuple[Listener, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """One ready address of a Service port, with the pod behind it (for logs and metrics)."""

    ip: str
    port: int
    pod: str = ""
    node: str = ""
