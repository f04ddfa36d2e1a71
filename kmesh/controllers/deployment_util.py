"""Pure helpers of the Deployment controller, after upstream's pkg/controller/deployment/util.

The pod-template-hash: upstream hashes the Go struct of the template with
FNV-32a (over a spew dump, which Python cannot reproduce byte for byte).
kmesh hashes the template's canonical JSON (sorted keys, no spaces) with
FNV-32a, appends the collision count the same way (4 little-endian bytes in
8), and encodes the decimal result with upstream's SafeEncodeString alphabet,
so hashes look like upstream's (``5d4f8b7c9``) and are stable for a template.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any, Iterable

from kmesh.api.obj import Obj
from kmesh.controllers import podutil


HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
_NOT_COPIED = {
    "kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
}
_SAFE = "bcdfghjklmnpqrstvwxz2456789"

# Condition reasons (upstream's names; kubectl matches on some of them).
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"


def fnv32a(data: bytes) -> int:
    """FNV-1a, 32 bit."""
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(s: str) -> str:
    """Upstream's rand.SafeEncodeString: each byte mapped into a vowel-free alphabet."""
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in s)


def template_hash(template: Obj, collision_count: int | None = None) -> str:
    """The pod-template-hash of a Deployment's template (see the module docstring)."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += (collision_count & 0xFFFFFFFF).to_bytes(4, "little") + b"\0" * 4
    return safe_encode(str(fnv32a(data)))


def _without_hash(template: Obj) -> Obj:
    t = copy.deepcopy(template or {})
    lbl = (t.get("metadata") or {}).get("labels")
    if isinstance(lbl, dict):
        lbl.pop(HASH_LABEL, None)
    return t


def equal_ignore_hash(a: Obj, b: Obj) -> bool:
    """Two pod templates are equal apart from the pod-template-hash label."""
    return _without_hash(a) == _without_hash(b)


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """An int-or-percent against ``total`` (percent rounds up or down)."""
    if isinstance(value, str):
        if value.endswith("%"):
            pct = int(value[:-1])
            v = pct * total / 100
            return int(math.ceil(v)) if round_up else int(math.floor(v))
        return int(value)
    return int(value or 0)


def _rolling(d: Obj) -> Obj | None:
    strategy = (d.get("spec") or {}).get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return None
    return strategy.get("rollingUpdate") or {"maxSurge": "25%", "maxUnavailable": "25%"}


def replicas(obj: Obj) -> int:
    """``spec.replicas`` (1 when unset)."""
    r = (obj.get("spec") or {}).get("replicas")
    return 1 if r is None else int(r)


def fenceposts(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved against the desired replicas (unavailable 1 when both 0)."""
    ru = _rolling(d)
    if ru is None:
        return 0, 0
    want = replicas(d)
    surge = scaled_value(ru.get("maxSurge", "25%"), want, True)
    unavailable = scaled_value(ru.get("maxUnavailable", "25%"), want, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(d: Obj) -> int:
    """Resolved maxSurge (0 for Recreate)."""
    return fenceposts(d)[0]


def max_unavailable(d: Obj) -> int:
    """Resolved maxUnavailable, capped at the replicas (0 for Recreate or no replicas)."""
    if _rolling(d) is None or replicas(d) == 0:
        return 0
    return min(fenceposts(d)[1], replicas(d))


def revision(obj: Obj) -> int:
    """The revision annotation as a number (0 when missing)."""
    try:
        return int((podutil.md(obj).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def status_of(rs: Obj | None, field: str) -> int:
    """An integer status field of a ReplicaSet (0 for None)."""
    return int(((rs or {}).get("status") or {}).get(field) or 0)


def spec_replicas(rs: Obj | None) -> int:
    """``spec.replicas`` of a ReplicaSet (0 for None)."""
    return replicas(rs) if rs is not None else 0


def available_replicas(rs: Obj | None) -> int:
    """The available replicas a ReplicaSet can be counted on for: ``status.availableReplicas``, at most
    ``spec.replicas``.

    The ReplicaSet controller writes its status from the pods it had *before* deleting surplus ones (as
    upstream's does), so right after a scale-down the status still counts the pods being deleted --
    with ``observedGeneration`` already current. Scaling down on that count would take more available
    pods away than maxUnavailable allows. A ReplicaSet keeps no more than ``spec.replicas`` pods, so the
    excess is never available for long: capping at the spec gives a count that does not run ahead of
    what the ReplicaSet will have.
    """
    return min(status_of(rs, "availableReplicas"), spec_replicas(rs))


def active(sets: Iterable[Obj | None]) -> list[Obj]:
    """ReplicaSets with replicas wanted."""
    return [rs for rs in sets if rs is not None and spec_replicas(rs) > 0]


def created(obj: Obj) -> tuple[float, str]:
    """Sort key: creation time, then name."""
    return (podutil.parse_time(podutil.md(obj).get("creationTimestamp")) or 0.0, podutil.md(obj).get("name", ""))


def rs_annotations_for(d: Obj, rs_ann: dict[str, str], new_revision: int, *, creating: bool) -> dict[str, str]:
    """The new ReplicaSet's annotations: the Deployment's (minus bookkeeping) and the revision; when
    ``creating``, also desired/max replicas (later only scaling sets those, so a scaling event shows)."""
    out = dict(rs_ann)
    for k, v in (podutil.md(d).get("annotations") or {}).items():
        if k not in _NOT_COPIED:
            out[k] = v
    old_rev = out.get(REVISION)
    if old_rev is None or int(old_rev or 0) < new_revision:
        if old_rev:
            hist = [h for h in out.get(REVISION_HISTORY, "").split(",") if h]
            out[REVISION_HISTORY] = ",".join([*hist, old_rev])
        out[REVISION] = str(new_revision)
    if creating:
        out[DESIRED_REPLICAS] = str(replicas(d))
        out[MAX_REPLICAS] = str(replicas(d) + max_surge(d))
    return out


# ------------------------------------------------------------------ conditions


def condition(status: Obj, ctype: str) -> Obj | None:
    """The status condition of ``ctype``."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)


def new_condition(ctype: str, status: str, reason: str, message: str) -> Obj:
    """A condition stamped now."""
    now = podutil.format_time()
    return {"type": ctype, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
            "reason": reason, "message": message}


def set_condition(status: Obj, cond: Obj) -> None:
    """Upstream's SetDeploymentCondition: same status and reason is a no-op; same status keeps the transition time."""
    cur = condition(status, cond["type"])
    if cur is not None and cur.get("status") == cond["status"] and cur.get("reason") == cond["reason"]:
        return
    if cur is not None and cur.get("status") == cond["status"]:
        cond = {**cond, "lastTransitionTime": cur.get("lastTransitionTime")}
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != cond["type"]] + [cond]


def remove_condition(status: Obj, ctype: str) -> None:
    """Drop the condition of ``ctype``."""
    conds = [c for c in status.get("conditions") or [] if c.get("type") != ctype]
    if conds:
        status["conditions"] = conds
    else:
        status.pop("conditions", None)


def calculate_status(d: Obj, all_sets: list[Obj], new_rs: Obj | None) -> Obj:
    """The Deployment status its ReplicaSets give (conditions other than Available copied over)."""
    available = sum(status_of(rs, "availableReplicas") for rs in all_sets)
    total_spec = sum(spec_replicas(rs) for rs in all_sets)
    old = d.get("status") or {}
    status: Obj = {
        "observedGeneration": podutil.md(d).get("generation", 0),
        "replicas": sum(status_of(rs, "replicas") for rs in all_sets),
        "updatedReplicas": status_of(new_rs, "replicas"),
        "readyReplicas": sum(status_of(rs, "readyReplicas") for rs in all_sets),
        "availableReplicas": available,
        "unavailableReplicas": max(0, total_spec - available),
    }
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    if old.get("conditions"):
        status["conditions"] = copy.deepcopy(old["conditions"])
    if available >= replicas(d) - max_unavailable(d):
        set_condition(status, new_condition("Available", "True", "MinimumReplicasAvailable",
                                            "Deployment has minimum availability."))
    else:
        set_condition(status, new_condition("Available", "False", "MinimumReplicasUnavailable",
                                            "Deployment does not have minimum availability."))
    return status


def complete(d: Obj, status: Obj) -> bool:
    """Every replica updated and available, and the newest generation observed."""
    want = replicas(d)
    return (int(status.get("updatedReplicas") or 0) == want and int(status.get("replicas") or 0) == want
            and int(status.get("availableReplicas") or 0) == want
            and int(status.get("observedGeneration") or 0) >= int(podutil.md(d).get("generation") or 0))


def progressing(d: Obj, status: Obj) -> bool:
    """More updated, fewer old, more ready or more available replicas than the last status said."""
    old = d.get("status") or {}

    def g(s: Obj, k: str) -> int:
        return int(s.get(k) or 0)

    return (g(status, "updatedReplicas") > g(old, "updatedReplicas")
            or g(status, "replicas") - g(status, "updatedReplicas") < g(old, "replicas") - g(old, "updatedReplicas")
            or g(status, "readyReplicas") > g(old, "readyReplicas")
            or g(status, "availableReplicas") > g(old, "availableReplicas"))


def has_deadline(d: Obj) -> bool:
    """progressDeadlineSeconds is set (and not the max int32 'never')."""
    pds = (d.get("spec") or {}).get("progressDeadlineSeconds")
    return pds is not None and int(pds) != 2147483647


def timed_out(d: Obj, status: Obj, now: float) -> bool:
    """The Progressing condition has not moved for progressDeadlineSeconds."""
    if not has_deadline(d):
        return False
    cond = condition(status, "Progressing")
    if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    since = podutil.parse_time(cond.get("lastUpdateTime"))
    return since is not None and since + int(d["spec"]["progressDeadlineSeconds"]) < now


def new_rs_replicas(d: Obj, all_sets: list[Obj], new_rs: Obj) -> int:
    """How many replicas the new ReplicaSet may have now (upstream's NewRSNewReplicas)."""
    if _rolling(d) is None:
        return replicas(d)
    current = sum(spec_replicas(rs) for rs in all_sets)
    max_total = replicas(d) + max_surge(d)
    if current >= max_total:
        return spec_replicas(new_rs)
    up = min(max_total - current, max(0, replicas(d) - spec_replicas(new_rs)))
    return spec_replicas(new_rs) + up


def proportion(rs: Obj, d: Obj, to_add: int, added: int) -> int:
    """The share of a scaling change a ReplicaSet gets (upstream's GetProportion)."""
    if spec_replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    if replicas(d) == 0:
        fraction = -spec_replicas(rs)
    else:
        dep_replicas = replicas(d) + max_surge(d)
        try:
            annotated = int((podutil.md(rs).get("annotations") or {})[MAX_REPLICAS])
        except (KeyError, ValueError):
            annotated = int((d.get("status") or {}).get("replicas") or 0)
        if annotated == 0:
            return 0
        fraction = int(math.floor(spec_replicas(rs) * dep_replicas / annotated + 0.5)) - spec_replicas(rs)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)
