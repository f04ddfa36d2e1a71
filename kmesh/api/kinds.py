"""The object kinds kmesh serves: their group, version, resource names and scope."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

STANDARD_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Kind:
    """One served resource type, as discovery describes it."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = field(default=STANDARD_VERBS)
    storage: bool = True  # False: another version of the same kind, stored as that one (same schema)

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, else ``group/version``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        """The kind of a list of these objects."""
        return self.kind + "List"

    def key(self, namespace: str | None, name: str) -> str:
        """The store key of one object."""
        if self.namespaced:
            return f"/registry/{self.plural}/{namespace}/{name}"
        return f"/registry/{self.plural}/{name}"

    def prefix(self, namespace: str | None = None) -> str:
        """The store key prefix of every object (of one namespace, if given)."""
        if self.namespaced and namespace:
            return f"/registry/{self.plural}/{namespace}/"
        return f"/registry/{self.plural}/"

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The REST path of the collection or of one object."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        return base


ALL = ("all",)
GATEWAY = "gateway.networking.k8s.io"
GATEWAY_API = ("gateway-api",)  # the CRDs' category: `kubectl get gateway-api`

KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "Namespace", "namespaces", "namespace", False, ("ns",), ("status",)),
    Kind("", "v1", "Node", "nodes", "node", False, ("no",), ("status",)),
    Kind("", "v1", "Pod", "pods", "pod", True, ("po",), ("status", "binding", "log"), ALL),
    Kind("", "v1", "Service", "services", "service", True, ("svc",), ("status",), ALL),
    Kind("", "v1", "Endpoints", "endpoints", "endpoints", True, ("ep",)),
    Kind("", "v1", "ConfigMap", "configmaps", "configmap", True, ("cm",)),
    Kind("", "v1", "Event", "events", "event", True, ("ev",)),
    Kind("", "v1", "Secret", "secrets", "secret", True),
    Kind("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", True, ("sa",)),
    Kind("apps", "v1", "Deployment", "deployments", "deployment", True, ("deploy",), ("status", "scale"), ALL),
    Kind("apps", "v1", "ReplicaSet", "replicasets", "replicaset", True, ("rs",), ("status", "scale"), ALL),
    Kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", True),
    Kind("coordination.k8s.io", "v1", "Lease", "leases", "lease", True),
    Kind("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", True, ("ing",), ("status",)),
    Kind("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", False),
    Kind("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", True, ("netpol",)),
    Kind("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests",
         "certificatesigningrequest", False, ("csr",), ("status", "approval")),
    Kind(GATEWAY, "v1", "GatewayClass", "gatewayclasses", "gatewayclass", False, ("gc",), ("status",), GATEWAY_API),
    Kind(GATEWAY, "v1", "Gateway", "gateways", "gateway", True, ("gtw",), ("status",), GATEWAY_API),
    Kind(GATEWAY, "v1", "HTTPRoute", "httproutes", "httproute", True, (), ("status",), GATEWAY_API),
    Kind(GATEWAY, "v1", "ReferenceGrant", "referencegrants", "referencegrant", True, ("refgrant",), (), GATEWAY_API),
    # The CRDs also serve v1beta1 of these (same schema, stored as v1); the conformance manifests use it.
    Kind(GATEWAY, "v1beta1", "GatewayClass", "gatewayclasses", "gatewayclass", False, ("gc",), ("status",), GATEWAY_API,
         storage=False),
    Kind(GATEWAY, "v1beta1", "Gateway", "gateways", "gateway", True, ("gtw",), ("status",), GATEWAY_API, storage=False),
    Kind(GATEWAY, "v1beta1", "HTTPRoute", "httproutes", "httproute", True, (), ("status",), GATEWAY_API, storage=False),
    # ReferenceGrant: v1beta1 through Gateway API v1.4, v1 since (upstream's newer conformance manifests use it).
    Kind(GATEWAY, "v1beta1", "ReferenceGrant", "referencegrants", "referencegrant", True, ("refgrant",), (), GATEWAY_API,
         storage=False),
)

# One entry per served group/version; a group's first entry is its preferred version.
GROUPS: tuple[tuple[str, str], ...] = (
    ("apps", "v1"),
    ("discovery.k8s.io", "v1"),
    ("coordination.k8s.io", "v1"),
    ("networking.k8s.io", "v1"),
    ("certificates.k8s.io", "v1"),
    (GATEWAY, "v1"),
    (GATEWAY, "v1beta1"),
)

_BY_RESOURCE = {(k.group, k.plural): k for k in KINDS if k.storage}
_BY_VERSION = {(k.group, k.version, k.plural): k for k in KINDS}
_BY_KIND = {(k.api_version, k.kind): k for k in KINDS}


def by_resource(group: str, plural: str, version: str | None = None) -> Kind | None:
    """The kind served at ``/apis/<group>/<version>/<plural>`` (group "" for core); without a version, the
    stored version's."""
    if version is not None:
        return _BY_VERSION.get((group, version, plural))
    return _BY_RESOURCE.get((group, plural))


def storage_of(kind: Kind) -> Kind:
    """The version ``kind``'s objects are stored (and watched by kmesh's own components) as."""
    return kind if kind.storage else _BY_RESOURCE[(kind.group, kind.plural)]


def as_version(kind: Kind, obj: Obj) -> Obj:
    """``obj`` (stored) as ``kind``'s version shows it: the schemas are the same, only ``apiVersion`` differs."""
    if kind.storage or not isinstance(obj, dict) or obj.get("kind") != kind.kind:
        return obj
    return {**obj, "apiVersion": kind.api_version}


def by_kind(api_version: str, kind: str) -> Kind | None:
    """The kind named by an object's apiVersion and kind."""
    return _BY_KIND.get((api_version, kind))


def get(kind: str) -> Kind:
    """A kind by its Kind name (``"Pod"``), its stored version; KeyError if not served."""
    for k in KINDS:
        if k.kind == kind and k.storage:
            return k
    raise KeyError(kind)
