"""API errors and the Kubernetes ``Status`` objects that carry them on the wire."""

from __future__ import annotations

from typing import Any

Cause = dict[str, str]


class APIError(Exception):
    """An error the API server answers with a ``Status`` of ``code``."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        kind: str = "",
        name: str = "",
        group: str = "",
        causes: list[Cause] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.kind = kind
        self.name = name
        self.group = group
        self.causes = causes or []
        self.retry_after = retry_after

    def status(self) -> dict[str, Any]:
        """The ``Status`` object for this error."""
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = self.causes
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            out["details"] = details
        return out


def cause(field: str, reason: str, message: str) -> Cause:
    """One entry of ``details.causes``."""
    return {"reason": reason, "message": message, "field": field}


def required(field: str) -> Cause:
    """A missing required field."""
    return cause(field, "FieldValueRequired", "Required value")


def invalid(field: str, value: Any, detail: str) -> Cause:
    """A field whose value is not allowed."""
    return cause(field, "FieldValueInvalid", f"Invalid value: {_show(value)}: {detail}")


def not_supported(field: str, value: Any, allowed: list[str]) -> Cause:
    """A field whose value is not one of the supported ones."""
    shown = ", ".join(f'"{a}"' for a in allowed)
    return cause(field, "FieldValueNotSupported", f"Unsupported value: {_show(value)}: supported values: {shown}")


def duplicate(field: str, value: Any) -> Cause:
    """A value that must be unique and is not."""
    return cause(field, "FieldValueDuplicate", f"Duplicate value: {_show(value)}")


def forbidden(field: str, detail: str) -> Cause:
    """A field that may not be set or changed."""
    return cause(field, "FieldValueForbidden", f"Forbidden: {detail}")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def invalid_object(kind: str, name: str, group: str, causes: list[Cause]) -> APIError:
    """422 Invalid, with the message kube-apiserver would print."""
    parts = []
    for c in causes:
        parts.append(f"{c['field']}: {c['message']}" if c.get("field") else c["message"])
    qual = f"{kind}.{group}" if group else kind
    msg = f'{qual} "{name}" is invalid: ' + ", ".join(parts) if len(parts) == 1 else (
        f'{qual} "{name}" is invalid: [' + ", ".join(parts) + "]"
    )
    return APIError(422, "Invalid", msg, kind=kind, name=name, group=group, causes=causes)


def not_found(plural: str, name: str, group: str = "") -> APIError:
    """404 for one object."""
    qual = f"{plural}.{group}" if group else plural
    return APIError(404, "NotFound", f'{qual} "{name}" not found', kind=plural, name=name, group=group)


def already_exists(plural: str, name: str, group: str = "") -> APIError:
    """409 for a create of an existing name."""
    qual = f"{plural}.{group}" if group else plural
    return APIError(409, "AlreadyExists", f'{qual} "{name}" already exists', kind=plural, name=name, group=group)


def conflict(plural: str, name: str, group: str = "") -> APIError:
    """409 for a write with a stale resourceVersion."""
    qual = f"{plural}.{group}" if group else plural
    return APIError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qual} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        kind=plural,
        name=name,
        group=group,
    )


def bad_request(message: str) -> APIError:
    """400 for a malformed request."""
    return APIError(400, "BadRequest", message)
