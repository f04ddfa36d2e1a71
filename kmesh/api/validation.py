"""Validation of API objects with kube-apiserver's rules, field paths and messages.

``validate`` checks an object about to be created, ``validate_update`` an
update (the same checks on the new object plus what may not change). Both
return ``details.causes`` entries (``errors.Cause``); an empty list means the
object may be stored. ``errors.invalid_object`` turns a non-empty list into
the 422 ``Status``.

The rules and texts are Kubernetes 1.32's (``pkg/apis/*/validation``,
``apimachinery/pkg/util/validation``). Values in messages are printed the way
Go's ``field.Error`` prints them (``"x"`` for strings, ``map[string]string{...}``
for label maps, ``v1.LabelSelector{...}`` for selectors), so what ``kubectl``
shows matches a real cluster. Call it on objects that went through
``defaults.apply_defaults`` and ``meta.prepare_create``/``prepare_update``,
as kube-apiserver does; a missing default is reported the way upstream would.

Deliberate differences, each where kmesh does the work elsewhere or differently:

- ``loopback_ok=True`` lets Endpoints and EndpointSlices hold loopback
  addresses (the sim runtime's pods live in 127.244.0.0/16).
- ``spec.healthCheckNodePort`` and ``spec.clusterIPs`` are not required here:
  kmesh's allocator fills them, possibly after validation.
- ``metadata.resourceVersion`` is checked by the API server's update handler
  (conflicts, unconditional updates), not here.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from typing import Any, Callable, Iterable

from kmesh.api import errors
from kmesh.api.errors import Cause
from kmesh.api.kinds import Kind, get
from kmesh.api.meta import parse_quantity
from kmesh.api.obj import Obj

NameFn = Callable[[str, bool], list[str]]

MAX_INT32 = 2**31 - 1
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024
MAX_CONFIGMAP_SIZE = 1024 * 1024
MAX_CLIENT_IP_AFFINITY_SECONDS = 86400
FIELD_IMMUTABLE = "field is immutable"
IS_NEGATIVE = "must be greater than or equal to 0"
FILE_MODE_ERROR = "must be a number between 0 and 0777 (octal), both inclusive"

# ======================================================================
# Go-style value printing and cause constructors
# ======================================================================


class GoRaw(str):
    """A value Go prints with its String() method: unquoted (IntOrString, quantities)."""


class GoExpr(str):
    """A value already rendered in Go ``%#v`` syntax."""


