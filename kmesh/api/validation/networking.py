"""networking.k8s.io/v1: Ingresses, IngressClasses and NetworkPolicies, with kube-apiserver 1.32's rules and messages.

An Ingress needs ``rules`` or a ``defaultBackend``; hosts are DNS subdomains
(a leading ``*.`` label allowed), never IP addresses; every path has a
``pathType`` (Exact, Prefix, ImplementationSpecific) and Exact/Prefix paths
are absolute without ``//``, ``/./``, ``/../``, ``%2f``; a backend is a
Service (name plus exactly one of port name and number) or a resource, not
both. An IngressClass names its controller with a domain-prefixed path that
never changes.

A NetworkPolicy's selectors are valid label selectors; each peer is an
``ipBlock`` alone or a pod and/or namespace selector; an ``ipBlock`` has a
CIDR and its ``except`` entries are CIDRs strictly inside it; a port has
protocol TCP, UDP or SCTP, a number (1-65535) or an IANA service name, and an
``endPort`` only after a numeric port it is not below; ``policyTypes`` are at
most two of Ingress and Egress.
"""

from __future__ import annotations

import re
from typing import Any

from kmesh.api.errors import Cause
from kmesh.api.formats import (
    HTTP_PATH_FMT,
    is_dns1123_subdomain,
    is_http_path,
    is_valid_port_name,
    is_valid_port_num,
    is_wildcard_dns1123_subdomain,
    regex_error,
)
from kmesh.api.obj import Obj
from kmesh.api.validation.common import (
    GoExpr,
    Opts,
    _d,
    _l,
    _s,
    forbidden,
    go_quote,
    immutable,
    invalid,
    not_supported,
    parse_cidr,
    parse_ip,
    required,
    too_long,
)
from kmesh.api.validation.meta import (
    name_is_dns1035_label,
    name_is_dns_label,
    name_is_dns_subdomain,
    name_is_path_segment,
    validate_label_selector,
    validate_object_meta,
    validate_object_meta_update,
)

PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")
INVALID_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
INVALID_PATH_SUFFIXES = ("/..", "/.")
INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
PARAMETER_SCOPES = ("Cluster", "Namespace")
MAX_CONTROLLER_LEN = 250
POLICY_TYPES = ("Ingress", "Egress")
NETWORK_POLICY_PROTOCOLS = ("TCP", "UDP", "SCTP")
_SELECTOR_VALUE = re.compile(r"\.matchExpressions\[\d+\]\.values\[\d+\]$")


def _typed_ref(ref: Obj, path: str) -> list[Cause]:
    errs: list[Cause] = []
    if ref.get("apiGroup") is not None:
        group = _s(ref.get("apiGroup"))
        errs += [invalid(path + ".apiGroup", group, m) for m in is_dns1123_subdomain(group)]
    for key in ("kind", "name"):
        value = _s(ref.get(key))
        if not value:
            errs.append(required(f"{path}.{key}", f"{key} is required"))
        else:
            errs += [invalid(f"{path}.{key}", value, m) for m in name_is_path_segment(value)]
    return errs


def _backend(backend: Obj, path: str) -> list[Cause]:
    service, resource = backend.get("service"), backend.get("resource")
    if service is not None and resource is not None:
        return [invalid(path, "", "cannot set both resource and service backends")]
    if resource is not None:
        return _typed_ref(_d(resource), path + ".resource")
    if service is None:
        return [invalid(path, "", "resource or service backend is required")]
    svc = _d(service)
    errs: list[Cause] = []
    name = _s(svc.get("name"))
    if not name:
        errs.append(required(path + ".service.name"))
    else:
        errs += [invalid(path + ".service.name", name, m) for m in name_is_dns1035_label(name)]
    port = _d(svc.get("port"))
    port_name, port_number = _s(port.get("name")), port.get("number") or 0
    if port_name and port_number:
        errs.append(invalid(path, "", "cannot set both port name & port number"))
    elif port_name:
        errs += [invalid(path + ".service.port.name", port_name, m) for m in is_valid_port_name(port_name)]
    elif port_number:
        errs += [invalid(path + ".service.port.number", port_number, m) for m in is_valid_port_num(port_number)]
    else:
        errs.append(required(path, "port name or number is required"))
    return errs


