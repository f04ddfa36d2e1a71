"""Field tables of the core/v1 kinds other than Pod: Namespace, Node, Service, Endpoints, ConfigMap, Event.

Also holds ``ObjectReference``, which other groups point at. The Pod side of
core/v1 (PodSpec, PodTemplateSpec, containers, volumes, affinity...) lives in
``kmesh.api.schemas.pod``.
"""

from __future__ import annotations

from kmesh.api.fieldschema import (
    BOOL,
    BYTES,
    INT32,
    INT64,
    INT_OR_STRING,
    META,
    QUANTITY,
    STRING,
    TIME,
    ListOf,
    MapOf,
    kind,
    refs,
    struct,
    top_level,
)

C = "io.k8s.api.core.v1."
c, m, top = refs(C), refs(META), top_level


# --- shared ------------------------------------------------------------------

struct(C + "ObjectReference", {
    "kind": STRING,
    "namespace": STRING,
    "name": STRING,
    "uid": STRING,
    "apiVersion": STRING,
    "resourceVersion": STRING,
    "fieldPath": STRING,
})

# pods/binding's body: not a served kind (no kind() line), checked by the registry as Go decodes it.
struct(C + "Binding", top({
    "target": c("ObjectReference"),
}), required=("target",))

# --- Namespace ---------------------------------------------------------------

struct(C + "NamespaceSpec", {
    "finalizers": ListOf(STRING),
})

struct(C + "NamespaceCondition", {
    "type": STRING,
    "status": STRING,
    "lastTransitionTime": TIME,
    "reason": STRING,
    "message": STRING,
}, required=("type", "status"))

struct(C + "NamespaceStatus", {
    "phase": STRING,
    "conditions": ListOf(c("NamespaceCondition")),
})

struct(C + "Namespace", top({
    "spec": c("NamespaceSpec"),
    "status": c("NamespaceStatus"),
}))
kind("", "v1", "Namespace", C + "Namespace")

# --- Node --------------------------------------------------------------------

struct(C + "Taint", {
    "key": STRING,
    "value": STRING,
    "effect": STRING,
    "timeAdded": TIME,
}, required=("key", "effect"))

struct(C + "ConfigMapNodeConfigSource", {
    "namespace": STRING,
    "name": STRING,
    "uid": STRING,
    "resourceVersion": STRING,
    "kubeletConfigKey": STRING,
}, required=("namespace", "name", "kubeletConfigKey"))

struct(C + "NodeConfigSource", {
    "configMap": c("ConfigMapNodeConfigSource"),
})

struct(C + "NodeSpec", {
    "podCIDR": STRING,
    "podCIDRs": ListOf(STRING),
    "providerID": STRING,
    "unschedulable": BOOL,
    "taints": ListOf(c("Taint")),
    "configSource": c("NodeConfigSource"),
    "externalID": STRING,
})

struct(C + "NodeCondition", {
    "type": STRING,
    "status": STRING,
    "lastHeartbeatTime": TIME,
    "lastTransitionTime": TIME,
    "reason": STRING,
    "message": STRING,
}, required=("type", "status"))

struct(C + "NodeAddress", {
    "type": STRING,
    "address": STRING,
}, required=("type", "address"))

struct(C + "DaemonEndpoint", {
    "Port": INT32,  # upstream spells this one with a capital P
}, required=("Port",))

struct(C + "NodeDaemonEndpoints", {
    "kubeletEndpoint": c("DaemonEndpoint"),
})

struct(C + "NodeSystemInfo", {
    "machineID": STRING,
    "systemUUID": STRING,
    "bootID": STRING,
    "kernelVersion": STRING,
    "osImage": STRING,
    "containerRuntimeVersion": STRING,
    "kubeletVersion": STRING,
    "kubeProxyVersion": STRING,
    "operatingSystem": STRING,
    "architecture": STRING,
}, required=(
    "machineID", "systemUUID", "bootID", "kernelVersion", "osImage", "containerRuntimeVersion",
    "kubeletVersion", "kubeProxyVersion", "operatingSystem", "architecture",
))

struct(C + "ContainerImage", {
    "names": ListOf(STRING),
    "sizeBytes": INT64,
})

struct(C + "AttachedVolume", {
    "name": STRING,
    "devicePath": STRING,
}, required=("name", "devicePath"))

struct(C + "NodeConfigStatus", {
    "assigned": c("NodeConfigSource"),
    "active": c("NodeConfigSource"),
    "lastKnownGood": c("NodeConfigSource"),
    "error": STRING,
})

struct(C + "NodeRuntimeHandlerFeatures", {
    "recursiveReadOnlyMounts": BOOL,
    "userNamespaces": BOOL,
})

struct(C + "NodeRuntimeHandler", {
    "name": STRING,
    "features": c("NodeRuntimeHandlerFeatures"),
})

struct(C + "NodeFeatures", {
    "supplementalGroupsPolicy": BOOL,
})

struct(C + "NodeStatus", {
    "capacity": MapOf(QUANTITY),
    "allocatable": MapOf(QUANTITY),
    "phase": STRING,
    "conditions": ListOf(c("NodeCondition")),
    "addresses": ListOf(c("NodeAddress")),
    "daemonEndpoints": c("NodeDaemonEndpoints"),
    "nodeInfo": c("NodeSystemInfo"),
    "images": ListOf(c("ContainerImage")),
    "volumesInUse": ListOf(STRING),
    "volumesAttached": ListOf(c("AttachedVolume")),
    "config": c("NodeConfigStatus"),
    "runtimeHandlers": ListOf(c("NodeRuntimeHandler")),
    "features": c("NodeFeatures"),
})

