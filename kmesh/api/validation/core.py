"""The rest of core/v1: Services, Endpoints, Namespaces, Nodes, ConfigMaps and Events.
"""

from __future__ import annotations

from typing import Any

from kmesh.api import errors
from kmesh.api.errors import Cause
from kmesh.api.formats import (
    _blen,
    is_config_map_key,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_value,
    is_qualified_name,
    is_valid_port_num,
)
from kmesh.api.meta import parse_quantity
from kmesh.api.obj import Obj
from kmesh.api.validation.common import (
    FIELD_IMMUTABLE,
    IS_NEGATIVE,
    MAX_CLIENT_IP_AFFINITY_SECONDS,
    MAX_CONFIGMAP_SIZE,
    GoExpr,
    Opts,
    _d,
    _int,
    _l,
    _num,
    _s,
    duplicate,
    forbidden,
    go_quote,
    go_value,
    invalid,
    not_supported,
    parse_cidr,
    parse_ip,
    required,
    too_long,
    validate_cidr,
    validate_ip,
    validate_non_special_ip,
)
from kmesh.api.validation.meta import (
    _validate_kube_finalizer_name,
    name_is_dns1035_label,
    name_is_dns_label,
    name_is_dns_subdomain,
    name_is_path_segment,
    validate_label_name,
    validate_labels,
    validate_object_meta,
    validate_object_meta_update,
)
from kmesh.api.validation.pod import _QUANTITY_ERR, PROTOCOLS, TAINT_EFFECTS, _int_or_string_port

SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
SESSION_AFFINITIES = ("ClientIP", "None")
TRAFFIC_POLICIES = ("Cluster", "Local")
IP_FAMILIES = ("IPv4", "IPv6")
IP_FAMILY_POLICIES = ("PreferDualStack", "RequireDualStack", "SingleStack")


def _cluster_ips(spec: Obj) -> list[str]:
    ips = spec.get("clusterIPs")
    if isinstance(ips, list) and ips:
        return [_s(i) for i in ips]
    cip = _s(spec.get("clusterIP"))
    return [cip] if cip else []


def _is_headless(spec: Obj) -> bool:
    ips = _cluster_ips(spec)
    return len(ips) == 1 and ips[0] == "None"


def _externally_accessible(spec: Obj) -> bool:
    t = spec.get("type")
    return t in ("LoadBalancer", "NodePort") or (t == "ClusterIP" and bool(_l(spec.get("externalIPs"))))


def _go_service_port(protocol: str, port: int) -> GoExpr:
    return GoExpr(
        "core.ServicePort{Name:\"\", Protocol:" + go_quote(protocol) + ", AppProtocol:(*string)(nil), Port:"
        + str(port) + ", TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}"
    )


def _validate_service_port(sp: Obj, require_name: bool, names: set[str], path: str) -> list[Cause]:
    errs: list[Cause] = []
    nm = _s(sp.get("name"))
    if require_name and not nm:
        errs.append(required(path + ".name"))
    elif nm:
        errs += [invalid(path + ".name", nm, m) for m in is_dns1123_label(nm)]
        if nm in names:
            errs.append(duplicate(path + ".name", nm))
        else:
            names.add(nm)
    port = _int(sp.get("port"))
    errs += [invalid(path + ".port", _num(sp.get("port")), m) for m in is_valid_port_num(port)]
    proto = _s(sp.get("protocol"))
    if not proto:
        errs.append(required(path + ".protocol"))
    elif proto not in PROTOCOLS:
        errs.append(not_supported(path + ".protocol", proto, PROTOCOLS))
    errs += _int_or_string_port(sp.get("targetPort"), path + ".targetPort")
    if sp.get("appProtocol") is not None:
        ap = _s(sp.get("appProtocol"))
        errs += [invalid(path + ".appProtocol", ap, m) for m in is_qualified_name(ap)]
    return errs


