"""Field tables of networking.k8s.io/v1 Ingress, IngressClass and NetworkPolicy, as of Kubernetes v1.32."""

from __future__ import annotations

from kmesh.api.fieldschema import INT32, INT_OR_STRING, META, STRING, ListOf, kind, refs, struct, top_level

N = "io.k8s.api.networking.v1."
C = "io.k8s.api.core.v1."
n, c, m, top = refs(N), refs(C), refs(META), top_level

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

# --- NetworkPolicy -----------------------------------------------------------
# v1.32 has no status (the alpha NetworkPolicyStatus field was removed in 1.28).

struct(N + "IPBlock", {
    "cidr": STRING,
    "except": ListOf(STRING),
}, required=("cidr",), description=(
    "IPBlock describes a particular CIDR (Ex. \"192.168.1.0/24\",\"2001:db8::/64\") that is allowed to the pods "
    "matched by a NetworkPolicySpec's podSelector. The except entry describes CIDRs that should not be included "
    "within this rule."))

struct(N + "NetworkPolicyPort", {
    "protocol": STRING,
    "port": INT_OR_STRING,
    "endPort": INT32,
}, description="NetworkPolicyPort describes a port to allow traffic on")

struct(N + "NetworkPolicyPeer", {
    "podSelector": m("LabelSelector"),
    "namespaceSelector": m("LabelSelector"),
    "ipBlock": n("IPBlock"),
}, description="NetworkPolicyPeer describes a peer to allow traffic to/from. Only certain combinations of fields "
               "are allowed")

struct(N + "NetworkPolicyIngressRule", {
    "ports": ListOf(n("NetworkPolicyPort")),
    "from": ListOf(n("NetworkPolicyPeer")),
}, description=("NetworkPolicyIngressRule describes a particular set of traffic that is allowed to the pods matched "
                "by a NetworkPolicySpec's podSelector. The traffic must match both ports and from."))

struct(N + "NetworkPolicyEgressRule", {
    "ports": ListOf(n("NetworkPolicyPort")),
    "to": ListOf(n("NetworkPolicyPeer")),
}, description=("NetworkPolicyEgressRule describes a particular set of traffic that is allowed out of pods matched "
                "by a NetworkPolicySpec's podSelector. The traffic must match both ports and to. This type is "
                "beta-level in 1.8"))

struct(N + "NetworkPolicySpec", {
    "podSelector": m("LabelSelector"),
    "ingress": ListOf(n("NetworkPolicyIngressRule")),
    "egress": ListOf(n("NetworkPolicyEgressRule")),
    "policyTypes": ListOf(STRING),
}, required=("podSelector",), description="NetworkPolicySpec provides the specification of a NetworkPolicy")

struct(N + "NetworkPolicy", top({
    "spec": n("NetworkPolicySpec"),
}), description="NetworkPolicy describes what network traffic is allowed for a set of Pods")
kind("networking.k8s.io", "v1", "NetworkPolicy", N + "NetworkPolicy")
