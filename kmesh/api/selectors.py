"""Label and field selectors, parsed and matched the way kube-apiserver does.

Label selectors follow ``k8s.io/apimachinery/pkg/labels``: the string syntax
(``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``,
``a>1``, ``a<1``; comma-joined), and ``metav1.LabelSelector`` objects
(``matchLabels`` + ``matchExpressions``).

Two empties differ and the difference matters to controllers:

* a ``metav1.LabelSelector`` that is present but empty (``{}``) selects
  *everything* (``from_selector_object({})``) -- a Deployment with such a
  selector would own every pod; a missing one (``None``) selects nothing;
* a Service's ``spec.selector`` is a plain map, and a missing or empty map
  selects *nothing* (``selector_from_map``): such a Service has its
  endpoints managed by someone else.

Field selectors follow ``k8s.io/apimachinery/pkg/fields``: ``=``, ``==`` and
``!=`` terms joined by commas, on the fields each kind makes selectable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from kmesh.api.errors import APIError, bad_request
from kmesh.api.formats import is_label_value, is_qualified_name
from kmesh.api.kinds import Kind

__all__ = [
    "Requirement",
    "LabelSelector",
    "everything",
    "nothing",
    "parse_label_selector",
    "from_selector_object",
    "selector_from_map",
    "format_labels",
    "format_label_selector",
    "validate_label_key",
    "validate_label_value",
    "FieldSelector",
    "FieldTerm",
    "parse_field_selector",
    "selectable_fields",
    "field_labels",
]

def _go_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def validate_label_key(key: str) -> str | None:
    """Why ``key`` is not a valid label key (a qualified name), or None."""
    errs = is_qualified_name(key)
    return "; ".join(errs) if errs else None


def validate_label_value(value: str) -> str | None:
    """Why ``value`` is not a valid label value, or None."""
    errs = is_label_value(value)
    return "; ".join(errs) if errs else None


# --------------------------------------------------------------------------
# requirements and selectors


class _SelectorError(Exception):
    """A parse or validation failure; its text is upstream's."""


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector: ``key <op> values``.

    ``op`` is one of ``=``, ``==``, ``!=``, ``in``, ``notin``, ``exists``,
    ``!`` (does not exist), ``gt``, ``lt``.
    """

    key: str
    op: str
    values: tuple[str, ...] = ()

    @classmethod
    def new(cls, key: str, op: str, values: Iterable[str] = ()) -> "Requirement":
        """A validated requirement (``labels.NewRequirement``); raises on bad input."""
        vals = tuple(values)
        kerr = validate_label_key(key)
        if kerr:
            raise _SelectorError(f"invalid label key {_go_quote(key)}: {kerr}")
        if op in ("in", "notin"):
            if not vals:
                raise _SelectorError("for 'in', 'notin' operators, values set can't be empty")
        elif op in ("=", "==", "!="):
            if len(vals) != 1:
                raise _SelectorError("exact-match compatibility requires one single value")
        elif op in ("exists", "!"):
            if vals:
                raise _SelectorError("values set must be empty for exists and does not exist")
        elif op in ("gt", "lt"):
            if len(vals) != 1:
                raise _SelectorError("for 'Gt', 'Lt' operators, exactly one value is required")
            if not re.fullmatch(r"[+-]?[0-9]+", vals[0]):
                raise _SelectorError("for 'Gt', 'Lt' operators, the value must be an integer")
        else:
            raise _SelectorError(f"operator '{op}' is not recognized")
        for v in vals:
            verr = validate_label_value(v)
            if verr:
                raise _SelectorError(f"invalid label value: {_go_quote(v)}: at key: {_go_quote(key)}: {verr}")
        return cls(key, op, vals)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a label set satisfies this requirement."""
        op = self.op
        if op in ("=", "==", "in"):
            return self.key in labels and labels[self.key] in self.values
        if op in ("!=", "notin"):
            return self.key not in labels or labels[self.key] not in self.values
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        if op in ("gt", "lt"):
            if self.key not in labels:
                return False
            try:
                have = int(labels[self.key])
                want = int(self.values[0])
            except (ValueError, IndexError):
                return False
            return have > want if op == "gt" else have < want
        return False

    def __str__(self) -> str:
        if self.op == "!":
            return "!" + self.key
        if self.op == "exists":
            return self.key
        sym = {"=": "=", "==": "==", "!=": "!=", "in": " in ", "notin": " notin ", "gt": ">", "lt": "<"}[self.op]
        vals = self.values[0] if len(self.values) == 1 else ",".join(sorted(self.values))
        if self.op in ("in", "notin"):
            vals = f"({vals})"
        return f"{self.key}{sym}{vals}"


