"""Kubernetes' default values, applied to wire objects the way kube-apiserver's decoder does.

Upstream runs the defaulting functions of the versioned types (``SetDefaults_*``
in ``pkg/apis/*/v1``) on every object it decodes, on create and on update.
``apply_defaults`` does the same for the kinds kmesh serves, following
Kubernetes 1.32, so ``kubectl get -o yaml`` shows what a real cluster shows.
It also adds the empty values Go's JSON encoder always writes for non-pointer
structs (``resources: {}``, a pod template's ``creationTimestamp: null``,
a Service's ``status.loadBalancer: {}``).

Values that upstream sets in a create strategy or admission plugin rather than
in defaulting (a Namespace's ``kubernetes`` finalizer, a Pod's phase, QoS
class and default tolerations) are in :mod:`kmesh.api.meta`.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Callable

from kmesh.api import crdrules
from kmesh.api.kinds import GATEWAY, Kind, get
from kmesh.api.obj import Obj

DEFAULT_TERMINATION_GRACE_PERIOD = 30
DEFAULT_CLIENT_IP_AFFINITY_SECONDS = 10800
DEFAULT_SCHEDULER = "default-scheduler"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_VOLUME_MODE = 420  # 0644
METADATA_NAME_LABEL = "kubernetes.io/metadata.name"



def _kind(kind: Kind | str) -> Kind:
    return kind if isinstance(kind, Kind) else get(kind)


def apply_defaults(kind: Kind | str, obj: Obj) -> None:
    """Fill in Kubernetes' defaults for an object of ``kind``, in place."""
    if not isinstance(obj, dict):
        return
    k = _kind(kind)
    if k.group == GATEWAY:
        _default_from_schema(k, obj)
        return
    fn = _DEFAULTERS.get(k.kind)
    if fn is not None:
        fn(obj)


def _default_from_schema(k: Kind, obj: Obj) -> None:
    """The OpenAPI defaults of a kind upstream serves as a CRD (the Gateway API)."""
    from kmesh.api.schemas.gateway import RULES, TOP

    crdrules.default_object(RULES, TOP[k.kind], obj)


# ---------------------------------------------------------------- helpers


def _dict(parent: Obj, key: str) -> Obj:
    """``parent[key]`` as a dict, created (or replaced, if not a dict) when needed."""
    value = parent.get(key)
    if not isinstance(value, dict):
        value = {}
        parent[key] = value
    return value


def _dicts(parent: Any, key: str) -> list[Obj]:
    """The dict items of the list ``parent[key]`` (none if absent or malformed)."""
    if not isinstance(parent, dict):
        return []
    value = parent.get(key)
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, dict)]


def _empty(value: Any) -> bool:
    return value is None or value == ""


# ---------------------------------------------------------------- image pull policy

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = _DOMAIN_PART + r"(?:\." + _DOMAIN_PART + r")*(?::[0-9]+)?"
_IPV6_DOMAIN = r"\[[0-9a-fA-F:]+\](?::[0-9]+)?"
_REFERENCE = re.compile(
    r"^(?:(?:" + _DOMAIN + "|" + _IPV6_DOMAIN + r")/)?"
    + _COMPONENT
    + r"(?:/"
    + _COMPONENT
    + r")*"
    + r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    + r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}))?$"
)


def image_tag(image: str) -> str | None:
    """The tag a kubelet would pull for ``image``: its tag, "latest" when it has neither tag
    nor digest, "" when it has only a digest, None when it does not parse as a reference."""
    m = _REFERENCE.match(image)
    if not m:
        return None
    # A lone "name:5000" parses as a tag, as in docker's grammar; a domain needs a "/".
    if m.group("tag"):
        return m.group("tag")
    if m.group("digest"):
        return ""
    return "latest"


def default_pull_policy(image: Any) -> str:
    """Always for ``:latest`` or untagged images, else IfNotPresent (SetDefaults_Container)."""
    tag = image_tag(image) if isinstance(image, str) else None
    return "Always" if tag == "latest" else "IfNotPresent"


# ---------------------------------------------------------------- pod spec


def _default_http_get(action: Obj) -> None:
    if _empty(action.get("path")):
        action["path"] = "/"
    if _empty(action.get("scheme")):
        action["scheme"] = "HTTP"


