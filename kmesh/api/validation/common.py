"""What every validation module shares: Go-style printing of values, the cause
constructors (``field.Required``, ``field.Invalid``...), IP parsing as Go
does it, and small accessors.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Iterable

from kmesh.api import errors
from kmesh.api.errors import Cause
from kmesh.api.kinds import Kind, get
from kmesh.api.obj import Obj

NameFn = Callable[[str, bool], list[str]]

MAX_INT32 = 2**31 - 1
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024
MAX_CONFIGMAP_SIZE = 1024 * 1024
MAX_CLIENT_IP_AFFINITY_SECONDS = 86400
FIELD_IMMUTABLE = "field is immutable"
IS_NEGATIVE = "must be greater than or equal to 0"
FILE_MODE_ERROR = "must be a number between 0 and 0777 (octal), both inclusive"


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


class Opts:
    """Options of one validation run (loopback addresses allowed for the sim runtime)."""

    __slots__ = ("loopback_ok",)

    def __init__(self, loopback_ok: bool = False) -> None:
        self.loopback_ok = loopback_ok
