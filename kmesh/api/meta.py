"""Object metadata and the create/update preparation kube-apiserver does before validating.

kube-apiserver runs, for every write: decode + defaults, then the resource
"strategy" (``PrepareForCreate`` / ``PrepareForUpdate``) and the generic
``BeforeCreate`` / ``BeforeUpdate`` steps, then validation. The API server of
kmesh calls, in the same order::

    defaults.apply_defaults(kind, obj)
    meta.prepare_create(kind, obj, namespace)       # or prepare_update(kind, new, old)
    validation.validate(kind, obj)                   # or validate_update(kind, new, old)

This module is the strategy part. Behaviour follows Kubernetes 1.32:

- ``metadata.generation`` exists only for kinds whose strategy sets it:
  Deployment, ReplicaSet (bumped on spec changes; Deployment also on
  annotation changes) and EndpointSlice (bumped on any non-metadata change
  or a label change). Pods got a generation only in 1.33, Services never.
  A NetworkPolicy starts at 1 and is bumped on spec changes (it has no status).
- The main resource keeps the stored ``status`` of kinds that have a status
  subresource; the status subresource keeps the stored ``spec`` (and, as
  upstream, a Deployment's labels and a Pod's ownerReferences).
- A few admission-plugin effects that every user sees on a Pod are applied at
  create (``priority``, ``preemptionPolicy``, the not-ready/unreachable
  tolerations of DefaultTolerationSeconds) and ServiceAccount admission's
  ``serviceAccountName: default`` (without the token volume: kmesh issues no
  tokens; a Pod whose ServiceAccount does not exist yet is not refused).
- A CertificateSigningRequest is created without status and keeps its
  requester fields (spec.username/uid/groups/extra) on updates; its ``/approval``
  subresource changes only the conditions, ``/status`` keeps the spec, and
  both stamp the conditions' update and transition times.
- Kinds upstream serves as CRDs (the Gateway API) get generation 1 on create
  and a bump on any change outside metadata and status; a create cannot set
  status, which then shows the schema's default status (as upstream shows it
  when it reads the object back).
"""

from __future__ import annotations

import copy
import datetime as _dt
import secrets
import uuid
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal
from typing import Any, Callable

from kmesh.api import errors
from kmesh.api.certificates import REQUESTER_FIELDS, stamp_conditions
from kmesh.api.kinds import Kind, get

# Characters of generated name suffixes: utilrand's alphabet (no vowels, no 0/1/3).
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
GENERATED_SUFFIX_LEN = 5
MAX_GENERATE_NAME_BASE = 63 - GENERATED_SUFFIX_LEN

GENERATION_KINDS = frozenset({
    "Deployment", "ReplicaSet", "EndpointSlice", "Ingress", "IngressClass", "NetworkPolicy",
    "GatewayClass", "Gateway", "HTTPRoute", "ReferenceGrant",
})
GATEWAY_GROUP = "gateway.networking.k8s.io"

# DefaultTolerationSeconds admission plugin.
DEFAULT_TOLERATION_SECONDS = 300
_NOT_READY_TAINT = "node.kubernetes.io/not-ready"
_UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"


def _kind(kind: Kind | str) -> Kind:
    return kind if isinstance(kind, Kind) else get(kind)


# ---------------------------------------------------------------- accessors


def now() -> str:
    """The current time as Kubernetes writes timestamps: RFC 3339, seconds, UTC."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    """A fresh ``metadata.uid`` (a random UUID, as upstream)."""
    return str(uuid.uuid4())


def metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """The object's ``metadata`` dict, created if missing or not a dict."""
    md = obj.get("metadata")
    if not isinstance(md, dict):
        md = {}
        obj["metadata"] = md
    return md


def name(obj: dict[str, Any]) -> str:
    """``metadata.name`` ("" when unset)."""
    md = obj.get("metadata")
    value = md.get("name") if isinstance(md, dict) else None
    return value if isinstance(value, str) else ""


def namespace(obj: dict[str, Any]) -> str:
    """``metadata.namespace`` ("" when unset or cluster-scoped)."""
    md = obj.get("metadata")
    value = md.get("namespace") if isinstance(md, dict) else None
    return value if isinstance(value, str) else ""