def _default_handler(handler: Any) -> None:
    if not isinstance(handler, dict):
        return
    if isinstance(handler.get("httpGet"), dict):
        _default_http_get(handler["httpGet"])
    if isinstance(handler.get("grpc"), dict) and handler["grpc"].get("service") is None:
        handler["grpc"]["service"] = ""


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)):
        if _empty(probe.get(key)) or probe.get(key) == 0:
            probe[key] = value
    _default_handler(probe)


def _default_field_ref(ref: Any) -> None:
    if isinstance(ref, dict) and _empty(ref.get("apiVersion")):
        ref["apiVersion"] = "v1"


def _default_container(c: Obj) -> None:
    if _empty(c.get("imagePullPolicy")):
        c["imagePullPolicy"] = default_pull_policy(c.get("image"))
    if _empty(c.get("terminationMessagePath")):
        c["terminationMessagePath"] = TERMINATION_MESSAGE_PATH
    if _empty(c.get("terminationMessagePolicy")):
        c["terminationMessagePolicy"] = "File"
    if not isinstance(c.get("resources"), dict):
        c["resources"] = {}
    for port in _dicts(c, "ports"):
        if _empty(port.get("protocol")):
            port["protocol"] = "TCP"
    for env in _dicts(c, "env"):
        vf = env.get("valueFrom")
        if isinstance(vf, dict):
            _default_field_ref(vf.get("fieldRef"))
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(c.get(key))
    lifecycle = c.get("lifecycle")
    if isinstance(lifecycle, dict):
        _default_handler(lifecycle.get("postStart"))
        _default_handler(lifecycle.get("preStop"))


_VOLUME_SOURCES = (
    "hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret", "nfs",
    "iscsi", "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs", "flocker",
    "downwardAPI", "fc", "azureFile", "configMap", "vsphereVolume", "quobyte", "azureDisk",
    "photonPersistentDisk", "projected", "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral",
    "image",
)


def _default_volume(v: Obj) -> None:
    if not any(v.get(src) is not None for src in _VOLUME_SOURCES):
        v["emptyDir"] = {}
    for src in ("secret", "configMap", "downwardAPI", "projected"):
        body = v.get(src)
        if isinstance(body, dict) and body.get("defaultMode") is None:
            body["defaultMode"] = DEFAULT_VOLUME_MODE
    for item in _dicts(v.get("downwardAPI"), "items"):
        _default_field_ref(item.get("fieldRef"))
    for source in _dicts(v.get("projected"), "sources"):
        for item in _dicts(source.get("downwardAPI"), "items"):
            _default_field_ref(item.get("fieldRef"))
        token = source.get("serviceAccountToken")
        if isinstance(token, dict) and token.get("expirationSeconds") is None:
            token["expirationSeconds"] = 3600
    hp = v.get("hostPath")
    if isinstance(hp, dict) and hp.get("type") is None:
        hp["type"] = ""


def default_pod_spec(spec: Obj) -> None:
    """SetDefaults_PodSpec and everything under it; shared by Pods and pod templates."""
    if _empty(spec.get("dnsPolicy")):
        spec["dnsPolicy"] = "ClusterFirst"
    if _empty(spec.get("restartPolicy")):
        spec["restartPolicy"] = "Always"
    if not isinstance(spec.get("securityContext"), dict):
        spec["securityContext"] = {}
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = DEFAULT_TERMINATION_GRACE_PERIOD
    if _empty(spec.get("schedulerName")):
        spec["schedulerName"] = DEFAULT_SCHEDULER
    sync_service_account(spec)
    for key in ("containers", "initContainers"):
        for c in _dicts(spec, key):
            _default_container(c)
    for c in _dicts(spec, "ephemeralContainers"):
        _default_container(c)
    for v in _dicts(spec, "volumes"):
        _default_volume(v)


def sync_service_account(spec: Obj) -> None:
    """v1 conversion: ``serviceAccountName`` falls back to the deprecated ``serviceAccount``, which mirrors it."""
    if _empty(spec.get("serviceAccountName")) and not _empty(spec.get("serviceAccount")):
        spec["serviceAccountName"] = spec["serviceAccount"]
    if not _empty(spec.get("serviceAccountName")):
        spec["serviceAccount"] = spec["serviceAccountName"]


def _requests_from_limits(spec: Obj) -> None:
    for key in ("containers", "initContainers"):
        for c in _dicts(spec, key):
            res = c.get("resources")
            if not isinstance(res, dict) or not isinstance(res.get("limits"), dict) or not res["limits"]:
                continue
            requests = res.get("requests")
            if not isinstance(requests, dict):
                requests = {}
            for name, value in res["limits"].items():
                requests.setdefault(name, value)
            res["requests"] = requests