def go_quote(s: str) -> str:
    """``strconv.Quote``: a double-quoted Go string literal."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\a":
            out.append("\\a")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\v":
            out.append("\\v")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_value(value: Any) -> str:
    """A value the way ``field.Error`` prints a bad value."""
    if isinstance(value, GoExpr):
        return str(value)
    if isinstance(value, GoRaw):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, dict):
        return go_string_map(value)
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return go_string_slice(value)
        return "[]interface {}{" + ", ".join(go_value(v) for v in value) + "}"
    return go_quote(str(value))


def go_string_map(m: dict[str, Any] | None) -> str:
    """``map[string]string{"a":"b"}`` (keys sorted, as fmt does); ``(nil)`` for a missing map."""
    if m is None:
        return "map[string]string(nil)"
    items = ", ".join(f"{go_quote(str(k))}:{go_quote(str(v))}" for k, v in sorted(m.items(), key=lambda kv: str(kv[0])))
    return "map[string]string{" + items + "}"


def go_string_slice(values: list[str] | None) -> str:
    """``[]string{"a", "b"}``; ``[]string(nil)`` for a missing list."""
    if values is None:
        return "[]string(nil)"
    return "[]string{" + ", ".join(go_quote(str(v)) for v in values) + "}"


def go_label_selector(sel: Any) -> GoExpr:
    """A label selector as Go prints a ``v1.LabelSelector``."""
    sel = sel if isinstance(sel, dict) else {}
    ml = sel.get("matchLabels")
    me = sel.get("matchExpressions")
    if isinstance(me, list):
        reqs = []
        for r in me:
            r = r if isinstance(r, dict) else {}
            vals = r.get("values")
            reqs.append(
                "v1.LabelSelectorRequirement{Key:"
                + go_quote(str(r.get("key", "")))
                + ", Operator:"
                + go_quote(str(r.get("operator", "")))
                + ", Values:"
                + go_string_slice([str(v) for v in vals] if isinstance(vals, list) else None)
                + "}"
            )
        exprs = "[]v1.LabelSelectorRequirement{" + ", ".join(reqs) + "}"
    else:
        exprs = "[]v1.LabelSelectorRequirement(nil)"
    labels_ = go_string_map(ml if isinstance(ml, dict) else None)
    return GoExpr("v1.LabelSelector{MatchLabels:" + labels_ + ", MatchExpressions:" + exprs + "}")


def intstr(value: Any) -> GoRaw:
    """An IntOrString as its String() prints it."""
    return GoRaw("0" if value is None else str(value))


def _body(kind: str, detail: str) -> str:
    return f"{kind}: {detail}" if detail else kind


def required(path: str, detail: str = "") -> Cause:
    """``field.Required``."""
    return errors.cause(path, "FieldValueRequired", _body("Required value", detail))


def invalid(path: str, value: Any, detail: str) -> Cause:
    """``field.Invalid``."""
    return errors.cause(path, "FieldValueInvalid", _body(f"Invalid value: {go_value(value)}", detail))


def not_supported(path: str, value: Any, allowed: Iterable[str]) -> Cause:
    """``field.NotSupported``."""
    shown = ", ".join(go_quote(a) for a in allowed)
    detail = f"supported values: {shown}" if shown else ""
    return errors.cause(path, "FieldValueNotSupported", _body(f"Unsupported value: {go_value(value)}", detail))


def duplicate(path: str, value: Any) -> Cause:
    """``field.Duplicate``."""
    return errors.cause(path, "FieldValueDuplicate", f"Duplicate value: {go_value(value)}")


def forbidden(path: str, detail: str) -> Cause:
    """``field.Forbidden``."""
    return errors.cause(path, "FieldValueForbidden", _body("Forbidden", detail))


def not_found(path: str, value: Any) -> Cause:
    """``field.NotFound``."""
    return errors.cause(path, "FieldValueNotFound", f"Not found: {go_value(value)}")


def too_long(path: str, max_bytes: int) -> Cause:
    """``field.TooLong`` without the value."""
    unit = "byte" if max_bytes == 1 else "bytes"
    return errors.cause(path, "FieldValueTooLong", f"Too long: may not be more than {max_bytes} {unit}")


def too_many(path: str, actual: int, maximum: int) -> Cause:
    """``field.TooMany``."""
    return errors.cause(path, "FieldValueTooMany", f"Too many: {actual}: must have at most {maximum} items")


# ======================================================================
# String formats (apimachinery/pkg/util/validation)
# ======================================================================

DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_ERR = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + "(\\." + DNS1123_LABEL_FMT + ")*"
DNS1123_SUBDOMAIN_ERR = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)
DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
DNS1035_LABEL_ERR = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
    "start with an alphabetic character, and end with an alphanumeric character"
)
QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
QUALIFIED_NAME_ERR = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
)
LABEL_VALUE_FMT = "(" + QUALIFIED_NAME_FMT + ")?"
LABEL_VALUE_ERR = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
CONFIGMAP_KEY_FMT = "[-._a-zA-Z0-9]+"
CONFIGMAP_KEY_ERR = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
PERCENT_FMT = "[0-9]+%"
PERCENT_ERR = "a valid percent string must be a numeric string followed by an ending '%'"
HTTP_HEADER_FMT = "[-A-Za-z0-9]+"
HTTP_HEADER_ERR = "a valid HTTP header must consist of alphanumeric characters or '-'"
RELAXED_ENV_ERR = "a valid environment variable name must consist only of printable ASCII characters other than '='"

_RE_DNS1123_LABEL = re.compile(DNS1123_LABEL_FMT)
_RE_DNS1123_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN_FMT)
_RE_DNS1035_LABEL = re.compile(DNS1035_LABEL_FMT)
_RE_QUALIFIED_NAME = re.compile(QUALIFIED_NAME_FMT)
_RE_LABEL_VALUE = re.compile(LABEL_VALUE_FMT)
_RE_CONFIGMAP_KEY = re.compile(CONFIGMAP_KEY_FMT)
_RE_PERCENT = re.compile(PERCENT_FMT)
_RE_HTTP_HEADER = re.compile(HTTP_HEADER_FMT)
_RE_PORT_NAME_CHARS = re.compile("[-a-z0-9]+")
_RE_PORT_NAME_LETTER = re.compile("[a-z]")


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """``validation.RegexError``: the message, examples and the regex (double spaces included)."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    out = msg + " (e.g. "
    for i, ex in enumerate(examples):
        if i > 0:
            out += " or "
        out += f"'{ex}', "
    return out + f"regex used for validation is '{fmt}')"


def max_len_error(n: int) -> str:
    """``validation.MaxLenError``."""
    return f"must be no more than {n} characters"


def inclusive_range_error(lo: int, hi: int) -> str:
    """``validation.InclusiveRangeError``."""
    return f"must be between {lo} and {hi}, inclusive"


def _blen(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def is_dns1123_label(value: str) -> list[str]:
    """Problems with ``value`` as an RFC 1123 label (empty list: valid)."""
    errs = []
    if _blen(value) > 63:
        errs.append(max_len_error(63))
    if not _RE_DNS1123_LABEL.fullmatch(value):
        if _RE_DNS1123_SUBDOMAIN.fullmatch(value):
            errs.append("must not contain dots")
        else:
            errs.append(regex_error(DNS1123_LABEL_ERR, DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    """Problems with ``value`` as an RFC 1123 subdomain."""
    errs = []
    if _blen(value) > 253:
        errs.append(max_len_error(253))
    if not _RE_DNS1123_SUBDOMAIN.fullmatch(value):
        errs.append(regex_error(DNS1123_SUBDOMAIN_ERR, DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    """Problems with ``value`` as an RFC 1035 label (what Service names must be)."""
    errs = []
    if _blen(value) > 63:
        errs.append(max_len_error(63))
    if not _RE_DNS1035_LABEL.fullmatch(value):
        errs.append(regex_error(DNS1035_LABEL_ERR, DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    """Problems with ``value`` as a qualified name (label key, annotation key, finalizer)."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        nm = parts[0]
    elif len(parts) == 2:
        prefix, nm = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not nm:
        errs.append("name part must be non-empty")
    elif _blen(nm) > 63:
        errs.append("name part " + max_len_error(63))
    if not _RE_QUALIFIED_NAME.fullmatch(nm):
        errs.append("name part " + regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc"))
    return errs


def is_label_value(value: str) -> list[str]:
    """Problems with ``value`` as a label value."""
    errs = []
    if _blen(value) > 63:
        errs.append(max_len_error(63))
    if not _RE_LABEL_VALUE.fullmatch(value):
        errs.append(regex_error(LABEL_VALUE_ERR, LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def is_valid_port_num(port: Any) -> list[str]:
    """Problems with ``port`` as a port number (1-65535)."""
    if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
        return []
    return [inclusive_range_error(1, 65535)]


def is_valid_port_name(port: str) -> list[str]:
    """Problems with ``port`` as an IANA_SVC_NAME (a named container port)."""
    errs = []
    if len(port) > 15:
        errs.append(max_len_error(15))
    if not _RE_PORT_NAME_CHARS.fullmatch(port):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _RE_PORT_NAME_LETTER.search(port):
        errs.append("must contain at least one letter (a-z)")
    if "--" in port:
        errs.append("must not contain consecutive hyphens")
    if port and (port[0] == "-" or port[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def is_config_map_key(value: str) -> list[str]:
    """Problems with ``value`` as a ConfigMap/Secret data key."""
    errs = []
    if _blen(value) > 253:
        errs.append(max_len_error(253))
    if not _RE_CONFIGMAP_KEY.fullmatch(value):
        errs.append(regex_error(CONFIGMAP_KEY_ERR, CONFIGMAP_KEY_FMT, "key.name", "KEY_NAME", "key-name"))
    if value == ".":
        errs.append("must not be '.'")
    elif value == "..":
        errs.append("must not be '..'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def is_valid_percent(value: str) -> list[str]:
    """Problems with ``value`` as a percentage ("25%")."""
    if _RE_PERCENT.fullmatch(value):
        return []
    return [regex_error(PERCENT_ERR, PERCENT_FMT, "1%", "93%")]


def is_http_header_name(value: str) -> list[str]:
    """Problems with ``value`` as an HTTP header name."""
    if _RE_HTTP_HEADER.fullmatch(value):
        return []
    return [regex_error(HTTP_HEADER_ERR, HTTP_HEADER_FMT, "X-Header-Name")]


def is_relaxed_env_var_name(value: str) -> list[str]:
    """Problems with ``value`` as an environment variable name (RelaxedEnvironmentVariableValidation, on in 1.32)."""
    errs = []
    if not value:
        errs.append("environment variable name must be non-empty")
    for ch in value:
        if ord(ch) > 0x7F or not ch.isprintable() or ch == "=":
            errs.append(RELAXED_ENV_ERR)
            break
    return errs


_SLOPPY_V4 = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})")


def parse_ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address as Go's ``netutils.ParseIPSloppy`` reads it (IPv4 with leading zeros allowed)."""
    if not isinstance(value, str) or not value:
        return None
    m = _SLOPPY_V4.fullmatch(value)
    if m:
        octets = [int(x, 10) for x in m.groups()]
        if all(o <= 255 for o in octets):
            return ipaddress.IPv4Address(".".join(map(str, octets)))
        return None
    if ":" not in value or "%" in value:
        return None
    try:
        ip = ipaddress.IPv6Address(value)
    except ValueError:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_cidr(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A CIDR as Go's ``netutils.ParseCIDRSloppy`` reads it (host bits may be set)."""
    if not isinstance(value, str) or "/" not in value:
        return None
    addr, _, bits = value.partition("/")
    ip = parse_ip(addr)
    if ip is None or not bits.isdigit() or (len(bits) > 1 and bits[0] == "0"):
        return None
    try:
        return ipaddress.ip_network(f"{ip}/{int(bits)}", strict=False)
    except ValueError:
        return None


def validate_ip(path: str, value: Any) -> list[Cause]:
    """``validation.IsValidIP``."""
    if parse_ip(value) is None:
        return [invalid(path, value, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")]
    return []


def validate_cidr(path: str, value: Any) -> list[Cause]:
    """``validation.IsValidCIDR``."""
    if parse_cidr(value) is None:
        return [invalid(path, value, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")]
    return []


def validate_non_special_ip(path: str, value: Any, *, loopback_ok: bool = False) -> list[Cause]:
    """``ValidateNonSpecialIP``: no unspecified, loopback or link-local addresses in endpoints."""
    ip = parse_ip(value)
    if ip is None:
        return [invalid(path, value, "must be a valid IP address")]
    errs = []
    if ip.is_unspecified:
        errs.append(invalid(path, value, f"may not be unspecified ({value})"))
    if ip.is_loopback and not loopback_ok:
        errs.append(invalid(path, value, "may not be in the loopback range (127.0.0.0/8, ::1/128)"))
    if ip.version == 4:
        link_local_unicast = ip in ipaddress.ip_network("169.254.0.0/16")
        link_local_multicast = ip in ipaddress.ip_network("224.0.0.0/24")
    else:
        link_local_unicast = ip in ipaddress.ip_network("fe80::/10")
        link_local_multicast = ip.packed[0] == 0xFF and (ip.packed[1] & 0x0F) == 0x02
    if link_local_unicast:
        errs.append(invalid(path, value, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"))
    if link_local_multicast:
        errs.append(invalid(path, value, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"))
    return errs


# ======================================================================
# Name validators (ValidateNameFunc): (name, prefix) -> messages
# ======================================================================


def _mask_trailing_dash(name: str) -> str:
    if len(name) > 1 and name.endswith("-"):
        return name[:-1] + "a"
    return name


def name_is_dns_subdomain(name: str, prefix: bool = False) -> list[str]:
    """Names of most kinds: an RFC 1123 subdomain (a generateName may end in '-')."""
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def name_is_dns_label(name: str, prefix: bool = False) -> list[str]:
    """Namespace names: an RFC 1123 label."""
    return is_dns1123_label(_mask_trailing_dash(name) if prefix else name)


def name_is_dns1035_label(name: str, prefix: bool = False) -> list[str]:
    """Service names: an RFC 1035 label (must start with a letter)."""
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


def name_is_path_segment(name: str, prefix: bool = False) -> list[str]:
    """Names that only have to fit in a URL path segment (Events)."""
    if not prefix:
        for bad in (".", ".."):
            if name == bad:
                return [f"may not be '{bad}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in name]


NAME_VALIDATORS: dict[str, NameFn] = {
    "Namespace": name_is_dns_label,
    "Service": name_is_dns1035_label,
    "Event": name_is_path_segment,
}


def name_validator(kind: Kind | str) -> NameFn:
    """The function that checks names of ``kind``."""
    k = kind.kind if isinstance(kind, Kind) else kind
    return NAME_VALIDATORS.get(k, name_is_dns_subdomain)


# ======================================================================
# Small accessors
# ======================================================================


def _d(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _num(value: Any, default: int = 0) -> int:
    n = _int(value)
    return default if n is None else n


def _kind(kind: Kind | str) -> Kind:
    return kind if isinstance(kind, Kind) else get(kind)


def nonnegative(path: str, value: Any) -> list[Cause]:
    """``ValidateNonnegativeField``."""
    n = _int(value)
    if n is not None and n < 0:
        return [invalid(path, n, IS_NEGATIVE)]
    return []


def immutable(path: str, new: Any, old: Any, shown: Any = None) -> list[Cause]:
    """``ValidateImmutableField``: ``new`` must equal ``old``."""
    if new != old:
        return [invalid(path, new if shown is None else shown, FIELD_IMMUTABLE)]
    return []


# ======================================================================
# Object metadata
# ======================================================================


def validate_labels(labels_: Any, path: str) -> list[Cause]:
    """``ValidateLabels``: keys are qualified names, values label values; errors name the map."""
    errs: list[Cause] = []
    for k, v in _d(labels_).items():
        errs += validate_label_name(_s(k), path)
        for msg in is_label_value(_s(v)):
            errs.append(invalid(path, _s(v), msg))
    return errs


def validate_label_name(key: str, path: str) -> list[Cause]:
    """``ValidateLabelName``."""
    return [invalid(path, key, msg) for msg in is_qualified_name(key)]


def validate_annotations(annotations: Any, path: str) -> list[Cause]:
    """``ValidateAnnotations``: qualified-name keys (any case), 256 KiB in total."""
    errs: list[Cause] = []
    total = 0
    for k, v in _d(annotations).items():
        k = _s(k)
        for msg in is_qualified_name(k.lower()):
            errs.append(invalid(path, k, msg))
        total += _blen(k) + _blen(_s(v))
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.append(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT))
    return errs


def _validate_owner_references(refs: Any, path: str) -> list[Cause]:
    errs: list[Cause] = []
    first_controller = ""
    for ref in _l(refs):
        ref = _d(ref)
        api_version = _s(ref.get("apiVersion"))
        version = api_version.split("/")[-1] if api_version else ""
        if not version:
            errs.append(invalid(path + ".apiVersion", api_version, "version must not be empty"))
        if not ref.get("kind"):
            errs.append(invalid(path + ".kind", _s(ref.get("kind")), "must not be empty"))
        if not ref.get("name"):
            errs.append(invalid(path + ".name", _s(ref.get("name")), "must not be empty"))
        if not ref.get("uid"):
            errs.append(invalid(path + ".uid", _s(ref.get("uid")), "must not be empty"))
        if api_version == "v1" and ref.get("kind") == "Event":
            errs.append(invalid(path, GoExpr("v1.OwnerReference{...}"), "/v1, Kind=Event is disallowed from being an owner"))
        if ref.get("controller") is True:
            current = f"{_s(ref.get('kind'))}/{_s(ref.get('name'))}"
            if first_controller:
                errs.append(
                    invalid(
                        path,
                        GoExpr("[]v1.OwnerReference{...}"),
                        'Only one reference can have Controller set to true. Found "true" in references for '
                        f"{first_controller} and {current}",
                    )
                )
            else:
                first_controller = current
    return errs


_STANDARD_FINALIZERS = frozenset({"kubernetes", "orphan", "foregroundDeletion"})


def _validate_kube_finalizer_name(value: str, path: str) -> list[Cause]:
    if "/" not in value and value not in _STANDARD_FINALIZERS:
        return [invalid(path, value, "name is neither a standard finalizer name nor is it fully qualified")]
    return []


def _validate_finalizers(finalizers: Any, path: str) -> list[Cause]:
    errs: list[Cause] = []
    names = [_s(f) for f in _l(finalizers)]
    for f in names:
        errs += [invalid(path, f, msg) for msg in is_qualified_name(f)]
    if "orphan" in names and "foregroundDeletion" in names:
        errs.append(invalid(path, names, "finalizer orphan and foregroundDeletion cannot be both set"))
    return errs


def validate_object_meta(
    md: Any,
    namespaced: bool,
    name_fn: NameFn = name_is_dns_subdomain,
    path: str = "metadata",
    *,
    kube_finalizers: bool = True,
) -> list[Cause]:
    """``ValidateObjectMeta``: name, namespace, generation, labels, annotations, owners, finalizers."""
    md = _d(md)
    errs: list[Cause] = []
    gen_name = _s(md.get("generateName"))
    if gen_name:
        errs += [invalid(path + ".generateName", gen_name, m) for m in name_fn(gen_name, True)]
    nm = _s(md.get("name"))
    if not nm:
        errs.append(required(path + ".name", "name or generateName is required"))
    else:
        errs += [invalid(path + ".name", nm, m) for m in name_fn(nm, False)]
    ns = _s(md.get("namespace"))
    if namespaced:
        if not ns:
            errs.append(required(path + ".namespace"))
        else:
            errs += [invalid(path + ".namespace", ns, m) for m in name_is_dns_label(ns, False)]
    elif ns:
        errs.append(forbidden(path + ".namespace", "not allowed on this type"))
    errs += nonnegative(path + ".generation", md.get("generation"))
    errs += validate_labels(md.get("labels"), path + ".labels")
    errs += validate_annotations(md.get("annotations"), path + ".annotations")
    errs += _validate_owner_references(md.get("ownerReferences"), path + ".ownerReferences")
    errs += _validate_finalizers(md.get("finalizers"), path + ".finalizers")
    if kube_finalizers:
        for i, f in enumerate(_l(md.get("finalizers"))):
            errs += _validate_kube_finalizer_name(_s(f), f"{path}.finalizers[{i}]")
    return errs


def validate_object_meta_update(new_md: Any, old_md: Any, path: str = "metadata") -> list[Cause]:
    """``ValidateObjectMetaUpdate``: identity fields stay, generation does not go back."""
    new_md, old_md = _d(new_md), _d(old_md)
    errs: list[Cause] = []
    if old_md.get("deletionTimestamp"):
        extra = sorted(set(_s(f) for f in _l(new_md.get("finalizers"))) - set(_s(f) for f in _l(old_md.get("finalizers"))))
        if extra:
            errs.append(
                forbidden(
                    path + ".finalizers",
                    "no new finalizers can be added if the object is being deleted, found new finalizers "
                    + go_string_slice(extra),
                )
            )
    new_gen, old_gen = _num(new_md.get("generation")), _num(old_md.get("generation"))
    if new_gen < old_gen:
        errs.append(invalid(path + ".generation", new_gen, "must not be decremented"))
    errs += immutable(path + ".name", _s(new_md.get("name")), _s(old_md.get("name")))
    errs += immutable(path + ".namespace", _s(new_md.get("namespace")), _s(old_md.get("namespace")))
    errs += immutable(path + ".uid", _s(new_md.get("uid")), _s(old_md.get("uid")))
    new_ts, old_ts = new_md.get("creationTimestamp"), old_md.get("creationTimestamp")
    errs += immutable(path + ".creationTimestamp", new_ts, old_ts, shown=GoRaw(_go_time(new_ts)))
    new_dt, old_dt = new_md.get("deletionTimestamp"), old_md.get("deletionTimestamp")
    errs += immutable(path + ".deletionTimestamp", new_dt, old_dt, shown=GoRaw(_go_time(new_dt)) if new_dt else None)
    errs += immutable(
        path + ".deletionGracePeriodSeconds",
        new_md.get("deletionGracePeriodSeconds"),
        old_md.get("deletionGracePeriodSeconds"),
    )
    errs += validate_labels(new_md.get("labels"), path + ".labels")
    errs += validate_annotations(new_md.get("annotations"), path + ".annotations")
    errs += _validate_owner_references(new_md.get("ownerReferences"), path + ".ownerReferences")
    errs += _validate_finalizers(new_md.get("finalizers"), path + ".finalizers")
    return errs


def _go_time(ts: Any) -> str:
    """An RFC 3339 timestamp as Go's time.Time String() prints it."""
    s = _s(ts)
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(\.\d+)?Z", s)
    if m:
        return f"{m.group(1)} {m.group(2)}{m.group(3) or ''} +0000 UTC"
    return s or "0001-01-01 00:00:00 +0000 UTC"


# ======================================================================
# Label selectors
# ======================================================================

_SELECTOR_OPS = ("In", "NotIn", "Exists", "DoesNotExist")


def validate_label_selector(sel: Any, path: str) -> list[Cause]:
    """``ValidateLabelSelector`` (strict: values must be valid label values)."""
    if sel is None:
        return []
    sel = _d(sel)
    errs = validate_labels(sel.get("matchLabels"), path + ".matchLabels")
    for i, req in enumerate(_l(sel.get("matchExpressions"))):
        req = _d(req)
        rp = f"{path}.matchExpressions[{i}]"
        op = _s(req.get("operator"))
        values = _l(req.get("values"))
        if op in ("In", "NotIn"):
            if not values:
                errs.append(required(rp + ".values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errs.append(forbidden(rp + ".values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        else:
            errs.append(invalid(rp + ".operator", op, "not a valid selector operator"))
        errs += validate_label_name(_s(req.get("key")), rp + ".key")
        for j, v in enumerate(values):
            errs += [invalid(f"{rp}.values[{j}]", _s(v), m) for m in is_label_value(_s(v))]
    return errs


def _selector_parses(sel: Obj) -> bool:
    """Whether ``LabelSelectorAsSelector`` accepts the selector."""
    for k, v in _d(sel.get("matchLabels")).items():
        if is_qualified_name(_s(k)) or is_label_value(_s(v)):
            return False
    for req in _l(sel.get("matchExpressions")):
        req = _d(req)
        op, values = _s(req.get("operator")), _l(req.get("values"))
        if op not in _SELECTOR_OPS or is_qualified_name(_s(req.get("key"))):
            return False
        if op in ("In", "NotIn") and not values:
            return False
        if op in ("Exists", "DoesNotExist") and values:
            return False
        if any(is_label_value(_s(v)) for v in values):
            return False
    return True


def selector_matches(sel: Obj, labels_: dict[str, str]) -> bool:
    """Whether a (valid) label selector selects ``labels_``."""
    for k, v in _d(sel.get("matchLabels")).items():
        if labels_.get(k) != v:
            return False
    for req in _l(sel.get("matchExpressions")):
        req = _d(req)
        key, op, values = _s(req.get("key")), req.get("operator"), [_s(v) for v in _l(req.get("values"))]
        if op == "In" and (key not in labels_ or labels_[key] not in values):
            return False
        if op == "NotIn" and key in labels_ and labels_[key] in values:
            return False
        if op == "Exists" and key not in labels_:
            return False
        if op == "DoesNotExist" and key in labels_:
            return False
    return True


def _selector_empty(sel: Obj) -> bool:
    return not _d(sel.get("matchLabels")) and not _l(sel.get("matchExpressions"))


# ======================================================================
# Pods
# ======================================================================

PROTOCOLS = ("SCTP", "TCP", "UDP")
RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
UPDATABLE_POD_SPEC_FIELDS = (
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
)
_STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_QUANTITY_ERR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
_VOLUME_SOURCES = (  # upstream's order: the first one set wins, later ones are "more than 1"
    "emptyDir", "hostPath", "gitRepo", "gcePersistentDisk", "awsElasticBlockStore", "secret", "nfs", "iscsi",
    "glusterfs", "flocker", "persistentVolumeClaim", "rbd", "cinder", "cephfs", "quobyte", "downwardAPI", "fc",
    "flexVolume", "configMap", "azureFile", "vsphereVolume", "photonPersistentDisk", "portworxVolume",
    "azureDisk", "storageos", "projected", "scaleIO", "csi", "ephemeral", "image",
)


def _int_or_string_port(value: Any, path: str) -> list[Cause]:
    """``ValidatePortNumOrName``."""
    if isinstance(value, str):
        return [invalid(path, value, m) for m in is_valid_port_name(value)]
    n = _int(value)
    return [invalid(path, 0 if n is None else n, m) for m in is_valid_port_num(n)]


def _path_no_backsteps(target: str, path: str) -> list[Cause]:
    parts = re.split(r"[/\\]", target)
    if ".." in parts:
        return [invalid(path, target, "must not contain '..'")]
    return []


def _local_descending_path(target: str, path: str) -> list[Cause]:
    errs = []
    if target.startswith("/"):
        errs.append(invalid(path, target, "must be a relative path"))
    return errs + _path_no_backsteps(target, path)


def _local_non_reserved_path(target: str, path: str) -> list[Cause]:
    errs = _local_descending_path(target, path)
    if len(target) > 1 and target.startswith(".."):
        errs.append(invalid(path, target, "must not start with '..'"))
    return errs


def _file_mode(value: Any, path: str) -> list[Cause]:
    n = _int(value)
    if value is not None and (n is None or n < 0 or n > 0o777):
        return [invalid(path, value if n is None else n, FILE_MODE_ERROR)]
    return []


def _key_to_paths(items: Any, path: str) -> list[Cause]:
    errs: list[Cause] = []
    for i, kp in enumerate(_l(items)):
        kp = _d(kp)
        ip = f"{path}[{i}]"
        if not kp.get("key"):
            errs.append(required(ip + ".key"))
        if not kp.get("path"):
            errs.append(required(ip + ".path"))
        errs += _local_non_reserved_path(_s(kp.get("path")), ip + ".path")
        errs += _file_mode(kp.get("mode"), ip + ".mode")
    return errs


def _volume_source(vol: Obj, path: str) -> list[Cause]:
    errs: list[Cause] = []
    count = 0
    for src in _VOLUME_SOURCES:
        if vol.get(src) is None:
            continue
        if count > 0:
            errs.append(forbidden(f"{path}.{src}", "may not specify more than 1 volume type"))
            continue
        count += 1
        body = _d(vol.get(src))
        sp = f"{path}.{src}"
        if src == "hostPath":
            if not body.get("path"):
                errs.append(required(sp + ".path"))
            else:
                errs += _path_no_backsteps(_s(body["path"]), sp + ".path")
        elif src == "emptyDir":
            limit = body.get("sizeLimit")
            if limit is not None and (parse_quantity(limit) or 0) < 0:
                errs.append(forbidden(sp + ".sizeLimit", "SizeLimit field must be a valid resource quantity"))
        elif src == "secret":
            if not body.get("secretName"):
                errs.append(required(sp + ".secretName"))
            errs += _file_mode(body.get("defaultMode"), sp + ".defaultMode")
            errs += _key_to_paths(body.get("items"), sp + ".items")
        elif src == "configMap":
            if not body.get("name"):
                errs.append(required(sp + ".name"))
            errs += _file_mode(body.get("defaultMode"), sp + ".defaultMode")
            errs += _key_to_paths(body.get("items"), sp + ".items")
        elif src == "persistentVolumeClaim":
            if not body.get("claimName"):
                errs.append(required(sp + ".claimName"))
        elif src == "nfs":
            if not body.get("server"):
                errs.append(required(sp + ".server"))
            if not body.get("path"):
                errs.append(required(sp + ".path"))
            elif not _s(body["path"]).startswith("/"):
                errs.append(invalid(sp + ".path", _s(body["path"]), "must be an absolute path"))
        elif src == "downwardAPI":
            errs += _file_mode(body.get("defaultMode"), sp + ".defaultMode")
            for i, item in enumerate(_l(body.get("items"))):
                item = _d(item)
                if not item.get("path"):
                    errs.append(required(f"{sp}.items[{i}].path"))
                errs += _local_non_reserved_path(_s(item.get("path")), f"{sp}.items[{i}].path")
        elif src == "projected":
            errs += _file_mode(body.get("defaultMode"), sp + ".defaultMode")
        elif src == "csi":
            if not body.get("driver"):
                errs.append(required(sp + ".driver"))
        elif src == "ephemeral":
            if body.get("volumeClaimTemplate") is None:
                errs.append(required(sp + ".volumeClaimTemplate"))
    if count == 0:
        errs.append(required(path, "must specify a volume type"))
    return errs


def _validate_volumes(volumes: Any, path: str) -> tuple[set[str], list[Cause]]:
    errs: list[Cause] = []
    names: set[str] = set()
    for i, vol in enumerate(_l(volumes)):
        vol = _d(vol)
        ip = f"{path}[{i}]"
        el = _volume_source(vol, ip)
        nm = _s(vol.get("name"))
        if not nm:
            el.append(required(ip + ".name"))
        else:
            el += [invalid(ip + ".name", nm, m) for m in is_dns1123_label(nm)]
        if nm in names:
            el.append(duplicate(ip + ".name", nm))
        if not el:
            names.add(nm)
        errs += el
    return names, errs


def _validate_container_ports(ports: Any, path: str) -> list[Cause]:
    errs: list[Cause] = []
    names: set[str] = set()
    for i, port in enumerate(_l(ports)):
        port = _d(port)
        ip = f"{path}[{i}]"
        nm = _s(port.get("name"))
        if nm:
            msgs = is_valid_port_name(nm)
            if msgs:
                errs += [invalid(ip + ".name", nm, m) for m in msgs]
            elif nm in names:
                errs.append(duplicate(ip + ".name", nm))
            else:
                names.add(nm)
        cp = _int(port.get("containerPort"))
        if not cp:
            errs.append(required(ip + ".containerPort"))
        else:
            errs += [invalid(ip + ".containerPort", cp, m) for m in is_valid_port_num(cp)]
        hp = _int(port.get("hostPort"))
        if hp:
            errs += [invalid(ip + ".hostPort", hp, m) for m in is_valid_port_num(hp)]
        proto = _s(port.get("protocol"))
        if not proto:
            errs.append(required(ip + ".protocol"))
        elif proto not in PROTOCOLS:
            errs.append(not_supported(ip + ".protocol", proto, PROTOCOLS))
    return errs


def _validate_env(env: Any, path: str) -> list[Cause]:
    errs: list[Cause] = []
    for i, ev in enumerate(_l(env)):
        ev = _d(ev)
        ip = f"{path}[{i}]"
        nm = _s(ev.get("name"))
        if not nm:
            errs.append(required(ip + ".name"))
        else:
            errs += [invalid(ip + ".name", nm, m) for m in is_relaxed_env_var_name(nm)]
        vf = ev.get("valueFrom")
        if vf is None:
            continue
        vf = _d(vf)
        vp = ip + ".valueFrom"
        sources = [k for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef") if vf.get(k) is not None]
        if ev.get("value"):
            errs.append(invalid(vp, "", "may not be specified when `value` is not empty"))
        if not sources:
            errs.append(
                invalid(vp, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`")
            )
        elif len(sources) > 1:
            errs.append(invalid(vp, "", "may not have more than one field specified at a time"))
        for ref in ("configMapKeyRef", "secretKeyRef"):
            body = vf.get(ref)
            if isinstance(body, dict):
                if not body.get("key"):
                    errs.append(required(f"{vp}.{ref}.key"))
                else:
                    errs += [invalid(f"{vp}.{ref}.key", _s(body["key"]), m) for m in is_config_map_key(_s(body["key"]))]
        fr = vf.get("fieldRef")
        if isinstance(fr, dict):
            if not fr.get("fieldPath"):
                errs.append(required(vp + ".fieldRef.fieldPath"))
            if not fr.get("apiVersion"):
                errs.append(required(vp + ".fieldRef.apiVersion"))
    return errs


def _validate_env_from(env_from: Any, path: str) -> list[Cause]:
    errs: list[Cause] = []
    for i, ef in enumerate(_l(env_from)):
        ef = _d(ef)
        ip = f"{path}[{i}]"
        prefix = _s(ef.get("prefix"))
        if prefix:
            errs += [invalid(ip + ".prefix", prefix, m) for m in is_relaxed_env_var_name(prefix)]
        refs = [r for r in ("configMapRef", "secretRef") if ef.get(r) is not None]
        for r in refs:
            if not _d(ef.get(r)).get("name"):
                errs.append(required(f"{ip}.{r}.name"))
        if not refs:
            errs.append(invalid(ip, "", "must specify one of: `configMapRef` or `secretRef`"))
        elif len(refs) > 1:
            errs.append(invalid(ip, "", "may not have more than one field specified at a time"))
    return errs


def _validate_volume_mounts(mounts: Any, volumes: set[str], path: str) -> list[Cause]:
    errs: list[Cause] = []
    points: set[str] = set()
    for i, m in enumerate(_l(mounts)):
        m = _d(m)
        ip = f"{path}[{i}]"
        nm = _s(m.get("name"))
        if not nm:
            errs.append(required(ip + ".name"))
        if nm not in volumes:
            errs.append(not_found(ip + ".name", nm))
        mp = _s(m.get("mountPath"))
        if not mp:
            errs.append(required(ip + ".mountPath"))
        if mp in points:
            errs.append(invalid(ip + ".mountPath", mp, "must be unique"))
        points.add(mp)
        if m.get("subPath"):
            errs += _local_descending_path(_s(m["subPath"]), path + ".subPath")
    return errs


def _container_resource_name(name: str, path: str) -> list[Cause]:
    errs = [invalid(path, name, m) for m in is_qualified_name(name)]
    if errs:
        return errs
    if "/" not in name:
        if name not in _STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
            return [invalid(path, name, "must be a standard resource for containers")]
    else:
        domain = name.split("/")[0]
        native = domain == "kubernetes.io" or domain.endswith(".kubernetes.io")
        if not native and is_qualified_name("requests." + name):
            return [invalid(path, name, "doesn't follow extended resource name standard")]
    return errs


def _validate_resources(res: Any, path: str) -> list[Cause]:
    res = _d(res)
    errs: list[Cause] = []
    limits, requests = _d(res.get("limits")), _d(res.get("requests"))
    parsed_limits = {}
    for name, raw in limits.items():
        rp = f"{path}.limits[{name}]"
        errs += _container_resource_name(_s(name), rp)
        q = parse_quantity(raw)
        if q is None:
            errs.append(invalid(rp, _s(raw), _QUANTITY_ERR))
        elif q < 0:
            errs.append(invalid(rp, _s(raw), IS_NEGATIVE))
        parsed_limits[name] = q
    for name, raw in requests.items():
        rp = f"{path}.requests[{name}]"
        errs += _container_resource_name(_s(name), rp)
        q = parse_quantity(raw)
        if q is None:
            errs.append(invalid(rp, _s(raw), _QUANTITY_ERR))
            continue
        if q < 0:
            errs.append(invalid(rp, _s(raw), IS_NEGATIVE))
        lim = parsed_limits.get(name)
        if lim is not None and q > lim:
            errs.append(
                invalid(path + ".requests", _s(raw), f"must be less than or equal to {name} limit of {_s(limits[name])}")
            )
    return errs


def _validate_security_context(sc: Any, path: str) -> list[Cause]:
    if not isinstance(sc, dict):
        return []
    errs: list[Cause] = []
    for key in ("runAsUser", "runAsGroup"):
        n = _int(sc.get(key))
        if n is not None and not 0 <= n <= 0xFFFFFFFF:
            errs.append(invalid(f"{path}.{key}", n, inclusive_range_error(0, 0xFFFFFFFF)))
    if sc.get("allowPrivilegeEscalation") is False and sc.get("privileged") is True:
        errs.append(invalid(path, GoExpr("&core.SecurityContext{...}"), "cannot set `allowPrivilegeEscalation` to false and `privileged` to true"))
    return errs


def _validate_handler(handler: Obj, path: str, grace: int | None, *, probe: bool) -> list[Cause]:
    errs: list[Cause] = []
    kinds = ("exec", "httpGet", "tcpSocket", "grpc") if probe else ("exec", "httpGet", "tcpSocket", "sleep")
    count = 0
    for k in kinds:
        if handler.get(k) is None:
            continue
        if count > 0:
            errs.append(forbidden(f"{path}.{k}", "may not specify more than 1 handler type"))
            continue
        count += 1
        body = _d(handler.get(k))
        hp = f"{path}.{k}"
        if k == "exec":
            if not _l(body.get("command")):
                errs.append(required(hp + ".command"))
        elif k == "httpGet":
            if not body.get("path"):
                errs.append(required(hp + ".path"))
            errs += _int_or_string_port(body.get("port"), hp + ".port")
            scheme = _s(body.get("scheme"))
            if scheme not in ("HTTP", "HTTPS"):
                errs.append(not_supported(hp + ".scheme", scheme, ("HTTP", "HTTPS")))
            for h in _l(body.get("httpHeaders")):
                hn = _s(_d(h).get("name"))
                errs += [invalid(hp + ".httpHeaders", hn, m) for m in is_http_header_name(hn)]
        elif k == "tcpSocket":
            errs += _int_or_string_port(body.get("port"), hp + ".port")
        elif k == "grpc":
            errs += _int_or_string_port(_num(body.get("port")), hp + ".port")
        elif k == "sleep":
            secs = _num(body.get("seconds"))
            if grace is not None and (secs <= 0 or secs > grace):
                errs.append(
                    invalid(
                        hp,
                        secs,
                        f"must be greater than 0 and less than terminationGracePeriodSeconds ({grace}). "
                        "Enable AllowPodLifecycleSleepActionZeroValue feature gate for zero sleep.",
                    )
                )
    if count == 0:
        errs.append(required(path, "must specify a handler type"))
    return errs


def _validate_probe(probe: Any, path: str, grace: int | None, which: str) -> list[Cause]:
    if probe is None:
        return []
    probe = _d(probe)
    errs = _validate_handler(probe, path, grace, probe=True)
    for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        errs += nonnegative(f"{path}.{key}", probe.get(key))
    tg = probe.get("terminationGracePeriodSeconds")
    if tg is not None and _num(tg) <= 0:
        errs.append(invalid(path + ".terminationGracePeriodSeconds", _num(tg), "must be greater than 0"))
    if which in ("liveness", "startup") and _num(probe.get("successThreshold"), 1) != 1:
        errs.append(invalid(path + ".successThreshold", _num(probe.get("successThreshold")), "must be 1"))
    if which == "readiness" and tg is not None:
        errs.append(invalid(path + ".terminationGracePeriodSeconds", _num(tg), "must not be set for readinessProbes"))
    return errs


def _validate_lifecycle(lc: Any, path: str, grace: int | None) -> list[Cause]:
    lc = _d(lc)
    errs: list[Cause] = []
    for hook in ("postStart", "preStop"):
        if lc.get(hook) is not None:
            errs += _validate_handler(_d(lc[hook]), f"{path}.{hook}", grace, probe=False)
    return errs


def _validate_container_common(c: Obj, path: str, volumes: set[str]) -> list[Cause]:
    errs: list[Cause] = []
    nm = _s(c.get("name"))
    if not nm:
        errs.append(required(path + ".name"))
    else:
        errs += [invalid(path + ".name", nm, m) for m in is_dns1123_label(nm)]
    if not _s(c.get("image")):
        errs.append(required(path + ".image"))
    tmp = _s(c.get("terminationMessagePolicy"))
    if not tmp:
        errs.append(required(path + ".terminationMessagePolicy"))
    elif tmp not in TERMINATION_MESSAGE_POLICIES:
        errs.append(not_supported(path + ".terminationMessagePolicy", tmp, TERMINATION_MESSAGE_POLICIES))
    errs += _validate_container_ports(c.get("ports"), path + ".ports")
    errs += _validate_env(c.get("env"), path + ".env")
    errs += _validate_env_from(c.get("envFrom"), path + ".envFrom")
    errs += _validate_volume_mounts(c.get("volumeMounts"), volumes, path + ".volumeMounts")
    ipp = _s(c.get("imagePullPolicy"))
    if not ipp:
        errs.append(required(path + ".imagePullPolicy"))
    elif ipp not in PULL_POLICIES:
        errs.append(not_supported(path + ".imagePullPolicy", ipp, PULL_POLICIES))
    errs += _validate_resources(c.get("resources"), path + ".resources")
    errs += _validate_security_context(c.get("securityContext"), path + ".securityContext")
    return errs


def _validate_containers(containers: Any, volumes: set[str], grace: int | None, path: str) -> list[Cause]:
    containers = _l(containers)
    if not containers:
        return [required(path)]
    errs: list[Cause] = []
    names: set[str] = set()
    for i, c in enumerate(containers):
        c = _d(c)
        cp = f"{path}[{i}]"
        errs += _validate_container_common(c, cp, volumes)
        nm = _s(c.get("name"))
        if nm in names:
            errs.append(duplicate(cp + ".name", nm))
        else:
            names.add(nm)
        if c.get("lifecycle") is not None:
            errs += _validate_lifecycle(c["lifecycle"], cp + ".lifecycle", grace)
        errs += _validate_probe(c.get("livenessProbe"), cp + ".livenessProbe", grace, "liveness")
        errs += _validate_probe(c.get("readinessProbe"), cp + ".readinessProbe", grace, "readiness")
        errs += _validate_probe(c.get("startupProbe"), cp + ".startupProbe", grace, "startup")
        if c.get("restartPolicy") is not None:
            errs.append(forbidden(cp + ".restartPolicy", "may not be set for non-init containers"))
    errs += _host_port_conflicts(containers, path)
    return errs


def _host_port_conflicts(containers: list[Any], path: str) -> list[Cause]:
    errs: list[Cause] = []
    seen: set[str] = set()
    for ci, c in enumerate(containers):
        for pi, port in enumerate(_l(_d(c).get("ports"))):
            port = _d(port)
            hp = _num(port.get("hostPort"))
            if hp == 0:
                continue
            key = f"{_s(port.get('protocol'))}/{_s(port.get('hostIP'))}/{hp}"
            if key in seen:
                errs.append(duplicate(f"{path}[{ci}].ports[{pi}].hostPort", key))
            seen.add(key)
    return errs


def _validate_init_containers(
    inits: Any, regular: Any, volumes: set[str], grace: int | None, path: str
) -> list[Cause]:
    errs: list[Cause] = []
    names = {_s(_d(c).get("name")) for c in _l(regular)}
    for i, c in enumerate(_l(inits)):
        c = _d(c)
        cp = f"{path}[{i}]"
        errs += _validate_container_common(c, cp, volumes)
        restart_always = False
        if c.get("restartPolicy") is not None:
            rp = _s(c["restartPolicy"])
            if rp != "Always":
                errs.append(not_supported(cp + ".restartPolicy", rp, ("Always",)))
            restart_always = rp == "Always"
        nm = _s(c.get("name"))
        if nm in names:
            errs.append(duplicate(cp + ".name", nm))
        elif nm:
            names.add(nm)
        errs += _host_port_conflicts([c], path)
        if restart_always:
            if c.get("lifecycle") is not None:
                errs += _validate_lifecycle(c["lifecycle"], cp + ".lifecycle", grace)
            errs += _validate_probe(c.get("livenessProbe"), cp + ".livenessProbe", grace, "liveness")
            errs += _validate_probe(c.get("readinessProbe"), cp + ".readinessProbe", grace, "readiness")
            errs += _validate_probe(c.get("startupProbe"), cp + ".startupProbe", grace, "startup")
        else:
            for key in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe"):
                if c.get(key) is not None:
                    errs.append(forbidden(f"{cp}.{key}", "may not be set for init containers without restartPolicy=Always"))
    return errs


def validate_tolerations(tolerations: Any, path: str) -> list[Cause]:
    """``ValidateTolerations``."""
    errs: list[Cause] = []
    for i, t in enumerate(_l(tolerations)):
        t = _d(t)
        ip = f"{path}[{i}]"
        key, op, value, effect = _s(t.get("key")), _s(t.get("operator")), _s(t.get("value")), _s(t.get("effect"))
        if key:
            errs += validate_label_name(key, ip + ".key")
        if not key and op != "Exists":
            errs.append(
                invalid(ip + ".operator", op, 'operator must be Exists when `key` is empty, which means "match all values and all keys"')
            )
        if t.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.append(invalid(ip + ".effect", effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"))
        if op in ("Equal", ""):
            msgs = is_label_value(value)
            if msgs:
                errs.append(invalid(ip + ".operator", value, ";".join(msgs)))
        elif op == "Exists":
            if value:
                errs.append(invalid(ip + ".operator", value, "value must be empty when `operator` is 'Exists'"))
        else:
            errs.append(not_supported(ip + ".operator", op, ("Equal", "Exists")))
        if effect and effect not in TAINT_EFFECTS:
            errs.append(not_supported(ip + ".effect", effect, TAINT_EFFECTS))
    return errs


def _validate_dns_config(spec: Obj, path: str) -> list[Cause]:
    cfg = spec.get("dnsConfig")
    errs: list[Cause] = []
    if spec.get("dnsPolicy") == "None":
        if cfg is None:
            return [required(path, "must provide `dnsConfig` when `dnsPolicy` is None")]
        if not _l(_d(cfg).get("nameservers")):
            return [required(path + ".nameservers", "must provide at least one DNS nameserver when `dnsPolicy` is None")]
    if cfg is None:
        return errs
    cfg = _d(cfg)
    ns = _l(cfg.get("nameservers"))
    if len(ns) > 3:
        errs.append(invalid(path + ".nameservers", [_s(n) for n in ns], "must not have more than 3 nameservers"))
    for i, n in enumerate(ns):
        errs += validate_ip(f"{path}.nameservers[{i}]", n)
    searches = [_s(s) for s in _l(cfg.get("searches"))]
    if len(searches) > 32:
        errs.append(invalid(path + ".searches", searches, "must not have more than 32 search paths"))
    if len(" ".join(searches)) > 2048:
        errs.append(invalid(path + ".searches", searches, "must not have more than 2048 characters (including spaces) in the search list"))
    for i, s in enumerate(searches):
        s = s[:-1] if s.endswith(".") else s
        errs += [invalid(f"{path}.searches[{i}]", s, m) for m in is_dns1123_subdomain(s)]
    for i, opt in enumerate(_l(cfg.get("options"))):
        if not _d(opt).get("name"):
            errs.append(required(f"{path}.options[{i}]", "must not be empty"))
    return errs


def validate_pod_spec(spec: Any, path: str = "spec", *, is_pod: bool = True) -> list[Cause]:
    """``ValidatePodSpec`` (plus the Pod-only container checks when ``is_pod``)."""
    spec = _d(spec)
    errs: list[Cause] = []
    tgps = spec.get("terminationGracePeriodSeconds")
    if tgps is None:
        errs.append(required(path + ".terminationGracePeriodSeconds"))
    grace = _int(tgps)
    volumes, verrs = _validate_volumes(spec.get("volumes"), path + ".volumes")
    errs += verrs
    errs += _validate_containers(spec.get("containers"), volumes, grace, path + ".containers")
    errs += _validate_init_containers(spec.get("initContainers"), spec.get("containers"), volumes, grace, path + ".initContainers")
    if spec.get("hostNetwork") is True:
        for ci, c in enumerate(_l(spec.get("containers"))):
            for pi, port in enumerate(_l(_d(c).get("ports"))):
                port = _d(port)
                hp, cp = _num(port.get("hostPort")), _num(port.get("containerPort"))
                if (is_pod or hp != 0) and hp != cp:
                    errs.append(
                        invalid(f"{path}.containers[{ci}].ports[{pi}].hostPort", hp, "must match `containerPort` when `hostNetwork` is true")
                    )
    rp = _s(spec.get("restartPolicy"))
    if not rp:
        errs.append(required(path + ".restartPolicy"))
    elif rp not in RESTART_POLICIES:
        errs.append(not_supported(path + ".restartPolicy", rp, RESTART_POLICIES))
    dp = _s(spec.get("dnsPolicy"))
    if not dp:
        errs.append(required(path + ".dnsPolicy"))
    elif dp not in DNS_POLICIES:
        errs.append(not_supported(path + ".dnsPolicy", dp, DNS_POLICIES))
    errs += validate_labels(spec.get("nodeSelector"), path + ".nodeSelector")
    sc = spec.get("securityContext")
    if isinstance(sc, dict):
        scp = path + ".securityContext"
        for key in ("fsGroup", "runAsUser", "runAsGroup"):
            n = _int(sc.get(key))
            if n is not None and not 0 <= n <= 0xFFFFFFFF:
                errs.append(invalid(f"{scp}.{key}", n, inclusive_range_error(0, 0xFFFFFFFF)))
        for g, gid in enumerate(_l(sc.get("supplementalGroups"))):
            n = _int(gid)
            if n is None or not 0 <= n <= 0xFFFFFFFF:
                errs.append(invalid(f"{scp}.supplementalGroups[{g}]", gid, inclusive_range_error(0, 0xFFFFFFFF)))
    for i, ref in enumerate(_l(spec.get("imagePullSecrets"))):
        if set(_d(ref)) - {"name"}:
            errs.append(invalid(f"{path}.imagePullSecrets[{i}]", GoExpr("core.LocalObjectReference{...}"), "only name may be set"))
    errs += _validate_dns_config(spec, path + ".dnsConfig")
    for i, gate in enumerate(_l(spec.get("readinessGates"))):
        ct = _s(_d(gate).get("conditionType"))
        errs += [invalid(f"{path}.readinessGates[{i}].conditionType", ct, m) for m in is_qualified_name(ct)]
    for key, fn in (("serviceAccountName", name_is_dns_subdomain), ("nodeName", name_is_dns_subdomain),
                    ("priorityClassName", name_is_dns_subdomain)):
        value = _s(spec.get(key))
        if value:
            errs += [invalid(f"{path}.{key}", value, m) for m in fn(value, False)]
    ads = spec.get("activeDeadlineSeconds")
    if ads is not None:
        n = _int(ads)
        if n is None or n < 1 or n > MAX_INT32:
            errs.append(invalid(path + ".activeDeadlineSeconds", ads, inclusive_range_error(1, MAX_INT32)))
    for key in ("hostname", "subdomain"):
        value = _s(spec.get(key))
        if value:
            errs += [invalid(f"{path}.{key}", value, m) for m in is_dns1123_label(value)]
    errs += validate_tolerations(spec.get("tolerations"), path + ".tolerations")
    for i, alias in enumerate(_l(spec.get("hostAliases"))):
        alias = _d(alias)
        errs += validate_ip(f"{path}.hostAliases[{i}].ip", _s(alias.get("ip")))
        for j, hn in enumerate(_l(alias.get("hostnames"))):
            errs += [invalid(f"{path}.hostAliases[{i}].hostnames[{j}]", _s(hn), m) for m in is_dns1123_subdomain(_s(hn))]
    pp = spec.get("preemptionPolicy")
    if pp is not None and pp not in ("PreemptLowerPriority", "Never"):
        if pp == "":
            errs.append(required(path + ".preemptionPolicy"))
        else:
            errs.append(not_supported(path + ".preemptionPolicy", _s(pp), ("PreemptLowerPriority", "Never")))
    if is_pod:
        for key in ("containers", "initContainers"):
            for i, c in enumerate(_l(spec.get(key))):
                image = _s(_d(c).get("image"))
                if image != image.strip():
                    errs.append(invalid(f"{path}.{key}[{i}].image", image, "must not have leading or trailing whitespace"))
    return errs


def _validate_pod_meta_and_spec(obj: Obj) -> list[Cause]:
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
    return errs + validate_pod_spec(_d(obj.get("spec")), "spec", is_pod=True)


def _validate_pod(obj: Obj, opts: _Opts) -> list[Cause]:
    errs = _validate_pod_meta_and_spec(obj)
    spec = _d(obj.get("spec"))
    if _l(spec.get("ephemeralContainers")):
        errs.append(forbidden("spec.ephemeralContainers", "cannot be set on create"))
    if spec.get("nodeName") and _l(spec.get("schedulingGates")):
        errs.append(forbidden("spec.nodeName", "cannot be set until all schedulingGates have been cleared"))
    return errs


def _only_added_tolerations(new: Any, old: Any, path: str) -> list[Cause]:
    new_list = [_d(t) for t in _l(new)]
    for o in _l(old):
        o = _d(o)
        found = False
        for n in new_list:
            clone = dict(o)
            if "tolerationSeconds" in n:
                clone["tolerationSeconds"] = n["tolerationSeconds"]
            else:
                clone.pop("tolerationSeconds", None)
            if clone == n:
                found = True
                break
        if not found:
            return [forbidden(path, "existing toleration can not be modified except its tolerationSeconds")]
    return []


def _spec_diff(old: Any, new: Any) -> str:
    a = json.dumps(old, indent=2, sort_keys=True).splitlines()
    b = json.dumps(new, indent=2, sort_keys=True).splitlines()
    lines = [ln for ln in difflib.unified_diff(a, b, "old", "new", lineterm="", n=1)][2:]
    return "\n".join(lines)


def _validate_pod_update(new: Obj, old: Obj, opts: _Opts) -> list[Cause]:
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    errs += _validate_pod_meta_and_spec(new)
    spec, old_spec = _d(new.get("spec")), _d(old.get("spec"))
    for key in ("containers", "initContainers"):
        nc, oc = _l(spec.get(key)), _l(old_spec.get(key))
        if len(nc) != len(oc):
            errs.append(forbidden(f"spec.{key}", "pod updates may not add or remove containers"))
            return errs
    ads = spec.get("activeDeadlineSeconds")
    old_ads = old_spec.get("activeDeadlineSeconds")
    if ads is not None:
        n = _num(ads)
        if n < 0 or n > MAX_INT32:
            errs.append(invalid("spec.activeDeadlineSeconds", n, inclusive_range_error(0, MAX_INT32)))
            return errs
        if old_ads is not None and _num(old_ads) < n:
            errs.append(invalid("spec.activeDeadlineSeconds", n, "must be less than or equal to previous value"))
            return errs
    elif old_ads is not None:
        errs.append(invalid("spec.activeDeadlineSeconds", None, "must not update from a positive integer to nil value"))
    errs += _only_added_tolerations(spec.get("tolerations"), old_spec.get("tolerations"), "spec.tolerations")
    if spec == old_spec:
        return errs
    munged = json.loads(json.dumps(spec))
    for key in ("containers", "initContainers"):
        for c, oc in zip(_l(munged.get(key)), _l(old_spec.get(key))):
            if isinstance(c, dict):
                if "image" in _d(oc):
                    c["image"] = _d(oc)["image"]
                else:
                    c.pop("image", None)
    for key in ("activeDeadlineSeconds", "tolerations", "schedulingGates"):
        if key in old_spec:
            munged[key] = old_spec[key]
        else:
            munged.pop(key, None)
    old_tg = _int(old_spec.get("terminationGracePeriodSeconds"))
    if old_tg is not None and old_tg < 0 and _int(munged.get("terminationGracePeriodSeconds")) == 1:
        munged["terminationGracePeriodSeconds"] = old_spec["terminationGracePeriodSeconds"]
    if munged != old_spec:
        errs.append(
            forbidden(
                "spec",
                "pod updates may not change fields other than "
                + ",".join(UPDATABLE_POD_SPEC_FIELDS)
                + "\n"
                + _spec_diff(old_spec, munged),
            )
        )
    return errs


def _validate_pod_status_update(new: Obj, old: Obj, opts: _Opts) -> list[Cause]:
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    if _d(new.get("spec")).get("nodeName") != _d(old.get("spec")).get("nodeName"):
        errs.append(forbidden("status.nodeName", "may not be changed directly"))
    status, old_status = _d(new.get("status")), _d(old.get("status"))
    for i, cond in enumerate(_l(status.get("conditions"))):
        ct = _s(_d(cond).get("type"))
        if ct not in ("PodScheduled", "Ready", "Initialized"):
            errs += [invalid(f"status.conditions[{i}].Type", ct, m) for m in is_qualified_name(ct)]
    if "qosClass" in old_status or "qosClass" in status:
        errs += immutable("status.qosClass", _s(status.get("qosClass")), _s(old_status.get("qosClass")))
    ips = [_s(_d(p).get("ip")) for p in _l(status.get("podIPs"))]
    for i, ip in enumerate(ips):
        errs += validate_ip(f"status.podIPs[{i}]", ip)
    if len(ips) > 1:
        parsed = [parse_ip(ip) for ip in ips]
        if len(ips) > 2 or None in parsed or len({p.version for p in parsed if p}) != len(ips):
            errs.append(invalid("status.podIPs", GoExpr("[]core.PodIP{...}"), "may specify no more than one IP for each IP family"))
    return errs


# ======================================================================
# Services
# ======================================================================

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


def _validate_service(obj: Obj, opts: _Opts) -> list[Cause]:
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


def _validate_service_update(new: Obj, old: Obj, opts: _Opts) -> list[Cause]:
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
    return errs + _validate_service(new, opts)


def _validate_service_status_update(new: Obj, old: Obj, opts: _Opts) -> list[Cause]:
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


# ======================================================================
# Deployments and ReplicaSets
# ======================================================================


def _validate_pod_template(template: Any, selector: Obj | None, path: str, owner: str) -> list[Cause]:
    """``ValidatePodTemplateSpecForReplicaSet``; ``selector`` None is upstream's ``labels.Nothing()``."""
    template = _d(template)
    md = _d(template.get("metadata"))
    tlabels = {str(k): _s(v) for k, v in _d(md.get("labels")).items()}
    errs: list[Cause] = []
    if selector is None or not _selector_empty(selector):
        if selector is None or not selector_matches(selector, tlabels):
            raw = md.get("labels")
            errs.append(
                invalid(path + ".metadata.labels", GoExpr(go_string_map(raw if isinstance(raw, dict) else None)), "`selector` does not match template `labels`")
            )
    errs += validate_labels(md.get("labels"), path + ".labels")
    errs += validate_annotations(md.get("annotations"), path + ".annotations")
    spec = _d(template.get("spec"))
    errs += validate_pod_spec(spec, path + ".spec", is_pod=False)
    if _l(spec.get("ephemeralContainers")):
        errs.append(forbidden(path + ".spec.ephemeralContainers", "ephemeral containers not allowed in pod template"))
    rp = _s(spec.get("restartPolicy"))
    if rp != "Always":
        errs.append(not_supported(path + ".spec.restartPolicy", rp, ("Always",)))
    if spec.get("activeDeadlineSeconds") is not None:
        errs.append(forbidden(path + ".spec.activeDeadlineSeconds", f"activeDeadlineSeconds in {owner} is not Supported"))
    return errs


def _validate_selector_and_template(spec: Obj, owner: str) -> list[Cause]:
    errs: list[Cause] = []
    sel = spec.get("selector")
    if sel is None:
        errs.append(required("spec.selector"))
    else:
        errs += validate_label_selector(sel, "spec.selector")
        if _selector_empty(_d(sel)):
            errs.append(invalid("spec.selector", go_label_selector(sel), "empty selector is invalid for deployment"))
    if sel is not None and not _selector_parses(_d(sel)):
        errs.append(invalid("spec.selector", go_label_selector(sel), "invalid label selector"))
    else:
        errs += _validate_pod_template(spec.get("template"), _d(sel) if sel is not None else None, "spec.template", owner)
    return errs


def _validate_int_or_percent(value: Any, path: str) -> list[Cause]:
    if isinstance(value, str):
        return [invalid(path, intstr(value), m) for m in is_valid_percent(value)]
    n = _int(value)
    if n is None:
        return [invalid(path, intstr(value), "must be an integer or percentage (e.g '5%')")]
    return nonnegative(path, n)


def _int_or_percent_value(value: Any) -> int:
    if isinstance(value, str):
        if not is_valid_percent(value):
            return int(value[:-1])
        return int(value) if value.lstrip("-").isdigit() else 0
    return _num(value)


def _validate_deployment_spec(spec: Obj) -> list[Cause]:
    errs = nonnegative("spec.replicas", spec.get("replicas"))
    errs += _validate_selector_and_template(spec, "ReplicaSet")
    strategy = _d(spec.get("strategy"))
    stype = _s(strategy.get("type"))
    if stype == "Recreate":
        if strategy.get("rollingUpdate") is not None:
            errs.append(forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"))
    elif stype == "RollingUpdate":
        ru = strategy.get("rollingUpdate")
        if ru is None:
            errs.append(required("spec.strategy.rollingUpdate", "this should be defaulted and never be nil"))
        else:
            ru = _d(ru)
            rp = "spec.strategy.rollingUpdate"
            mu, ms = ru.get("maxUnavailable"), ru.get("maxSurge")
            errs += _validate_int_or_percent(mu, rp + ".maxUnavailable")
            errs += _validate_int_or_percent(ms, rp + ".maxSurge")
            if _int_or_percent_value(mu) == 0 and _int_or_percent_value(ms) == 0:
                errs.append(invalid(rp + ".maxUnavailable", intstr(mu), "may not be 0 when `maxSurge` is 0"))
            if isinstance(mu, str) and not is_valid_percent(mu) and int(mu[:-1]) > 100:
                errs.append(invalid(rp + ".maxUnavailable", intstr(mu), "must not be greater than 100%"))
    else:
        ru = strategy.get("rollingUpdate")
        shown = GoExpr(
            "apps.DeploymentStrategy{Type:"
            + go_quote(stype)
            + ", RollingUpdate:(*apps.RollingUpdateDeployment)("
            + ("nil" if ru is None else "0xc000000000")
            + ")}"
        )
        errs.append(not_supported("spec.strategy", shown, ("Recreate", "RollingUpdate")))
    errs += nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    if spec.get("revisionHistoryLimit") is not None:
        errs += nonnegative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    if spec.get("progressDeadlineSeconds") is not None:
        pds = _num(spec.get("progressDeadlineSeconds"))
        errs += nonnegative("spec.progressDeadlineSeconds", pds)
        if pds <= _num(spec.get("minReadySeconds")):
            errs.append(invalid("spec.progressDeadlineSeconds", pds, "must be greater than minReadySeconds"))
    return errs


def _validate_deployment(obj: Obj, opts: _Opts) -> list[Cause]:
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
    return errs + _validate_deployment_spec(_d(obj.get("spec")))


def _validate_replicaset(obj: Obj, opts: _Opts) -> list[Cause]:
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
    spec = _d(obj.get("spec"))
    errs += nonnegative("spec.replicas", spec.get("replicas"))
    errs += nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    return errs + _validate_selector_and_template(spec, "ReplicaSet")


def _selector_immutable(new: Obj, old: Obj) -> list[Cause]:
    sel, old_sel = _d(new.get("spec")).get("selector"), _d(old.get("spec")).get("selector")
    if sel != old_sel:
        return [invalid("spec.selector", go_label_selector(sel), FIELD_IMMUTABLE)]
    return []


def _validate_deployment_update(new: Obj, old: Obj, opts: _Opts) -> list[Cause]:
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    errs += _validate_deployment_spec(_d(new.get("spec")))
    return errs + _selector_immutable(new, old)


def _validate_replicaset_update(new: Obj, old: Obj, opts: _Opts) -> list[Cause]:
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    spec = _d(new.get("spec"))
    errs += nonnegative("spec.replicas", spec.get("replicas"))
    errs += nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    errs += _validate_selector_and_template(spec, "ReplicaSet")
    return errs + _selector_immutable(new, old)


def _validate_workload_status_update(new: Obj, old: Obj, opts: _Opts) -> list[Cause]:
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    status = _d(new.get("status"))
    keys = ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas", "availableReplicas",
            "unavailableReplicas", "fullyLabeledReplicas", "collisionCount")
    for key in keys:
        errs += nonnegative(f"status.{key}", status.get(key))
    replicas = _num(status.get("replicas"))
    for key in ("updatedReplicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
        if _num(status.get(key)) > replicas:
            errs.append(invalid(f"status.{key}", _num(status.get(key)), "cannot be greater than status.replicas"))
    if _num(status.get("availableReplicas")) > _num(status.get("readyReplicas")):
        errs.append(invalid("status.availableReplicas", _num(status.get("availableReplicas")), "cannot be greater than readyReplicas"))
    old_cc = _d(old.get("status")).get("collisionCount")
    if old_cc is not None and _num(status.get("collisionCount")) < _num(old_cc):
        errs.append(invalid("status.collisionCount", _num(status.get("collisionCount")), "cannot be decremented"))
    return errs


# ======================================================================
# Endpoints and EndpointSlices
# ======================================================================

ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")
MAX_SLICE_ENDPOINTS = 1000
MAX_SLICE_ADDRESSES = 100
MAX_SLICE_PORTS = 100
MAX_TOPOLOGY_LABELS = 16
MAX_ZONE_HINTS = 8


def _validate_endpoints(obj: Obj, opts: _Opts) -> list[Cause]:
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


def _validate_endpointslice(obj: Obj, opts: _Opts, address_types: tuple[str, ...] = ADDRESS_TYPES) -> list[Cause]:
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


def _validate_endpointslice_update(new: Obj, old: Obj, opts: _Opts) -> list[Cause]:
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    errs += _validate_endpointslice(new, opts, ADDRESS_TYPES + ("IP",))
    return errs + immutable("addressType", _s(new.get("addressType")), _s(old.get("addressType")))


# ======================================================================
# Namespaces, Nodes, ConfigMaps, Events, Leases
# ======================================================================


def _validate_namespace(obj: Obj, opts: _Opts) -> list[Cause]:
    errs = validate_object_meta(obj.get("metadata"), False, name_is_dns_label)
    for f in _l(_d(obj.get("spec")).get("finalizers")):
        f = _s(f)
        errs += [invalid("spec.finalizers", f, m) for m in is_qualified_name(f)]
        errs += _validate_kube_finalizer_name(f, "spec.finalizers")
    return errs


def _validate_namespace_status_update(new: Obj, old: Obj, opts: _Opts) -> list[Cause]:
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


def _validate_node(obj: Obj, opts: _Opts) -> list[Cause]:
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


def _validate_node_update(new: Obj, old: Obj, opts: _Opts) -> list[Cause]:
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


def _validate_configmap(obj: Obj, opts: _Opts) -> list[Cause]:
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


def _validate_configmap_update(new: Obj, old: Obj, opts: _Opts) -> list[Cause]:
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    if old.get("immutable") is True:
        if new.get("immutable") is not True:
            errs.append(forbidden("immutable", "field is immutable when `immutable` is set"))
        if new.get("data") != old.get("data"):
            errs.append(forbidden("data", "field is immutable when `immutable` is set"))
        if new.get("binaryData") != old.get("binaryData"):
            errs.append(forbidden("binaryData", "field is immutable when `immutable` is set"))
    return errs + _validate_configmap(new, opts)


def _validate_event(obj: Obj, opts: _Opts) -> list[Cause]:
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


def _validate_lease(obj: Obj, opts: _Opts) -> list[Cause]:
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain, kube_finalizers=False)
    spec = _d(obj.get("spec"))
    lds = spec.get("leaseDurationSeconds")
    if lds is not None and _num(lds) <= 0:
        errs.append(invalid("spec.leaseDurationSeconds", _num(lds), "must be greater than 0"))
    lt = spec.get("leaseTransitions")
    if lt is not None and _num(lt) < 0:
        errs.append(invalid("spec.leaseTransitions", _num(lt), IS_NEGATIVE))
    strategy = spec.get("strategy")
    if strategy is not None and strategy != "OldestEmulationVersion":
        errs.append(not_supported("spec.strategy", _s(strategy), ("OldestEmulationVersion",)))
    if spec.get("preferredHolder") and strategy is None:
        errs.append(forbidden("spec.preferredHolder", "may only be specified if `strategy` is defined"))
    return errs


# ======================================================================
# Entry points
# ======================================================================


class _Opts:
    __slots__ = ("loopback_ok",)

    def __init__(self, loopback_ok: bool = False) -> None:
        self.loopback_ok = loopback_ok


def _generic_update(validate_fn: Callable[[Obj, _Opts], list[Cause]]) -> Callable[[Obj, Obj, _Opts], list[Cause]]:
    def fn(new: Obj, old: Obj, opts: _Opts) -> list[Cause]:
        errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
        return errs + validate_fn(new, opts)

    return fn


def _meta_only_update(new: Obj, old: Obj, opts: _Opts) -> list[Cause]:
    return validate_object_meta_update(new.get("metadata"), old.get("metadata"))


_CREATE: dict[str, Callable[[Obj, _Opts], list[Cause]]] = {
    "Namespace": _validate_namespace,
    "Node": _validate_node,
    "Pod": _validate_pod,
    "Service": _validate_service,
    "Endpoints": _validate_endpoints,
    "ConfigMap": _validate_configmap,
    "Event": _validate_event,
    "Deployment": _validate_deployment,
    "ReplicaSet": _validate_replicaset,
    "EndpointSlice": _validate_endpointslice,
    "Lease": _validate_lease,
}

_UPDATE: dict[str, Callable[[Obj, Obj, _Opts], list[Cause]]] = {
    "Namespace": _meta_only_update,
    "Node": _validate_node_update,
    "Pod": _validate_pod_update,
    "Service": _validate_service_update,
    "Endpoints": _generic_update(_validate_endpoints),
    "ConfigMap": _validate_configmap_update,
    "Event": _generic_update(_validate_event),
    "Deployment": _validate_deployment_update,
    "ReplicaSet": _validate_replicaset_update,
    "EndpointSlice": _validate_endpointslice_update,
    "Lease": _generic_update(_validate_lease),
}

_STATUS_UPDATE: dict[str, Callable[[Obj, Obj, _Opts], list[Cause]]] = {
    "Namespace": _validate_namespace_status_update,
    "Node": _validate_node_update,
    "Pod": _validate_pod_status_update,
    "Service": _validate_service_status_update,
    "Deployment": _validate_workload_status_update,
    "ReplicaSet": _validate_workload_status_update,
}


def validate(kind: Kind | str, obj: Obj, *, loopback_ok: bool = False) -> list[Cause]:
    """The problems that stop ``obj`` (a new object of ``kind``) from being created."""
    k = _kind(kind)
    fn = _CREATE.get(k.kind)
    if fn is None:
        return []
    return _dedupe(fn(_d(obj), _Opts(loopback_ok)))


def validate_update(
    kind: Kind | str,
    new: Obj,
    old: Obj,
    *,
    subresource: str | None = None,
    loopback_ok: bool = False,
) -> list[Cause]:
    """The problems that stop ``old`` from being replaced by ``new``.

    Includes every check of ``validate(new)`` plus what may not change
    (identity metadata, a pod's spec, a selector, an address type, ...).
    With ``subresource="status"`` only the status rules apply, as for a
    write to ``.../status``.
    """
    k = _kind(kind)
    table = _STATUS_UPDATE if subresource == "status" else _UPDATE
    fn = table.get(k.kind) or _UPDATE.get(k.kind)
    if fn is None:
        return []
    return _dedupe(fn(_d(new), _d(old), _Opts(loopback_ok)))


def _dedupe(causes: list[Cause]) -> list[Cause]:
    """Drop repeated causes (upstream repeats some, e.g. labels on update; its message lists them once)."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for c in causes:
        key = (c["field"], c["reason"], c["message"])
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def check(kind: Kind | str, obj: Obj, old: Obj | None = None, **kwargs: Any) -> None:
    """Raise the 422 ``APIError`` kube-apiserver would answer with, if ``obj`` is invalid."""
    k = _kind(kind)
    causes = validate(k, obj, **kwargs) if old is None else validate_update(k, obj, old, **kwargs)
    if causes:
        md = _d(obj.get("metadata")) if isinstance(obj, dict) else {}
        raise errors.invalid_object(k.kind, _s(md.get("name")), k.group, causes)