def labels(obj: dict[str, Any]) -> dict[str, str]:
    """``metadata.labels`` (an empty dict when unset); the object's own dict when set."""
    md = obj.get("metadata")
    value = md.get("labels") if isinstance(md, dict) else None
    return value if isinstance(value, dict) else {}


def annotations(obj: dict[str, Any]) -> dict[str, str]:
    """``metadata.annotations`` (an empty dict when unset)."""
    md = obj.get("metadata")
    value = md.get("annotations") if isinstance(md, dict) else None
    return value if isinstance(value, dict) else {}


def generate_name(base: str) -> str:
    """A name from ``generateName``: the base cut to 58 characters plus 5 random ones."""
    if len(base) > MAX_GENERATE_NAME_BASE:
        base = base[:MAX_GENERATE_NAME_BASE]
    return base + "".join(secrets.choice(NAME_ALPHABET) for _ in range(GENERATED_SUFFIX_LEN))


def strip_managed_fields(obj: dict[str, Any]) -> None:
    """Drop ``metadata.managedFields``: kmesh does not track field managers (no server-side apply)."""
    md = obj.get("metadata")
    if isinstance(md, dict):
        md.pop("managedFields", None)


# ---------------------------------------------------------------- create


def prepare_create(kind: Kind | str, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    """Fill system fields of a new object and apply the kind's create strategy, in place.

    ``namespace`` is the namespace of the request path. A namespaced object
    gets it when its own is empty; a different one is a 400, as upstream. A
    cluster-scoped object loses any namespace. Returns ``obj``.
    """
    k = _kind(kind)
    md = metadata(obj)
    strip_managed_fields(obj)

    ns = md.get("namespace") or ""
    if k.namespaced:
        if namespace:
            if ns and ns != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            md["namespace"] = namespace
    else:
        md.pop("namespace", None)

    md.pop("deletionTimestamp", None)
    md.pop("deletionGracePeriodSeconds", None)
    md.pop("resourceVersion", None)
    md.pop("selfLink", None)
    md["uid"] = new_uid()
    md["creationTimestamp"] = now()
    if md.get("generateName") and not md.get("name"):
        md["name"] = generate_name(str(md["generateName"]))
    if k.kind in GENERATION_KINDS:
        md["generation"] = 1
    else:
        md.pop("generation", None)

    _CREATE.get(k.kind, _noop_create)(obj)
    return obj


def _noop_create(obj: dict[str, Any]) -> None:
    pass


def _create_namespace(obj: dict[str, Any]) -> None:
    obj["status"] = {"phase": "Active"}
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = {}
        obj["spec"] = spec
    finalizers = spec.get("finalizers")
    if not isinstance(finalizers, list):
        finalizers = []
    if "kubernetes" not in finalizers:
        finalizers.append("kubernetes")
    spec["finalizers"] = finalizers
    # Canonicalize: the name label, also for names made from generateName.
    md = metadata(obj)
    if md.get("name"):
        lbl = md.get("labels")
        if not isinstance(lbl, dict):
            lbl = {}
            md["labels"] = lbl
        lbl["kubernetes.io/metadata.name"] = md["name"]


def _create_pod(obj: dict[str, Any]) -> None:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    obj["status"] = {"phase": "Pending", "qosClass": pod_qos_class(spec)}
    if isinstance(obj.get("spec"), dict):
        _admit_pod(obj["spec"])


def _admit_pod(spec: dict[str, Any]) -> None:
    """The ServiceAccount (name only), Priority and DefaultTolerationSeconds admission plugins."""
    if not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = "default"
    spec["serviceAccount"] = spec["serviceAccountName"]
    if "priority" not in spec and not spec.get("priorityClassName"):
        spec["priority"] = 0
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.get("tolerations")
    if tolerations is None:
        tolerations = []
    if not isinstance(tolerations, list):
        return
    for key in (_NOT_READY_TAINT, _UNREACHABLE_TAINT):
        if any(_tolerates(t, key) for t in tolerations):
            continue
        tolerations.append(
            {
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }
        )
    spec["tolerations"] = tolerations


def _tolerates(t: Any, key: str) -> bool:
    if not isinstance(t, dict):
        return False
    if t.get("effect") not in (None, "", "NoExecute"):
        return False
    if t.get("operator") == "Exists" and not t.get("key"):
        return True
    return t.get("key") == key


def _create_service(obj: dict[str, Any]) -> None:
    obj["status"] = {"loadBalancer": {}}
    spec = obj.get("spec")
    if isinstance(spec, dict) and spec.get("clusterIP") and not spec.get("clusterIPs"):
        spec["clusterIPs"] = [spec["clusterIP"]]


def _create_workload(obj: dict[str, Any]) -> None:
    obj["status"] = {}


def _create_ingress(obj: dict[str, Any]) -> None:
    obj["status"] = {"loadBalancer": {}}


def _create_crd_like(kind_name: str) -> Callable[[dict[str, Any]], None]:
    def create(obj: dict[str, Any]) -> None:
        """A create cannot set status; what is read back is the schema's default status (if any)."""
        obj.pop("status", None)
        _default_crd_status(kind_name, obj)

    return create


def _default_crd_status(kind_name: str, obj: dict[str, Any]) -> None:
    from kmesh.api import crdrules
    from kmesh.api.schemas.gateway import RULES, TOP

    if kind_name in TOP:
        crdrules.default_object(RULES, TOP[kind_name], obj)


def _create_csr(obj: dict[str, Any]) -> None:
    """A CertificateSigningRequest is created pending: no conditions, no certificate."""
    obj.pop("status", None)


_CREATE = {
    "Ingress": _create_ingress,
    "CertificateSigningRequest": _create_csr,
    "GatewayClass": _create_crd_like("GatewayClass"),
    "Gateway": _create_crd_like("Gateway"),
    "HTTPRoute": _create_crd_like("HTTPRoute"),
    "Namespace": _create_namespace,
    "Pod": _create_pod,
    "Service": _create_service,
    "Deployment": _create_workload,
    "ReplicaSet": _create_workload,
}


# ---------------------------------------------------------------- update


def prepare_update(
    kind: Kind | str,
    new: dict[str, Any],
    old: dict[str, Any],
    subresource: str | None = None,
) -> dict[str, Any]:
    """Carry stored system fields into an update and apply the kind's update strategy, in place.

    ``new`` is the (defaulted) object the client sent, ``old`` the stored one
    (never modified). ``subresource`` is ``"status"`` for a write to
    ``.../status``; anything else (``None``, ``"scale"``) is the main resource.
    Returns ``new``.
    """
    k = _kind(kind)
    md = metadata(new)
    old_md = old.get("metadata") if isinstance(old.get("metadata"), dict) else {}
    strip_managed_fields(new)

    # BeforeUpdate: clients cannot set these.
    if "generation" in old_md:
        md["generation"] = old_md["generation"]
    else:
        md.pop("generation", None)
    if not md.get("uid") and old_md.get("uid"):
        md["uid"] = old_md["uid"]
    if old_md.get("creationTimestamp"):
        md["creationTimestamp"] = old_md["creationTimestamp"]
    if old_md.get("deletionTimestamp"):
        md["deletionTimestamp"] = old_md["deletionTimestamp"]
    if old_md.get("deletionGracePeriodSeconds") is not None and md.get("deletionGracePeriodSeconds") is None:
        md["deletionGracePeriodSeconds"] = old_md["deletionGracePeriodSeconds"]
    md.pop("selfLink", None)

    if subresource == "status":
        _prepare_status_update(k, new, old)
        return new
    if subresource == "approval":
        _prepare_approval_update(new, old)
        return new

    if "status" in k.subresources:
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        else:
            new.pop("status", None)
    _UPDATE.get(k.kind, _noop_update)(new, old)
    return new


def _prepare_status_update(k: Kind, new: dict[str, Any], old: dict[str, Any]) -> None:
    if "spec" in old:
        new["spec"] = copy.deepcopy(old["spec"])
    else:
        new.pop("spec", None)
    md = metadata(new)
    old_md = old.get("metadata") if isinstance(old.get("metadata"), dict) else {}
    if k.kind == "Deployment":
        _copy_key(md, old_md, "labels")
    elif k.kind == "Pod":
        _copy_key(md, old_md, "ownerReferences")
    elif k.kind == "Service" and isinstance(new.get("spec"), dict):
        if new["spec"].get("type") != "LoadBalancer" and isinstance(new.get("status"), dict):
            new["status"]["loadBalancer"] = {}
    elif k.group == GATEWAY_GROUP:
        _default_crd_status(k.kind, new)  # upstream defaults every write, the status subresource's too
    elif k.kind == "CertificateSigningRequest":
        stamp_conditions(new, old, now())


def _prepare_approval_update(new: dict[str, Any], old: dict[str, Any]) -> None:
    """A CSR's ``/approval`` changes only the conditions: spec and certificate stay as stored."""
    conditions = (new.get("status") or {}).get("conditions") if isinstance(new.get("status"), dict) else None
    _copy_key(new, old, "spec")
    status = copy.deepcopy(old.get("status")) if isinstance(old.get("status"), dict) else {}
    if conditions is not None:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)
    if status:
        new["status"] = status
    else:
        new.pop("status", None)
    stamp_conditions(new, old, now())


