"""Server-side ``Table`` output (``meta.k8s.io/v1``), as kube-apiserver prints it.

``kubectl get`` asks for ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``
and prints the cells it gets back, so the columns and cell text here follow
kube-apiserver 1.32's printers (``pkg/printers/internalversion/printers.go``)
for the served kinds, and upstream's default table convertor (Name, Created
At) for anything else. Like the apiserver, rows always carry the wide cells;
kubectl hides columns of priority 1 unless ``-o wide``.

Ages use ``human_duration``, a port of ``duration.HumanDuration``.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from kmesh.api.certificates import csr_state
from kmesh.api.errors import APIError, bad_request
from kmesh.api.kinds import Kind
from kmesh.api.obj import Obj
from kmesh.api.selectors import format_label_selector, format_labels, from_selector_object

__all__ = [
    "human_duration",
    "column_definitions",
    "table_row",
    "table",
    "partial_object_metadata",
    "INCLUDE_OBJECT_VALUES",
]

INCLUDE_OBJECT_VALUES = ("None", "Metadata", "Object")

# --------------------------------------------------------------------------
# durations and timestamps


def human_duration(seconds: float) -> str:
    """``k8s.io/apimachinery/pkg/util/duration.HumanDuration`` of a duration in seconds."""
    s = int(seconds)  # Go: int(d.Seconds()), truncating toward zero
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 60 * 2:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        sec = s % 60
        return f"{minutes}m" if sec == 0 else f"{minutes}m{sec}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def _parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    if "." in text:  # fromisoformat wants at most 6 fractional digits
        head, _, tail = text.partition(".")
        digits = ""
        while tail and tail[0].isdigit():
            digits, tail = digits + tail[0], tail[1:]
        text = f"{head}.{(digits + '000000')[:6]}{tail}"
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t


def _since(value: Any, now: datetime) -> str:
    """``translateTimestampSince``: the age of a timestamp, ``<unknown>`` if unset."""
    t = _parse_time(value)
    if t is None:
        return "<unknown>"
    return human_duration((now - t).total_seconds())


# --------------------------------------------------------------------------
# column definitions

_NAME_DOC = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources "
    "may allow a client to request the generation of an appropriate name automatically. Name is primarily "
    "intended for creation idempotence and configuration definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_CREATED_DOC = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not "
    "guaranteed to be set in happens-before order across separate operations. Clients may not set this value. "
    "It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. "
    "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
_CONTAINERS_DOC = "Names of each container in the template."
_IMAGES_DOC = "Images referenced by each container in the template."


def _col(name: str, type_: str, description: str, priority: int = 0, format_: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": format_, "description": description, "priority": priority}


def _name_col() -> dict[str, Any]:
    return _col("Name", "string", _NAME_DOC, format_="name")


def _age_col() -> dict[str, Any]:
    return _col("Age", "string", _CREATED_DOC)


_COLUMNS: dict[str, list[dict[str, Any]]] = {
    "Pod": [
        _name_col(),
        _col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
        _col("Status", "string", "The aggregate status of the containers in this pod."),
        _col(
            "Restarts",
            "string",
            "The number of times the containers in this pod have been restarted and when the last container "
            "in this pod has restarted.",
        ),
        _age_col(),
        _col(
            "IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. "
            "Empty if not yet allocated.", 1
        ),
        _col(
            "Node",
            "string",
            "NodeName is a request to schedule this pod onto a specific node. If it is non-empty, the scheduler "
            "simply schedules this pod onto that node, assuming that it fits resource requirements.",
            1,
        ),
        _col(
            "Nominated Node",
            "string",
            "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be "
            "scheduled right away as preemption victims receive their graceful termination periods. This field "
            "does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod "
            "elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on "
            "this node to a higher priority pod that is created after preemption. As a result, this field may be "
            "different than PodSpec.nodeName when the pod is scheduled.",
            1,
        ),
        _col(
            "Readiness Gates",
            "string",
            "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its "
            "containers are ready AND all conditions specified in the readiness gates have status equal to "
            '"True" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates',
            1,
        ),
    ],
    "Service": [
        _name_col(),
        _col(
            "Type",
            "string",
            "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, "
            'ClusterIP, NodePort, and LoadBalancer. "ClusterIP" allocates a cluster-internal IP address for '
            "load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, "
            "by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no "
            "virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual "
            'IP. "NodePort" builds on ClusterIP and allocates a port on every node which routes to the same '
            'endpoints as the clusterIP. "LoadBalancer" builds on NodePort and creates an external load-balancer '
            "(if supported in the current cloud) which routes to the same endpoints as the clusterIP. "
            '"ExternalName" aliases this service to the specified externalName. Several other fields do not apply '
            "to ExternalName services. More info: "
            "https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types",
        ),
        _col(
            "Cluster-IP",
            "string",
            "clusterIP is the IP address of the service and is usually assigned randomly. If an address is "
            "specified manually, is in-range (as per system configuration), and is not in use, it will be allocated "
            "to the service; otherwise creation of the service will fail. This field may not be changed through "
            "updates unless the type field is also being changed to ExternalName (which requires this field to be "
            "blank) or the type field is being changed from ExternalName (in which case this field may optionally "
            'be specified, as describe above).  Valid values are "None", empty string (""), or a valid IP address. '
            'Setting this to "None" makes a "headless service" (no virtual IP), which is useful when direct '
            "endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, "
            "NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, "
            "creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: "
            "https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
        ),
        _col(
            "External-IP",
            "string",
            "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for "
            "this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that "
            "traffic arrives at a node with this IP.  A common example is external load-balancers that are not "
            "part of the Kubernetes system.",
        ),
        _col(
            "Port(s)",
            "string",
            "The list of ports that are exposed by this service. More info: "
            "https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
        ),
        _age_col(),
        _col(
            "Selector",
            "string",
            "Route service traffic to pods with label keys and values matching this selector. If empty or not "
            "present, the service is assumed to have an external process managing its endpoints, which Kubernetes "
            "will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is "
            "ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
            1,
        ),
    ],
    "Endpoints": [
        _name_col(),
        _col(
            "Endpoints",
            "string",
            "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to "
            "the IPs they share. A single address with multiple ports, some of which are ready and some of which "
            "are not (because they come from different containers) will result in the address being displayed in "
            "different subsets for the different ports. No address will appear in both Addresses and "
            "NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.",
        ),
        _age_col(),
    ],
    "EndpointSlice": [
        _name_col(),
        _col(
            "AddressType",
            "string",
            "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice "
            "must be the same type. This field is immutable after creation. The following address types are "
            "currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. "
            "* FQDN: Represents a Fully Qualified Domain Name.",
        ),
        _col(
            "Ports",
            "string",
            "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have "
            "a unique name. When ports is empty, it indicates that there are no defined ports. When a port is "
            'defined with a nil port value, it indicates "all ports". Each slice may include a maximum of 100 '
            "ports.",
        ),
        _col(
            "Endpoints",
            "string",
            "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 "
            "endpoints.",
        ),
        _age_col(),
    ],
    "Deployment": [
        _name_col(),
        _col("Ready", "string", "Number of the pod with ready state"),
        _col(
            "Up-to-date",
            "string",
            "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
        ),
        _col(
            "Available",
            "string",
            "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
        ),
        _age_col(),
        _col("Containers", "string", _CONTAINERS_DOC, 1),
        _col("Images", "string", _IMAGES_DOC, 1),
        _col(
            "Selector",
            "string",
            "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones "
            "affected by this deployment.",
            1,
        ),
    ],
    "ReplicaSet": [
        _name_col(),
        _col(
            "Desired",
            "integer",
            "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero "
            "and unspecified. Defaults to 1. More info: "
            "https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/"
            "#what-is-a-replicationcontroller",
        ),
        _col(
            "Current",
            "integer",
            "Replicas is the most recently observed number of replicas. More info: "
            "https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/"
            "#what-is-a-replicationcontroller",
        ),
        _col("Ready", "integer", "readyReplicas is the number of pods targeted by this ReplicaSet with a Ready Condition."),
        _age_col(),
        _col("Containers", "string", _CONTAINERS_DOC, 1),
        _col("Images", "string", _IMAGES_DOC, 1),
        _col(
            "Selector",
            "string",
            "Selector is a label query over pods that should match the replica count. If the selector is empty, "
            "it is defaulted to the labels present on the pod template. Label keys and values that must match in "
            "order to be controlled by this replica set. More info: "
            "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
            1,
        ),
    ],
    "Node": [
        _name_col(),
        _col("Status", "string", "The status of the node"),
        _col("Roles", "string", "The roles of the node"),
        _age_col(),
        _col("Version", "string", "Kubelet Version reported by the node."),
        _col(
            "Internal-IP",
            "string",
            "List of addresses reachable to the node. Queried from cloud provider, if available. More info: "
            "https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as "
            "mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is "
            "merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an "
            "example. Consumers should assume that addresses can change during the lifetime of a Node. However, "
            "there are some exceptions where this may not be possible, such as Pods that inherit a Node's address "
            "in its own status or consumers of the downward API (status.hostIP).",
            1,
        ),
        _col(
            "External-IP",
            "string",
            "List of addresses reachable to the node. Queried from cloud provider, if available. More info: "
            "https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as "
            "mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is "
            "merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an "
            "example. Consumers should assume that addresses can change during the lifetime of a Node. However, "
            "there are some exceptions where this may not be possible, such as Pods that inherit a Node's address "
            "in its own status or consumers of the downward API (status.hostIP).",
            1,
        ),
        _col("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).", 1),
        _col("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", 1),
        _col(
            "Container-Runtime",
            "string",
            "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            1,
        ),
    ],
    "Namespace": [_name_col(), _col("Status", "string", "The status of the namespace"), _age_col()],
    "ConfigMap": [
        _name_col(),
        _col(
            "Data",
            "string",
            "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or "
            "'.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must "
            "not overlap with the keys in the BinaryData field, this is enforced during validation process.",
        ),
        _age_col(),
    ],
    "Lease": [
        _name_col(),
        _col(
            "Holder",
            "string",
            "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election "
            "is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
        ),
        _age_col(),
    ],
    "Event": [
        _col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
        _col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
        _col(
            "Reason",
            "string",
            "This should be a short, machine understandable string that gives the reason for the transition into "
            "the object's current status.",
        ),
        _col("Object", "string", "The object that this event is about."),
        _col(
            "Subobject",
            "string",
            "If referring to a piece of an object instead of an entire object, this string should contain a valid "
            "JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the "
            'object reference is to a container within a pod, this would take on a value like: "spec.containers'
            '{name}" (where "name" refers to the name of the container that triggered the event) or if no '
            'container name is specified "spec.containers[2]" (container with index 2 in this pod). This syntax '
            "is chosen only to have some well-defined way of referencing a part of an object.",
            1,
        ),
        _col("Source", "string", "The component reporting this event. Should be a short machine understandable string.", 1),
        _col("Message", "string", "A human-readable description of the status of this operation."),
        _col(
            "First Seen",
            "string",
            "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
            1,
        ),
        _col("Count", "string", "The number of times this event has occurred.", 1),
        _col("Name", "string", _NAME_DOC, 1, "name"),
    ],
}

_CRD_AGE = _col("Age", "date", "How long ago the object was created.")
_COLUMNS.update({
    "Secret": [
        _name_col(),
        _col("Type", "string", "The type of the secret."),
        _col("Data", "string", "How many data keys the secret holds."),
        _age_col(),
    ],
    "ServiceAccount": [
        _name_col(),
        _col("Secrets", "string", "How many secrets the service account lists."),
        _age_col(),
    ],
    "Ingress": [
        _name_col(),
        _col("Class", "string", "The ingress class of the ingress."),
        _col("Hosts", "string", "The hosts of the ingress's rules."),
        _col("Address", "string", "Where the ingress is reached."),
        _col("Ports", "string", "The ports the ingress is served on."),
        _age_col(),
    ],
    "IngressClass": [
        _name_col(),
        _col("Controller", "string", "The controller that implements the class."),
        _col("Parameters", "string", "The resource that configures the class."),
        _age_col(),
    ],
    "NetworkPolicy": [
        _name_col(),
        _col(
            "Pod-Selector",
            "string",
            "Selects the pods to which this NetworkPolicy object applies.  The array of ingress rules is applied to "
            "any pods selected by this field. Multiple network policies can select the same set of pods.  In this "
            "case, the ingress rules for each are combined additively. This field is NOT optional and follows "
            "standard label selector semantics. An empty podSelector matches all pods in this namespace.",
        ),
        _age_col(),
    ],
    "CertificateSigningRequest": [
        _name_col(),
        _age_col(),
        _col("SignerName", "string", "The signer the request asks to sign it."),
        _col("Requestor", "string", "Who created the request (set by the API server)."),
        _col("RequestedDuration", "string", "The validity the request asks for (expirationSeconds)."),
        _col("Condition", "string", "Pending, Approved or Denied, then Failed and Issued when they apply."),
    ],
    # The Gateway API CRDs' additionalPrinterColumns.
    "GatewayClass": [
        _name_col(),
        _col("Controller", "string", "The controller that manages Gateways of the class."),
        _col("Accepted", "string", "Whether the controller accepted the class."),
        _CRD_AGE,
        _col("Description", "string", "What the class is for.", 1),
    ],
    "Gateway": [
        _name_col(),
        _col("Class", "string", "The GatewayClass of the Gateway."),
        _col("Address", "string", "The first address the Gateway is reached at."),
        _col("Programmed", "string", "Whether the Gateway is programmed in its data plane."),
        _CRD_AGE,
    ],
    "HTTPRoute": [
        _name_col(),
        _col("Hostnames", "string", "The hostnames the route matches."),
        _CRD_AGE,
    ],
    "ReferenceGrant": [_name_col(), _CRD_AGE],
})

_DEFAULT_COLUMNS = [_name_col(), _col("Created At", "date", _CREATED_DOC)]


def _kind_name(kind: Kind | str) -> str:
    return kind.kind if isinstance(kind, Kind) else kind


def column_definitions(kind: Kind | str) -> list[dict[str, Any]]:
    """The ``columnDefinitions`` of a kind's table (priority 1 = only with ``-o wide``)."""
    return copy.deepcopy(_COLUMNS.get(_kind_name(kind), _DEFAULT_COLUMNS))


