"""What a write does with fields its kind does not have: the ``fieldValidation`` query parameter.

As upstream decodes into typed structs, unknown fields never reach storage:
``Ignore`` drops them silently, ``Warn`` (the default) drops them and
answers with one ``Warning`` header per field, ``Strict`` (what kubectl
sends) refuses the write with 400 and the fields' paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kmesh.api import errors as E
from kmesh.api.fieldschema import unknown_fields
from kmesh.api.kinds import Kind

MODES = ("Ignore", "Warn", "Strict")


@dataclass
class FieldValidation:
    """One request's field validation mode and the warnings it collected."""

    mode: str = "Warn"
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_query(cls, value: str | None) -> FieldValidation:
        """From the query parameter (absent or empty: Warn); 400 for anything else than the three modes."""
        if not value:
            return cls()
        if value not in MODES:
            raise E.bad_request(
                f'fieldValidation: Unsupported value: "{value}": supported values: "Ignore", "Strict", "Warn"')
        return cls(value)

    def check(self, kind: Kind, obj: dict[str, Any]) -> None:
        """Drop ``obj``'s unknown fields; per the mode, note them as warnings or refuse the write."""
        paths = unknown_fields(kind.group, kind.version, kind.kind, obj, prune=True)
        if not paths:
            return
        if self.mode == "Strict":
            raise E.bad_request(
                f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}: strict decoding error: '
                + ", ".join(f'unknown field "{p}"' for p in paths))
        if self.mode == "Warn":  # a patch retried after a conflict meets the same fields again
            self.warnings += [w for w in (f'unknown field "{p}"' for p in paths) if w not in self.warnings]

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The ``Warning`` response headers (RFC 7234 form, code 299, as kube-apiserver sends them)."""
        out = []
        for w in self.warnings:
            text = w.replace("\\", "\\\\").replace('"', '\\"')
            out.append((b"warning", f'299 - "{text}"'.encode()))
        return out