def _http_path(p: Obj, path: str) -> list[Cause]:
    ptype = p.get("pathType")
    if ptype is None:
        return [required(path + ".pathType", "pathType must be specified")]
    value = _s(p.get("path"))
    errs: list[Cause] = []
    if ptype in ("Exact", "Prefix"):
        if not value.startswith("/"):
            errs.append(invalid(path + ".path", value, "must be an absolute path"))
        if value:
            errs += [invalid(path + ".path", value, f"must not contain '{seq}'")
                     for seq in INVALID_PATH_SEQUENCES if seq in value]
            errs += [invalid(path + ".path", value, f"cannot end with '{suf}'")
                     for suf in INVALID_PATH_SUFFIXES if value.endswith(suf)]
    elif ptype == "ImplementationSpecific":
        if value and not value.startswith("/"):
            errs.append(invalid(path + ".path", value, "must be an absolute path"))
    else:
        errs.append(not_supported(path + ".pathType", ptype, PATH_TYPES))
    return errs + _backend(_d(p.get("backend")), path + ".backend")


def _host_errors(host: str, path: str) -> list[Cause]:
    if "*" in host:
        return [invalid(path, host, m) for m in is_wildcard_dns1123_subdomain(host)]
    return [invalid(path, host, m) for m in is_dns1123_subdomain(host)]


def _rules(rules: list[Any], path: str) -> list[Cause]:
    errs: list[Cause] = []
    for i, rule in enumerate(rules):
        rule, where = _d(rule), f"{path}[{i}]"
        host = _s(rule.get("host"))
        if host:
            if parse_ip(host) is not None:
                errs.append(invalid(where + ".host", host, "must be a DNS name, not an IP address"))
            errs += _host_errors(host, where + ".host")
        http = rule.get("http")
        if http is not None:
            paths = _l(_d(http).get("paths"))
            if not paths:
                errs.append(required(where + ".http.paths"))
            for j, p in enumerate(paths):
                errs += _http_path(_d(p), f"{where}.http.paths[{j}]")
    return errs


def _tls(tls: list[Any], path: str) -> list[Cause]:
    errs: list[Cause] = []
    for i, entry in enumerate(tls):
        entry = _d(entry)
        for j, host in enumerate(_l(entry.get("hosts"))):
            errs += _host_errors(_s(host), f"{path}[{i}].hosts[{j}]")
        secret = _s(entry.get("secretName"))
        if secret:
            errs += [invalid(f"{path}[{i}].secretName", secret, m) for m in name_is_dns_subdomain(secret)]
    return errs