@dataclass(frozen=True)
class LabelSelector:
    """A parsed label selector: every requirement must hold.

    ``LabelSelector()`` (no requirements) selects everything; a selector
    built with ``nothing()`` selects nothing.
    """

    requirements: tuple[Requirement, ...] = ()
    selects_nothing: bool = False

    @property
    def empty(self) -> bool:
        """True when this selector selects everything (no requirements)."""
        return not self.selects_nothing and not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an object with these labels is selected."""
        if self.selects_nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def everything() -> LabelSelector:
    """The selector that selects every object."""
    return LabelSelector()


def nothing() -> LabelSelector:
    """The selector that selects no object."""
    return LabelSelector(selects_nothing=True)


def _sorted(reqs: Iterable[Requirement]) -> tuple[Requirement, ...]:
    return tuple(sorted(reqs, key=lambda r: r.key))


# --------------------------------------------------------------------------
# the string syntax: a lexer and parser after labels/selector.go

_SPECIAL = set("=!(),<>")
_SYMBOLS = {"!": "!", "!=": "!=", "(": "(", ")": ")", ",": ",", "=": "=", "==": "==", ">": ">", "<": "<"}
_KEYWORDS = {"in": "in", "notin": "notin"}
_END, _ID, _ERR = "end", "id", "error"


def _lex(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            out.append((_END, ""))
            return out
        ch = text[i]
        if ch in _SPECIAL:
            buf = ""
            last: tuple[str, str] | None = None
            while i < n and text[i] in _SPECIAL:
                buf += text[i]
                if buf in _SYMBOLS:
                    last = (_SYMBOLS[buf], buf)
                    i += 1
                elif last is not None:
                    break
                else:
                    i += 1
            if last is None:
                out.append((_ERR, f"error expected: keyword found '{buf}'"))
            else:
                out.append(last)
        else:
            start = i
            while i < n and text[i] not in _SPECIAL and text[i] not in " \t\r\n":
                i += 1
            word = text[start:i]
            out.append((_KEYWORDS.get(word, _ID), word))


class _Parser:
    def __init__(self, text: str) -> None:
        self.items = _lex(text)
        self.pos = 0

    def _tok(self, values: bool, item: tuple[str, str]) -> tuple[str, str]:
        tok, lit = item
        if values and tok in ("in", "notin"):
            tok = _ID
        return tok, lit

    def lookahead(self, values: bool = True) -> tuple[str, str]:
        return self._tok(values, self.items[self.pos])

    def consume(self, values: bool = True) -> tuple[str, str]:
        item = self.items[self.pos]
        if self.pos < len(self.items) - 1:
            self.pos += 1
        return self._tok(values, item)

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            tok, lit = self.lookahead()
            if tok in (_ID, "!"):
                try:
                    reqs.append(self.requirement())
                except _SelectorError as e:
                    raise _SelectorError(f"unable to parse requirement: {e}") from None
                t, l = self.consume()
                if t == _END:
                    return reqs
                if t == ",":
                    t2, l2 = self.lookahead()
                    if t2 not in (_ID, "!"):
                        raise _SelectorError(f"found '{l2}', expected: identifier after ','")
                    continue
                raise _SelectorError(f"found '{l}', expected: ',' or 'end of string'")
            if tok == _END:
                return reqs
            raise _SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def requirement(self) -> Requirement:
        op = ""
        tok, lit = self.consume()
        if tok == "!":
            op = "!"
            tok, lit = self.consume()
        if tok != _ID:
            raise _SelectorError(f"found '{lit}', expected: identifier")
        key = lit
        kerr = validate_label_key(key)
        if kerr:
            raise _SelectorError(f"invalid label key {_go_quote(key)}: {kerr}")
        if self.lookahead()[0] in (_END, ","):
            if op != "!":
                op = "exists"
        if op in ("exists", "!"):
            return Requirement.new(key, op)
        tok, lit = self.consume(values=False)
        # "!" is unary (``!key``): after a key it is no operator, as upstream's parseOperator says.
        ops = {"=": "=", "==": "==", ">": "gt", "<": "lt", "in": "in", "!=": "!=", "notin": "notin"}
        if tok not in ops:
            raise _SelectorError(f"found '{lit}', expected: in, notin, =, ==, !=, gt, lt")
        op = ops[tok]
        if op in ("in", "notin"):
            values = self.set_values()
        else:
            values = self.exact_value()
        return Requirement.new(key, op, sorted(set(values)))

    def exact_value(self) -> list[str]:
        tok, _ = self.lookahead()
        if tok in (_END, ","):
            return [""]
        tok, lit = self.consume()
        if tok == _ID:
            return [lit]
        raise _SelectorError(f"found '{lit}', expected: identifier")

    def set_values(self) -> list[str]:
        tok, lit = self.consume()
        if tok != "(":
            raise _SelectorError(f"found '{lit}' expected: '('")
        tok, lit = self.lookahead()
        if tok in (_ID, ","):
            values = self.identifiers()
            tok2, _ = self.consume()
            if tok2 != ")":
                raise _SelectorError(f"found '{lit}', expected: ')'")
            return values
        if tok == ")":
            self.consume()
            return [""]
        raise _SelectorError(f"found '{lit}', expected: ',', ')' or identifier")

    def identifiers(self) -> list[str]:
        out: set[str] = set()
        while True:
            tok, lit = self.consume()
            if tok == _ID:
                out.add(lit)
                tok2, lit2 = self.lookahead()
                if tok2 == ",":
                    continue
                if tok2 == ")":
                    return sorted(out)
                raise _SelectorError(f"found '{lit2}', expected: ',' or ')'")
            if tok == ",":
                if not out:
                    out.add("")
                tok2, _ = self.lookahead()
                if tok2 == ")":
                    out.add("")
                    return sorted(out)
                if tok2 == ",":
                    self.consume()
                    out.add("")
                continue
            raise _SelectorError(f"found '{lit}', expected: ',', or identifier")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse the ``labelSelector`` string syntax; an empty string selects everything.

    Raises APIError 400 BadRequest naming the selector on bad syntax or an
    invalid label key or value; the tail of the message is upstream's parser
    error (``unable to parse requirement: ...``).
    """
    text = text or ""
    try:
        reqs = _Parser(text).parse()
    except _SelectorError as e:
        raise bad_request(f'invalid label selector "{text}": {e}') from None
    return LabelSelector(_sorted(reqs))


