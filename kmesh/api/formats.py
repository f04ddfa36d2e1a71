"""String formats from apimachinery's ``util/validation``: what a name, label, key or port may look like.

Each ``is_*`` function returns upstream's messages for a value (an empty
list: valid), word for word, so object validation and label selector
parsing report the same text kube-apiserver does.
"""

from __future__ import annotations

import re
from typing import Any

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


WILDCARD_DNS1123_SUBDOMAIN_FMT = "\\*\\." + DNS1123_SUBDOMAIN_FMT
WILDCARD_DNS1123_SUBDOMAIN_ERR = (
    "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, "
    "which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character"
)
_RE_WILDCARD_DNS1123_SUBDOMAIN = re.compile(WILDCARD_DNS1123_SUBDOMAIN_FMT)
HTTP_PATH_FMT = "[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+"
_RE_HTTP_PATH = re.compile(HTTP_PATH_FMT)


def is_wildcard_dns1123_subdomain(value: str) -> list[str]:
    """Problems with ``value`` as ``*.`` followed by an RFC 1123 subdomain (Ingress hosts)."""
    errs = []
    if _blen(value) > 253:
        errs.append(max_len_error(253))
    if not _RE_WILDCARD_DNS1123_SUBDOMAIN.fullmatch(value):
        errs.append(regex_error(WILDCARD_DNS1123_SUBDOMAIN_ERR, WILDCARD_DNS1123_SUBDOMAIN_FMT, "*.example.com"))
    return errs


def is_http_path(value: str) -> bool:
    """Whether ``value`` is made of the characters a domain-prefixed path may hold after its ``/``."""
    return bool(_RE_HTTP_PATH.fullmatch(value))
