"""Status conditions (``metav1.Condition``) as the Gateway API and Ingress controllers write them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def now() -> str:
    """The current time as a condition's ``lastTransitionTime`` (RFC 3339, seconds)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(ctype: str, ok: bool | None, reason: str, message: str, generation: int,
              old: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One condition; ``lastTransitionTime`` is kept from ``old`` when the status did not change."""
    status = "Unknown" if ok is None else ("True" if ok else "False")
    when = now()
    for c in old or []:
        if c.get("type") == ctype and c.get("status") == status and c.get("lastTransitionTime"):
            when = c["lastTransitionTime"]
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": when}


def same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Whether two condition lists say the same (times aside): writing one over the other changes nothing."""
    def key(cs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted((c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("observedGeneration"))
                      for c in cs)
    return key(a) == key(b)