def _copy_key(dst: dict[str, Any], src: dict[str, Any], key: str) -> None:
    if key in src:
        dst[key] = copy.deepcopy(src[key])
    else:
        dst.pop(key, None)


def _noop_update(new: dict[str, Any], old: dict[str, Any]) -> None:
    pass


def _bump(new: dict[str, Any], old: dict[str, Any]) -> None:
    old_gen = (old.get("metadata") or {}).get("generation") or 0
    metadata(new)["generation"] = int(old_gen) + 1


def _update_deployment(new: dict[str, Any], old: dict[str, Any]) -> None:
    if new.get("spec") != old.get("spec") or annotations(new) != annotations(old):
        _bump(new, old)


def _update_replicaset(new: dict[str, Any], old: dict[str, Any]) -> None:
    if new.get("spec") != old.get("spec"):
        _bump(new, old)


def _update_spec_generation(new: dict[str, Any], old: dict[str, Any]) -> None:
    """Ingress, IngressClass and the CRD-like kinds: a change outside metadata and status bumps generation."""
    skip = ("metadata", "status", "kind", "apiVersion")
    if {k: v for k, v in new.items() if k not in skip} != {k: v for k, v in old.items() if k not in skip}:
        _bump(new, old)


def _update_endpointslice(new: dict[str, Any], old: dict[str, Any]) -> None:
    body_new = {k: v for k, v in new.items() if k not in ("metadata", "kind", "apiVersion")}
    body_old = {k: v for k, v in old.items() if k not in ("metadata", "kind", "apiVersion")}
    if body_new != body_old or labels(new) != labels(old):
        _bump(new, old)