# --------------------------------------------------------------------------
# helpers


def _g(obj: Any, *path: str, default: Any = None) -> Any:
    cur = obj
    for p in path:
        if not isinstance(cur, Mapping):
            return default
        cur = cur.get(p)
        if cur is None:
            return default
    return cur


def _name(obj: Obj) -> str:
    return _g(obj, "metadata", "name", default="")


def _age(obj: Obj, now: datetime) -> str:
    return _since(_g(obj, "metadata", "creationTimestamp"), now)


def _containers(obj: Obj) -> tuple[str, str]:
    """``layoutContainerCells`` of a workload's pod template."""
    cs = _g(obj, "spec", "template", "spec", "containers", default=[]) or []
    return ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)


def _join_host_port(host: str, port: Any) -> str:
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]:{port}"
    except ValueError:
        if ":" in host:
            return f"[{host}]:{port}"
    return f"{host}:{port}"


def _list_with_more(items: list[str], more: bool, count: int, limit: int) -> str:
    ret = ",".join(items)
    if more:
        return f"{ret} + {count - limit} more..."
    return ret or "<unset>"


# --------------------------------------------------------------------------
# per-kind printers: each returns (cells, row conditions)

Row = tuple[list[Any], list[dict[str, Any]] | None]

_POD_SUCCEEDED = [
    {"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}
]
_POD_FAILED = [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]


def _is_true(conditions: Any, ctype: str) -> bool:
    for c in conditions or []:
        if c.get("type") == ctype:
            return c.get("status") == "True"
    return False


def _pod_row(pod: Obj, now: datetime) -> Row:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    restarts = 0
    restartable_restarts = 0
    total = len(spec.get("containers") or [])
    ready = 0
    last_restart: datetime | None = None
    last_restartable_restart: datetime | None = None

    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    conditions = status.get("conditions") or []
    for c in conditions:
        if c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    row_conditions = _POD_SUCCEEDED if phase == "Succeeded" else _POD_FAILED if phase == "Failed" else None

    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}

    def restartable(name: Any) -> bool:
        return (init_specs.get(name) or {}).get("restartPolicy") == "Always"

    total += sum(1 for c in init_specs.values() if c.get("restartPolicy") == "Always")

    def later(a: datetime | None, b: Any) -> datetime | None:
        t = _parse_time(b)
        if t is None:
            return a
        return t if a is None or t > a else a

    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for i, cs in enumerate(init_statuses):
        restarts += int(cs.get("restartCount") or 0)
        last_term = _g(cs, "lastState", "terminated")
        if last_term is not None:
            last_restart = later(last_restart, last_term.get("finishedAt"))
        if restartable(cs.get("name")):
            restartable_restarts += int(cs.get("restartCount") or 0)
            if last_term is not None:
                last_restartable_restart = later(last_restartable_restart, last_term.get("finishedAt"))
        state = cs.get("state") or {}
        term = state.get("terminated")
        waiting = state.get("waiting")
        if term is not None and int(term.get("exitCode") or 0) == 0:
            continue
        if restartable(cs.get("name")) and cs.get("started"):
            if cs.get("ready"):
                ready += 1
            continue
        if term is not None:
            if not term.get("reason"):
                if term.get("signal"):
                    reason = f"Init:Signal:{term.get('signal')}"
                else:
                    reason = f"Init:ExitCode:{term.get('exitCode') or 0}"
            else:
                reason = "Init:" + term["reason"]
        elif waiting is not None and waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break

    if not initializing or _is_true(conditions, "Initialized"):
        restarts = restartable_restarts
        last_restart = last_restartable_restart
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += int(cs.get("restartCount") or 0)
            last_term = _g(cs, "lastState", "terminated")
            if last_term is not None:
                last_restart = later(last_restart, last_term.get("finishedAt"))
            state = cs.get("state") or {}
            waiting, term = state.get("waiting"), state.get("terminated")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif term is not None and term.get("reason"):
                reason = term["reason"]
            elif term is not None:
                if term.get("signal"):
                    reason = f"Signal:{term.get('signal')}"
                else:
                    reason = f"ExitCode:{term.get('exitCode') or 0}"
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _is_true(conditions, "Ready") else "NotReady"

    deleting = _g(pod, "metadata", "deletionTimestamp") is not None
    if deleting and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif deleting and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_str = str(restarts)
    if restarts != 0 and last_restart is not None:
        restarts_str = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"

    pod_ips = status.get("podIPs") or []
    pod_ip = (pod_ips[0].get("ip") if pod_ips else status.get("podIP")) or "<none>"
    node = spec.get("nodeName") or "<none>"
    nominated = status.get("nominatedNodeName") or "<none>"
    gates = spec.get("readinessGates") or []
    readiness = "<none>"
    if gates:
        true_count = 0
        for gate in gates:
            for c in conditions:
                if c.get("type") == gate.get("conditionType"):
                    if c.get("status") == "True":
                        true_count += 1
                    break
        readiness = f"{true_count}/{len(gates)}"
    cells = [_name(pod), f"{ready}/{total}", reason, restarts_str, _age(pod, now), pod_ip, node, nominated, readiness]
    return cells, row_conditions


