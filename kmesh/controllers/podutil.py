"""Small, pure helpers about pods and object metadata that several controllers share."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Iterable, Mapping

from kmesh.api import selectors
from kmesh.api.obj import Obj



# ------------------------------------------------------------------ time


def format_time(epoch: float | None = None) -> str:
    """An RFC 3339 timestamp (seconds, UTC) as Kubernetes writes them."""
    t = time.time() if epoch is None else epoch
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp (None when absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# ------------------------------------------------------------------ metadata


def md(obj: Obj) -> dict[str, Any]:
    """``metadata`` (empty dict when missing)."""
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def uid(obj: Obj) -> str:
    """``metadata.uid``."""
    return str(md(obj).get("uid") or "")


def labels(obj: Obj) -> dict[str, str]:
    """``metadata.labels`` (empty dict when missing)."""
    lbl = md(obj).get("labels")
    return lbl if isinstance(lbl, dict) else {}


def is_terminating(obj: Obj) -> bool:
    """The object has a deletionTimestamp."""
    return bool(md(obj).get("deletionTimestamp"))


def controller_ref(obj: Obj) -> dict[str, Any] | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in md(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def owner_reference(owner: Obj, *, controller: bool = True) -> dict[str, Any]:
    """An ownerReference pointing at ``owner`` (blockOwnerDeletion set, as controllers do)."""
    return {
        "apiVersion": owner.get("apiVersion", ""), "kind": owner.get("kind", ""),
        "name": md(owner).get("name", ""), "uid": uid(owner),
        "controller": controller, "blockOwnerDeletion": True,
    }


# ------------------------------------------------------------------ pods


def condition(obj: Obj, ctype: str) -> dict[str, Any] | None:
    """The status condition of type ``ctype``."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return None


def condition_true(obj: Obj, ctype: str) -> bool:
    """The object's status condition of type ``ctype`` is True."""
    c = condition(obj, ctype)
    return c is not None and c.get("status") == "True"


def is_ready(pod: Obj) -> bool:
    """The pod's Ready condition is True."""
    return condition_true(pod, "Ready")


def ready_since(pod: Obj) -> float | None:
    """When the pod last turned Ready (None when it is not Ready)."""
    c = condition(pod, "Ready")
    if c is None or c.get("status") != "True":
        return None
    return parse_time(c.get("lastTransitionTime"))


def is_terminal(pod: Obj) -> bool:
    """The pod Succeeded or Failed."""
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_active(pod: Obj) -> bool:
    """Counts toward a ReplicaSet: neither terminating nor finished."""
    return not is_terminating(pod) and not is_terminal(pod)


def available_in(pod: Obj, min_ready_seconds: int, now: float | None = None) -> float | None:
    """Seconds until the pod counts as available (0 when it is; None when it is not Ready)."""
    since = ready_since(pod)
    if since is None:
        return None
    if min_ready_seconds <= 0:
        return 0.0
    left = since + min_ready_seconds - (time.time() if now is None else now)
    return max(0.0, left)


def is_available(pod: Obj, min_ready_seconds: int, now: float | None = None) -> bool:
    """Ready for at least ``min_ready_seconds``."""
    return available_in(pod, min_ready_seconds, now) == 0.0


def pod_ips(pod: Obj, family: int = 4) -> list[str]:
    """The pod's addresses of one IP family (``podIPs``, else ``podIP``)."""
    status = pod.get("status") or {}
    ips = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict) and p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    return [ip for ip in ips if (":" in ip) == (family == 6)]


def restart_count(pod: Obj) -> int:
    """Sum of the containers' restart counts."""
    return sum(int(c.get("restartCount") or 0) for c in (pod.get("status") or {}).get("containerStatuses") or [])


# ------------------------------------------------------------------ selectors


def selector_matches(sel: Mapping[str, Any] | None, lbls: Mapping[str, str]) -> bool:
    """A ``metav1.LabelSelector`` against labels; matchLabels checked without parsing."""
    if sel is None:
        return False
    for k, v in (sel.get("matchLabels") or {}).items():
        if lbls.get(k) != v:
            return False
    exprs = sel.get("matchExpressions")
    if exprs:
        try:
            return selectors.from_selector_object({"matchExpressions": exprs}).matches(lbls)
        except Exception:  # noqa: BLE001 - an unparsable selector selects nothing
            return False
    return True


def map_matches(sel: Mapping[str, str] | None, lbls: Mapping[str, str]) -> bool:
    """A Service-style selector map against labels (empty selects nothing)."""
    if not sel:
        return False
    return all(lbls.get(k) == v for k, v in sel.items())


def first(items: Iterable[Any]) -> Any:
    """The first item or None."""
    return next(iter(items), None)