def _update_namespace(new: dict[str, Any], old: dict[str, Any]) -> None:
    # Finalizers change only through .../finalize; status only through .../status.
    old_spec = old.get("spec") if isinstance(old.get("spec"), dict) else {}
    spec = new.get("spec")
    if not isinstance(spec, dict):
        spec = {}
        new["spec"] = spec
    if "finalizers" in old_spec:
        spec["finalizers"] = copy.deepcopy(old_spec["finalizers"])
    else:
        spec.pop("finalizers", None)


def _update_service(new: dict[str, Any], old: dict[str, Any]) -> None:
    spec = new.get("spec")
    old_spec = old.get("spec")
    if not isinstance(spec, dict) or not isinstance(old_spec, dict):
        return
    _patch_allocated_values(spec, old_spec)
    _normalize_cluster_ips(spec, old_spec)
    _drop_type_dependent_fields(new, spec, old_spec)


def _needs_cluster_ip(spec: dict[str, Any]) -> bool:
    return spec.get("type", "ClusterIP") != "ExternalName"


def _needs_node_port(spec: dict[str, Any]) -> bool:
    t = spec.get("type", "ClusterIP")
    if t == "NodePort":
        return True
    return t == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True) is not False


def _needs_hc_node_port(spec: dict[str, Any]) -> bool:
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _externally_accessible(spec: dict[str, Any]) -> bool:
    t = spec.get("type", "ClusterIP")
    return t in ("LoadBalancer", "NodePort") or (t == "ClusterIP" and bool(spec.get("externalIPs")))