struct(C + "Node", top({
    "spec": c("NodeSpec"),
    "status": c("NodeStatus"),
}))
kind("", "v1", "Node", C + "Node")

# --- Service -----------------------------------------------------------------

struct(C + "ServicePort", {
    "name": STRING,
    "protocol": STRING,
    "appProtocol": STRING,
    "port": INT32,
    "targetPort": INT_OR_STRING,
    "nodePort": INT32,
}, required=("port",))

struct(C + "ClientIPConfig", {
    "timeoutSeconds": INT32,
})

struct(C + "SessionAffinityConfig", {
    "clientIP": c("ClientIPConfig"),
})

struct(C + "ServiceSpec", {
    "ports": ListOf(c("ServicePort")),
    "selector": MapOf(STRING),
    "clusterIP": STRING,
    "clusterIPs": ListOf(STRING),
    "type": STRING,
    "externalIPs": ListOf(STRING),
    "sessionAffinity": STRING,
    "loadBalancerIP": STRING,
    "loadBalancerSourceRanges": ListOf(STRING),
    "externalName": STRING,
    "externalTrafficPolicy": STRING,
    "healthCheckNodePort": INT32,
    "publishNotReadyAddresses": BOOL,
    "sessionAffinityConfig": c("SessionAffinityConfig"),
    "ipFamilies": ListOf(STRING),
    "ipFamilyPolicy": STRING,
    "allocateLoadBalancerNodePorts": BOOL,
    "loadBalancerClass": STRING,
    "internalTrafficPolicy": STRING,
    "trafficDistribution": STRING,
})

struct(C + "PortStatus", {
    "port": INT32,
    "protocol": STRING,
    "error": STRING,
}, required=("port", "protocol"))

struct(C + "LoadBalancerIngress", {
    "ip": STRING,
    "hostname": STRING,
    "ipMode": STRING,
    "ports": ListOf(c("PortStatus")),
})

struct(C + "LoadBalancerStatus", {
    "ingress": ListOf(c("LoadBalancerIngress")),
})

struct(C + "ServiceStatus", {
    "loadBalancer": c("LoadBalancerStatus"),
    "conditions": ListOf(m("Condition")),
})

struct(C + "Service", top({
    "spec": c("ServiceSpec"),
    "status": c("ServiceStatus"),
}))
kind("", "v1", "Service", C + "Service")

# --- Endpoints ---------------------------------------------------------------

struct(C + "EndpointAddress", {
    "ip": STRING,
    "hostname": STRING,
    "nodeName": STRING,
    "targetRef": c("ObjectReference"),
}, required=("ip",))

struct(C + "EndpointPort", {
    "name": STRING,
    "port": INT32,
    "protocol": STRING,
    "appProtocol": STRING,
}, required=("port",))

struct(C + "EndpointSubset", {
    "addresses": ListOf(c("EndpointAddress")),
    "notReadyAddresses": ListOf(c("EndpointAddress")),
    "ports": ListOf(c("EndpointPort")),
})

struct(C + "Endpoints", top({
    "subsets": ListOf(c("EndpointSubset")),
}))
kind("", "v1", "Endpoints", C + "Endpoints")

# --- ConfigMap ---------------------------------------------------------------

struct(C + "ConfigMap", top({
    "immutable": BOOL,
    "data": MapOf(STRING),
    "binaryData": MapOf(BYTES),
}))
kind("", "v1", "ConfigMap", C + "ConfigMap")

# --- Event -------------------------------------------------------------------

struct(C + "EventSource", {
    "component": STRING,
    "host": STRING,
})

struct(C + "EventSeries", {
    "count": INT32,
    "lastObservedTime": TIME,  # MicroTime
})

struct(C + "Event", top({
    "involvedObject": c("ObjectReference"),
    "reason": STRING,
    "message": STRING,
    "source": c("EventSource"),
    "firstTimestamp": TIME,
    "lastTimestamp": TIME,
    "count": INT32,
    "type": STRING,
    "eventTime": TIME,  # MicroTime
    "series": c("EventSeries"),
    "action": STRING,
    "related": c("ObjectReference"),
    "reportingComponent": STRING,
    "reportingInstance": STRING,
}), required=("metadata", "involvedObject"))
kind("", "v1", "Event", C + "Event")

# --- Secret ------------------------------------------------------------------

struct(C + "Secret", top({
    "immutable": BOOL,
    "data": MapOf(BYTES),
    "stringData": MapOf(STRING),  # write-only: merged into data, never stored
    "type": STRING,
}))
kind("", "v1", "Secret", C + "Secret")

# --- ServiceAccount ----------------------------------------------------------

struct(C + "ServiceAccount", top({
    "secrets": ListOf(c("ObjectReference")),
    "imagePullSecrets": ListOf(c("LocalObjectReference")),  # registered by kmesh.api.schemas.pod
    "automountServiceAccountToken": BOOL,
}))
kind("", "v1", "ServiceAccount", C + "ServiceAccount")
