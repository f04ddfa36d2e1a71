"""Field tables of networking.k8s.io/v1 Ingress and IngressClass, as of Kubernetes v1.32."""

from __future__ import annotations

from kmesh.api.fieldschema import INT32, STRING, ListOf, kind, refs, struct, top_level

N = "io.k8s.api.networking.v1."
C = "io.k8s.api.core.v1."
n, c, top = refs(N), refs(C), top_level

# --- Ingress -----------------------------------------------------------------

struct(N + "ServiceBackendPort", {
    "name": STRING,
    "number": INT32,
})

struct(N + "IngressServiceBackend", {
    "name": STRING,
    "port": n("ServiceBackendPort"),
}, required=("name",))

struct(N + "IngressBackend", {
    "service": n("IngressServiceBackend"),
    "resource": c("TypedLocalObjectReference"),  # registered by kmesh.api.schemas.pod
})

struct(N + "IngressTLS", {
    "hosts": ListOf(STRING),
    "secretName": STRING,
})

struct(N + "HTTPIngressPath", {
    "path": STRING,
    "pathType": STRING,
    "backend": n("IngressBackend"),
}, required=("pathType", "backend"))

struct(N + "HTTPIngressRuleValue", {
    "paths": ListOf(n("HTTPIngressPath")),
}, required=("paths",))

struct(N + "IngressRule", {
    "host": STRING,
    "http": n("HTTPIngressRuleValue"),
})

struct(N + "IngressSpec", {
    "ingressClassName": STRING,
    "defaultBackend": n("IngressBackend"),
    "tls": ListOf(n("IngressTLS")),
    "rules": ListOf(n("IngressRule")),
})

struct(N + "IngressPortStatus", {
    "port": INT32,
    "protocol": STRING,
    "error": STRING,
}, required=("port", "protocol"))

struct(N + "IngressLoadBalancerIngress", {
    "ip": STRING,
    "hostname": STRING,
    "ports": ListOf(n("IngressPortStatus")),
})

struct(N + "IngressLoadBalancerStatus", {
    "ingress": ListOf(n("IngressLoadBalancerIngress")),
})

struct(N + "IngressStatus", {
    "loadBalancer": n("IngressLoadBalancerStatus"),
})

struct(N + "Ingress", top({
    "spec": n("IngressSpec"),
    "status": n("IngressStatus"),
}))
kind("networking.k8s.io", "v1", "Ingress", N + "Ingress")

# --- IngressClass ------------------------------------------------------------

struct(N + "IngressClassParametersReference", {
    "apiGroup": STRING,
    "kind": STRING,
    "name": STRING,
    "scope": STRING,
    "namespace": STRING,
}, required=("kind", "name"))

struct(N + "IngressClassSpec", {
    "controller": STRING,
    "parameters": n("IngressClassParametersReference"),
})

struct(N + "IngressClass", top({
    "spec": n("IngressClassSpec"),
}))
kind("networking.k8s.io", "v1", "IngressClass", N + "IngressClass")