_EXPR_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def from_selector_object(sel: Mapping[str, Any] | None) -> LabelSelector:
    """A ``metav1.LabelSelector`` as a selector (``metav1.LabelSelectorAsSelector``).

    ``None`` selects nothing; ``{}`` (no matchLabels, no matchExpressions)
    selects everything -- the Deployment/ReplicaSet convention. Raises
    APIError 400 on an unknown operator or an invalid key or value.
    """
    if sel is None:
        return nothing()
    match_labels = sel.get("matchLabels") or {}
    exprs = sel.get("matchExpressions") or []
    if not match_labels and not exprs:
        return everything()
    reqs: list[Requirement] = []
    try:
        for k, v in match_labels.items():
            reqs.append(Requirement.new(k, "=", [v if v is not None else ""]))
        for e in exprs:
            op = _EXPR_OPS.get(e.get("operator", ""))
            if op is None:
                raise _SelectorError(f'"{e.get("operator", "")}" is not a valid label selector operator')
            reqs.append(Requirement.new(e.get("key", ""), op, list(e.get("values") or [])))
    except _SelectorError as err:
        raise bad_request(f"invalid label selector: {err}") from None
    return LabelSelector(_sorted(reqs))


def selector_from_map(m: Mapping[str, str] | None) -> LabelSelector:
    """A Service-style ``spec.selector`` map as a selector.

    A missing or empty map selects *nothing*: a Service without a selector
    gets no endpoints from the endpoints controllers. Raises APIError 400 on
    an invalid key or value.
    """
    if not m:
        return nothing()
    try:
        return LabelSelector(_sorted(Requirement.new(k, "=", [v]) for k, v in m.items()))
    except _SelectorError as err:
        raise bad_request(f"invalid label selector: {err}") from None


