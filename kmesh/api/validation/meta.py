"""Object metadata (names, labels, annotations, owner references, finalizers) and label selectors.
"""

from __future__ import annotations

import re
from typing import Any

from kmesh.api.errors import Cause
from kmesh.api.formats import (
    _blen,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_value,
    is_qualified_name,
)
from kmesh.api.kinds import Kind
from kmesh.api.obj import Obj
from kmesh.api.validation.common import (
    TOTAL_ANNOTATION_SIZE_LIMIT,
    GoExpr,
    GoRaw,
    NameFn,
    _d,
    _l,
    _num,
    _s,
    forbidden,
    go_string_slice,
    immutable,
    invalid,
    nonnegative,
    required,
    too_long,
)


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
