"""Field tables of the shared apimachinery meta/v1 structs (object metadata, selectors, conditions).

Every kind's ``metadata`` points at ``ObjectMeta`` here; ``LabelSelector`` and
``Condition`` are shared by several groups. ``MicroTime`` has no struct of its
own: fields of that type use the ``TIME`` scalar.
"""

from __future__ import annotations

from kmesh.api.fieldschema import (
    ANY,
    BOOL,
    INT64,
    META,
    STRING,
    TIME,
    ListOf,
    MapOf,
    refs,
    struct,
)

M = META
m = refs(META)


struct(M + "OwnerReference", {
    "apiVersion": STRING,
    "kind": STRING,
    "name": STRING,
    "uid": STRING,
    "controller": BOOL,
    "blockOwnerDeletion": BOOL,
}, required=("apiVersion", "kind", "name", "uid"))

struct(M + "ManagedFieldsEntry", {
    "manager": STRING,
    "operation": STRING,
    "apiVersion": STRING,
    "time": TIME,
    "fieldsType": STRING,
    "fieldsV1": ANY,  # a free-form field set (FieldsV1)
    "subresource": STRING,
})

struct(M + "ObjectMeta", {
    "name": STRING,
    "generateName": STRING,
    "namespace": STRING,
    "selfLink": STRING,
    "uid": STRING,
    "resourceVersion": STRING,
    "generation": INT64,
    "creationTimestamp": TIME,
    "deletionTimestamp": TIME,
    "deletionGracePeriodSeconds": INT64,
    "labels": MapOf(STRING),
    "annotations": MapOf(STRING),
    "ownerReferences": ListOf(m("OwnerReference")),
    "finalizers": ListOf(STRING),
    "managedFields": ListOf(m("ManagedFieldsEntry")),
})

struct(M + "ListMeta", {  # the metadata of a list (PodList ...), which kubectl validates a list file with
    "selfLink": STRING,
    "resourceVersion": STRING,
    "continue": STRING,
    "remainingItemCount": INT64,
})

struct(M + "LabelSelectorRequirement", {
    "key": STRING,
    "operator": STRING,
    "values": ListOf(STRING),
}, required=("key", "operator"))

struct(M + "LabelSelector", {
    "matchLabels": MapOf(STRING),
    "matchExpressions": ListOf(m("LabelSelectorRequirement")),
})

struct(M + "Condition", {
    "type": STRING,
    "status": STRING,
    "observedGeneration": INT64,
    "lastTransitionTime": TIME,
    "reason": STRING,
    "message": STRING,
}, required=("type", "status", "lastTransitionTime", "reason", "message"))
