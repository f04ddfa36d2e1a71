"""OpenAPI constraints and defaults of kinds kmesh serves the way upstream serves them as CRDs.

The Gateway API kinds are CRDs upstream: kube-apiserver defaults them from
their OpenAPI schema (``default`` wherever a field is absent, recursively,
nulls dropped first) and checks every ``enum``, ``pattern``, length, bound and
list key before the CEL rules run. ``default_object`` and ``check_object`` do
the same, walking the field tables of ``kmesh.api.fieldschema`` with the
constraint tables (``RULES``: struct name -> field -> OpenAPI keywords) a
schema module provides. Messages are the ones kube-apiserver gives for CRDs.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

from kmesh.api import fieldschema as F
from kmesh.api.errors import Cause
from kmesh.api.validation.common import GoExpr, duplicate, invalid, not_supported, required, too_long, too_many

Rules = dict[str, dict[str, dict[str, Any]]]

# metav1.Condition as the CRDs inline it.
CONDITION_RULES: dict[str, dict[str, Any]] = {
    "type": {"pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$", "maxLength": 316},
    "status": {"enum": ["True", "False", "Unknown"]},
    "observedGeneration": {"minimum": 0},
    "reason": {"pattern": r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", "minLength": 1, "maxLength": 1024},
    "message": {"maxLength": 32768},
}
CONDITION = F.META + "Condition"
CONDITION_REQUIRED = ("lastTransitionTime", "message", "reason", "status", "type")


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    # ECMA/RE2 patterns of the CRDs: \x60 is a backquote, which Python reads the same way.
    return re.compile(pattern)


def _rules(rules: Rules, struct_name: str) -> dict[str, dict[str, Any]]:
    if struct_name == CONDITION:
        return CONDITION_RULES
    return rules.get(struct_name, {})


# ---------------------------------------------------------------- defaulting


def default_object(rules: Rules, struct_name: str, obj: Any) -> None:
    """Apply the schema defaults under struct ``struct_name`` to ``obj``, in place (nulls dropped first)."""
    F.load()
    _default(rules, F.Ref(struct_name), obj, {})


def _default(rules: Rules, spec: F.Spec, value: Any, rule: dict[str, Any]) -> None:
    if isinstance(spec, F.ListOf):
        if isinstance(value, list):
            for item in value:
                _default(rules, spec.item, item, rule.get("items", {}))
        return
    if isinstance(spec, F.MapOf):
        if isinstance(value, dict):
            for v in value.values():
                _default(rules, spec.value, v, rule.get("values", {}))
        return
    if not isinstance(spec, F.Ref) or not isinstance(value, dict):
        return
    st = F.STRUCTS[spec.name]
    field_rules = _rules(rules, spec.name)
    for name, sub in st.fields.items():
        if name in value and value[name] is None:
            del value[name]
        fr = field_rules.get(name, {})
        if name not in value and "default" in fr:
            value[name] = copy.deepcopy(fr["default"])
        if name in value:
            _default(rules, sub, value[name], fr)


# ---------------------------------------------------------------- checking


def check_object(rules: Rules, struct_name: str, obj: Any, path: str = "") -> list[Cause]:
    """The OpenAPI violations of ``obj`` (under struct ``struct_name``), with kube-apiserver's messages."""
    F.load()
    out: list[Cause] = []
    _check(rules, F.Ref(struct_name), obj, path, {}, out)
    return out


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check(rules: Rules, spec: F.Spec, value: Any, path: str, rule: dict[str, Any], out: list[Cause]) -> None:
    if value is None:
        return
    if isinstance(spec, F.ListOf):
        if not isinstance(value, list):
            return
        _check_list(value, path, rule, out)
        for i, item in enumerate(value):
            _check(rules, spec.item, item, f"{path}[{i}]", rule.get("items", {}), out)
        return
    if isinstance(spec, F.MapOf):
        if not isinstance(value, dict):
            return
        if "maxProperties" in rule and len(value) > rule["maxProperties"]:
            out.append(too_many(path, len(value), rule["maxProperties"]))
        for k, v in value.items():
            _check(rules, spec.value, v, f"{path}[{k}]", rule.get("values", {}), out)
        return
    if isinstance(spec, F.Ref):
        if not isinstance(value, dict):
            return
        st = F.STRUCTS[spec.name]
        field_rules = _rules(rules, spec.name)
        wanted = CONDITION_REQUIRED if spec.name == CONDITION else st.required
        for name in wanted:
            if value.get(name) is None or (spec.name == CONDITION and name == "lastTransitionTime" and not value[name]):
                out.append(required(_join(path, name)))
        for name, sub in st.fields.items():
            if name in value:
                _check(rules, sub, value[name], _join(path, name), field_rules.get(name, {}), out)
        return
    _check_scalar(value, path, rule, out)


def _check_list(value: list[Any], path: str, rule: dict[str, Any], out: list[Cause]) -> None:
    if "maxItems" in rule and len(value) > rule["maxItems"]:
        out.append(too_many(path, len(value), rule["maxItems"]))
    if "minItems" in rule and len(value) < rule["minItems"]:
        out.append(invalid(path, len(value), f"{path} in body should have at least {rule['minItems']} items"))
    kind = rule.get("listType")
    if kind == "set":
        seen: list[Any] = []
        for i, item in enumerate(value):
            if item in seen:
                out.append(duplicate(f"{path}[{i}]", item))
            seen.append(item)
    elif kind == "map":
        keys = rule.get("listMapKeys", [])
        seen_keys: list[tuple[Any, ...]] = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key = tuple(item.get(k) for k in keys)
            if key in seen_keys:
                shown = "map[string]interface {}{" + ", ".join(
                    f'"{k}":{_go(item.get(k))}' for k in keys) + "}"
                out.append(duplicate(f"{path}[{i}]", GoExpr(shown)))
            seen_keys.append(key)


def _go(v: Any) -> str:
    return f'"{v}"' if isinstance(v, str) else str(v)


def _check_scalar(value: Any, path: str, rule: dict[str, Any], out: list[Cause]) -> None:
    if "enum" in rule and value not in rule["enum"]:
        out.append(not_supported(path, value, [str(e) for e in rule["enum"]]))
        return
    if isinstance(value, str):
        if "maxLength" in rule and len(value) > rule["maxLength"]:
            out.append(too_long(path, rule["maxLength"]))
        if "minLength" in rule and len(value) < rule["minLength"]:
            out.append(invalid(path, value, f"{path} in body should be at least {rule['minLength']} chars long"))
        if "pattern" in rule and not _regex(rule["pattern"]).search(value):
            out.append(invalid(path, value, f"{path} in body should match '{rule['pattern']}'"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in rule and value < rule["minimum"]:
            out.append(invalid(path, value, f"{path} in body should be greater than or equal to {rule['minimum']}"))
        if "maximum" in rule and value > rule["maximum"]:
            out.append(invalid(path, value, f"{path} in body should be less than or equal to {rule['maximum']}"))
