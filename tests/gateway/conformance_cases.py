"""Upstream's HTTPRoute conformance cases (kubernetes-sigs/gateway-api conformance/tests, commit 4564255ac) as data: the same requests and expectations, transcribed."""
from dataclasses import dataclass, field  # noqa: F401 (field: part of the agreed schema header)

# How upstream's checks read these fields (conformance/utils/http CompareRoundTrip at that commit):
# - Everything about the backend (pod prefix, namespace, path/host/headers seen) is only checked when the
#   response is 200.  Upstream also writes a Namespace into some 404/500/504/redirect cases; it is never
#   checked there, so here ``namespace`` is filled only on cases that expect 200.
# - ``backend`` is a prefix of the echo's pod name; "" on a 200 case means any pod (only the namespace counts).
# - ``seen_path`` None: the backend must see exactly the request path (with query), as upstream compares it
#   to the request's when no ExpectedRequest is given.  The method the backend sees is always checked too
#   (GET unless ``method`` says otherwise; with an ExpectedRequest upstream expects GET).
# - ``seen_headers`` / ``response_headers`` compare the comma-joined values of a header, names case-insensitive.
# - ``redirect``: the request is sent without following redirects and the status must be ``status``.  In the
#   Location, an unset scheme ("") must equal the request's scheme (http), an unset host ("") is not checked,
#   an unset path ("") must equal the request's path, an unset port (None) must be absent or the Location
#   scheme's default (80 for http, 443 for https).
# - Every request upstream sends carries an ``X-Echo-Set-Header`` header (empty unless the test asks the echo
#   backend to set response headers); only the HTTPRouteResponseHeaderModifier cases list it in ``headers``,
#   with upstream's "Name:value,Name:value" encoding.
# - Status codes 408 and 504 are interchangeable for upstream: a case expecting 504 also passes on 408.

INFRA = "gateway-conformance-infra"
WEB = "gateway-conformance-web-backend"
APP = "gateway-conformance-app-backend"
SAME = f"{INFRA}/same-namespace"


@dataclass(frozen=True)
class Case:
    gateway: str                 # the Gateway (namespace/name) the request is sent to, e.g. "gateway-conformance-infra/same-namespace"
    path: str                    # request path incl. query, e.g. "/?animal=whale"
    host: str = ""               # Host header ("" = the gateway address, i.e. no specific host)
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    status: int = 200            # expected response status
    backend: str = ""            # expected backend pod name prefix / service name (echo's "pod" starts with it), e.g. "infra-backend-v1"; "" when no backend answers
    namespace: str = ""          # expected backend namespace
    seen_path: str | None = None     # path (with query) the backend must see, when the test checks it (ExpectedRequest.Path)
    seen_host: str | None = None     # Host the backend must see, when checked
    seen_headers: tuple[tuple[str, str], ...] = ()   # headers the backend must see (ExpectedRequest.Headers)
    absent_headers: tuple[str, ...] = ()             # headers the backend must NOT see (ExpectedRequest.AbsentHeaders)
    response_headers: tuple[tuple[str, str], ...] = ()  # headers the client must get (Response.Headers)
    absent_response_headers: tuple[str, ...] = ()
    redirect: tuple[str, str, int | None, str] | None = None  # (scheme, host, port, path) of the expected Location (RedirectRequest), None fields as ""/None when the test leaves them unset
    note: str = ""               # anything special (e.g. "weights: v1 70 / v2 30 / v3 0 within tolerance")


V1, V2, V3 = "infra-backend-v1", "infra-backend-v2", "infra-backend-v3"
HI = f"{INFRA}/httproute-hostname-intersection"
HI_ALL = f"{INFRA}/httproute-hostname-intersection-all"
LHM = f"{INFRA}/httproute-listener-hostname-matching"

# The headers the RequestHeaderModifier of the rewrite/mirror routes adds and sets (shared by several cases).
_MODIFIED = (("X-Header-Add", "header-val-1"), ("X-Header-Add-Append", "append-val-1,header-val-2"),
             ("X-Header-Set", "set-overwrites-values"))