def validate_ingress(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new Ingress from being created."""
    md = _d(obj.get("metadata"))
    errs = validate_object_meta(md, True, name_is_dns_subdomain)
    spec = _d(obj.get("spec"))
    rules = _l(spec.get("rules"))
    if not rules and spec.get("defaultBackend") is None:
        errs.append(invalid("spec", GoExpr("[]networking.IngressRule(nil)"),
                            "either `defaultBackend` or `rules` must be specified"))
    if spec.get("defaultBackend") is not None:
        errs += _backend(_d(spec["defaultBackend"]), "spec.defaultBackend")
    errs += _rules(rules, "spec.rules")
    errs += _tls(_l(spec.get("tls")), "spec.tls")
    class_name = spec.get("ingressClassName")
    if class_name is not None:
        errs += [invalid("spec.ingressClassName", _s(class_name), m) for m in name_is_dns_subdomain(_s(class_name))]
        annotations = _d(md.get("annotations"))
        if _s(class_name) and INGRESS_CLASS_ANNOTATION in annotations:
            errs.append(invalid(f"annotations.{INGRESS_CLASS_ANNOTATION}", _s(annotations[INGRESS_CLASS_ANNOTATION]),
                                "can not be set when the class field is also set"))
    return errs


def validate_ingress_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of an Ingress (its metadata rules plus every create check but the
    class annotation, which upstream checks on create only)."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    return errs + [c for c in validate_ingress(new, opts) if not c["field"].startswith("annotations.")]


def validate_ingress_status_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a write of an Ingress's status: addresses are IPs, hostnames are no IPs."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    lb = _d(_d(new.get("status")).get("loadBalancer"))
    for i, ing in enumerate(_l(lb.get("ingress"))):
        ing, where = _d(ing), f"status.loadBalancer.ingress[{i}]"
        ip, hostname = _s(ing.get("ip")), _s(ing.get("hostname"))
        if ip and parse_ip(ip) is None:
            errs.append(invalid(where + ".ip", ip, "must be a valid IP address"))
        if hostname:
            errs += [invalid(where + ".hostname", hostname, m) for m in is_dns1123_subdomain(hostname)]
            if parse_ip(hostname) is not None:
                errs.append(invalid(where + ".hostname", hostname, "must be a DNS name, not an IP address"))
    return errs


def _controller(value: str, path: str) -> list[Cause]:
    """``IsDomainPrefixedPath``."""
    if not value:
        return [required(path)]
    host, sep, rest = value.partition("/")
    if not sep or not host or not rest:
        return [invalid(path, value, 'must be a domain-prefixed path (such as "acme.io/foo")')]
    errs = [invalid(path, host, m) for m in is_dns1123_subdomain(host)]
    if not is_http_path(rest):
        errs.append(invalid(path, rest, regex_error("Invalid path", HTTP_PATH_FMT)))
    return errs


def validate_ingress_class(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new IngressClass from being created."""
    errs = validate_object_meta(obj.get("metadata"), False, name_is_dns_subdomain)
    spec = _d(obj.get("spec"))
    controller = _s(spec.get("controller"))
    if len(controller) > MAX_CONTROLLER_LEN:
        errs.append(too_long("spec.controller", MAX_CONTROLLER_LEN))
    errs += _controller(controller, "spec.controller")
    params = spec.get("parameters")
    if params is not None:
        params = _d(params)
        errs += _typed_ref(params, "spec.parameters")
        scope = params.get("scope")
        if scope is None:
            errs.append(required("spec.parameters.scope"))
        elif scope not in PARAMETER_SCOPES:
            errs.append(not_supported("spec.parameters.scope", scope, PARAMETER_SCOPES))
        elif scope == "Namespace":
            ns = params.get("namespace")
            if ns is None:
                errs.append(required("spec.parameters.namespace", "`parameters.scope` is set to 'Namespace'"))
            else:
                errs += [invalid("spec.parameters.namespace", _s(ns), m) for m in name_is_dns_label(_s(ns))]
        elif params.get("namespace") is not None:
            errs.append(forbidden("spec.parameters.namespace", "`parameters.scope` is set to 'Cluster'"))
    return errs


def validate_ingress_class_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of an IngressClass: its controller never changes."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    errs += immutable("spec.controller", _s(_d(new.get("spec")).get("controller")),
                      _s(_d(old.get("spec")).get("controller")))
    return errs + validate_ingress_class(new, opts)


# ======================================================================
# NetworkPolicy
# ======================================================================


def _np_port(port: Obj, path: str) -> list[Cause]:
    """``ValidateNetworkPolicyPort``."""
    errs: list[Cause] = []
    protocol = port.get("protocol")
    if protocol is not None and protocol not in NETWORK_POLICY_PROTOCOLS:
        errs.append(not_supported(path + ".protocol", protocol, NETWORK_POLICY_PROTOCOLS))
    number, end = port.get("port"), port.get("endPort")
    if number is not None:
        if isinstance(number, int) and not isinstance(number, bool):
            errs += [invalid(path + ".port", number, m) for m in is_valid_port_num(number)]
            if end is not None:
                if isinstance(end, int) and end < number:
                    errs.append(invalid(path + ".endPort", end, "must be greater than or equal to `port`"))
                errs += [invalid(path + ".endPort", end, m) for m in is_valid_port_num(end)]
        else:
            if end is not None:
                errs.append(invalid(path + ".endPort", end, "may not be specified when `port` is non-numeric"))
            errs += [invalid(path + ".port", _s(number), m) for m in is_valid_port_name(_s(number))]
    elif end is not None:
        errs.append(invalid(path + ".endPort", end, "may not be specified when `port` is not specified"))
    return errs