def _validate_cluster_ips(spec: Obj) -> list[Cause]:
    if spec.get("type") == "ExternalName":
        return []
    errs: list[Cause] = []
    cip = _s(spec.get("clusterIP"))
    explicit = spec.get("clusterIPs")
    ips = _cluster_ips(spec)
    if cip:
        if isinstance(explicit, list) and explicit and _s(explicit[0]) != cip:
            errs.append(invalid("spec.clusterIPs", ips, "first value must match `clusterIP`"))
    elif isinstance(explicit, list) and explicit:
        errs.append(invalid("spec.clusterIPs", ips, "must be empty when `clusterIP` is not specified"))
    seen: set[str] = set()
    for i, fam in enumerate(_l(spec.get("ipFamilies"))):
        fam = _s(fam)
        if fam not in IP_FAMILIES:
            errs.append(not_supported(f"spec.ipFamilies[{i}]", fam, IP_FAMILIES))
        if fam in seen:
            errs.append(duplicate(f"spec.ipFamilies[{i}]", fam))
        seen.add(fam)
    policy = spec.get("ipFamilyPolicy")
    if policy is not None and policy not in IP_FAMILY_POLICIES:
        errs.append(not_supported("spec.ipFamilyPolicy", _s(policy), IP_FAMILY_POLICIES))
    bad = False
    for i, ip in enumerate(ips):
        if i == 0 and ip == "None":
            if len(ips) > 1:
                bad = True
                errs.append(invalid("spec.clusterIPs", ips, "'None' must be the first and only value"))
            continue
        e = validate_ip(f"spec.clusterIPs[{i}]", ip)
        bad = bad or bool(e)
        errs += e
    if len(ips) > 2:
        errs.append(invalid("spec.clusterIPs", ips, "may only hold up to 2 values"))
    if bad:
        return errs
    if len(ips) > 1:
        versions = [p.version for p in (parse_ip(ip) for ip in ips) if p]
        if len(set(versions)) != len(versions):
            errs.append(invalid("spec.clusterIPs", ips, "may specify no more than one IP for each IP family"))
    families = [_s(f) for f in _l(spec.get("ipFamilies"))]
    if not _is_headless(spec) and ips and families:
        for i, ip in enumerate(ips[: len(families)]):
            parsed = parse_ip(ip)
            is6 = parsed is not None and parsed.version == 6
            if families[i] == "IPv4" and is6:
                errs.append(invalid(f"spec.clusterIPs[{i}]", ip, f"expected an IPv4 value as indicated by `ipFamilies[{i}]`"))
            if families[i] == "IPv6" and not is6:
                errs.append(invalid(f"spec.clusterIPs[{i}]", ip, f"expected an IPv6 value as indicated by `ipFamilies[{i}]`"))
    return errs