CASES: dict[str, list[Case]] = {
    "HTTPRouteSimpleSameNamespace": [
        Case(SAME, "/", backend=V1, namespace=INFRA),
    ],
    "HTTPRouteCrossNamespace": [
        Case(f"{INFRA}/backend-namespaces", "/", backend="web-backend", namespace=WEB),
    ],
    "HTTPRouteHostnameIntersection": [
        # Sub-test "HTTPRoutes that do intersect with listener hostnames" (gateway httproute-hostname-intersection).
        # Route specific-host-matches-listener-specific-host:
        Case(HI, "/s1", host="very.specific.com", backend=V1, namespace=INFRA),
        Case(HI, "/s1", host="very.specific.com:1234", backend=V1, namespace=INFRA,
             note="the port in the Host header must be ignored when matching hostnames"),
        Case(HI, "/s1", host="non.matching.com", status=404),
        Case(HI, "/s1", host="foo.nonmatchingwildcard.io", status=404),
        Case(HI, "/s1", host="foo.wildcard.io", status=404),
        Case(HI, "/non-matching-prefix", host="very.specific.com", status=404),
        # Route specific-host-matches-listener-wildcard-host:
        Case(HI, "/s2", host="foo.wildcard.io", backend=V2, namespace=INFRA),
        Case(HI, "/s2", host="bar.wildcard.io", backend=V2, namespace=INFRA),
        Case(HI, "/s2", host="foo.bar.wildcard.io", backend=V2, namespace=INFRA),
        Case(HI, "/s2", host="non.matching.com", status=404),
        Case(HI, "/s2", host="wildcard.io", status=404),
        Case(HI, "/s2", host="very.specific.com", status=404),
        Case(HI, "/non-matching-prefix", host="foo.wildcard.io", status=404),
        # Route wildcard-host-matches-listener-specific-host:
        Case(HI, "/s3", host="very.specific.com", backend=V3, namespace=INFRA),
        Case(HI, "/s3", host="non.matching.com", status=404),
        Case(HI, "/s3", host="foo.specific.com", status=404),
        Case(HI, "/s3", host="foo.wildcard.io", status=404),
        Case(HI, "/non-matching-prefix", host="very.specific.com", status=404),
        # Route wildcard-host-matches-listener-wildcard-host:
        Case(HI, "/s4", host="foo.anotherwildcard.io", backend=V1, namespace=INFRA),
        Case(HI, "/s4", host="bar.anotherwildcard.io", backend=V1, namespace=INFRA),
        Case(HI, "/s4", host="foo.bar.anotherwildcard.io", backend=V1, namespace=INFRA),
        Case(HI, "/s4", host="anotherwildcard.io", status=404),
        Case(HI, "/s4", host="foo.wildcard.io", status=404),
        Case(HI, "/s4", host="very.specific.com", status=404),
        Case(HI, "/non-matching-prefix", host="foo.anotherwildcard.io", status=404),
        # Sub-test "HTTPRoutes that do not intersect with listener hostnames" (route no-intersecting-hosts, not accepted).
        Case(HI, "/s5", host="specific.but.wrong.com", status=404),
        Case(HI, "/s5", host="wildcard.io", status=404),
        # Sub-test "HTTPRoutes intersects with an unspecified hostname listener" (gateway
        # httproute-hostname-intersection-all, route httproute-hostname-intersection-all).
        Case(HI_ALL, "/", host="first.com", backend=V2, namespace=INFRA),
        Case(HI_ALL, "/", host="sub.first.com", backend=V2, namespace=INFRA),
        Case(HI_ALL, "/", host="second.com", backend=V2, namespace=INFRA),
        Case(HI_ALL, "/", host="sub.second.com", backend=V2, namespace=INFRA),
        Case(HI_ALL, "/", host="third.com", status=404, note="hostname not on the HTTPRoute"),
        Case(HI_ALL, "/", host="sub.third.com", status=404, note="hostname not on the HTTPRoute"),
    ],
    "HTTPRouteMatching": [
        Case(SAME, "/", backend=V1, namespace=INFRA),
        Case(SAME, "/example", backend=V1, namespace=INFRA),
        Case(SAME, "/", headers=(("Version", "one"),), backend=V1, namespace=INFRA),
        Case(SAME, "/v2", backend=V2, namespace=INFRA),
        Case(SAME, "/v2/example", backend=V2, namespace=INFRA),
        Case(SAME, "/", headers=(("Version", "two"),), backend=V2, namespace=INFRA),
        Case(SAME, "/v2/", backend=V2, namespace=INFRA),
        Case(SAME, "/v2example", backend=V1, namespace=INFRA, note="not a path-segment prefix of /v2"),
        Case(SAME, "/foo/v2/example", backend=V1, namespace=INFRA),
    ],
    "HTTPRouteMatchingAcrossRoutes": [
        Case(SAME, "/", host="example.com", backend=V1, namespace=INFRA),
        Case(SAME, "/example", host="example.com", backend=V1, namespace=INFRA),
        Case(SAME, "/example", host="example.net", backend=V1, namespace=INFRA),
        Case(SAME, "/example", host="example.com", headers=(("Version", "one"),), backend=V1, namespace=INFRA),
        Case(SAME, "/v2", host="example.com", backend=V2, namespace=INFRA),
        Case(SAME, "/v2", host="example.net", backend=V1, namespace=INFRA,
             note="the /v2 matches are limited to example.com"),
        Case(SAME, "/v2/example", host="example.com", backend=V2, namespace=INFRA),
        Case(SAME, "/", host="example.com", headers=(("Version", "two"),), backend=V2, namespace=INFRA),
    ],
    "HTTPRouteHeaderMatching": [
        Case(SAME, "/", headers=(("Version", "one"),), backend=V1, namespace=INFRA),
        Case(SAME, "/", headers=(("Version", "two"),), backend=V2, namespace=INFRA),
        Case(SAME, "/", headers=(("Version", "two"), ("Color", "orange")), backend=V1, namespace=INFRA),
        Case(SAME, "/", headers=(("Version", "two"), ("Color", "blue")), backend=V2, namespace=INFRA),
        Case(SAME, "/", headers=(("Color", "orange"),), status=404),
        Case(SAME, "/", headers=(("Some-Other-Header", "one"),), status=404),
        Case(SAME, "/", headers=(("Color", "blue"),), backend=V1, namespace=INFRA),
        Case(SAME, "/", headers=(("Color", "green"),), backend=V1, namespace=INFRA),
        Case(SAME, "/", headers=(("Color", "red"),), backend=V2, namespace=INFRA),
        Case(SAME, "/", headers=(("Color", "yellow"),), backend=V2, namespace=INFRA),
        Case(SAME, "/", headers=(("Color", "purple"),), status=404),
    ],
    "HTTPRouteQueryParamMatching": [
        Case(SAME, "/?animal=whale", backend=V1, namespace=INFRA),
        Case(SAME, "/?animal=dolphin", backend=V2, namespace=INFRA),
        Case(SAME, "/?animal=dolphin&color=blue", backend=V3, namespace=INFRA),
        Case(SAME, "/?ANIMAL=Whale", backend=V3, namespace=INFRA),
        Case(SAME, "/?animal=whale&otherparam=irrelevant", backend=V1, namespace=INFRA),
        Case(SAME, "/?animal=dolphin&color=yellow", backend=V2, namespace=INFRA),
        Case(SAME, "/?color=blue", status=404),
        Case(SAME, "/?animal=dog", status=404),
        Case(SAME, "/?animal=whaledolphin", status=404),
        Case(SAME, "/", status=404),
        # query param combined with other matches
        Case(SAME, "/path1?animal=whale", backend=V1, namespace=INFRA),
        Case(SAME, "/?animal=whale", headers=(("version", "one"),), backend=V2, namespace=INFRA),
        Case(SAME, "/path2?animal=whale", headers=(("version", "two"),), backend=V3, namespace=INFRA),
        # ORed matches: one of them suffices
        Case(SAME, "/path3?animal=shark", backend=V1, namespace=INFRA),
        Case(SAME, "/path4?animal=kraken", headers=(("version", "three"),), backend=V1, namespace=INFRA),
        # ANDed match types: a subset does not match
        Case(SAME, "/?animal=shark", status=404),
        Case(SAME, "/path4?animal=kraken", status=404),
        # several matches satisfied: spec precedence
        Case(SAME, "/path5?animal=hydra", backend=V1, namespace=INFRA),
        Case(SAME, "/?animal=hydra", headers=(("version", "four"),), backend=V3, namespace=INFRA),
    ],
    "HTTPRouteMethodMatching": [
        Case(SAME, "/", method="POST", backend=V1, namespace=INFRA),
        Case(SAME, "/", method="GET", backend=V2, namespace=INFRA),
        Case(SAME, "/", method="HEAD", status=404),
        # method combined with other matches
        Case(SAME, "/path1", method="GET", backend=V1, namespace=INFRA),
        Case(SAME, "/", method="PUT", headers=(("version", "one"),), backend=V2, namespace=INFRA),
        Case(SAME, "/path2", method="POST", headers=(("version", "two"),), backend=V3, namespace=INFRA),
        # ORed matches: one of them suffices
        Case(SAME, "/path3", method="PATCH", backend=V1, namespace=INFRA),
        Case(SAME, "/path4", method="DELETE", headers=(("version", "three"),), backend=V1, namespace=INFRA),
        # ANDed match types: a subset does not match
        Case(SAME, "/", method="PUT", status=404),
        Case(SAME, "/path4", method="DELETE", status=404),
        # several matches satisfied: spec precedence
        Case(SAME, "/path5", method="PATCH", backend=V1, namespace=INFRA),
        Case(SAME, "/", method="PATCH", headers=(("version", "four"),), backend=V2, namespace=INFRA),
    ],
    "HTTPRoutePathMatchOrder": [
        Case(SAME, "/match/exact/one", backend=V3, namespace=INFRA),
        Case(SAME, "/match/exact", backend=V2, namespace=INFRA),
        Case(SAME, "/match", backend=V1, namespace=INFRA),
        Case(SAME, "/match/prefix/one/any", backend=V2, namespace=INFRA),
        Case(SAME, "/match/prefix/any", backend=V1, namespace=INFRA),
        Case(SAME, "/match/any", backend=V3, namespace=INFRA),
    ],
    "HTTPRouteExactPathMatching": [
        Case(SAME, "/one", backend=V1, namespace=INFRA),
        Case(SAME, "/two", backend=V2, namespace=INFRA),
        Case(SAME, "/", status=404),
        Case(SAME, "/one/example", status=404),
        Case(SAME, "/two/", status=404),
        Case(SAME, "/Two", status=404),
    ],
    "HTTPRouteListenerHostnameMatching": [
        Case(LHM, "/", host="bar.com", backend=V1, namespace=INFRA),
        Case(LHM, "/", host="foo.bar.com", backend=V2, namespace=INFRA),
        Case(LHM, "/", host="baz.bar.com", backend=V3, namespace=INFRA),
        Case(LHM, "/", host="boo.bar.com", backend=V3, namespace=INFRA),
        Case(LHM, "/", host="multiple.prefixes.bar.com", backend=V3, namespace=INFRA),
        Case(LHM, "/", host="multiple.prefixes.foo.com", backend=V3, namespace=INFRA),
        Case(LHM, "/", host="foo.com", status=404),
        Case(LHM, "/", host="no.matching.host", status=404),
    ],
    "HTTPRouteRequestHeaderModifier": [
        Case(SAME, "/set", headers=(("Some-Other-Header", "val"),), backend=V1, namespace=INFRA,
             seen_path="/set",
             seen_headers=(("Some-Other-Header", "val"), ("X-Header-Set", "set-overwrites-values"))),
        Case(SAME, "/set", headers=(("Some-Other-Header", "val"), ("X-Header-Set", "some-other-value")),
             backend=V1, namespace=INFRA, seen_path="/set",
             seen_headers=(("Some-Other-Header", "val"), ("X-Header-Set", "set-overwrites-values"))),
        Case(SAME, "/add", headers=(("Some-Other-Header", "val"),), backend=V1, namespace=INFRA,
             seen_path="/add",
             seen_headers=(("Some-Other-Header", "val"), ("X-Header-Add", "add-appends-values"))),
        Case(SAME, "/add", headers=(("Some-Other-Header", "val"), ("X-Header-Add", "some-other-value")),
             backend=V1, namespace=INFRA, seen_path="/add",
             seen_headers=(("Some-Other-Header", "val"), ("X-Header-Add", "some-other-value,add-appends-values"))),
        Case(SAME, "/remove", headers=(("X-Header-Remove", "val"),), backend=V1, namespace=INFRA,
             seen_path="/remove", absent_headers=("X-Header-Remove",)),
        Case(SAME, "/multiple",
             headers=(("X-Header-Set-2", "set-val-2"), ("X-Header-Add-2", "add-val-2"),
                      ("X-Header-Remove-2", "remove-val-2"), ("Another-Header", "another-header-val")),
             backend=V1, namespace=INFRA, seen_path="/multiple",
             seen_headers=(("X-Header-Set-1", "header-set-1"), ("X-Header-Set-2", "header-set-2"),
                           ("X-Header-Add-1", "header-add-1"), ("X-Header-Add-2", "add-val-2,header-add-2"),
                           ("X-Header-Add-3", "header-add-3"), ("Another-Header", "another-header-val")),
             absent_headers=("X-Header-Remove-1", "X-Header-Remove-2")),
        Case(SAME, "/case-insensitivity",
             headers=(("x-header-set", "original-val-set"), ("x-header-add", "original-val-add"),
                      ("x-header-remove", "original-val-remove"), ("Another-Header", "another-header-val")),
             backend=V1, namespace=INFRA, seen_path="/case-insensitivity",
             seen_headers=(("X-Header-Set", "header-set"), ("X-Header-Add", "original-val-add,header-add"),
                           ("Another-Header", "another-header-val")),
             absent_headers=("x-header-remove", "X-Header-Remove"),
             note="the filter names headers canonically, the request sends them lowercase"),
    ],
    "HTTPRouteResponseHeaderModifier": [
        Case(SAME, "/set", headers=(("X-Echo-Set-Header", "Some-Other-Header:val"),), backend=V1, namespace=INFRA,
             response_headers=(("Some-Other-Header", "val"), ("X-Header-Set", "set-overwrites-values")),
             note="backend asked to answer Some-Other-Header: val"),
        Case(SAME, "/set", headers=(("X-Echo-Set-Header", "Some-Other-Header:val,X-Header-Set:some-other-value"),),
             backend=V1, namespace=INFRA,
             response_headers=(("Some-Other-Header", "val"), ("X-Header-Set", "set-overwrites-values")),
             note="backend asked to answer Some-Other-Header: val, X-Header-Set: some-other-value"),
        Case(SAME, "/add", headers=(("X-Echo-Set-Header", "Some-Other-Header:val"),), backend=V1, namespace=INFRA,
             response_headers=(("Some-Other-Header", "val"), ("X-Header-Add", "add-appends-values")),
             note="backend asked to answer Some-Other-Header: val"),
        Case(SAME, "/add", headers=(("X-Echo-Set-Header", "Some-Other-Header:val,X-Header-Add:some-other-value"),),
             backend=V1, namespace=INFRA,
             response_headers=(("Some-Other-Header", "val"), ("X-Header-Add", "some-other-value,add-appends-values")),
             note="backend asked to answer Some-Other-Header: val, X-Header-Add: some-other-value"),
        Case(SAME, "/remove", headers=(("X-Echo-Set-Header", "X-Header-Remove:val"),), backend=V1, namespace=INFRA,
             absent_response_headers=("X-Header-Remove",),
             note="backend asked to answer X-Header-Remove: val"),
        Case(SAME, "/multiple",
             headers=(("X-Echo-Set-Header", ("X-Header-Set-2:set-val-2,X-Header-Add-2:add-val-2,"
                                             "X-Header-Remove-2:remove-val-2,Another-Header:another-header-val,"
                                             "X-Header-Remove-1:val")),),
             backend=V1, namespace=INFRA,
             response_headers=(("X-Header-Set-1", "header-set-1"), ("X-Header-Set-2", "header-set-2"),
                               ("X-Header-Add-1", "header-add-1"), ("X-Header-Add-2", "add-val-2,header-add-2"),
                               ("X-Header-Add-3", "header-add-3"), ("Another-Header", "another-header-val")),
             absent_response_headers=("X-Header-Remove-1", "X-Header-Remove-2"),
             note="backend asked to answer X-Header-Set-2, X-Header-Add-2, X-Header-Remove-2, Another-Header, "
                  "X-Header-Remove-1"),
        Case(SAME, "/case-insensitivity",
             headers=(("X-Echo-Set-Header", ("x-header-set:original-val-set,x-header-add:original-val-add,"
                                             "x-header-remove:original-val-remove,Another-Header:another-header-val")),),
             backend=V1, namespace=INFRA,
             response_headers=(("X-Header-Set", "header-set"), ("X-Header-Add", "original-val-add,header-add"),
                               ("X-Lowercase-Add", "lowercase-add"), ("X-Mixedcase-Add-1", "mixedcase-add-1"),
                               ("X-Mixedcase-Add-2", "mixedcase-add-2"), ("X-Uppercase-Add", "uppercase-add"),
                               ("Another-Header", "another-header-val")),
             absent_response_headers=("x-header-remove", "X-Header-Remove"),
             note="backend asked to answer lowercase x-header-set/x-header-add/x-header-remove and Another-Header"),
        Case(SAME, "/response-and-request-header-modifiers",
             headers=(("X-Header-Remove", "remove-val"), ("X-Header-Add-Append", "append-val-1"),
                      ("X-Header-Echo", "echo"),
                      ("X-Echo-Set-Header", ("X-Header-Set-2:set-val-2,X-Header-Add-2:add-val-2,"
                                             "X-Header-Remove-2:remove-val-2,Another-Header:another-header-val,"
                                             "X-Header-Remove-1:remove-val-1,X-Header-Echo:echo"))),
             backend=V1, namespace=INFRA, seen_path="/response-and-request-header-modifiers",
             seen_headers=(("X-Header-Add", "header-val-1"), ("X-Header-Set", "set-overwrites-values"),
                           ("X-Header-Add-Append", "append-val-1,header-val-2"), ("X-Header-Echo", "echo")),
             absent_headers=("X-Header-Remove",),
             response_headers=(("X-Header-Set-1", "header-set-1"), ("X-Header-Set-2", "header-set-2"),
                               ("X-Header-Add-1", "header-add-1"), ("X-Header-Add-2", "add-val-2,header-add-2"),
                               ("Another-Header", "another-header-val"), ("X-Header-Echo", "echo")),
             absent_response_headers=("X-Header-Remove-1", "X-Header-Remove-2"),
             note="request and response header modifiers on one rule; backend asked to answer X-Header-Set-2, "
                  "X-Header-Add-2, X-Header-Remove-2, Another-Header, X-Header-Remove-1, X-Header-Echo"),
    ],
    "HTTPRouteRedirectHostAndStatus": [
        Case(SAME, "/hostname-redirect", status=302, redirect=("", "example.org", None, "")),
        Case(SAME, "/host-and-status", status=301, redirect=("", "example.org", None, "")),
    ],
    "HTTPRouteRedirectPath": [
        Case(SAME, "/original-prefix/lemon", status=302, redirect=("", "", None, "/replacement-prefix/lemon")),
        Case(SAME, "/full/path/original", status=302, redirect=("", "", None, "/full-path-replacement")),
        Case(SAME, "/path-and-host", status=302, redirect=("", "example.org", None, "/replacement-prefix")),
        Case(SAME, "/path-and-status", status=301, redirect=("", "", None, "/replacement-prefix")),
        Case(SAME, "/full-path-and-host", status=302, redirect=("", "example.org", None, "/replacement-full")),
        Case(SAME, "/full-path-and-status", status=301, redirect=("", "", None, "/replacement-full")),
    ],
    "HTTPRouteRedirectPort": [
        Case(SAME, "/port", status=302, redirect=("", "", 8083, "")),
        Case(SAME, "/port-and-host", status=302, redirect=("", "example.org", 8083, "")),
        Case(SAME, "/port-and-status", status=301, redirect=("", "", 8083, "")),
        Case(SAME, "/port-and-host-and-status", status=302, redirect=("", "example.org", 8083, ""),
             note="the manifest sets statusCode 302 on this rule explicitly"),
    ],
    "HTTPRouteRedirectScheme": [
        Case(SAME, "/scheme", status=302, redirect=("https", "", None, "")),
        Case(SAME, "/scheme-and-host", status=302, redirect=("https", "example.org", None, "")),
        Case(SAME, "/scheme-and-status", status=301, redirect=("https", "", None, "")),
        Case(SAME, "/scheme-and-host-and-status", status=302, redirect=("https", "example.org", None, ""),
             note="the manifest sets statusCode 302 on this rule explicitly"),
    ],
    "HTTPRouteRewriteHost": [
        Case(SAME, "/one", host="rewrite.example", backend=V1, namespace=INFRA,
             seen_path="/one", seen_host="one.example.org"),
        Case(SAME, "/two", host="rewrite.example", backend=V2, namespace=INFRA,
             seen_path="/two", seen_host="example.org"),
        Case(SAME, "/rewrite-host-and-modify-headers", host="rewrite.example",
             headers=(("X-Header-Remove", "remove-val"), ("X-Header-Add-Append", "append-val-1")),
             backend=V2, namespace=INFRA, seen_path="/rewrite-host-and-modify-headers", seen_host="test.example.org",
             seen_headers=_MODIFIED, absent_headers=("X-Header-Remove",)),
    ],
    "HTTPRouteRewritePath": [
        Case(SAME, "/prefix/one/two", backend=V1, namespace=INFRA, seen_path="/one/two"),
        Case(SAME, "/strip-prefix/three", backend=V1, namespace=INFRA, seen_path="/three"),
        Case(SAME, "/strip-prefix", backend=V1, namespace=INFRA, seen_path="/"),
        Case(SAME, "/full/one/two", backend=V1, namespace=INFRA, seen_path="/one"),
        Case(SAME, "/full/rewrite-path-and-modify-headers/test",
             headers=(("X-Header-Remove", "remove-val"), ("X-Header-Add-Append", "append-val-1"),
                      ("X-Header-Set", "set-val")),
             backend=V1, namespace=INFRA, seen_path="/test",
             seen_headers=_MODIFIED, absent_headers=("X-Header-Remove",)),
        Case(SAME, "/prefix/rewrite-path-and-modify-headers/one",
             headers=(("X-Header-Remove", "remove-val"), ("X-Header-Add-Append", "append-val-1"),
                      ("X-Header-Set", "set-val")),
             backend=V1, namespace=INFRA, seen_path="/prefix/one",
             seen_headers=_MODIFIED, absent_headers=("X-Header-Remove",)),
    ],
    "HTTPRouteInvalidBackendRefUnknownKind": [
        Case(SAME, "/v2", status=500),
    ],
    "HTTPRouteInvalidCrossNamespaceBackendRef": [
        Case(SAME, "/", status=500),
    ],
    "HTTPRouteInvalidNonExistentBackendRef": [
        Case(SAME, "/", status=500),
    ],
    "HTTPRouteInvalidReferenceGrant": [
        Case(SAME, "/", status=500,
             note="upstream also names Backend web-backend / Namespace gateway-conformance-web-backend here, "
                  "which its helper never checks on a 500: no backend may answer"),
    ],
    "HTTPRouteReferenceGrant": [
        Case(SAME, "/", backend="web-backend", namespace=WEB),
        Case(SAME, "/", status=500,
             note="sent after the test deletes ReferenceGrant gateway-conformance-web-backend/reference-grant"),
    ],
    "HTTPRoutePartiallyInvalidViaInvalidReferenceGrant": [
        Case(SAME, "/v2", status=500, note="the backendRef the ReferenceGrant does not cover"),
        Case(SAME, "/", backend="app-backend-v1", namespace=APP, note="the valid sibling backendRef"),
    ],
    "HTTPRouteNoBackendRefs": [
        Case(SAME, "/forward", backend=V1, namespace=INFRA),
        Case(SAME, "/omitted-no-forward", status=500),
        Case(SAME, "/empty-no-forward", status=500),
    ],
    "HTTPRouteWeight": [
        Case(SAME, "/", namespace=INFRA,
             note="weights: infra-backend-v1 0.7 / infra-backend-v2 0.3 / infra-backend-v3 0.0. First one "
                  "eventually-consistent GET / expecting 200 from any pod in gateway-conformance-infra; then 500 "
                  "GET / (10 concurrent), each a full 200 check, about half carrying a random X-Jitter header "
                  "(0-9999); the backend is the pod name minus its last two '-' parts; every backend's share must be "
                  "within +/-0.05 of its weight, exactly the two nonzero backends must get traffic and a pod of "
                  "any other backend fails the round; up to 10 rounds, one passing round suffices"),
    ],
    "HTTPRouteRequestMirror": [
        Case(SAME, "/mirror", backend=V1, namespace=INFRA, seen_path="/mirror",
             note="mirrored copy must reach infra-backend-v2 in gateway-conformance-infra (found in its echo "
                  "logs by the unique path); upstream appends ?gateway-api-conformance-request-id=<uuid> to both "
                  "the request path and the path the backend must see"),
        Case(SAME, "/mirror-and-modify-headers",
             headers=(("X-Header-Remove", "remove-val"), ("X-Header-Add-Append", "append-val-1")),
             backend=V1, namespace=INFRA, seen_path="/mirror-and-modify-headers",
             seen_headers=_MODIFIED, absent_headers=("X-Header-Remove",),
             note="mirrored copy must reach infra-backend-v2 in gateway-conformance-infra (found in its echo "
                  "logs by the unique path); upstream appends ?gateway-api-conformance-request-id=<uuid> to both "
                  "the request path and the path the backend must see"),
    ],
    "HTTPRouteTimeoutRequest": [
        Case(SAME, "/request-timeout", namespace=INFRA,
             note="rule with timeouts.request 500ms (backend infra-backend-v1, any pod accepted); no delay: 200"),
        Case(SAME, "/request-timeout?delay=1s", status=504,
             note="echo delays its answer 1s, beyond the rule's 500ms request timeout: the gateway must answer "
                  "504 (upstream accepts 408 as well)"),
        Case(SAME, "/disable-request-timeout?delay=1s", namespace=INFRA,
             note="rule with timeouts.request 0s (timeout disabled): the 1s-delayed answer arrives, 200"),
    ],
    "HTTPRouteRetry": [
        Case(SAME, "/retry/code-500-attempts-3?responseCode=500&succeedAfter=2&uuid={uuid}", namespace=INFRA,
             backend=V3, note="2 failures (500) then success; retry on 500, attempts 3: 200"),
        Case(SAME, "/retry/code-500-attempts-3?responseCode=500&succeedAfter=4&uuid={uuid}", status=500,
             note="4 failures needed, attempts 3: the last 500 goes to the client"),
        Case(SAME, "/retry/code-500-attempts-3?responseCode=503&succeedAfter=2&uuid={uuid}", status=503,
             note="503 is not among the rule's codes: not retried"),
        *(c for code in (500, 502, 503, 504) for c in (
            Case(SAME, f"/retry/code-all-attempts-2?responseCode={code}&succeedAfter=1&uuid={{uuid}}",
                 namespace=INFRA, backend=V3, note=f"one {code} then success; attempts 2: 200"),
            Case(SAME, f"/retry/code-all-attempts-2?responseCode={code}&succeedAfter=3&uuid={{uuid}}",
                 status=code, note=f"3 failures needed, attempts 2: the last {code} goes to the client"))),
    ],
    "HTTPRouteRetryConnectionError": [
        Case(SAME, "/retry/no-status-code-attempts-3?succeedAfter=2&uuid={uuid}", namespace=INFRA, backend=V3,
             note="the echo resets the first 2 connections; retry with no codes (connection errors), attempts 3"),
        Case(SAME, "/retry/no-status-code-attempts-3?succeedAfter=4&uuid={uuid}", status=503,
             note="4 resets needed, attempts 3: upstream accepts 500 or 503 (kmesh answers 503, as Envoy)"),
    ],
    "HTTPRouteRetryWithTimeouts": [
        Case(SAME, "/retry/backend-request-timeout-200ms?responseCode=500&succeedAfter=2&delayRetry=300ms"
             "&uuid={uuid}", namespace=INFRA, backend=V3,
             note="each failing attempt takes 300ms, over the 200ms backendRequest timeout: retried; 200"),
        Case(SAME, "/retry/backend-request-timeout-200ms?responseCode=500&succeedAfter=3&delayRetry=300ms"
             "&uuid={uuid}", status=504, note="3 timeouts needed, attempts 2: 504"),
        Case(SAME, "/retry/request-timeout-200ms?responseCode=500&succeedAfter=1&uuid={uuid}", namespace=INFRA,
             backend=V3, note="one 500 then success within the 400ms request timeout: 200"),
        Case(SAME, "/retry/request-timeout-200ms?responseCode=500&succeedAfter=4&delayRetry=100ms&uuid={uuid}",
             status=504, note="4 failures of 100ms each and the backoffs pass the 400ms request timeout: 504"),
    ],
}