def _lb_ingress(svc: Obj, wide: bool = True) -> str:
    found: set[str] = set()
    for ing in _g(svc, "status", "loadBalancer", "ingress", default=[]) or []:
        if ing.get("ip"):
            found.add(ing["ip"])
        elif ing.get("hostname"):
            found.add(ing["hostname"])
    r = ",".join(sorted(found))
    if not wide and len(r) > 16:
        r = r[:13] + "..."
    return r


def _service_external_ip(svc: Obj) -> str:
    spec = svc.get("spec") or {}
    stype = spec.get("type") or "ClusterIP"
    external = spec.get("externalIPs") or []
    if stype in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if stype == "LoadBalancer":
        lb = _lb_ingress(svc)  # the apiserver always prints wide
        if external:
            return ",".join(([*lb.split(",")] if lb else []) + list(external))
        return lb or "<pending>"
    if stype == "ExternalName":
        return spec.get("externalName") or ""
    return "<unknown>"


def _service_ports(ports: Any) -> str:
    pieces = []
    for p in ports or []:
        proto = p.get("protocol") or "TCP"
        if p.get("nodePort"):
            pieces.append(f"{p.get('port')}:{p['nodePort']}/{proto}")
        else:
            pieces.append(f"{p.get('port')}/{proto}")
    return ",".join(pieces)


