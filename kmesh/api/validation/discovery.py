"""discovery.k8s.io/v1: EndpointSlices.
"""

from __future__ import annotations

from kmesh.api.errors import Cause
from kmesh.api.formats import is_dns1123_label, is_dns1123_subdomain, is_label_value, is_qualified_name
from kmesh.api.obj import Obj
from kmesh.api.validation.common import (
    Opts,
    _d,
    _l,
    _s,
    duplicate,
    immutable,
    invalid,
    not_supported,
    parse_ip,
    required,
    too_many,
    validate_non_special_ip,
)
from kmesh.api.validation.meta import (
    name_is_dns_subdomain,
    validate_labels,
    validate_object_meta,
    validate_object_meta_update,
)
from kmesh.api.validation.pod import PROTOCOLS

ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")
MAX_SLICE_ENDPOINTS = 1000
MAX_SLICE_ADDRESSES = 100
MAX_SLICE_PORTS = 100
MAX_TOPOLOGY_LABELS = 16
MAX_ZONE_HINTS = 8


def _validate_fqdn(path: str, value: str) -> list[Cause]:
    if not value:
        return [required(path)]
    name = value[:-1] if value.endswith(".") else value
    msgs = is_dns1123_subdomain(name)
    if msgs:
        return [invalid(path, name, ",".join(msgs))]
    if len(name.split(".")) < 2:
        return [invalid(path, name, "should be a domain with at least two segments separated by dots")]
    for label in name.split("."):
        msgs = is_dns1123_label(label)
        if msgs:
            return [invalid(path, label, ",".join(msgs))]
    return []


def _validate_hints(hints: Obj, path: str) -> list[Cause]:
    """An endpoint's topology hints: at most 8 zones, each a distinct label value."""
    zones = _l(hints.get("forZones"))
    if len(zones) > MAX_ZONE_HINTS:
        return [too_many(path + ".forZones", len(zones), MAX_ZONE_HINTS)]
    errs: list[Cause] = []
    seen: set[str] = set()
    for i, z in enumerate(zones):
        zp = f"{path}.forZones[{i}].name"
        name = _s(_d(z).get("name"))
        if name in seen:
            errs.append(duplicate(zp, name))
        seen.add(name)
        errs += [invalid(zp, name, m) for m in is_label_value(name)]
    return errs


def validate_endpointslice(obj: Obj, opts: Opts, address_types: tuple[str, ...] = ADDRESS_TYPES) -> list[Cause]:
    """The problems that stop a new EndpointSlice from being created."""
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
    at = _s(obj.get("addressType"))
    if not at:
        errs.append(required("addressType"))
    elif at not in address_types:
        errs.append(not_supported("addressType", at, sorted(address_types)))
    endpoints = _l(obj.get("endpoints"))
    if len(endpoints) > MAX_SLICE_ENDPOINTS:
        errs.append(too_many("endpoints", len(endpoints), MAX_SLICE_ENDPOINTS))
    else:
        for i, ep in enumerate(endpoints):
            ep = _d(ep)
            ip_ = f"endpoints[{i}]"
            addrs = _l(ep.get("addresses"))
            if not addrs:
                errs.append(required(ip_ + ".addresses", "must contain at least 1 address"))
            elif len(addrs) > MAX_SLICE_ADDRESSES:
                errs.append(too_many(ip_ + ".addresses", len(addrs), MAX_SLICE_ADDRESSES))
            for j, addr in enumerate(addrs):
                ap = f"{ip_}.addresses[{j}]"
                addr = _s(addr)
                parsed = parse_ip(addr)
                if at == "IPv4":
                    if parsed is None or parsed.version != 4:
                        errs.append(invalid(ap, addr, "must be a valid IPv4 address"))
                    errs += validate_non_special_ip(ap, addr, loopback_ok=opts.loopback_ok)
                elif at == "IPv6":
                    if parsed is None or parsed.version != 6:
                        errs.append(invalid(ap, addr, "must be a valid IPv6 address"))
                    errs += validate_non_special_ip(ap, addr, loopback_ok=opts.loopback_ok)
                elif at == "FQDN":
                    errs += _validate_fqdn(ap, addr)
                elif at == "IP":
                    errs += [invalid(ap, addr, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")] if parsed is None else []
            topo = _d(ep.get("deprecatedTopology"))
            if len(topo) > MAX_TOPOLOGY_LABELS:
                errs.append(too_many(ip_ + ".topology", len(topo), MAX_TOPOLOGY_LABELS))
            errs += validate_labels(topo, ip_ + ".topology")
            if ep.get("hostname") is not None:
                hn = _s(ep["hostname"])
                errs += [invalid(ip_ + ".hostname", hn, m) for m in is_dns1123_label(hn)]
            if ep.get("nodeName") is not None:
                nn = _s(ep["nodeName"])
                errs += [invalid(ip_ + ".nodeName", nn, m) for m in name_is_dns_subdomain(nn)]
            if ep.get("hints") is not None:
                errs += _validate_hints(_d(ep["hints"]), ip_ + ".hints")
    ports = _l(obj.get("ports"))
    if len(ports) > MAX_SLICE_PORTS:
        errs.append(too_many("ports", len(ports), MAX_SLICE_PORTS))
        return errs
    names: set[str] = set()
    for i, port in enumerate(ports):
        port = _d(port)
        pp = f"ports[{i}]"
        nm = _s(port.get("name"))
        if nm:
            errs += [invalid(pp + ".name", nm, m) for m in is_dns1123_label(nm)]
        if nm in names:
            errs.append(duplicate(pp + ".name", nm))
        else:
            names.add(nm)
        proto = port.get("protocol")
        if proto is None:
            errs.append(required(pp + ".protocol"))
        elif proto not in PROTOCOLS:
            errs.append(not_supported(pp + ".protocol", _s(proto), PROTOCOLS))
        if port.get("appProtocol") is not None:
            ap_ = _s(port["appProtocol"])
            errs += [invalid(pp + ".appProtocol", ap_, m) for m in is_qualified_name(ap_)]
    return errs


def validate_endpointslice_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a EndpointSlice."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    errs += validate_endpointslice(new, opts, ADDRESS_TYPES + ("IP",))
    return errs + immutable("addressType", _s(new.get("addressType")), _s(old.get("addressType")))
