"""Field table of coordination.k8s.io/v1 Lease, as of Kubernetes v1.32.

``strategy`` and ``preferredHolder`` belong to coordinated leader election
(alpha in v1.32) but are part of the v1 type, so they are accepted.
"""

from __future__ import annotations

from kmesh.api.fieldschema import INT32, STRING, TIME, Ref, kind, struct, top_level

L = "io.k8s.api.coordination.v1."

struct(L + "LeaseSpec", {
    "holderIdentity": STRING,
    "leaseDurationSeconds": INT32,
    "acquireTime": TIME,  # MicroTime
    "renewTime": TIME,  # MicroTime
    "leaseTransitions": INT32,
    "strategy": STRING,
    "preferredHolder": STRING,
})

struct(L + "Lease", top_level({
    "spec": Ref(L + "LeaseSpec"),
}))
kind("coordination.k8s.io", "v1", "Lease", L + "Lease")
