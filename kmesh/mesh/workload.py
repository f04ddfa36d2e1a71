"""Which workload a pod belongs to, for the mesh's metrics and tap (Linkerd and Istio label by workload).

A pod of a ReplicaSet belongs to the Deployment that owns the ReplicaSet: its
name is the ReplicaSet's without the ``pod-template-hash`` suffix, as the
Deployment controller names ReplicaSets. Other owned pods belong to their
owner (a StatefulSet, DaemonSet, Job, or a ReplicaSet on its own); a pod
without an owner is its own workload.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def workload_of(pod: Obj) -> tuple[str, str]:
    """(kind, name) of the workload ``pod`` belongs to."""
    md = pod.get("metadata") or {}
    owner = next((o for o in md.get("ownerReferences") or [] if o.get("controller")), None)
    if owner is None:
        return "Pod", md.get("name") or ""
    kind, name = owner.get("kind") or "", owner.get("name") or ""
    suffix = (md.get("labels") or {}).get("pod-template-hash")
    if kind == "ReplicaSet" and suffix and name.endswith("-" + suffix):
        return "Deployment", name[: -len(suffix) - 1]
    return kind, name
