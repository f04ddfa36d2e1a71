"""Field tables of the apps/v1 kinds kmesh serves (Deployment, ReplicaSet) and of autoscaling/v1 Scale.

``Scale`` is the body of the ``/scale`` subresource, not a kind of its own, so
it is registered without ``kind()``. Pod templates point at the core/v1 tables
in ``kmesh.api.schemas.pod``.
"""

from __future__ import annotations

from kmesh.api.fieldschema import (
    BOOL,
    INT32,
    INT64,
    INT_OR_STRING,
    META,
    STRING,
    TIME,
    ListOf,
    Ref,
    kind,
    refs,
    struct,
    top_level,
)

A = "io.k8s.api.apps.v1."
AS = "io.k8s.api.autoscaling.v1."
POD_TEMPLATE = Ref("io.k8s.api.core.v1.PodTemplateSpec")
a, m, top = refs(A), refs(META), top_level


# --- Deployment --------------------------------------------------------------

struct(A + "RollingUpdateDeployment", {
    "maxUnavailable": INT_OR_STRING,
    "maxSurge": INT_OR_STRING,
})

struct(A + "DeploymentStrategy", {
    "type": STRING,
    "rollingUpdate": a("RollingUpdateDeployment"),
})

struct(A + "DeploymentSpec", {
    "replicas": INT32,
    "selector": m("LabelSelector"),
    "template": POD_TEMPLATE,
    "strategy": a("DeploymentStrategy"),
    "minReadySeconds": INT32,
    "revisionHistoryLimit": INT32,
    "paused": BOOL,
    "progressDeadlineSeconds": INT32,
}, required=("selector", "template"))

struct(A + "DeploymentCondition", {
    "type": STRING,
    "status": STRING,
    "lastUpdateTime": TIME,
    "lastTransitionTime": TIME,
    "reason": STRING,
    "message": STRING,
}, required=("type", "status"))

struct(A + "DeploymentStatus", {
    "observedGeneration": INT64,
    "replicas": INT32,
    "updatedReplicas": INT32,
    "readyReplicas": INT32,
    "availableReplicas": INT32,
    "unavailableReplicas": INT32,
    "conditions": ListOf(a("DeploymentCondition")),
    "collisionCount": INT32,
})

struct(A + "Deployment", top({
    "spec": a("DeploymentSpec"),
    "status": a("DeploymentStatus"),
}))
kind("apps", "v1", "Deployment", A + "Deployment")

# --- ReplicaSet --------------------------------------------------------------

struct(A + "ReplicaSetSpec", {
    "replicas": INT32,
    "minReadySeconds": INT32,
    "selector": m("LabelSelector"),
    "template": POD_TEMPLATE,
}, required=("selector",))

struct(A + "ReplicaSetCondition", {
    "type": STRING,
    "status": STRING,
    "lastTransitionTime": TIME,
    "reason": STRING,
    "message": STRING,
}, required=("type", "status"))

struct(A + "ReplicaSetStatus", {
    "replicas": INT32,
    "fullyLabeledReplicas": INT32,
    "readyReplicas": INT32,
    "availableReplicas": INT32,
    "observedGeneration": INT64,
    "conditions": ListOf(a("ReplicaSetCondition")),
}, required=("replicas",))

struct(A + "ReplicaSet", top({
    "spec": a("ReplicaSetSpec"),
    "status": a("ReplicaSetStatus"),
}))
kind("apps", "v1", "ReplicaSet", A + "ReplicaSet")

# --- autoscaling/v1 Scale (the /scale subresource) ---------------------------

struct(AS + "ScaleSpec", {
    "replicas": INT32,
})

struct(AS + "ScaleStatus", {
    "replicas": INT32,
    "selector": STRING,
}, required=("replicas",))

struct(AS + "Scale", top({
    "spec": Ref(AS + "ScaleSpec"),
    "status": Ref(AS + "ScaleStatus"),
}))
