"""gateway.networking.k8s.io: GatewayClass, Gateway, HTTPRoute (v1) and ReferenceGrant (v1beta1).

Upstream these are CRDs, so an object is checked the way kube-apiserver
checks a custom resource: its metadata, then every OpenAPI constraint of the
standard-channel schema (``kmesh.api.crdrules`` with the tables of
``kmesh.api.schemas.gateway``), then the CEL rules the CRDs carry, written
out here by hand. A CEL failure reads as upstream's does:
``<path>: Invalid value: "object": <the rule's message>``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from kmesh.api import crdrules
from kmesh.api.errors import Cause
from kmesh.api.obj import Obj
from kmesh.api.validation.common import Opts, _d, _l, _s, forbidden, invalid
from kmesh.api.validation.meta import name_is_dns_subdomain, validate_object_meta, validate_object_meta_update

HOSTNAME_RE = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
PATH_CHARS_RE = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$")
DURATION_RE = re.compile(r"([0-9]{1,5})(ms|h|m|s)")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
FILTER_FIELDS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "ExtensionRef": "extensionRef",
}
MAX_TOTAL_MATCHES = 128


def cel(path: str, message: str, type_: str = "object") -> Cause:
    """A failed CEL rule on the node at ``path`` (whose schema type is ``type_``)."""
    return invalid(path, type_, message)


def duration_ms(value: str) -> int:
    """A Gateway API duration (``1h30m``, ``500ms``; already matched the schema's pattern) in milliseconds."""
    return sum(int(n) * _UNIT_MS[unit] for n, unit in DURATION_RE.findall(value))


def _schema(kind_name: str, obj: Obj) -> list[Cause]:
    from kmesh.api.schemas.gateway import RULES, TOP

    return crdrules.check_object(RULES, TOP[kind_name], obj)


# ---------------------------------------------------------------- GatewayClass


def validate_gateway_class(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new GatewayClass from being created."""
    errs = validate_object_meta(obj.get("metadata"), False, name_is_dns_subdomain)
    return errs + _schema("GatewayClass", obj)


def validate_gateway_class_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a GatewayClass: ``spec.controllerName`` never changes."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    errs += validate_gateway_class(new, opts)
    new_ctl, old_ctl = _d(new.get("spec")).get("controllerName"), _d(old.get("spec")).get("controllerName")
    if new_ctl != old_ctl:
        errs.append(cel("spec.controllerName", "Value is immutable", "string"))
    return errs


# ---------------------------------------------------------------- Gateway


def _listeners(listeners: list[Any]) -> list[Cause]:
    errs: list[Cause] = []
    path = "spec.listeners"
    ls = [_d(x) for x in listeners]
    if any(x.get("protocol") in ("HTTP", "TCP", "UDP") and "tls" in x for x in ls):
        errs.append(cel(path, "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']", "array"))
    if any(x.get("protocol") == "HTTPS" and "tls" in x and _d(x["tls"]).get("mode", "") not in ("", "Terminate")
           for x in ls):
        errs.append(cel(path, "tls mode must be Terminate for protocol HTTPS", "array"))
    if any(x.get("protocol") in ("TCP", "UDP") and x.get("hostname") for x in ls):
        errs.append(cel(path, "hostname must not be specified for protocols ['TCP', 'UDP']", "array"))
    names = [x.get("name") for x in ls]
    if len(set(map(str, names))) != len(names):
        errs.append(cel(path, "Listener name must be unique within the Gateway", "array"))
    combos = [(x.get("port"), x.get("protocol"), x.get("hostname")) for x in ls]
    if len(set(map(repr, combos))) != len(combos):
        errs.append(cel(path, "Combination of port, protocol and hostname must be unique for each listener", "array"))
    for i, x in enumerate(ls):
        # HTTPS and TLS listeners need ``tls`` (the rule of the Gateway API's former validating webhook).
        if x.get("protocol") in ("HTTPS", "TLS") and "tls" not in x:
            errs.append(forbidden(f"{path}[{i}].tls", f"must be set for protocol {x['protocol']}"))
        tls = x.get("tls")
        if isinstance(tls, dict) and tls.get("mode", "Terminate") == "Terminate":
            if not _l(tls.get("certificateRefs")) and not _d(tls.get("options")):
                errs.append(cel(f"{path}[{i}].tls", "certificateRefs or options must be specified when mode is "
                                                     "Terminate"))
    return errs


def _addresses(addresses: list[Any], path: str) -> list[Cause]:
    errs: list[Cause] = []
    addrs = [_d(a) for a in addresses]
    for atype, message in (("IPAddress", "IPAddress values must be unique"),
                           ("Hostname", "Hostname values must be unique")):
        values = [a["value"] for a in addrs if a.get("type") == atype and "value" in a]
        if len(set(values)) != len(values):
            errs.append(cel(path, message, "array"))
    for i, a in enumerate(addrs):
        if a.get("type") == "Hostname" and a.get("value") and not HOSTNAME_RE.match(_s(a["value"])):
            message = "Hostname value must be empty or contain only valid characters" if path.startswith("spec") \
                else "Hostname value must only contain valid characters"
            errs.append(cel(f"{path}[{i}]", f"{message} (matching {HOSTNAME_RE.pattern})"))
        # The schema's oneOf: an IPAddress value is an IPv4 (format ipv4) or IPv6 (format ipv6) address.
        value = a.get("value")
        if a.get("type") == "IPAddress" and isinstance(value, str) and not _is_ip(value):
            errs.append(invalid(f"{path}[{i}].value", value, f"{path}[{i}].value in body must be of type ipv4"))
    return errs


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def validate_gateway(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new Gateway from being created."""
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
    errs += _schema("Gateway", obj)
    spec = _d(obj.get("spec"))
    errs += _listeners(_l(spec.get("listeners")))
    errs += _addresses(_l(spec.get("addresses")), "spec.addresses")
    errs += _addresses(_l(_d(obj.get("status")).get("addresses")), "status.addresses")
    return errs


# ---------------------------------------------------------------- HTTPRoute


def _filter(f: Obj, path: str) -> list[Cause]:
    errs: list[Cause] = []
    ftype = f.get("type")
    for type_name, field_name in FILTER_FIELDS.items():
        if field_name in f and ftype != type_name:
            errs.append(cel(path, f"filter.{field_name} must be nil if the filter.type is not {type_name}"))
        if field_name not in f and ftype == type_name:
            errs.append(cel(path, f"filter.{field_name} must be specified for {type_name} filter.type"))
    mirror = f.get("requestMirror")
    if isinstance(mirror, dict):
        if "percent" in mirror and "fraction" in mirror:
            errs.append(cel(path + ".requestMirror",
                            "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter"))
        fraction = mirror.get("fraction")
        if isinstance(fraction, dict) and isinstance(fraction.get("numerator"), int) and \
                fraction["numerator"] > fraction.get("denominator", 100):
            errs.append(cel(path + ".requestMirror.fraction", "numerator must be less than or equal to denominator"))
        errs += _backend_ref(_d(mirror.get("backendRef")), path + ".requestMirror.backendRef")
    for key in ("requestRedirect", "urlRewrite"):
        modifier = _d(_d(f.get(key)).get("path"))
        if not modifier:
            continue
        mpath = f"{path}.{key}.path"
        for mtype, field_name in (("ReplaceFullPath", "replaceFullPath"), ("ReplacePrefixMatch", "replacePrefixMatch")):
            if modifier.get("type") == mtype and field_name not in modifier:
                errs.append(cel(mpath, f"{field_name} must be specified when type is set to '{mtype}'"))
            if field_name in modifier and modifier.get("type") != mtype:
                errs.append(cel(mpath, f"type must be '{mtype}' when {field_name} is set"))
    return errs


def _filters(filters: list[Any], path: str) -> list[Cause]:
    fs = [_d(f) for f in filters]
    types = [f.get("type") for f in fs]
    errs: list[Cause] = []
    if "RequestRedirect" in types and "URLRewrite" in types:
        errs.append(cel(path, "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, "
                              "but not both", "array"))
    for name in ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite"):
        if types.count(name) > 1:
            errs.append(cel(path, f"{name} filter cannot be repeated", "array"))
    for i, f in enumerate(fs):
        errs += _filter(f, f"{path}[{i}]")
    return errs


def _backend_ref(ref: Obj, path: str) -> list[Cause]:
    if ref and not _s(ref.get("group")) and ref.get("kind") == "Service" and ref.get("port") is None:
        return [cel(path, "Must have port for Service reference")]
    return []


def _replace_prefix(f: Obj, key: str) -> bool:
    modifier = _d(_d(f.get(key)).get("path"))
    return modifier.get("type") == "ReplacePrefixMatch" and "replacePrefixMatch" in modifier


def _one_prefix_match(rule: Obj) -> bool:
    matches = _l(rule.get("matches"))
    return len(matches) == 1 and _d(_d(matches[0]).get("path")).get("type") == "PathPrefix"


def _path_match(match: Obj, path: str) -> list[Cause]:
    pm = match.get("path")
    if isinstance(pm, dict) and pm.get("type") not in ("Exact", "PathPrefix", "RegularExpression"):
        return [cel(path + ".path", "type must be one of ['Exact', 'PathPrefix', 'RegularExpression']")]
    if not isinstance(pm, dict) or pm.get("type") not in ("Exact", "PathPrefix"):
        return []
    value, where = _s(pm.get("value")), path + ".path"
    suffix = "when type one of ['Exact', 'PathPrefix']"
    errs: list[Cause] = []
    if not value.startswith("/"):
        errs.append(cel(where, f"value must be an absolute path and start with '/' {suffix}"))
    for seq in ("//", "/./", "/../", "%2f", "%2F", "#"):
        if seq in value:
            errs.append(cel(where, f"must not contain '{seq}' {suffix}"))
    for suf in ("/..", "/."):
        if value.endswith(suf):
            errs.append(cel(where, f"must not end with '{suf}' {suffix}"))
    if not PATH_CHARS_RE.match(value):
        errs.append(cel(where, f"must only contain valid characters (matching {PATH_CHARS_RE.pattern}) "
                               "for types ['Exact', 'PathPrefix']"))
    return errs


def _rule(rule: Obj, path: str) -> list[Cause]:
    errs: list[Cause] = []
    filters = [_d(f) for f in _l(rule.get("filters"))]
    backends = [_d(b) for b in _l(rule.get("backendRefs"))]
    if backends and any("requestRedirect" in f for f in filters):
        errs.append(cel(path, "RequestRedirect filter must not be used together with backendRefs"))
    for key, name in (("requestRedirect", "RequestRedirect"), ("urlRewrite", "URLRewrite")):
        if sum(_replace_prefix(f, key) for f in filters) == 1 and not _one_prefix_match(rule):
            errs.append(cel(path, f"When using {name} filter with path.replacePrefixMatch, exactly one PathPrefix "
                                  "match must be specified"))
    for key, text in (("requestRedirect", "Within backendRefs, when using RequestRedirect"),
                      ("urlRewrite", "Within backendRefs, When using URLRewrite")):
        users = sum(1 for b in backends if sum(_replace_prefix(_d(f), key) for f in _l(b.get("filters"))) == 1)
        if users == 1 and not _one_prefix_match(rule):
            errs.append(cel(path, f"{text} filter with path.replacePrefixMatch, exactly one PathPrefix match must "
                                  "be specified"))
    for i, m in enumerate(_l(rule.get("matches"))):
        errs += _path_match(_d(m), f"{path}.matches[{i}]")
    errs += _filters(filters, path + ".filters")
    for i, b in enumerate(backends):
        errs += _backend_ref(b, f"{path}.backendRefs[{i}]")
        errs += _filters(_l(b.get("filters")), f"{path}.backendRefs[{i}].filters")
    timeouts = _d(rule.get("timeouts"))
    request, backend = timeouts.get("request"), timeouts.get("backendRequest")
    if isinstance(request, str) and isinstance(backend, str):
        req_ms, back_ms = duration_ms(request), duration_ms(backend)
        if req_ms != 0 and back_ms > req_ms:
            errs.append(cel(path + ".timeouts", "backendRequest timeout cannot be longer than request timeout"))
    return errs


def _same_parent(p1: Obj, p2: Obj) -> bool:
    return (p1.get("group") == p2.get("group") and p1.get("kind") == p2.get("kind")
            and p1.get("name") == p2.get("name") and _s(p1.get("namespace")) == _s(p2.get("namespace")))


def _parent_refs(refs: list[Any], path: str) -> list[Cause]:
    ps = [_d(p) for p in refs]
    errs: list[Cause] = []
    if any(_same_parent(a, b) and bool(_s(a.get("sectionName"))) != bool(_s(b.get("sectionName")))
           for a in ps for b in ps):
        errs.append(cel(path, "sectionName must be specified when parentRefs includes 2 or more references to the "
                              "same parent", "array"))
    if any(sum(1 for b in ps if _same_parent(a, b) and _s(a.get("sectionName")) == _s(b.get("sectionName"))) != 1
           for a in ps):
        errs.append(cel(path, "sectionName must be unique when parentRefs includes 2 or more references to the same "
                              "parent", "array"))
    return errs


def validate_httproute(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new HTTPRoute from being created."""
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
    errs += _schema("HTTPRoute", obj)
    spec = _d(obj.get("spec"))
    errs += _parent_refs(_l(spec.get("parentRefs")), "spec.parentRefs")
    rules = [_d(r) for r in _l(spec.get("rules"))]
    if sum(len(_l(r.get("matches"))) for r in rules[:16]) > MAX_TOTAL_MATCHES:
        errs.append(cel("spec.rules", "While 16 rules and 64 matches per rule are allowed, the total number of "
                                      "matches across all rules in a route must be less than 128", "array"))
    for i, r in enumerate(rules):
        errs += _rule(r, f"spec.rules[{i}]")
    return errs


def validate_route_status(obj: Obj, old: Obj, opts: Opts, kind_name: str) -> list[Cause]:
    """The problems that stop a status write of a Gateway API object (metadata, the schema, status addresses)."""
    errs = validate_object_meta_update(obj.get("metadata"), old.get("metadata")) + _schema(kind_name, obj)
    if kind_name == "Gateway":
        errs += _addresses(_l(_d(obj.get("status")).get("addresses")), "status.addresses")
    return errs


# ---------------------------------------------------------------- ReferenceGrant


def validate_reference_grant(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new ReferenceGrant from being created."""
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
    return errs + _schema("ReferenceGrant", obj)


def update_of(validate_fn: Any) -> Any:
    """An update check: the metadata update rules plus every create check of ``validate_fn``."""
    def fn(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
        return validate_object_meta_update(new.get("metadata"), old.get("metadata")) + validate_fn(new, opts)

    return fn


def status_update_of(kind_name: str) -> Any:
    """A status-write check of ``kind_name``."""
    def fn(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
        return validate_route_status(new, old, opts, kind_name)

    return fn