def validate_service(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new Service from being created."""
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns1035_label)
    spec = _d(obj.get("spec"))
    stype = _s(spec.get("type"))
    ports = [_d(p) for p in _l(spec.get("ports"))]
    headless = _is_headless(spec)
    annotations = _d(_d(obj.get("metadata")).get("annotations"))
    hints = annotations.get("service.kubernetes.io/topology-aware-hints")
    mode = annotations.get("service.kubernetes.io/topology-mode")
    if hints is not None and mode is not None and hints != mode:
        errs.append(
            invalid(
                "metadata.annotations[service.kubernetes.io/topology-mode]",
                _s(mode),
                "must match annotations[service.kubernetes.io/topology-aware-hints] when both are specified",
            )
        )
    if not ports and not headless and stype != "ExternalName":
        errs.append(required("spec.ports"))
    ips = _cluster_ips(spec)
    if stype == "LoadBalancer" and headless:
        errs.append(invalid("spec.clusterIPs[0]", ips[0], "may not be set to 'None' for LoadBalancer services"))
    elif stype == "NodePort" and headless:
        errs.append(invalid("spec.clusterIPs[0]", ips[0], "may not be set to 'None' for NodePort services"))
    elif stype == "ExternalName":
        if ips:
            errs.append(forbidden("spec.clusterIPs", "may not be set for ExternalName services"))
        if _l(spec.get("ipFamilies")):
            errs.append(forbidden("spec.ipFamilies", "may not be set for ExternalName services"))
        if spec.get("ipFamilyPolicy") is not None:
            errs.append(forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services"))
        cname = _s(spec.get("externalName"))
        cname = cname[:-1] if cname.endswith(".") else cname
        if cname:
            errs += [invalid("spec.externalName", cname, m) for m in is_dns1123_subdomain(cname)]
        else:
            errs.append(required("spec.externalName"))
    names: set[str] = set()
    for i, p in enumerate(ports):
        errs += _validate_service_port(p, len(ports) > 1, names, f"spec.ports[{i}]")
    if spec.get("selector") is not None:
        errs += validate_labels(spec.get("selector"), "spec.selector")
    aff = _s(spec.get("sessionAffinity"))
    if not aff:
        errs.append(required("spec.sessionAffinity"))
    elif aff not in SESSION_AFFINITIES:
        errs.append(not_supported("spec.sessionAffinity", aff, SESSION_AFFINITIES))
    if aff == "ClientIP":
        cfg = spec.get("sessionAffinityConfig")
        cp = "spec.sessionAffinityConfig"
        detail = "when session affinity type is ClientIP"
        if cfg is None:
            errs.append(required(cp, detail))
        elif _d(cfg).get("clientIP") is None:
            errs.append(required(cp + ".clientIP", detail))
        elif _d(_d(cfg)["clientIP"]).get("timeoutSeconds") is None:
            errs.append(required(cp + ".clientIP.timeoutSeconds", detail))
        else:
            t = _num(_d(_d(cfg)["clientIP"]).get("timeoutSeconds"))
            if t <= 0 or t > MAX_CLIENT_IP_AFFINITY_SECONDS:
                errs.append(
                    invalid(cp + ".clientIP.timeoutSeconds", t, f"must be greater than 0 and less than {MAX_CLIENT_IP_AFFINITY_SECONDS}")
                )
    elif aff == "None" and spec.get("sessionAffinityConfig") is not None:
        errs.append(forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None"))
    errs += _validate_cluster_ips(spec)
    for i, ip in enumerate(_l(spec.get("externalIPs"))):
        e = validate_ip(f"spec.externalIPs[{i}]", ip)
        errs += e or validate_non_special_ip(f"spec.externalIPs[{i}]", ip)
    if not stype:
        errs.append(required("spec.type"))
    elif stype not in SERVICE_TYPES:
        errs.append(not_supported("spec.type", stype, SERVICE_TYPES))
    if stype == "ClusterIP":
        for i, p in enumerate(ports):
            if _num(p.get("nodePort")) != 0:
                errs.append(forbidden(f"spec.ports[{i}].nodePort", "may not be used when `type` is 'ClusterIP'"))
    else:
        # Only the port range here; the 30000-32767 NodePort range is the allocator's check.
        for i, p in enumerate(ports):
            np_ = _num(p.get("nodePort"))
            if np_ != 0:
                errs += [invalid(f"spec.ports[{i}].nodePort", np_, m) for m in is_valid_port_num(np_)]
    node_ports: set[tuple[str, int]] = set()
    for i, p in enumerate(ports):
        np_ = _num(p.get("nodePort"))
        if np_ == 0:
            continue
        key = (_s(p.get("protocol")), np_)
        if key in node_ports:
            errs.append(duplicate(f"spec.ports[{i}].nodePort", np_))
        node_ports.add(key)
    port_keys: set[tuple[str, int]] = set()
    for i, p in enumerate(ports):
        key = (_s(p.get("protocol")), _num(p.get("port")))
        if key in port_keys:
            errs.append(duplicate(f"spec.ports[{i}]", _go_service_port(*key)))
        port_keys.add(key)
    ranges = _l(spec.get("loadBalancerSourceRanges"))
    if ranges:
        if stype != "LoadBalancer":
            errs.append(forbidden("spec.LoadBalancerSourceRanges", "may only be used when `type` is 'LoadBalancer'"))
        for i, r in enumerate(ranges):
            errs += validate_cidr(f"spec.LoadBalancerSourceRanges[{i}]", _s(r).strip())
    elif "service.beta.kubernetes.io/load-balancer-source-ranges" in annotations:
        fp = "metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]"
        if stype != "LoadBalancer":
            errs.append(forbidden(fp, "may only be used when `type` is 'LoadBalancer'"))
        val = _s(annotations["service.beta.kubernetes.io/load-balancer-source-ranges"]).strip()
        if val:
            for r in val.split(","):
                errs += validate_cidr(fp, r.strip())
    if spec.get("allocateLoadBalancerNodePorts") is not None and stype != "LoadBalancer":
        errs.append(forbidden("spec.allocateLoadBalancerNodePorts", "may only be used when `type` is 'LoadBalancer'"))
    if stype == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        errs.append(required("allocateLoadBalancerNodePorts"))
    lbc = spec.get("loadBalancerClass")
    if lbc is not None:
        if stype == "LoadBalancer":
            errs += [invalid("spec.loadBalancerClass", _s(lbc), m) for m in is_qualified_name(_s(lbc))]
        else:
            errs.append(forbidden("spec.loadBalancerClass", "may only be used when `type` is 'LoadBalancer'"))
    etp = _s(spec.get("externalTrafficPolicy"))
    if not _externally_accessible(spec):
        if etp:
            errs.append(invalid("spec.externalTrafficPolicy", etp, "may only be set for externally-accessible services"))
    elif not etp:
        errs.append(required("spec.externalTrafficPolicy"))
    elif etp not in TRAFFIC_POLICIES:
        errs.append(not_supported("spec.externalTrafficPolicy", etp, TRAFFIC_POLICIES))
    hc = _num(spec.get("healthCheckNodePort"))
    needs_hc = stype == "LoadBalancer" and etp == "Local"
    if not needs_hc and hc != 0:
        errs.append(
            invalid("spec.healthCheckNodePort", hc, "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")
        )
    elif needs_hc and hc != 0:
        errs += [invalid("spec.healthCheckNodePort", hc, m) for m in is_valid_port_num(hc)]
    itp = spec.get("internalTrafficPolicy")
    if itp is None:
        if stype in ("NodePort", "LoadBalancer", "ClusterIP"):
            errs.append(required("spec.internalTrafficPolicy"))
    elif itp not in TRAFFIC_POLICIES:
        errs.append(not_supported("spec.internalTrafficPolicy", _s(itp), TRAFFIC_POLICIES))
    td = spec.get("trafficDistribution")
    if td is not None and td != "PreferClose":
        errs.append(not_supported("spec.trafficDistribution", _s(td), ("PreferClose",)))
    return errs


def validate_service_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a Service."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    spec, old_spec = _d(new.get("spec")), _d(old.get("spec"))
    if spec.get("type") != "ExternalName" and old_spec.get("type") != "ExternalName":
        ips, old_ips = _cluster_ips(spec), _cluster_ips(old_spec)
        if not (_is_headless(spec) and _is_headless(old_spec)):
            if len(ips) == len(old_ips):
                for i, ip in enumerate(old_ips):
                    if ip != ips[i]:
                        errs.append(invalid(f"spec.clusterIPs[{i}]", ips, "may not change once set"))
            elif len(old_ips) > len(ips):
                if not ips:
                    errs.append(invalid("spec.clusterIPs[0]", ips, "primary clusterIP can not be unset"))
                elif old_ips and ips[0] != old_ips[0]:
                    errs.append(invalid("spec.clusterIPs[0]", ips, "may not change once set"))
                if len(ips) == 1 and spec.get("ipFamilyPolicy") != "SingleStack":
                    errs.append(
                        invalid("spec.ipFamilyPolicy", spec.get("ipFamilyPolicy"), "must be set to 'SingleStack' when releasing the secondary clusterIP")
                    )
            elif old_ips and ips[0] != old_ips[0]:
                errs.append(invalid("spec.clusterIPs[0]", ips, "may not change once set"))
        fams = [_s(f) for f in _l(spec.get("ipFamilies"))]
        old_fams = [_s(f) for f in _l(old_spec.get("ipFamilies"))]
        if _is_headless(spec) == _is_headless(old_spec) and not _is_headless(spec):
            if len(fams) == len(old_fams):
                if fams != old_fams:
                    errs.append(invalid("spec.ipFamilies[0]", fams, "may not change once set"))
            elif len(old_fams) > len(fams):
                if fams and fams[0] != old_fams[0]:
                    errs.append(invalid("spec.ipFamilies[0]", ips, "may not change once set"))
                if len(fams) == 1 and spec.get("ipFamilyPolicy") != "SingleStack":
                    errs.append(
                        invalid("spec.ipFamilyPolicy", spec.get("ipFamilyPolicy"), "must be set to 'SingleStack' when releasing the secondary ipFamily")
                    )
            elif old_fams and fams and fams[0] != old_fams[0]:
                errs.append(invalid("spec.ipFamilies[0]", ips, "may not change once set"))
    if old_spec.get("type") == "LoadBalancer" and spec.get("type") == "LoadBalancer":
        if spec.get("loadBalancerClass") != old_spec.get("loadBalancerClass"):
            errs.append(invalid("spec.loadBalancerClass", spec.get("loadBalancerClass"), "may not change once set"))
    needs = lambda s: s.get("type") == "LoadBalancer" and s.get("externalTrafficPolicy") == "Local"  # noqa: E731
    if needs(spec) and needs(old_spec) and spec.get("healthCheckNodePort") != old_spec.get("healthCheckNodePort"):
        errs.append(forbidden("spec.healthCheckNodePort", FIELD_IMMUTABLE))
    return errs + validate_service(new, opts)


def validate_service_status_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a Service's status."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    lb = _d(_d(new.get("status")).get("loadBalancer"))
    stype = _d(new.get("spec")).get("type")
    for i, ing in enumerate(_l(lb.get("ingress"))):
        ing = _d(ing)
        ip = f"status.loadBalancer.ingress[{i}]"
        if ing.get("ip"):
            errs += validate_ip(ip + ".ip", ing["ip"])
        if ing.get("ipMode") is not None:
            if not ing.get("ip"):
                errs.append(forbidden(ip + ".ipMode", "may not be set when `ip` is empty"))
            if ing["ipMode"] not in ("Proxy", "VIP"):
                errs.append(not_supported(ip + ".ipMode", _s(ing["ipMode"]), ("Proxy", "VIP")))
        elif stype == "LoadBalancer" and ing.get("ip"):
            errs.append(required(ip + ".ipMode", "must be specified when `ip` is set"))
        if ing.get("hostname"):
            h = _s(ing["hostname"])
            errs += [invalid(ip + ".hostname", h, m) for m in is_dns1123_subdomain(h)]
            if parse_ip(h) is not None:
                errs.append(invalid(ip + ".hostname", h, "must be a DNS name, not an IP address"))
    return errs


def validate_endpoints(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new Endpoints from being created."""
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
    for i, ss in enumerate(_l(obj.get("subsets"))):
        ss = _d(ss)
        sp = f"subsets[{i}]"
        if not _l(ss.get("addresses")) and not _l(ss.get("notReadyAddresses")):
            errs.append(required(sp, "must specify `addresses` or `notReadyAddresses`"))
        for key in ("addresses", "notReadyAddresses"):
            for j, addr in enumerate(_l(ss.get(key))):
                addr = _d(addr)
                ap = f"{sp}.{key}[{j}]"
                errs += validate_ip(ap + ".ip", addr.get("ip"))
                hn = _s(addr.get("hostname"))
                if hn:
                    errs += [invalid(ap + ".hostname", hn, m) for m in is_dns1123_label(hn)]
                if addr.get("nodeName") is not None:
                    nn = _s(addr["nodeName"])
                    errs += [invalid(ap + ".nodeName", nn, m) for m in name_is_dns_subdomain(nn)]
                errs += validate_non_special_ip(ap + ".ip", addr.get("ip"), loopback_ok=opts.loopback_ok)
        ports = [_d(p) for p in _l(ss.get("ports"))]
        for j, port in enumerate(ports):
            pp = f"{sp}.ports[{j}]"
            nm = _s(port.get("name"))
            if len(ports) > 1 and not nm:
                errs.append(required(pp + ".name"))
            elif nm:
                errs += [invalid(pp + ".name", nm, m) for m in is_dns1123_label(nm)]
            errs += [invalid(pp + ".port", _num(port.get("port")), m) for m in is_valid_port_num(_int(port.get("port")))]
            proto = _s(port.get("protocol"))
            if not proto:
                errs.append(required(pp + ".protocol"))
            elif proto not in PROTOCOLS:
                errs.append(not_supported(pp + ".protocol", proto, PROTOCOLS))
            if port.get("appProtocol") is not None:
                ap_ = _s(port["appProtocol"])
                errs += [invalid(pp + ".appProtocol", ap_, m) for m in is_qualified_name(ap_)]
    return errs


def validate_namespace(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new Namespace from being created."""
    errs = validate_object_meta(obj.get("metadata"), False, name_is_dns_label)
    for f in _l(_d(obj.get("spec")).get("finalizers")):
        f = _s(f)
        errs += [invalid("spec.finalizers", f, m) for m in is_qualified_name(f)]
        errs += _validate_kube_finalizer_name(f, "spec.finalizers")
    return errs


def validate_namespace_status_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a Namespace's status."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    phase = _s(_d(new.get("status")).get("phase"))
    if not _d(new.get("metadata")).get("deletionTimestamp"):
        if phase != "Active":
            errs.append(invalid("status.Phase", phase, "may only be 'Active' if `deletionTimestamp` is empty"))
    elif phase != "Terminating":
        errs.append(invalid("status.Phase", phase, "may only be 'Terminating' if `deletionTimestamp` is not empty"))
    return errs


def _node_pod_cidrs(spec: Obj) -> list[str]:
    cidrs = _l(spec.get("podCIDRs"))
    if cidrs:
        return [_s(c) for c in cidrs]
    return [_s(spec["podCIDR"])] if spec.get("podCIDR") else []


def _validate_taints(taints: Any, path: str) -> list[Cause]:
    errs: list[Cause] = []
    seen: set[tuple[str, str]] = set()
    for i, t in enumerate(_l(taints)):
        t = _d(t)
        ip = f"{path}[{i}]"
        key, value, effect = _s(t.get("key")), _s(t.get("value")), _s(t.get("effect"))
        errs += validate_label_name(key, ip + ".key")
        msgs = is_label_value(value)
        if msgs:
            errs.append(invalid(ip + ".value", value, ";".join(msgs)))
        if not effect:
            errs.append(required(ip + ".effect"))
        elif effect not in TAINT_EFFECTS:
            errs.append(not_supported(ip + ".effect", effect, TAINT_EFFECTS))
        if (effect, key) in seen:
            errs.append(
                errors.cause(ip, "FieldValueDuplicate", "Duplicate value: " + go_value(GoExpr(
                    "core.Taint{Key:" + go_quote(key) + ", Value:" + go_quote(value) + ", Effect:" + go_quote(effect)
                    + ", TimeAdded:<nil>}")) + ": taints must be unique by key and effect pair")
            )
            continue
        seen.add((effect, key))
    return errs


def _validate_node_resources(status: Obj) -> list[Cause]:
    errs: list[Cause] = []
    for key in ("capacity", "allocatable"):
        for name, raw in _d(status.get(key)).items():
            q = parse_quantity(raw)
            if q is None:
                errs.append(invalid(f"status.{key}.{name}", _s(raw), _QUANTITY_ERR))
            elif q < 0:
                errs.append(invalid(f"status.{key}.{name}", _s(raw), IS_NEGATIVE))
    return errs


def validate_node(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new Node from being created."""
    errs = validate_object_meta(obj.get("metadata"), False, name_is_dns_subdomain)
    spec = _d(obj.get("spec"))
    # Upstream reports taint errors under metadata.taints; kubectl users see that path.
    errs += _validate_taints(spec.get("taints"), "metadata.taints")
    errs += _validate_node_resources(_d(obj.get("status")))
    cidrs = _node_pod_cidrs(spec)
    for i, c in enumerate(cidrs):
        errs += validate_cidr(f"spec.podCIDRs[{i}]", c)
    if len(cidrs) > 1:
        nets = [parse_cidr(c) for c in cidrs]
        if len(cidrs) > 2 or None in nets or len({n.version for n in nets if n}) != len(cidrs):
            errs.append(invalid("spec.podCIDRs", cidrs, "may specify no more than one CIDR for each IP family"))
        seen: set[str] = set()
        for i, c in enumerate(cidrs):
            if c in seen:
                errs.append(duplicate(f"spec.podCIDRs[{i}]", c))
            seen.add(c)
    return errs


def validate_node_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a Node."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    errs += _validate_node_resources(_d(new.get("status")))
    spec, old_spec = _d(new.get("spec")), _d(old.get("spec"))
    seen: list[Any] = []
    for i, addr in enumerate(_l(_d(new.get("status")).get("addresses"))):
        if addr in seen:
            a = _d(addr)
            shown = "core.NodeAddress{Type:" + go_quote(_s(a.get("type"))) + ", Address:" + go_quote(_s(a.get("address"))) + "}"
            errs.append(duplicate(f"status.addresses[{i}]", GoExpr(shown)))
        seen.append(addr)
    old_cidrs, cidrs = _node_pod_cidrs(old_spec), _node_pod_cidrs(spec)
    if old_cidrs and old_cidrs != cidrs:
        errs.append(forbidden("spec.podCIDRs", 'node updates may not change podCIDR except from "" to valid'))
    elif not old_cidrs:
        for i, c in enumerate(cidrs):
            errs += validate_cidr(f"spec.podCIDRs[{i}]", c)
    if old_spec.get("providerID") and old_spec.get("providerID") != spec.get("providerID"):
        errs.append(forbidden("spec.providerID", 'node updates may not change providerID except from "" to valid'))
    errs += _validate_taints(spec.get("taints"), "metadata.taints")
    if spec.get("externalID") != old_spec.get("externalID"):
        errs.append(forbidden("spec.externalID", "may not be updated"))
    return errs


def validate_configmap(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new ConfigMap from being created."""
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
    data, binary = _d(obj.get("data")), _d(obj.get("binaryData"))
    total = 0
    for key, value in data.items():
        key = _s(key)
        errs += [invalid(f"data[{key}]", key, m) for m in is_config_map_key(key)]
        if key in binary:
            errs.append(invalid(f"data[{key}]", key, "duplicate of key present in binaryData"))
        total += _blen(_s(value))
    for key, value in binary.items():
        key = _s(key)
        errs += [invalid(f"binaryData[{key}]", key, m) for m in is_config_map_key(key)]
        text = _s(value).strip()
        total += (len(text) * 3) // 4 - (len(text) - len(text.rstrip("=")))  # base64-decoded size
    if total > MAX_CONFIGMAP_SIZE:
        errs.append(too_long("", MAX_CONFIGMAP_SIZE))
    return errs


def validate_configmap_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a ConfigMap."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    if old.get("immutable") is True:
        if new.get("immutable") is not True:
            errs.append(forbidden("immutable", "field is immutable when `immutable` is set"))
        if new.get("data") != old.get("data"):
            errs.append(forbidden("data", "field is immutable when `immutable` is set"))
        if new.get("binaryData") != old.get("binaryData"):
            errs.append(forbidden("binaryData", "field is immutable when `immutable` is set"))
    return errs + validate_configmap(new, opts)


def validate_event(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new Event from being created."""
    md = _d(obj.get("metadata"))
    errs: list[Cause] = []
    ns = _s(md.get("namespace"))
    involved_ns = _s(_d(obj.get("involvedObject")).get("namespace"))
    if not obj.get("eventTime"):
        if not involved_ns:
            if ns not in ("", "default"):
                errs.append(invalid("involvedObject.namespace", involved_ns, "does not match event.namespace"))
        elif ns != involved_ns:
            errs.append(invalid("involvedObject.namespace", involved_ns, "does not match event.namespace"))
    else:
        if not involved_ns and ns not in ("default", "kube-system"):
            errs.append(invalid("involvedObject.namespace", involved_ns, "does not match event.namespace"))
        rc = _s(obj.get("reportingComponent"))
        if not rc:
            errs.append(required("reportingComponent"))
        errs += [invalid("reportingComponent", rc, m) for m in is_qualified_name(rc)]
        for key, limit in (("reportingInstance", 128), ("action", 128), ("reason", 128)):
            value = _s(obj.get(key))
            if not value:
                errs.append(required(key))
            if len(value) > limit:
                errs.append(invalid(key, "", f"can have at most {limit} characters"))
        if len(_s(obj.get("message"))) > 1024:
            errs.append(invalid("message", "", "can have at most 1024 characters"))
    errs += [invalid("namespace", ns, m) for m in is_dns1123_subdomain(ns)]
    if errs:
        return errs
    # kube-apiserver's generic metadata check, run once the Event's own checks pass.
    return validate_object_meta(md, True, name_is_path_segment, kube_finalizers=False)