def _ports(spec: dict[str, Any]) -> list[dict[str, Any]]:
    ports = spec.get("ports")
    return [p for p in ports if isinstance(p, dict)] if isinstance(ports, list) else []


def _patch_allocated_values(spec: dict[str, Any], old_spec: dict[str, Any]) -> None:
    """Keep allocated cluster IPs and node ports a client left out (e.g. ``kubectl replace``)."""
    if _needs_cluster_ip(old_spec) and _needs_cluster_ip(spec):
        if not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
        if not spec.get("clusterIPs") and old_spec.get("clusterIPs"):
            spec["clusterIPs"] = copy.deepcopy(old_spec["clusterIPs"])
    if _needs_node_port(old_spec) and _needs_node_port(spec):
        old_used = {p.get("nodePort") for p in _ports(old_spec) if p.get("nodePort")}
        new_used = {p.get("nodePort") for p in _ports(spec) if p.get("nodePort")}
        used = old_used & new_used
        by_name = {p.get("name", ""): p.get("nodePort") for p in _ports(old_spec)}
        for p in _ports(spec):
            if not p.get("nodePort"):
                old_val = by_name.get(p.get("name", ""))
                if old_val and old_val not in used:
                    p["nodePort"] = old_val
    if _needs_hc_node_port(old_spec) and _needs_hc_node_port(spec):
        if not spec.get("healthCheckNodePort") and old_spec.get("healthCheckNodePort"):
            spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]


def _normalize_cluster_ips(spec: dict[str, Any], old_spec: dict[str, Any]) -> None:
    """Keep ``clusterIP`` and ``clusterIPs`` in step when a client manages only one of them."""
    old_ips = old_spec.get("clusterIPs") or []
    if old_ips and not spec.get("clusterIPs"):
        if old_spec.get("clusterIP", "") == spec.get("clusterIP", ""):
            spec["clusterIPs"] = copy.deepcopy(old_ips)
    if old_spec.get("clusterIP", "") != spec.get("clusterIP", ""):
        same = (spec.get("clusterIPs") or []) == old_ips
        if old_spec.get("clusterIP") and not spec.get("clusterIP") and same:
            spec.pop("clusterIPs", None)
        if spec.get("clusterIP") and same:
            spec["clusterIPs"] = [spec["clusterIP"]]


def _drop_type_dependent_fields(new: dict[str, Any], spec: dict[str, Any], old_spec: dict[str, Any]) -> None:
    """Wipe allocated values a type change made meaningless, when the client did not touch them."""
    if _needs_cluster_ip(old_spec) and not _needs_cluster_ip(spec):
        if (spec.get("clusterIPs") or []) == (old_spec.get("clusterIPs") or []):
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        if spec.get("ipFamilies") == old_spec.get("ipFamilies"):
            spec.pop("ipFamilies", None)
        if spec.get("ipFamilyPolicy") == old_spec.get("ipFamilyPolicy"):
            spec.pop("ipFamilyPolicy", None)
    if _needs_node_port(old_spec) and not _needs_node_port(spec):
        if [p.get("nodePort") for p in _ports(spec)] == [p.get("nodePort") for p in _ports(old_spec)]:
            for p in _ports(spec):
                p.pop("nodePort", None)
    if _needs_hc_node_port(old_spec) and not _needs_hc_node_port(spec):
        if spec.get("healthCheckNodePort") == old_spec.get("healthCheckNodePort"):
            spec.pop("healthCheckNodePort", None)
    if old_spec.get("type") == "LoadBalancer" and spec.get("type") != "LoadBalancer":
        a, b = spec.get("allocateLoadBalancerNodePorts"), old_spec.get("allocateLoadBalancerNodePorts")
        if a is not None and a == b:
            spec.pop("allocateLoadBalancerNodePorts", None)
        if spec.get("loadBalancerClass") == old_spec.get("loadBalancerClass"):
            spec.pop("loadBalancerClass", None)
    if _externally_accessible(old_spec) and not _externally_accessible(spec):
        if spec.get("externalTrafficPolicy") == old_spec.get("externalTrafficPolicy"):
            spec.pop("externalTrafficPolicy", None)
    if spec.get("type") != "LoadBalancer" and isinstance(new.get("status"), dict):
        new["status"]["loadBalancer"] = {}


