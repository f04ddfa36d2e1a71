"""CertificateSigningRequests (certificates.k8s.io/v1): reading their conditions, and what the API server sets.

Signers (kmesh's mesh CA, kubelet-style clients) and the printers read a
request's state through ``csr_condition`` and ``csr_state``; the API server
stamps the requester with ``set_requester`` and the condition times with
``stamp_conditions``.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

from kmesh.api.obj import Obj

APPROVED, DENIED, FAILED = "Approved", "Denied", "Failed"
CONDITION_TYPES = (APPROVED, DENIED, FAILED)
REQUESTER_FIELDS = ("username", "uid", "groups", "extra")  # spec fields only the API server sets


def _conditions(obj: Obj) -> list[dict[str, Any]]:
    status = obj.get("status") if isinstance(obj, dict) else None
    conds = status.get("conditions") if isinstance(status, dict) else None
    return [c for c in conds if isinstance(c, dict)] if isinstance(conds, list) else []


def csr_condition(obj: Obj, ctype: str) -> dict[str, Any] | None:
    """The first condition of type ``ctype`` (Approved, Denied, Failed) of a CSR, or None."""
    return next((c for c in _conditions(obj) if c.get("type") == ctype), None)


def csr_state(obj: Obj) -> str:
    """The CONDITION column of ``kubectl get csr``: Pending/Approved/Denied, then ",Failed" and ",Issued"."""
    types = {c.get("type") for c in _conditions(obj)}
    state = DENIED if DENIED in types else APPROVED if APPROVED in types else "Pending"
    if FAILED in types:
        state += "," + FAILED
    if (obj.get("status") or {}).get("certificate"):
        state += ",Issued"
    return state


def set_requester(obj: Obj, username: str, groups: Iterable[str], uid: str = "",
                  extra: dict[str, list[str]] | None = None) -> None:
    """Overwrite ``spec.username/uid/groups/extra`` with the authenticated requester (clients cannot set them)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    spec["username"] = username
    for key, value in (("uid", uid), ("groups", list(groups)), ("extra", extra)):
        if value:
            spec[key] = copy.deepcopy(value)
        else:
            spec.pop(key, None)


def stamp_conditions(new: Obj, old: Obj | None, now: str) -> None:
    """Default each condition's status to "True" and fill missing times: ``lastUpdateTime`` is now,
    ``lastTransitionTime`` the old one of a condition with the same type and status, else now."""
    old_conds = _conditions(old or {})
    for c in _conditions(new):
        if not c.get("status"):
            c["status"] = "True"
        if not c.get("lastUpdateTime"):
            c["lastUpdateTime"] = now
        if not c.get("lastTransitionTime"):
            same = next((o for o in old_conds if o.get("type") == c.get("type")
                         and o.get("status") == c.get("status") and o.get("lastTransitionTime")), None)
            c["lastTransitionTime"] = same["lastTransitionTime"] if same else now