def _default_pod(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    default_pod_spec(spec)
    _requests_from_limits(spec)  # Pod only, not templates
    if spec.get("enableServiceLinks") is None:
        spec["enableServiceLinks"] = True  # Pod only, not templates
    if spec.get("hostNetwork") is True:
        # Pod only: DefaultHostNetworkHostPortsInPodTemplates is off in 1.32.
        for key in ("containers", "initContainers"):
            for c in _dicts(spec, key):
                for port in _dicts(c, "ports"):
                    if not port.get("hostPort") and port.get("containerPort"):
                        port["hostPort"] = port["containerPort"]
    status = obj.get("status")
    if isinstance(status, dict):
        _sync_singular(status, "podIP", "podIPs")
        _sync_singular(status, "hostIP", "hostIPs")


def _sync_singular(parent: Obj, single: str, plural: str) -> None:
    """v1 conversion keeps ``podIP`` == ``podIPs[0].ip`` (and the like) in step."""
    many = parent.get(plural)
    one = parent.get(single)
    if one and not many:
        parent[plural] = [{"ip": one}]
    elif isinstance(many, list) and many and isinstance(many[0], dict) and not one:
        parent[single] = many[0].get("ip", "")


def default_pod_template(template: Any) -> None:
    """Defaults of a pod template (metadata stub, pod spec), as inside a Deployment."""
    if not isinstance(template, dict):
        return
    md = _dict(template, "metadata")
    md.setdefault("creationTimestamp", None)
    default_pod_spec(_dict(template, "spec"))


# ---------------------------------------------------------------- kinds


def _default_service(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    if _empty(spec.get("sessionAffinity")):
        spec["sessionAffinity"] = "None"
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    if spec["sessionAffinity"] == "ClientIP":
        cfg = spec.get("sessionAffinityConfig")
        client_ip = cfg.get("clientIP") if isinstance(cfg, dict) else None
        if not isinstance(client_ip, dict) or client_ip.get("timeoutSeconds") is None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": DEFAULT_CLIENT_IP_AFFINITY_SECONDS}}
    if _empty(spec.get("type")):
        spec["type"] = "ClusterIP"
    for port in _dicts(spec, "ports"):
        if _empty(port.get("protocol")):
            port["protocol"] = "TCP"
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port", 0)
    stype = spec["type"]
    accessible = stype in ("NodePort", "LoadBalancer") or (stype == "ClusterIP" and bool(spec.get("externalIPs")))
    if accessible and _empty(spec.get("externalTrafficPolicy")):
        spec["externalTrafficPolicy"] = "Cluster"
    if spec.get("internalTrafficPolicy") is None and stype in ("ClusterIP", "NodePort", "LoadBalancer"):
        spec["internalTrafficPolicy"] = "Cluster"
    if stype == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        spec["allocateLoadBalancerNodePorts"] = True
    status = obj.get("status")
    if isinstance(status, dict):
        lb = status.get("loadBalancer")
        if not isinstance(lb, dict):
            status["loadBalancer"] = lb = {}
        if stype == "LoadBalancer":
            for ing in _dicts(lb, "ingress"):
                if ing.get("ip") and ing.get("ipMode") is None:
                    ing["ipMode"] = "VIP"


def _default_deployment(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    strategy = _dict(spec, "strategy")
    if _empty(strategy.get("type")):
        strategy["type"] = "RollingUpdate"
    if strategy["type"] == "RollingUpdate":
        rolling = _dict(strategy, "rollingUpdate")
        if rolling.get("maxUnavailable") is None:
            rolling["maxUnavailable"] = "25%"
        if rolling.get("maxSurge") is None:
            rolling["maxSurge"] = "25%"
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    if spec.get("progressDeadlineSeconds") is None:
        spec["progressDeadlineSeconds"] = 600
    default_pod_template(_dict(spec, "template"))


def _default_replicaset(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    default_pod_template(_dict(spec, "template"))


def _default_namespace(obj: Obj) -> None:
    md = obj.get("metadata")
    if isinstance(md, dict) and md.get("name"):
        _dict(md, "labels")[METADATA_NAME_LABEL] = md["name"]
    status = obj.get("status")
    if isinstance(status, dict) and _empty(status.get("phase")):
        status["phase"] = "Active"


def _default_node(obj: Obj) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        cidr = spec.get("podCIDR")
        cidrs = spec.get("podCIDRs")
        if cidr and not cidrs:
            spec["podCIDRs"] = [cidr]
        elif isinstance(cidrs, list) and cidrs and not cidr:
            spec["podCIDR"] = cidrs[0]
    status = obj.get("status")
    if isinstance(status, dict):
        if status.get("allocatable") is None and isinstance(status.get("capacity"), dict):
            status["allocatable"] = dict(status["capacity"])


def _default_endpoints(obj: Obj) -> None:
    for subset in _dicts(obj, "subsets"):
        for port in _dicts(subset, "ports"):
            if _empty(port.get("protocol")):
                port["protocol"] = "TCP"


def _default_endpointslice(obj: Obj) -> None:
    for port in _dicts(obj, "ports"):
        if port.get("name") is None:
            port["name"] = ""
        if port.get("protocol") is None:
            port["protocol"] = "TCP"


def _default_secret(obj: Obj) -> None:
    """SetDefaults_Secret (type Opaque) and v1 conversion: ``stringData`` merged into ``data``, then dropped."""
    if _empty(obj.get("type")):
        obj["type"] = "Opaque"
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = obj.get("data")
        if not isinstance(data, dict):
            data = {}
            obj["data"] = data
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _default_ingress(obj: Obj) -> None:
    status = obj.get("status")
    if isinstance(status, dict) and not isinstance(status.get("loadBalancer"), dict):
        status["loadBalancer"] = {}


def _default_ingress_class(obj: Obj) -> None:
    params = obj.get("spec", {}).get("parameters") if isinstance(obj.get("spec"), dict) else None
    if isinstance(params, dict) and params.get("scope") is None:
        params["scope"] = "Cluster"


def _omit_empty(obj: Obj, *keys: str) -> None:
    """Drop ``omitempty`` fields Go's JSON encoder leaves out: null pointers and empty lists."""
    for key in keys:
        if key in obj and (obj[key] is None or obj[key] == []):
            del obj[key]


def _items(parent: Obj, key: str) -> list[Obj]:
    """The items of the list ``parent[key]``, a null item read as the empty struct Go decodes it to."""
    value = parent.get(key)
    if not isinstance(value, list):
        return []
    value[:] = [{} if v is None else v for v in value]
    return [v for v in value if isinstance(v, dict)]


def _default_network_policy_rules(spec: Obj, rules: str, peers: str) -> None:
    for rule in _items(spec, rules):
        for port in _items(rule, "ports"):
            _omit_empty(port, "port", "endPort")
            if port.get("protocol") is None:  # SetDefaults_NetworkPolicyPort
                port["protocol"] = "TCP"
        for peer in _items(rule, peers):
            _omit_empty(peer, "podSelector", "namespaceSelector", "ipBlock")
            if isinstance(peer.get("ipBlock"), dict):
                _omit_empty(peer["ipBlock"], "except")
        _omit_empty(rule, "ports", peers)


def _default_network_policy(obj: Obj) -> None:
    """SetDefaults_NetworkPolicy and SetDefaults_NetworkPolicyPort, and the JSON shape Go gives the spec.

    ``policyTypes`` is defaulted only when empty: Ingress always, Egress too when there are egress rules.
    A port's protocol defaults to TCP. ``podSelector`` is a non-pointer struct upstream, so it is always written
    (``{}`` when absent); empty lists and null pointers are left out, as ``omitempty`` leaves them out.
    """
    if obj.get("spec") is None:
        obj["spec"] = {}
    spec = obj["spec"]
    if not isinstance(spec, dict):
        return
    if spec.get("podSelector") is None:
        spec["podSelector"] = {}
    _default_network_policy_rules(spec, "ingress", "from")
    _default_network_policy_rules(spec, "egress", "to")
    _omit_empty(spec, "ingress", "egress")
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


_DEFAULTERS: dict[str, Callable[[Obj], None]] = {
    "Pod": _default_pod,
    "Service": _default_service,
    "Deployment": _default_deployment,
    "ReplicaSet": _default_replicaset,
    "Namespace": _default_namespace,
    "Node": _default_node,
    "Endpoints": _default_endpoints,
    "EndpointSlice": _default_endpointslice,
    "Secret": _default_secret,
    "Ingress": _default_ingress,
    "IngressClass": _default_ingress_class,
    "NetworkPolicy": _default_network_policy,
}