def _update_csr(new: dict[str, Any], old: dict[str, Any]) -> None:
    """A CSR's requester fields stay the API server's (a re-applied manifest may carry others); the rest of the
    spec is checked unchanged by validation."""
    spec, old_spec = new.get("spec"), old.get("spec")
    if isinstance(spec, dict) and isinstance(old_spec, dict):
        for key in REQUESTER_FIELDS:
            _copy_key(spec, old_spec, key)


_UPDATE = {
    "Deployment": _update_deployment,
    "CertificateSigningRequest": _update_csr,
    "ReplicaSet": _update_replicaset,
    "EndpointSlice": _update_endpointslice,
    "Namespace": _update_namespace,
    "Service": _update_service,
    "Ingress": _update_spec_generation,
    "IngressClass": _update_spec_generation,
    "NetworkPolicy": _update_spec_generation,
    "GatewayClass": _update_spec_generation,
    "Gateway": _update_spec_generation,
    "HTTPRoute": _update_spec_generation,
    "ReferenceGrant": _update_spec_generation,
}


# ---------------------------------------------------------------- pod QoS

_SUFFIXES = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


_WIDE = Context(Emax=MAX_EMAX, Emin=MIN_EMIN)  # a quantity may carry any int64 exponent
_HUGE = Decimal("1e100")


def parse_quantity(value: Any) -> Decimal | None:
    """A resource quantity ("500m", "1Gi", "2", 3) as a number; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    s = value.strip()
    if not s:
        return None
    i = 0
    if s[0] in "+-":
        i = 1
    j = i
    while j < len(s) and (s[j].isdigit() or s[j] == "."):
        j += 1
    number, suffix = s[:j], s[j:]
    if not number.lstrip("+-") or number.count(".") > 1 or not any(c.isdigit() for c in number):
        return None
    try:
        base = Decimal(number)
    except ArithmeticError:
        return None
    if suffix in _SUFFIXES:
        return base * _SUFFIXES[suffix]
    if suffix[:1] in ("e", "E"):
        exp = suffix[1:]
        digits = exp[1:] if exp[:1] in "+-" else exp
        if digits.isdigit() and len(digits) <= 18:  # upstream parses the exponent as an int64
            # No 10**exp (an exponent of 10^18 costs nothing this way), and a bound far above any real
            # quantity, so that sums and comparisons in the default decimal context never overflow.
            value = base.scaleb(int(exp), context=_WIDE)
            return value if value.adjusted() <= _HUGE.adjusted() else _HUGE.copy_sign(value)
    return None


def pod_qos_class(spec: dict[str, Any]) -> str:
    """The QoS class of a pod spec: Guaranteed, Burstable or BestEffort (upstream's rules)."""
    containers: list[dict[str, Any]] = []
    for key in ("containers", "initContainers"):
        value = spec.get(key)
        if isinstance(value, list):
            containers.extend(c for c in value if isinstance(c, dict))
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for c in containers:
        res = c.get("resources") if isinstance(c.get("resources"), dict) else {}
        req = res.get("requests") if isinstance(res.get("requests"), dict) else {}
        lim = res.get("limits") if isinstance(res.get("limits"), dict) else {}
        for name_, raw in req.items():
            if name_ not in ("cpu", "memory"):
                continue
            q = parse_quantity(raw)
            if q is not None and q > 0:
                requests[name_] = requests.get(name_, Decimal(0)) + q
        seen = set()
        for name_, raw in lim.items():
            if name_ not in ("cpu", "memory"):
                continue
            q = parse_quantity(raw)
            if q is not None and q > 0:
                seen.add(name_)
                limits[name_] = limits.get(name_, Decimal(0)) + q
        if seen != {"cpu", "memory"}:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests == limits:
        return "Guaranteed"
    return "Burstable"