def _service_row(svc: Obj, now: datetime) -> Row:
    spec = svc.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    cluster_ip = ips[0] if ips else "<none>"
    ports = _service_ports(spec.get("ports")) or "<none>"
    cells = [
        _name(svc),
        spec.get("type") or "ClusterIP",
        cluster_ip,
        _service_external_ip(svc),
        ports,
        _age(svc, now),
        format_labels(spec.get("selector")),
    ]
    return cells, None


def _format_endpoints(ep: Obj) -> str:
    subsets = ep.get("subsets") or []
    if not subsets:
        return "<none>"
    out: list[str] = []
    limit, more, count = 3, False, 0
    for ss in subsets:
        addrs = ss.get("addresses") or []
        ports = ss.get("ports") or []
        if not ports:
            count += len(addrs)
            for a in addrs:
                if len(out) == limit:
                    more = True
                    break
                out.append(a.get("ip", ""))
            continue
        for port in ports:
            count += len(addrs)
            for a in addrs:
                if len(out) == limit:
                    more = True
                    break
                out.append(_join_host_port(a.get("ip", ""), port.get("port", 0)))
    ret = ",".join(out)
    if more:
        return f"{ret} + {count - limit} more..."
    return ret


def _endpoints_row(ep: Obj, now: datetime) -> Row:
    return [_name(ep), _format_endpoints(ep), _age(ep, now)], None


