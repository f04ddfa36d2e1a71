"""Field tables of the Gateway API kinds (``gateway.networking.k8s.io``), standard channel v1.4.1
(plus the experimental ``retry`` of HTTPRoute rules).

kmesh serves them as built-in kinds: GatewayClass, Gateway and HTTPRoute in
v1 (and v1beta1, the same schema), ReferenceGrant in v1beta1. The field trees, required fields and the
OpenAPI constraints (enums, patterns, lengths, bounds, list keys, defaults)
are those of the CRDs' ``openAPIV3Schema``; struct names follow the Go types.
``RULES`` maps a struct name to ``{field: constraints}`` with the OpenAPI
keywords (``enum``, ``pattern``, ``minLength``/``maxLength``,
``minimum``/``maximum``, ``minItems``/``maxItems``, ``maxProperties``,
``default``, ``listType``/``listMapKeys``; ``items``/``values`` for the
elements of a list or map of scalars). ``kmesh.api.crdrules`` checks and
defaults objects with them; the CEL rules live in
``kmesh.api.validation.gateway``.
"""

from __future__ import annotations

from typing import Any

from kmesh.api.fieldschema import (
    INT32,
    META,
    STRING,
    STRUCTS,
    ListOf,
    MapOf,
    kind,
    refs,
    struct,
    top_level,
)

