"""The object kinds kmesh serves: their group, version, resource names and scope."""

from __future__ import annotations

from dataclasses import dataclass, field

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

KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "Namespace", "namespaces", "namespace", False, ("ns",), ("status",)),
    Kind("", "v1", "Node", "nodes", "node", False, ("no",), ("status",)),
    Kind("", "v1", "Pod", "pods", "pod", True, ("po",), ("status", "binding", "log"), ALL),
    Kind("", "v1", "Service", "services", "service", True, ("svc",), ("status",), ALL),
    Kind("", "v1", "Endpoints", "endpoints", "endpoints", True, ("ep",)),
    Kind("", "v1", "ConfigMap", "configmaps", "configmap", True, ("cm",)),
    Kind("", "v1", "Event", "events", "event", True, ("ev",)),
    Kind("apps", "v1", "Deployment", "deployments", "deployment", True, ("deploy",), ("status", "scale"), ALL),
    Kind("apps", "v1", "ReplicaSet", "replicasets", "replicaset", True, ("rs",), ("status", "scale"), ALL),
    Kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", True),
    Kind("coordination.k8s.io", "v1", "Lease", "leases", "lease", True),
)

GROUPS: tuple[tuple[str, str], ...] = (
    ("apps", "v1"),
    ("discovery.k8s.io", "v1"),
    ("coordination.k8s.io", "v1"),
)

_BY_RESOURCE = {(k.group, k.plural): k for k in KINDS}
_BY_KIND = {(k.api_version, k.kind): k for k in KINDS}


def by_resource(group: str, plural: str) -> Kind | None:
    """The kind served at ``/apis/<group>/<v>/<plural>`` (group "" for core)."""
    return _BY_RESOURCE.get((group, plural))


def by_kind(api_version: str, kind: str) -> Kind | None:
    """The kind named by an object's apiVersion and kind."""
    return _BY_KIND.get((api_version, kind))


def get(kind: str) -> Kind:
    """A kind by its Kind name (``"Pod"``); KeyError if not served."""
    for k in KINDS:
        if k.kind == kind:
            return k
    raise KeyError(kind)
