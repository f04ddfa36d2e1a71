"""Field tables of discovery.k8s.io/v1 EndpointSlice, as of Kubernetes v1.32.

v1.32's ``EndpointHints`` has ``forZones`` only (``forNodes`` came later).
``targetRef`` points at core/v1 ``ObjectReference`` (in ``kmesh.api.schemas.core``).
"""

from __future__ import annotations

from kmesh.api.fieldschema import (
    BOOL,
    INT32,
    STRING,
    ListOf,
    MapOf,
    Ref,
    kind,
    refs,
    struct,
    top_level,
)

D = "io.k8s.api.discovery.v1."
d = refs(D)


struct(D + "EndpointConditions", {
    "ready": BOOL,
    "serving": BOOL,
    "terminating": BOOL,
})

struct(D + "ForZone", {
    "name": STRING,
}, required=("name",))

struct(D + "EndpointHints", {
    "forZones": ListOf(d("ForZone")),
})

struct(D + "Endpoint", {
    "addresses": ListOf(STRING),
    "conditions": d("EndpointConditions"),
    "hostname": STRING,
    "targetRef": Ref("io.k8s.api.core.v1.ObjectReference"),
    "deprecatedTopology": MapOf(STRING),
    "nodeName": STRING,
    "zone": STRING,
    "hints": d("EndpointHints"),
}, required=("addresses",))

struct(D + "EndpointPort", {
    "name": STRING,
    "protocol": STRING,
    "port": INT32,
    "appProtocol": STRING,
})

struct(D + "EndpointSlice", top_level({
    "addressType": STRING,
    "endpoints": ListOf(d("Endpoint")),
    "ports": ListOf(d("EndpointPort")),
}), required=("addressType", "endpoints"))
kind("discovery.k8s.io", "v1", "EndpointSlice", D + "EndpointSlice")