def _endpointslice_row(es: Obj, now: datetime) -> Row:
    limit = 3
    ports: list[str] = []
    more, count = False, 0
    for p in es.get("ports") or []:
        if len(ports) < limit:
            if p.get("port") is not None:
                ports.append(str(p["port"]))
            elif p.get("name") is not None:
                ports.append(p["name"])
            else:
                ports.append("*")
        elif len(ports) == limit:
            more = True
        count += 1
    ports_s = _list_with_more(ports, more, count, limit)
    addrs: list[str] = []
    more, count = False, 0
    for ep in es.get("endpoints") or []:
        for a in ep.get("addresses") or []:
            if len(addrs) < limit:
                addrs.append(a)
            elif len(addrs) == limit:
                more = True
            count += 1
    addrs_s = _list_with_more(addrs, more, count, limit)
    return [_name(es), es.get("addressType") or "", ports_s, addrs_s, _age(es, now)], None


def _replicas(obj: Obj) -> int:
    r = _g(obj, "spec", "replicas")
    return 1 if r is None else int(r)


def _deployment_row(d: Obj, now: datetime) -> Row:
    status = d.get("status") or {}
    try:
        selector = str(from_selector_object(_g(d, "spec", "selector")))
    except APIError:
        selector = "<invalid>"
    names, images = _containers(d)
    cells = [
        _name(d),
        f"{int(status.get('readyReplicas') or 0)}/{_replicas(d)}",
        int(status.get("updatedReplicas") or 0),
        int(status.get("availableReplicas") or 0),
        _age(d, now),
        names,
        images,
        selector,
    ]
    return cells, None