def format_labels(labels: Mapping[str, str] | None) -> str:
    """``labels.FormatLabels``: ``a=b,c=d`` sorted by key, or ``<none>``."""
    s = ",".join(f"{k}={labels[k]}" for k in sorted(labels or {}))
    return s or "<none>"


def format_label_selector(sel: Mapping[str, Any] | None) -> str:
    """``metav1.FormatLabelSelector``: the selector's string, ``<none>`` if empty, ``<error>`` if invalid."""
    try:
        s = str(from_selector_object(sel))
    except APIError:
        return "<error>"
    return s or "<none>"


# --------------------------------------------------------------------------
# field selectors


@dataclass(frozen=True)
class FieldTerm:
    """One field selector term: ``field == value`` or ``field != value``."""

    field: str
    value: str
    negate: bool = False

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Whether the object's selectable fields satisfy this term."""
        have = fields.get(self.field, "")
        return (have != self.value) if self.negate else (have == self.value)

    def __str__(self) -> str:
        esc = self.value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
        return f"{self.field}{'!=' if self.negate else '='}{esc}"


@dataclass(frozen=True)
class FieldSelector:
    """A parsed field selector for one kind; every term must hold."""

    kind: str
    terms: tuple[FieldTerm, ...] = ()

    @property
    def empty(self) -> bool:
        """True when this selector selects everything."""
        return not self.terms

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether the object is selected."""
        if not self.terms:
            return True
        fields = selectable_fields(self.kind, obj)
        return all(t.matches(fields) for t in self.terms)

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms)


def _get(obj: Mapping[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def _s(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _pod_ip(obj: Mapping[str, Any]) -> str:
    ips = _get(obj, "status.podIPs") or []
    if ips and isinstance(ips[0], Mapping):
        return _s(ips[0].get("ip"))
    return _s(_get(obj, "status.podIP"))


def _event_source(obj: Mapping[str, Any]) -> str:
    return _s(_get(obj, "source.component")) or _s(obj.get("reportingComponent"))


# Per kind: the selectable field labels and how to read each from the wire
# object (the ``ToSelectableFields`` functions of the registries). Every kind
# also has metadata.name and metadata.namespace.
_FIELDS: dict[str, dict[str, Any]] = {
    "Pod": {
        "spec.nodeName": "spec.nodeName",
        "spec.restartPolicy": "spec.restartPolicy",
        "spec.schedulerName": "spec.schedulerName",
        "spec.serviceAccountName": "spec.serviceAccountName",
        "spec.hostNetwork": lambda o: _s(bool(_get(o, "spec.hostNetwork"))),
        "status.phase": "status.phase",
        "status.podIP": _pod_ip,
        "status.nominatedNodeName": "status.nominatedNodeName",
    },
    "Event": {
        "involvedObject.kind": "involvedObject.kind",
        "involvedObject.namespace": "involvedObject.namespace",
        "involvedObject.name": "involvedObject.name",
        "involvedObject.uid": "involvedObject.uid",
        "involvedObject.apiVersion": "involvedObject.apiVersion",
        "involvedObject.resourceVersion": "involvedObject.resourceVersion",
        "involvedObject.fieldPath": "involvedObject.fieldPath",
        "reason": "reason",
        "reportingComponent": "reportingComponent",
        "source": _event_source,
        "type": "type",
    },
    "Node": {"spec.unschedulable": lambda o: _s(bool(_get(o, "spec.unschedulable")))},
    "Namespace": {"status.phase": "status.phase"},
    "ReplicaSet": {"status.replicas": lambda o: _s(int(_get(o, "status.replicas") or 0))},
    "Service": {"spec.clusterIP": "spec.clusterIP", "spec.type": "spec.type"},
}
# Field labels older clients send, translated as the apiserver does.
_ALIASES: dict[str, dict[str, str]] = {"Pod": {"spec.host": "spec.nodeName"}}
_META = ("metadata.name", "metadata.namespace")


def _kind_name(kind: Kind | str) -> str:
    return kind.kind if isinstance(kind, Kind) else kind


def field_labels(kind: Kind | str) -> tuple[str, ...]:
    """The field labels a kind supports in field selectors."""
    return _META + tuple(_FIELDS.get(_kind_name(kind), {}))


def selectable_fields(kind: Kind | str, obj: Mapping[str, Any]) -> dict[str, str]:
    """The selectable fields of one object, as strings (missing is ``""``)."""
    out = {
        "metadata.name": _s(_get(obj, "metadata.name")),
        "metadata.namespace": _s(_get(obj, "metadata.namespace")),
    }
    for label, how in _FIELDS.get(_kind_name(kind), {}).items():
        out[label] = how(obj) if callable(how) else _s(_get(obj, how))
    return out


def _split_terms(text: str) -> list[str]:
    terms, cur, esc = [], "", False
    for ch in text:
        if esc:
            cur += ch
            esc = False
        elif ch == "\\":
            cur += ch
            esc = True
        elif ch == ",":
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op):]
    return None


def _unescape(value: str) -> str:
    if not any(c in value for c in "\\,="):
        return value
    out, esc = "", False
    for ch in value:
        if esc:
            if ch not in "\\,=":
                raise bad_request(f"invalid field selector: invalid escape sequence: \\{ch}")
            out += ch
            esc = False
        elif ch == "\\":
            esc = True
        elif ch in ",=":
            raise bad_request(f"invalid field selector: unescaped character in value: {ch}")
        else:
            out += ch
    if esc:
        raise bad_request("invalid field selector: invalid escape sequence: \\")
    return out


def parse_field_selector(text: str | None, kind: Kind | str) -> FieldSelector:
    """Parse a ``fieldSelector`` for one kind.

    Raises APIError 400 BadRequest with kube-apiserver's messages: bad syntax
    (``invalid selector: '<s>'; can't understand '<term>'``) and unknown
    fields (``field label not supported: <f>``).
    """
    name = _kind_name(kind)
    text = text or ""
    allowed = set(field_labels(name))
    aliases = _ALIASES.get(name, {})
    terms: list[FieldTerm] = []
    for part in sorted(_split_terms(text)):
        if part == "":
            continue
        split = _split_term(part)
        if split is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        lhs, op, rhs = split
        value = _unescape(rhs)
        lhs = aliases.get(lhs, lhs)
        if lhs not in allowed:
            raise bad_request(f"field label not supported: {lhs}")
        terms.append(FieldTerm(lhs, value, negate=(op == "!=")))
    return FieldSelector(name, tuple(terms))