def _ip_block(block: Obj, path: str) -> list[Cause]:
    """``ValidateIPBlock`` (1.32: the first unparsable CIDR ends the checks)."""
    cidr = _s(block.get("cidr"))
    if not cidr:
        return [required(path + ".cidr")]
    net = parse_cidr(cidr)
    if net is None:
        return [invalid(path + ".cidr", cidr, "not a valid CIDR")]
    errs: list[Cause] = []
    for i, value in enumerate(_l(block.get("except"))):
        where, value = f"{path}.except[{i}]", _s(value)
        inner = parse_cidr(value)
        if inner is None:
            return errs + [invalid(where, value, "not a valid CIDR")]
        if inner.network_address not in net or net.prefixlen >= inner.prefixlen:
            errs.append(invalid(where, value, "must be a strict subset of `cidr`"))
    return errs


def _np_peer(peer: Obj, path: str) -> list[Cause]:
    """``ValidateNetworkPolicyPeer``: an ipBlock alone, or a pod and/or a namespace selector."""
    errs: list[Cause] = []
    peers = 0
    for key in ("podSelector", "namespaceSelector"):
        if peer.get(key) is not None:
            peers += 1
            errs += validate_label_selector(peer[key], f"{path}.{key}")
    if peer.get("ipBlock") is not None:
        peers += 1
        errs += _ip_block(_d(peer["ipBlock"]), path + ".ipBlock")
    if peers == 0:
        errs.append(required(path, "must specify a peer"))
    elif peers > 1 and peer.get("ipBlock") is not None:
        errs.append(forbidden(path, "may not specify both ipBlock and another peer"))
    return errs


def validate_network_policy_spec(spec: Obj, path: str = "spec") -> list[Cause]:
    """``ValidateNetworkPolicySpec``: the pod selector, each rule's ports then peers, then the policy types."""
    errs = validate_label_selector(_d(spec.get("podSelector")), path + ".podSelector")
    for rules, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(_l(spec.get(rules))):
            rule, where = _d(rule), f"{path}.{rules}[{i}]"
            for j, port in enumerate(_l(rule.get("ports"))):
                errs += _np_port(_d(port), f"{where}.ports[{j}]")
            for j, peer in enumerate(_l(rule.get(peers))):
                errs += _np_peer(_d(peer), f"{where}.{peers}[{j}]")
    types = _l(spec.get("policyTypes"))
    if len(types) > len(POLICY_TYPES):
        shown = GoExpr("[]networking.PolicyType{" + ", ".join(go_quote(_s(t)) for t in types) + "}")
        return errs + [invalid(path + ".policyTypes", shown, "may not specify more than two policyTypes")]
    for i, ptype in enumerate(types):
        if ptype not in POLICY_TYPES:
            errs.append(not_supported(f"{path}.policyTypes[{i}]", ptype, POLICY_TYPES))
    return errs


def validate_network_policy(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new NetworkPolicy from being created."""
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
    return errs + validate_network_policy_spec(_d(obj.get("spec")))


def validate_network_policy_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a NetworkPolicy: the create checks on the new object and the metadata
    rules. As upstream, a stored policy whose pod selector has a value that is no valid label value may keep such
    values in its selectors (``AllowInvalidLabelValueInSelector``)."""
    errs = validate_network_policy(new, opts) + validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    if validate_label_selector(_d(_d(old.get("spec")).get("podSelector")), "spec.podSelector"):
        errs = [c for c in errs if not (c["reason"] == "FieldValueInvalid" and _SELECTOR_VALUE.search(c["field"]))]
    return errs