def _replicaset_row(rs: Obj, now: datetime) -> Row:
    status = rs.get("status") or {}
    names, images = _containers(rs)
    cells = [
        _name(rs),
        _replicas(rs),
        int(status.get("replicas") or 0),
        int(status.get("readyReplicas") or 0),
        _age(rs, now),
        names,
        images,
        format_label_selector(_g(rs, "spec", "selector")),
    ]
    return cells, None


_ROLE_PREFIX = "node-role.kubernetes.io/"


def _node_roles(node: Obj) -> str:
    roles: set[str] = set()
    for k, v in (_g(node, "metadata", "labels", default={}) or {}).items():
        if k.startswith(_ROLE_PREFIX):
            role = k[len(_ROLE_PREFIX):]
            if role:
                roles.add(role)
        elif k == "kubernetes.io/role" and v:
            roles.add(v)
    return ",".join(sorted(roles)) or "<none>"


def _node_address(node: Obj, atype: str) -> str:
    for a in _g(node, "status", "addresses", default=[]) or []:
        if a.get("type") == atype:
            return a.get("address", "")
    return "<none>"


def _node_row(node: Obj, now: datetime) -> Row:
    status = node.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or []}
    parts: list[str] = []
    if "Ready" in conds:
        parts.append("Ready" if conds["Ready"].get("status") == "True" else "NotReady")
    if not parts:
        parts.append("Unknown")
    if _g(node, "spec", "unschedulable"):
        parts.append("SchedulingDisabled")
    info = status.get("nodeInfo") or {}
    cells = [
        _name(node),
        ",".join(parts),
        _node_roles(node),
        _age(node, now),
        info.get("kubeletVersion") or "",
        _node_address(node, "InternalIP"),
        _node_address(node, "ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]
    return cells, None


def _namespace_row(ns: Obj, now: datetime) -> Row:
    return [_name(ns), _g(ns, "status", "phase", default=""), _age(ns, now)], None


def _configmap_row(cm: Obj, now: datetime) -> Row:
    return [_name(cm), len(cm.get("data") or {}) + len(cm.get("binaryData") or {}), _age(cm, now)], None


def _lease_row(lease: Obj, now: datetime) -> Row:
    return [_name(lease), _g(lease, "spec", "holderIdentity", default=""), _age(lease, now)], None


def _event_row(ev: Obj, now: datetime) -> Row:
    first = _since(ev.get("firstTimestamp"), now)
    if _parse_time(ev.get("firstTimestamp")) is None:
        first = _since(ev.get("eventTime"), now)
    last = _since(ev.get("lastTimestamp"), now)
    if _parse_time(ev.get("lastTimestamp")) is None:
        last = first
    count = int(ev.get("count") or 0)
    series = ev.get("series")
    if series is not None:
        last = _since(series.get("lastObservedTime"), now)
        count = int(series.get("count") or 0)
    elif count == 0:
        count = 1
    involved = ev.get("involvedObject") or {}
    kind = (involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    component = _g(ev, "source", "component", default="") or ev.get("reportingComponent") or ""
    host = _g(ev, "source", "host", default="") or ev.get("reportingInstance") or ""
    source = f"{component}, {host}" if host else component
    cells = [
        last,
        ev.get("type") or "",
        ev.get("reason") or "",
        target,
        involved.get("fieldPath") or "",
        source,
        (ev.get("message") or "").strip(),
        first,
        count,
        _name(ev),
    ]
    return cells, None


def _secret_row(secret: Obj, now: datetime) -> Row:
    return [_name(secret), secret.get("type") or "", len(secret.get("data") or {}), _age(secret, now)], None


def _service_account_row(sa: Obj, now: datetime) -> Row:
    return [_name(sa), len(sa.get("secrets") or []), _age(sa, now)], None


def _ingress_hosts(rules: Any) -> str:
    """Up to three hosts, then how many rules more (``*`` when no rule has a host)."""
    hosts: list[str] = []
    more = False
    rules = [r for r in (rules or []) if isinstance(r, dict)]
    for rule in rules:
        if len(hosts) == 3:
            more = True
        if not more and rule.get("host"):
            hosts.append(rule["host"])
    if not hosts:
        return "*"
    text = ",".join(hosts)
    return f"{text} + {len(rules) - 3} more..." if more else text


def _ingress_row(ing: Obj, now: datetime) -> Row:
    spec = ing.get("spec") or {}
    address = _lb_ingress(ing, wide=False)
    ports = "80, 443" if spec.get("tls") else "80"
    return [_name(ing), spec.get("ingressClassName") or "<none>", _ingress_hosts(spec.get("rules")), address,
            ports, _age(ing, now)], None


def _ingress_class_row(ic: Obj, now: datetime) -> Row:
    params = _g(ic, "spec", "parameters")
    shown = "<none>"
    if isinstance(params, dict):
        shown = params.get("kind") or ""
        if params.get("apiGroup") is not None:
            shown += "." + params["apiGroup"]
        shown += "/" + (params.get("name") or "")
    return [_name(ic), _g(ic, "spec", "controller", default=""), shown, _age(ic, now)], None


def _network_policy_row(np: Obj, now: datetime) -> Row:
    """``printNetworkPolicy``: the pod selector as ``metav1.FormatLabelSelector`` writes it."""
    return [_name(np), format_label_selector(_g(np, "spec", "podSelector") or {}), _age(np, now)], None


def _csr_row(csr: Obj, now: datetime) -> Row:
    seconds = _g(csr, "spec", "expirationSeconds")
    duration = human_duration(seconds) if isinstance(seconds, int) and not isinstance(seconds, bool) else "<none>"
    return [_name(csr), _age(csr, now), _g(csr, "spec", "signerName") or "<none>",
            _g(csr, "spec", "username", default=""), duration, csr_state(csr)], None


def _condition_status(obj: Obj, ctype: str) -> str | None:
    for c in _g(obj, "status", "conditions", default=[]) or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return c.get("status")
    return None


def _gateway_class_row(gc: Obj, now: datetime) -> Row:
    return [_name(gc), _g(gc, "spec", "controllerName"), _condition_status(gc, "Accepted"), _age(gc, now),
            _g(gc, "spec", "description")], None


def _gateway_row(gw: Obj, now: datetime) -> Row:
    addresses = [a for a in _g(gw, "status", "addresses", default=[]) or [] if isinstance(a, dict) and "value" in a]
    return [_name(gw), _g(gw, "spec", "gatewayClassName"), addresses[0]["value"] if addresses else None,
            _condition_status(gw, "Programmed"), _age(gw, now)], None


def _httproute_row(route: Obj, now: datetime) -> Row:
    hostnames = _g(route, "spec", "hostnames")
    shown = json.dumps(hostnames, separators=(",", ":")) if isinstance(hostnames, list) and hostnames else None
    return [_name(route), shown, _age(route, now)], None


def _name_age_row(obj: Obj, now: datetime) -> Row:
    return [_name(obj), _age(obj, now)], None


def _default_row(obj: Obj, now: datetime) -> Row:
    t = _parse_time(_g(obj, "metadata", "creationTimestamp"))
    created = t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if t else "0001-01-01T00:00:00Z"
    return [_name(obj), created], None


_PRINTERS: dict[str, Callable[[Obj, datetime], Row]] = {
    "Pod": _pod_row,
    "Service": _service_row,
    "Endpoints": _endpoints_row,
    "EndpointSlice": _endpointslice_row,
    "Deployment": _deployment_row,
    "ReplicaSet": _replicaset_row,
    "Node": _node_row,
    "Namespace": _namespace_row,
    "ConfigMap": _configmap_row,
    "Lease": _lease_row,
    "Event": _event_row,
    "Secret": _secret_row,
    "ServiceAccount": _service_account_row,
    "Ingress": _ingress_row,
    "IngressClass": _ingress_class_row,
    "NetworkPolicy": _network_policy_row,
    "CertificateSigningRequest": _csr_row,
    "GatewayClass": _gateway_class_row,
    "Gateway": _gateway_row,
    "HTTPRoute": _httproute_row,
    "ReferenceGrant": _name_age_row,
}


# --------------------------------------------------------------------------
# rows and tables


def partial_object_metadata(obj: Obj) -> dict[str, Any]:
    """The ``PartialObjectMetadata`` (meta.k8s.io/v1) a Metadata row carries."""
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": copy.deepcopy(dict(obj.get("metadata") or {})),
    }


def table_row(kind: Kind | str, obj: Obj, include_object: str = "Metadata", *, now: datetime | None = None) -> dict[str, Any]:
    """One ``TableRow``: the cells (wide cells included) and the object as asked.

    ``include_object`` is ``Metadata`` (default; a PartialObjectMetadata),
    ``Object`` (the whole object) or ``None`` (``object: null``); anything
    else is 400 BadRequest. ``now`` fixes the clock for ages (tests).
    """
    include_object = include_object or "Metadata"
    if include_object not in INCLUDE_OBJECT_VALUES:
        raise bad_request(f'unrecognized includeObject value: "{include_object}"')
    now = now or datetime.now(timezone.utc)
    printer = _PRINTERS.get(_kind_name(kind), _default_row)
    cells, conditions = printer(obj, now)
    row: dict[str, Any] = {"cells": cells}
    if conditions:
        row["conditions"] = copy.deepcopy(conditions)
    if include_object == "Metadata":
        row["object"] = partial_object_metadata(obj)
    elif include_object == "Object":
        row["object"] = copy.deepcopy(dict(obj))
    else:
        row["object"] = None
    return row


def table(
    kind: Kind | str,
    objs: list[Obj] | tuple[Obj, ...],
    *,
    include_object: str = "Metadata",
    resource_version: str = "",
    continue_token: str = "",
    remaining: int | None = None,
    no_headers: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A ``Table`` (meta.k8s.io/v1) of objects of one kind, as kube-apiserver answers a list or get.

    ``resource_version``, ``continue_token`` and ``remaining`` fill the list
    metadata (omitted when empty); ``no_headers`` (``TableOptions.noHeaders``)
    leaves out the column definitions.
    """
    now = now or datetime.now(timezone.utc)
    meta: dict[str, Any] = {}
    if resource_version:
        meta["resourceVersion"] = resource_version
    if continue_token:
        meta["continue"] = continue_token
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": [] if no_headers else column_definitions(kind),
        "rows": [table_row(kind, o, include_object, now=now) for o in objs],
    }