# (route ns/name, gateway ns/name, condition type, status, reason) as the tests assert them on the route's
# parent status for that Gateway.  Every GatewayAndHTTPRoutesMustBeAccepted also waits for a Gateway address
# and for every listener of the Gateway to be Accepted, ResolvedRefs and Programmed True (any reason).
STATUSES: dict[str, list[tuple[str, str, str, str, str]]] = {
    "HTTPRouteSimpleSameNamespace": [
        (f"{INFRA}/gateway-conformance-infra-test", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/gateway-conformance-infra-test", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteCrossNamespace": [
        (f"{WEB}/cross-namespace", f"{INFRA}/backend-namespaces", "Accepted", "True", "Accepted"),
        (f"{WEB}/cross-namespace", f"{INFRA}/backend-namespaces", "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteHostnameIntersection": [
        (f"{INFRA}/specific-host-matches-listener-specific-host", HI, "Accepted", "True", "Accepted"),
        (f"{INFRA}/specific-host-matches-listener-wildcard-host", HI, "Accepted", "True", "Accepted"),
        (f"{INFRA}/wildcard-host-matches-listener-specific-host", HI, "Accepted", "True", "Accepted"),
        (f"{INFRA}/wildcard-host-matches-listener-wildcard-host", HI, "Accepted", "True", "Accepted"),
        (f"{INFRA}/specific-host-matches-listener-specific-host", HI, "ResolvedRefs", "True", "ResolvedRefs"),
        (f"{INFRA}/specific-host-matches-listener-wildcard-host", HI, "ResolvedRefs", "True", "ResolvedRefs"),
        (f"{INFRA}/wildcard-host-matches-listener-specific-host", HI, "ResolvedRefs", "True", "ResolvedRefs"),
        (f"{INFRA}/wildcard-host-matches-listener-wildcard-host", HI, "ResolvedRefs", "True", "ResolvedRefs"),
        # the route's only parent status, its parentRef spelled with group, kind and namespace
        (f"{INFRA}/no-intersecting-hosts", HI, "Accepted", "False", "NoMatchingListenerHostname"),
        (f"{INFRA}/httproute-hostname-intersection-all", HI_ALL, "Accepted", "True", "Accepted"),
        (f"{INFRA}/httproute-hostname-intersection-all", HI_ALL, "ResolvedRefs", "True", "ResolvedRefs"),
        # Also asserted (Gateway status, not a route condition): on gateway httproute-hostname-intersection,
        # listener-1 attachedRoutes 2, listener-2 attachedRoutes 1, listener-3 attachedRoutes 1, each supporting
        # kind HTTPRoute (group gateway.networking.k8s.io) with Accepted and ResolvedRefs True (any reason).
    ],
    "HTTPRouteMatching": [
        (f"{INFRA}/matching", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/matching", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteMatchingAcrossRoutes": [
        (f"{INFRA}/matching-part1", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/matching-part2", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/matching-part1", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
        (f"{INFRA}/matching-part2", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteHeaderMatching": [
        (f"{INFRA}/header-matching", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/header-matching", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteQueryParamMatching": [
        (f"{INFRA}/query-param-matching", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/query-param-matching", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteMethodMatching": [
        (f"{INFRA}/method-matching", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/method-matching", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRoutePathMatchOrder": [
        (f"{INFRA}/path-matching-order", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/path-matching-order", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteExactPathMatching": [
        (f"{INFRA}/exact-matching", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/exact-matching", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteListenerHostnameMatching": [
        # Accepted is checked against parentRefs with sectionName listener-1 (backend-v1), listener-2
        # (backend-v2) and listener-3 / listener-4 (backend-v3).
        (f"{INFRA}/backend-v1", LHM, "Accepted", "True", "Accepted"),
        (f"{INFRA}/backend-v2", LHM, "Accepted", "True", "Accepted"),
        (f"{INFRA}/backend-v3", LHM, "Accepted", "True", "Accepted"),
        (f"{INFRA}/backend-v1", LHM, "ResolvedRefs", "True", "ResolvedRefs"),
        (f"{INFRA}/backend-v2", LHM, "ResolvedRefs", "True", "ResolvedRefs"),
        (f"{INFRA}/backend-v3", LHM, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteRequestHeaderModifier": [
        (f"{INFRA}/request-header-modifier", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/request-header-modifier", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteResponseHeaderModifier": [
        (f"{INFRA}/response-header-modifier", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/response-header-modifier", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteRedirectHostAndStatus": [
        (f"{INFRA}/redirect-host-and-status", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/redirect-host-and-status", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteRedirectPath": [
        (f"{INFRA}/redirect-path", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/redirect-path", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteRedirectPort": [
        (f"{INFRA}/redirect-port", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/redirect-port", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteRedirectScheme": [
        (f"{INFRA}/redirect-scheme", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/redirect-scheme", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteRewriteHost": [
        (f"{INFRA}/rewrite-host", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/rewrite-host", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteRewritePath": [
        (f"{INFRA}/rewrite-path", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/rewrite-path", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteInvalidBackendRefUnknownKind": [
        (f"{INFRA}/invalid-backend-ref-unknown-kind", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/invalid-backend-ref-unknown-kind", SAME, "ResolvedRefs", "False", "InvalidKind"),
    ],
    "HTTPRouteInvalidCrossNamespaceBackendRef": [
        (f"{INFRA}/invalid-cross-namespace-backend-ref", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/invalid-cross-namespace-backend-ref", SAME, "ResolvedRefs", "False", "RefNotPermitted"),
    ],
    "HTTPRouteInvalidNonExistentBackendRef": [
        (f"{INFRA}/invalid-nonexistent-backend-ref", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/invalid-nonexistent-backend-ref", SAME, "ResolvedRefs", "False", "BackendNotFound"),
    ],
    "HTTPRouteInvalidReferenceGrant": [
        (f"{INFRA}/reference-grant", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/reference-grant", SAME, "ResolvedRefs", "False", "RefNotPermitted"),
    ],
    "HTTPRouteReferenceGrant": [
        # both before the ReferenceGrant is deleted; nothing is asserted on the status afterwards
        (f"{INFRA}/reference-grant", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/reference-grant", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRoutePartiallyInvalidViaInvalidReferenceGrant": [
        (f"{INFRA}/invalid-reference-grant", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/invalid-reference-grant", SAME, "ResolvedRefs", "False", "RefNotPermitted"),
    ],
    "HTTPRouteNoBackendRefs": [
        (f"{INFRA}/omitted-backendrefs", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/omitted-backendrefs", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteWeight": [
        (f"{INFRA}/weighted-backends", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/weighted-backends", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    "HTTPRouteRequestMirror": [
        # upstream checks no ResolvedRefs condition for this test
        (f"{INFRA}/request-mirror", SAME, "Accepted", "True", "Accepted"),
    ],
    "HTTPRouteTimeoutRequest": [
        (f"{INFRA}/request-timeout", SAME, "Accepted", "True", "Accepted"),
        (f"{INFRA}/request-timeout", SAME, "ResolvedRefs", "True", "ResolvedRefs"),
    ],
    **{test: [(f"{INFRA}/{route}", SAME, "Accepted", "True", "Accepted"),
              (f"{INFRA}/{route}", SAME, "ResolvedRefs", "True", "ResolvedRefs")]
       for test, route in (("HTTPRouteRetry", "retries"), ("HTTPRouteRetryConnectionError", "retries-connection-error"),
                           ("HTTPRouteRetryWithTimeouts", "retries-with-timeouts"))},
}

MANIFESTS: dict[str, str] = {
    "HTTPRouteSimpleSameNamespace": "httproute-simple-same-namespace.yaml",
    "HTTPRouteCrossNamespace": "httproute-cross-namespace.yaml",
    "HTTPRouteHostnameIntersection": "httproute-hostname-intersection.yaml",
    "HTTPRouteMatching": "httproute-matching.yaml",
    "HTTPRouteMatchingAcrossRoutes": "httproute-matching-across-routes.yaml",
    "HTTPRouteHeaderMatching": "httproute-header-matching.yaml",
    "HTTPRouteQueryParamMatching": "httproute-query-param-matching.yaml",
    "HTTPRouteMethodMatching": "httproute-method-matching.yaml",
    "HTTPRoutePathMatchOrder": "httproute-path-match-order.yaml",
    "HTTPRouteExactPathMatching": "httproute-exact-path-matching.yaml",
    "HTTPRouteListenerHostnameMatching": "httproute-listener-hostname-matching.yaml",
    "HTTPRouteRequestHeaderModifier": "httproute-request-header-modifier.yaml",
    "HTTPRouteResponseHeaderModifier": "httproute-response-header-modifier.yaml",
    "HTTPRouteRedirectHostAndStatus": "httproute-redirect-host-and-status.yaml",
    "HTTPRouteRedirectPath": "httproute-redirect-path.yaml",
    "HTTPRouteRedirectPort": "httproute-redirect-port.yaml",
    "HTTPRouteRedirectScheme": "httproute-redirect-scheme.yaml",
    "HTTPRouteRewriteHost": "httproute-rewrite-host.yaml",
    "HTTPRouteRewritePath": "httproute-rewrite-path.yaml",
    "HTTPRouteInvalidBackendRefUnknownKind": "httproute-invalid-backendref-unknown-kind.yaml",
    "HTTPRouteInvalidCrossNamespaceBackendRef": "httproute-invalid-cross-namespace-backend-ref.yaml",
    "HTTPRouteInvalidNonExistentBackendRef": "httproute-invalid-nonexistent-backendref.yaml",
    "HTTPRouteInvalidReferenceGrant": "httproute-invalid-reference-grant.yaml",
    "HTTPRouteReferenceGrant": "httproute-reference-grant.yaml",
    "HTTPRoutePartiallyInvalidViaInvalidReferenceGrant": "httproute-partially-invalid-via-invalid-reference-grant.yaml",
    "HTTPRouteNoBackendRefs": "httproute-omitted-backendrefs.yaml",
    "HTTPRouteWeight": "httproute-weight.yaml",
    "HTTPRouteRequestMirror": "httproute-request-mirror.yaml",
    "HTTPRouteTimeoutRequest": "httproute-timeout-request.yaml",
    "HTTPRouteRetry": "httproute-retry.yaml",
    "HTTPRouteRetryConnectionError": "httproute-retry-connection-error.yaml",
    "HTTPRouteRetryWithTimeouts": "httproute-retry-with-timeouts.yaml",
}