GROUP = "gateway.networking.k8s.io"
G = "io.k8s.networking.gateway.v1."
GB = "io.k8s.networking.gateway.v1beta1."
g, gb, m, top = refs(G), refs(GB), refs(META), top_level
TOP = {
    "GatewayClass": G + "GatewayClass",
    "Gateway": G + "Gateway",
    "HTTPRoute": G + "HTTPRoute",
    "ReferenceGrant": GB + "ReferenceGrant",
}
RULES: dict[str, dict[str, dict[str, Any]]] = {}

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# The constraints every object reference's fields share (group, kind, name, namespace, port).
GROUP_RULE = {"pattern": r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", "maxLength": 253}
KIND_RULE = {"pattern": r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$", "minLength": 1, "maxLength": 63}
NAME_RULE = {"minLength": 1, "maxLength": 253}
NAMESPACE_RULE = {"pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "minLength": 1, "maxLength": 63}
PORT_RULE = {"minimum": 1, "maximum": 65535}

struct(G + "ParametersReference", {
    "group": STRING,
    "kind": STRING,
    "name": STRING,
    "namespace": STRING,
}, required=('group', 'kind', 'name'))

RULES[G + "ParametersReference"] = {
    'group': GROUP_RULE,
    'kind': KIND_RULE,
    'name': NAME_RULE,
    'namespace': NAMESPACE_RULE,
}

struct(G + "GatewayClassSpec", {
    "controllerName": STRING,
    "description": STRING,
    "parametersRef": g("ParametersReference"),
}, required=('controllerName',))

RULES[G + "GatewayClassSpec"] = {'controllerName': {'pattern': "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\\/[A-Za-z0-9\\/\\-._~%!$&'()*+,;=:]+$",
                    'minLength': 1,
                    'maxLength': 253},
 'description': {'maxLength': 64}}

struct(G + "SupportedFeature", {
    "name": STRING,
}, required=('name',))

struct(G + "GatewayClassStatus", {
    "conditions": ListOf(m("Condition")),
    "supportedFeatures": ListOf(g("SupportedFeature")),
})

RULES[G + "GatewayClassStatus"] = {'conditions': {'maxItems': 8,
                'default': [{'lastTransitionTime': '1970-01-01T00:00:00Z',
                             'message': 'Waiting for controller',
                             'reason': 'Pending',
                             'status': 'Unknown',
                             'type': 'Accepted'}],
                'listType': 'map',
                'listMapKeys': ['type']},
 'supportedFeatures': {'maxItems': 64, 'listType': 'map', 'listMapKeys': ['name']}}

struct(G + "GatewaySpecAddresses", {
    "type": STRING,
    "value": STRING,
})

RULES[G + "GatewaySpecAddresses"] = {'type': {'pattern': "^Hostname|IPAddress|NamedAddress|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\\/[A-Za-z0-9\\/\\-._~%!$&'()*+,;=:]+$",
          'minLength': 1,
          'maxLength': 253,
          'default': 'IPAddress'},
 'value': {'maxLength': 253}}

struct(G + "LocalParametersReference", {
    "group": STRING,
    "kind": STRING,
    "name": STRING,
}, required=('group', 'kind', 'name'))

RULES[G + "LocalParametersReference"] = {
    'group': GROUP_RULE,
    'kind': KIND_RULE,
    'name': NAME_RULE,
}

struct(G + "GatewayInfrastructure", {
    "annotations": MapOf(STRING),
    "labels": MapOf(STRING),
    "parametersRef": g("LocalParametersReference"),
})

RULES[G + "GatewayInfrastructure"] = {'annotations': {'maxProperties': 8, 'values': {'minLength': 0, 'maxLength': 4096}},
 'labels': {'maxProperties': 8,
            'values': {'pattern': '^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$',
                       'minLength': 0,
                       'maxLength': 63}}}

struct(G + "RouteGroupKind", {
    "group": STRING,
    "kind": STRING,
}, required=('kind',))

RULES[G + "RouteGroupKind"] = {
    'group': {**GROUP_RULE, 'default': 'gateway.networking.k8s.io'},
    'kind': KIND_RULE,
}

struct(G + "GatewayLabelSelectorMatchExpressions", {
    "key": STRING,
    "operator": STRING,
    "values": ListOf(STRING),
}, required=('key', 'operator'))

struct(G + "GatewayLabelSelector", {
    "matchExpressions": ListOf(g("GatewayLabelSelectorMatchExpressions")),
    "matchLabels": MapOf(STRING),
})

struct(G + "RouteNamespaces", {
    "from": STRING,
    "selector": g("GatewayLabelSelector"),
})

RULES[G + "RouteNamespaces"] = {'from': {'enum': ['All', 'Selector', 'Same'], 'default': 'Same'}}

struct(G + "AllowedRoutes", {
    "kinds": ListOf(g("RouteGroupKind")),
    "namespaces": g("RouteNamespaces"),
})

RULES[G + "AllowedRoutes"] = {'kinds': {'maxItems': 8}, 'namespaces': {'default': {'from': 'Same'}}}

struct(G + "SecretObjectReference", {
    "group": STRING,
    "kind": STRING,
    "name": STRING,
    "namespace": STRING,
}, required=('name',))

RULES[G + "SecretObjectReference"] = {
    'group': {**GROUP_RULE, 'default': ''},
    'kind': {**KIND_RULE, 'default': 'Secret'},
    'name': NAME_RULE,
    'namespace': NAMESPACE_RULE,
}

struct(G + "ListenerTLSConfig", {
    "certificateRefs": ListOf(g("SecretObjectReference")),
    "mode": STRING,
    "options": MapOf(STRING),
})

RULES[G + "ListenerTLSConfig"] = {'certificateRefs': {'maxItems': 64},
 'mode': {'enum': ['Terminate', 'Passthrough'], 'default': 'Terminate'},
 'options': {'maxProperties': 16, 'values': {'minLength': 0, 'maxLength': 4096}}}

struct(G + "Listener", {
    "allowedRoutes": g("AllowedRoutes"),
    "hostname": STRING,
    "name": STRING,
    "port": INT32,
    "protocol": STRING,
    "tls": g("ListenerTLSConfig"),
}, required=('name', 'port', 'protocol'))

RULES[G + "Listener"] = {'allowedRoutes': {'default': {'namespaces': {'from': 'Same'}}},
 'hostname': {'pattern': HOSTNAME,
              'minLength': 1,
              'maxLength': 253},
 'name': {'pattern': DNS_SUBDOMAIN,
          'minLength': 1,
          'maxLength': 253},
 'port': {'minimum': 1, 'maximum': 65535},
 'protocol': {'pattern': '^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\\/[A-Za-z0-9]+$',
              'minLength': 1,
              'maxLength': 255}}

struct(G + "GatewaySpec", {
    "addresses": ListOf(g("GatewaySpecAddresses")),
    "gatewayClassName": STRING,
    "infrastructure": g("GatewayInfrastructure"),
    "listeners": ListOf(g("Listener")),
}, required=('gatewayClassName', 'listeners'))

RULES[G + "GatewaySpec"] = {'addresses': {'maxItems': 16},
 'gatewayClassName': {'minLength': 1, 'maxLength': 253},
 'listeners': {'minItems': 1, 'maxItems': 64, 'listType': 'map', 'listMapKeys': ['name']}}

struct(G + "GatewayStatusAddresses", {
    "type": STRING,
    "value": STRING,
}, required=('value',))

RULES[G + "GatewayStatusAddresses"] = {'type': {'pattern': "^Hostname|IPAddress|NamedAddress|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\\/[A-Za-z0-9\\/\\-._~%!$&'()*+,;=:]+$",
          'minLength': 1,
          'maxLength': 253,
          'default': 'IPAddress'},
 'value': {'minLength': 1, 'maxLength': 253}}

struct(G + "ListenerStatus", {
    "attachedRoutes": INT32,
    "conditions": ListOf(m("Condition")),
    "name": STRING,
    "supportedKinds": ListOf(g("RouteGroupKind")),
}, required=('attachedRoutes', 'conditions', 'name', 'supportedKinds'))

RULES[G + "ListenerStatus"] = {'conditions': {'maxItems': 8, 'listType': 'map', 'listMapKeys': ['type']},
 'name': {'pattern': DNS_SUBDOMAIN,
          'minLength': 1,
          'maxLength': 253},
 'supportedKinds': {'maxItems': 8}}

struct(G + "GatewayStatus", {
    "addresses": ListOf(g("GatewayStatusAddresses")),
    "conditions": ListOf(m("Condition")),
    "listeners": ListOf(g("ListenerStatus")),
})

RULES[G + "GatewayStatus"] = {'addresses': {'maxItems': 16},
 'conditions': {'maxItems': 8,
                'default': [{'lastTransitionTime': '1970-01-01T00:00:00Z',
                             'message': 'Waiting for controller',
                             'reason': 'Pending',
                             'status': 'Unknown',
                             'type': 'Accepted'},
                            {'lastTransitionTime': '1970-01-01T00:00:00Z',
                             'message': 'Waiting for controller',
                             'reason': 'Pending',
                             'status': 'Unknown',
                             'type': 'Programmed'}],
                'listType': 'map',
                'listMapKeys': ['type']},
 'listeners': {'maxItems': 64, 'listType': 'map', 'listMapKeys': ['name']}}

struct(G + "ParentReference", {
    "group": STRING,
    "kind": STRING,
    "name": STRING,
    "namespace": STRING,
    "port": INT32,
    "sectionName": STRING,
}, required=('name',))

RULES[G + "ParentReference"] = {
    'group': {**GROUP_RULE, 'default': 'gateway.networking.k8s.io'},
    'kind': {**KIND_RULE, 'default': 'Gateway'},
    'name': NAME_RULE,
    'namespace': NAMESPACE_RULE,
    'port': PORT_RULE,
    'sectionName': {'pattern': DNS_SUBDOMAIN, 'minLength': 1, 'maxLength': 253},
}

struct(G + "HTTPHeader", {
    "name": STRING,
    "value": STRING,
}, required=('name', 'value'))

RULES[G + "HTTPHeader"] = {'name': {'pattern': "^[A-Za-z0-9!#$%&'*+\\-.^_\\x60|~]+$", 'minLength': 1, 'maxLength': 256},
 'value': {'minLength': 1, 'maxLength': 4096}}

struct(G + "HTTPHeaderFilter", {
    "add": ListOf(g("HTTPHeader")),
    "remove": ListOf(STRING),
    "set": ListOf(g("HTTPHeader")),
})

RULES[G + "HTTPHeaderFilter"] = {'add': {'maxItems': 16, 'listType': 'map', 'listMapKeys': ['name']},
 'remove': {'maxItems': 16, 'listType': 'set'},
 'set': {'maxItems': 16, 'listType': 'map', 'listMapKeys': ['name']}}

struct(G + "BackendObjectReference", {
    "group": STRING,
    "kind": STRING,
    "name": STRING,
    "namespace": STRING,
    "port": INT32,
}, required=('name',))

RULES[G + "BackendObjectReference"] = {
    'group': {**GROUP_RULE, 'default': ''},
    'kind': {**KIND_RULE, 'default': 'Service'},
    'name': NAME_RULE,
    'namespace': NAMESPACE_RULE,
    'port': PORT_RULE,
}

struct(G + "Fraction", {
    "denominator": INT32,
    "numerator": INT32,
}, required=('numerator',))

RULES[G + "Fraction"] = {'denominator': {'minimum': 1, 'default': 100}, 'numerator': {'minimum': 0}}

struct(G + "HTTPRequestMirrorFilter", {
    "backendRef": g("BackendObjectReference"),
    "fraction": g("Fraction"),
    "percent": INT32,
}, required=('backendRef',))

RULES[G + "HTTPRequestMirrorFilter"] = {'percent': {'minimum': 0, 'maximum': 100}}

struct(G + "HTTPPathModifier", {
    "replaceFullPath": STRING,
    "replacePrefixMatch": STRING,
    "type": STRING,
}, required=('type',))

RULES[G + "HTTPPathModifier"] = {'replaceFullPath': {'maxLength': 1024},
 'replacePrefixMatch': {'maxLength': 1024},
 'type': {'enum': ['ReplaceFullPath', 'ReplacePrefixMatch']}}

struct(G + "HTTPRequestRedirectFilter", {
    "hostname": STRING,
    "path": g("HTTPPathModifier"),
    "port": INT32,
    "scheme": STRING,
    "statusCode": INT32,
})

RULES[G + "HTTPRequestRedirectFilter"] = {'hostname': {'pattern': DNS_SUBDOMAIN,
              'minLength': 1,
              'maxLength': 253},
 'port': {'minimum': 1, 'maximum': 65535},
 'scheme': {'enum': ['http', 'https']},
 'statusCode': {'enum': [301, 302, 303, 307, 308], 'default': 302}}

struct(G + "HTTPURLRewriteFilter", {
    "hostname": STRING,
    "path": g("HTTPPathModifier"),
})

RULES[G + "HTTPURLRewriteFilter"] = {'hostname': {'pattern': DNS_SUBDOMAIN,
              'minLength': 1,
              'maxLength': 253}}

struct(G + "HTTPRouteFilter", {
    "extensionRef": g("LocalParametersReference"),
    "requestHeaderModifier": g("HTTPHeaderFilter"),
    "requestMirror": g("HTTPRequestMirrorFilter"),
    "requestRedirect": g("HTTPRequestRedirectFilter"),
    "responseHeaderModifier": g("HTTPHeaderFilter"),
    "type": STRING,
    "urlRewrite": g("HTTPURLRewriteFilter"),
}, required=('type',))

RULES[G + "HTTPRouteFilter"] = {'type': {'enum': ['RequestHeaderModifier',
                   'ResponseHeaderModifier',
                   'RequestMirror',
                   'RequestRedirect',
                   'URLRewrite',
                   'ExtensionRef']}}

struct(G + "HTTPBackendRef", {
    "filters": ListOf(g("HTTPRouteFilter")),
    "group": STRING,
    "kind": STRING,
    "name": STRING,
    "namespace": STRING,
    "port": INT32,
    "weight": INT32,
}, required=('name',))

RULES[G + "HTTPBackendRef"] = {'filters': {'maxItems': 16},
 'group': {'pattern': '^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$',
           'maxLength': 253,
           'default': ''},
 'kind': {'pattern': '^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$',
          'minLength': 1,
          'maxLength': 63,
          'default': 'Service'},
 'name': {'minLength': 1, 'maxLength': 253},
 'namespace': {'pattern': '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$', 'minLength': 1, 'maxLength': 63},
 'port': {'minimum': 1, 'maximum': 65535},
 'weight': {'minimum': 0, 'maximum': 1000000, 'default': 1}}

struct(G + "HTTPHeaderMatch", {
    "name": STRING,
    "type": STRING,
    "value": STRING,
}, required=('name', 'value'))

RULES[G + "HTTPHeaderMatch"] = {'name': {'pattern': "^[A-Za-z0-9!#$%&'*+\\-.^_\\x60|~]+$", 'minLength': 1, 'maxLength': 256},
 'type': {'enum': ['Exact', 'RegularExpression'], 'default': 'Exact'},
 'value': {'minLength': 1, 'maxLength': 4096}}

struct(G + "HTTPPathMatch", {
    "type": STRING,
    "value": STRING,
})

RULES[G + "HTTPPathMatch"] = {'type': {'enum': ['Exact', 'PathPrefix', 'RegularExpression'], 'default': 'PathPrefix'},
 'value': {'maxLength': 1024, 'default': '/'}}

struct(G + "HTTPQueryParamMatch", {
    "name": STRING,
    "type": STRING,
    "value": STRING,
}, required=('name', 'value'))

RULES[G + "HTTPQueryParamMatch"] = {'name': {'pattern': "^[A-Za-z0-9!#$%&'*+\\-.^_\\x60|~]+$", 'minLength': 1, 'maxLength': 256},
 'type': {'enum': ['Exact', 'RegularExpression'], 'default': 'Exact'},
 'value': {'minLength': 1, 'maxLength': 1024}}

struct(G + "HTTPRouteMatch", {
    "headers": ListOf(g("HTTPHeaderMatch")),
    "method": STRING,
    "path": g("HTTPPathMatch"),
    "queryParams": ListOf(g("HTTPQueryParamMatch")),
})

RULES[G + "HTTPRouteMatch"] = {'headers': {'maxItems': 16, 'listType': 'map', 'listMapKeys': ['name']},
 'method': {'enum': ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']},
 'path': {'default': {'type': 'PathPrefix', 'value': '/'}},
 'queryParams': {'maxItems': 16, 'listType': 'map', 'listMapKeys': ['name']}}

struct(G + "HTTPRouteTimeouts", {
    "backendRequest": STRING,
    "request": STRING,
})

RULES[G + "HTTPRouteTimeouts"] = {'backendRequest': {'pattern': '^([0-9]{1,5}(h|m|s|ms)){1,4}$'},
 'request': {'pattern': '^([0-9]{1,5}(h|m|s|ms)){1,4}$'}}

# The experimental channel's retry policy (GEP-1731): kmesh serves it with the standard kinds, as the mesh's
# retries are one of its experiments (docs/differences.md).
struct(G + "HTTPRouteRetry", {
    "attempts": INT32,
    "backoff": STRING,
    "codes": ListOf(INT32),
})

RULES[G + "HTTPRouteRetry"] = {'attempts': {'minimum': 1},
 'backoff': {'pattern': '^([0-9]{1,5}(h|m|s|ms)){1,4}$'},
 'codes': {'listType': 'set', 'items': {'minimum': 400, 'maximum': 599}}}

struct(G + "HTTPRouteRule", {
    "backendRefs": ListOf(g("HTTPBackendRef")),
    "filters": ListOf(g("HTTPRouteFilter")),
    "matches": ListOf(g("HTTPRouteMatch")),
    "name": STRING,
    "retry": g("HTTPRouteRetry"),
    "timeouts": g("HTTPRouteTimeouts"),
})

RULES[G + "HTTPRouteRule"] = {'backendRefs': {'maxItems': 16},
 'filters': {'maxItems': 16},
 'matches': {'maxItems': 64, 'default': [{'path': {'type': 'PathPrefix', 'value': '/'}}]},
 'name': {'pattern': DNS_SUBDOMAIN,
          'minLength': 1,
          'maxLength': 253}}

struct(G + "HTTPRouteSpec", {
    "hostnames": ListOf(STRING),
    "parentRefs": ListOf(g("ParentReference")),
    "rules": ListOf(g("HTTPRouteRule")),
})

RULES[G + "HTTPRouteSpec"] = {'hostnames': {'maxItems': 16,
               'items': {'pattern': HOSTNAME,
                         'minLength': 1,
                         'maxLength': 253}},
 'parentRefs': {'maxItems': 32},
 'rules': {'maxItems': 16, 'default': [{'matches': [{'path': {'type': 'PathPrefix', 'value': '/'}}]}]}}

struct(G + "RouteParentStatus", {
    "conditions": ListOf(m("Condition")),
    "controllerName": STRING,
    "parentRef": g("ParentReference"),
}, required=('conditions', 'controllerName', 'parentRef'))

RULES[G + "RouteParentStatus"] = {'conditions': {'minItems': 1, 'maxItems': 8, 'listType': 'map', 'listMapKeys': ['type']},
 'controllerName': {'pattern': "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\\/[A-Za-z0-9\\/\\-._~%!$&'()*+,;=:]+$",
                    'minLength': 1,
                    'maxLength': 253}}

struct(G + "HTTPRouteStatus", {
    "parents": ListOf(g("RouteParentStatus")),
}, required=('parents',))

RULES[G + "HTTPRouteStatus"] = {'parents': {'maxItems': 32}}

struct(GB + "ReferenceGrantFrom", {
    "group": STRING,
    "kind": STRING,
    "namespace": STRING,
}, required=('group', 'kind', 'namespace'))

RULES[GB + "ReferenceGrantFrom"] = {
    'group': GROUP_RULE,
    'kind': KIND_RULE,
    'namespace': NAMESPACE_RULE,
}

struct(GB + "ReferenceGrantTo", {
    "group": STRING,
    "kind": STRING,
    "name": STRING,
}, required=('group', 'kind'))

RULES[GB + "ReferenceGrantTo"] = {
    'group': GROUP_RULE,
    'kind': KIND_RULE,
    'name': NAME_RULE,
}

struct(GB + "ReferenceGrantSpec", {
    "from": ListOf(gb("ReferenceGrantFrom")),
    "to": ListOf(gb("ReferenceGrantTo")),
}, required=('from', 'to'))

RULES[GB + "ReferenceGrantSpec"] = {'from': {'minItems': 1, 'maxItems': 16}, 'to': {'minItems': 1, 'maxItems': 16}}

struct(TOP['GatewayClass'], top({
    "spec": g("GatewayClassSpec"),
    "status": g("GatewayClassStatus"),
}), required=('spec',))
kind(GROUP, 'v1', 'GatewayClass', TOP['GatewayClass'])

RULES[TOP['GatewayClass']] = {'status': {'default': {'conditions': [{'lastTransitionTime': '1970-01-01T00:00:00Z',
                                        'message': 'Waiting for controller',
                                        'reason': 'Pending',
                                        'status': 'Unknown',
                                        'type': 'Accepted'}]}}}

struct(TOP['Gateway'], top({
    "spec": g("GatewaySpec"),
    "status": g("GatewayStatus"),
}), required=('spec',))
kind(GROUP, 'v1', 'Gateway', TOP['Gateway'])

RULES[TOP['Gateway']] = {'status': {'default': {'conditions': [{'lastTransitionTime': '1970-01-01T00:00:00Z',
                                        'message': 'Waiting for controller',
                                        'reason': 'Pending',
                                        'status': 'Unknown',
                                        'type': 'Accepted'},
                                       {'lastTransitionTime': '1970-01-01T00:00:00Z',
                                        'message': 'Waiting for controller',
                                        'reason': 'Pending',
                                        'status': 'Unknown',
                                        'type': 'Programmed'}]}}}

struct(TOP['HTTPRoute'], top({
    "spec": g("HTTPRouteSpec"),
    "status": g("HTTPRouteStatus"),
}), required=('spec',))
kind(GROUP, 'v1', 'HTTPRoute', TOP['HTTPRoute'])

struct(TOP['ReferenceGrant'], top({
    "spec": gb("ReferenceGrantSpec"),
}))
kind(GROUP, 'v1beta1', 'ReferenceGrant', TOP['ReferenceGrant'])
# ReferenceGrant graduated to v1 after v1.4 (the conformance tests' manifests use it): the same fields.
struct("io.k8s.networking.gateway.v1.ReferenceGrant", dict(STRUCTS[TOP['ReferenceGrant']].fields),
       STRUCTS[TOP['ReferenceGrant']].required)
kind(GROUP, "v1", "ReferenceGrant", "io.k8s.networking.gateway.v1.ReferenceGrant")

# v1beta1 GatewayClass, Gateway and HTTPRoute: the same fields (and the same constraints) as v1.
for _name in ("GatewayClass", "Gateway", "HTTPRoute"):
    _v1 = STRUCTS[TOP[_name]]
    struct(GB + _name, dict(_v1.fields), _v1.required)
    kind(GROUP, "v1beta1", _name, GB + _name)
