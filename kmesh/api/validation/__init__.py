"""Validation of API objects with kube-apiserver's rules, field paths and messages.

``validate`` checks an object about to be created, ``validate_update`` an
update (the same checks on the new object plus what may not change). Both
return ``details.causes`` entries (``errors.Cause``); an empty list means the
object may be stored. ``errors.invalid_object`` turns a non-empty list into
the 422 ``Status``.

One module per API group, as ``kmesh.api.schemas``: ``pod``, ``core`` and
``secrets`` (core/v1), ``apps``, ``discovery`` (EndpointSlices),
``coordination`` (Leases), ``networking`` (Ingresses, NetworkPolicies), ``certificates``
(CertificateSigningRequests), ``gateway`` (the
Gateway API, checked against its CRDs' schemas and CEL rules); ``meta`` checks object metadata and label selectors, ``common``
holds the cause constructors and Go-style value printing, and the string
formats (names, label keys and values) live in ``kmesh.api.formats``, which
label selector parsing shares.

The rules and texts are Kubernetes 1.32's (``pkg/apis/*/validation``,
``apimachinery/pkg/util/validation``). Values in messages are printed the way
Go's ``field.Error`` prints them (``"x"`` for strings, ``map[string]string{...}``
for label maps, ``v1.LabelSelector{...}`` for selectors), so what ``kubectl``
shows matches a real cluster. Call it on objects that went through
``defaults.apply_defaults`` and ``meta.prepare_create``/``prepare_update``,
as kube-apiserver does; a missing default is reported the way upstream would.

Deliberate differences, each where kmesh does the work elsewhere or differently:

- ``loopback_ok=True`` lets Endpoints and EndpointSlices hold loopback
  addresses (the sim runtime's pods live in 127.244.0.0/16).
- ``spec.healthCheckNodePort`` and ``spec.clusterIPs`` are not required here:
  kmesh's allocator fills them, possibly after validation.
- ``metadata.resourceVersion`` is checked by the API server's update handler
  (conflicts, unconditional updates), not here.
"""

from __future__ import annotations

from typing import Any, Callable

from kmesh.api import errors
from kmesh.api.errors import Cause
from kmesh.api.formats import (
    RELAXED_ENV_ERR,
    is_config_map_key,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_value,
    is_qualified_name,
    is_relaxed_env_var_name,
    is_valid_percent,
    is_valid_port_name,
    is_valid_port_num,
)
from kmesh.api.kinds import Kind
from kmesh.api.obj import Obj
from kmesh.api.validation.apps import (
    validate_deployment,
    validate_deployment_update,
    validate_replicaset,
    validate_replicaset_update,
    validate_workload_status_update,
)
from kmesh.api.validation.certificates import (
    validate_csr,
    validate_csr_approval_update,
    validate_csr_status_update,
    validate_csr_update,
)
from kmesh.api.validation.common import Opts, _d, _kind, _s, go_label_selector, go_value, intstr, invalid, parse_ip
from kmesh.api.validation.coordination import validate_lease
from kmesh.api.validation.core import (
    validate_configmap,
    validate_configmap_update,
    validate_endpoints,
    validate_event,
    validate_namespace,
    validate_namespace_status_update,
    validate_node,
    validate_node_update,
    validate_service,
    validate_service_status_update,
    validate_service_update,
)
from kmesh.api.validation.discovery import validate_endpointslice, validate_endpointslice_update
from kmesh.api.validation.gateway import (
    status_update_of,
    update_of,
    validate_gateway,
    validate_gateway_class,
    validate_gateway_class_update,
    validate_httproute,
    validate_reference_grant,
)
from kmesh.api.validation.networking import (
    validate_ingress,
    validate_ingress_class,
    validate_ingress_class_update,
    validate_ingress_status_update,
    validate_ingress_update,
    validate_network_policy,
    validate_network_policy_update,
)
from kmesh.api.validation.secrets import validate_secret, validate_secret_update, validate_service_account
from kmesh.api.validation.meta import name_is_dns_label, name_is_dns_subdomain, validate_object_meta_update
from kmesh.api.validation.pod import validate_pod, validate_pod_status_update, validate_pod_update

__all__ = [  # what callers outside the package use: the entry points and upstream's format checks
    "RELAXED_ENV_ERR", "check", "go_label_selector", "go_value", "intstr", "invalid", "is_config_map_key",
    "is_dns1035_label", "is_dns1123_label", "is_dns1123_subdomain", "is_label_value", "is_qualified_name",
    "is_relaxed_env_var_name", "is_valid_percent", "is_valid_port_name", "is_valid_port_num", "name_is_dns_label",
    "name_is_dns_subdomain", "parse_ip", "validate", "validate_object_meta_update", "validate_update",
]


def _generic_update(validate_fn: Callable[[Obj, Opts], list[Cause]]) -> Callable[[Obj, Obj, Opts], list[Cause]]:
    def fn(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
        errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
        return errs + validate_fn(new, opts)

    return fn


def _meta_only_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    return validate_object_meta_update(new.get("metadata"), old.get("metadata"))


_CREATE: dict[str, Callable[[Obj, Opts], list[Cause]]] = {
    "Namespace": validate_namespace,
    "Node": validate_node,
    "Pod": validate_pod,
    "Service": validate_service,
    "Endpoints": validate_endpoints,
    "ConfigMap": validate_configmap,
    "Event": validate_event,
    "Deployment": validate_deployment,
    "ReplicaSet": validate_replicaset,
    "EndpointSlice": validate_endpointslice,
    "Lease": validate_lease,
    "Secret": validate_secret,
    "ServiceAccount": validate_service_account,
    "Ingress": validate_ingress,
    "IngressClass": validate_ingress_class,
    "NetworkPolicy": validate_network_policy,
    "CertificateSigningRequest": validate_csr,
    "GatewayClass": validate_gateway_class,
    "Gateway": validate_gateway,
    "HTTPRoute": validate_httproute,
    "ReferenceGrant": validate_reference_grant,
}

_UPDATE: dict[str, Callable[[Obj, Obj, Opts], list[Cause]]] = {
    "Namespace": _meta_only_update,
    "Node": validate_node_update,
    "Pod": validate_pod_update,
    "Service": validate_service_update,
    "Endpoints": _generic_update(validate_endpoints),
    "ConfigMap": validate_configmap_update,
    "Event": _generic_update(validate_event),
    "Deployment": validate_deployment_update,
    "ReplicaSet": validate_replicaset_update,
    "EndpointSlice": validate_endpointslice_update,
    "Lease": _generic_update(validate_lease),
    "Secret": validate_secret_update,
    "ServiceAccount": _generic_update(validate_service_account),
    "Ingress": validate_ingress_update,
    "IngressClass": validate_ingress_class_update,
    "NetworkPolicy": validate_network_policy_update,
    "CertificateSigningRequest": validate_csr_update,
    "GatewayClass": validate_gateway_class_update,
    "Gateway": update_of(validate_gateway),
    "HTTPRoute": update_of(validate_httproute),
    "ReferenceGrant": update_of(validate_reference_grant),
}

_STATUS_UPDATE: dict[str, Callable[[Obj, Obj, Opts], list[Cause]]] = {
    "Namespace": validate_namespace_status_update,
    "Node": validate_node_update,
    "Pod": validate_pod_status_update,
    "Service": validate_service_status_update,
    "Deployment": validate_workload_status_update,
    "ReplicaSet": validate_workload_status_update,
    "Ingress": validate_ingress_status_update,
    "CertificateSigningRequest": validate_csr_status_update,
    "GatewayClass": status_update_of("GatewayClass"),
    "Gateway": status_update_of("Gateway"),
    "HTTPRoute": status_update_of("HTTPRoute"),
}

_APPROVAL_UPDATE: dict[str, Callable[[Obj, Obj, Opts], list[Cause]]] = {
    "CertificateSigningRequest": validate_csr_approval_update,
}


def validate(kind: Kind | str, obj: Obj, *, loopback_ok: bool = False) -> list[Cause]:
    """The problems that stop ``obj`` (a new object of ``kind``) from being created."""
    k = _kind(kind)
    fn = _CREATE.get(k.kind)
    if fn is None:
        return []
    return _dedupe(fn(_d(obj), Opts(loopback_ok)))


def validate_update(
    kind: Kind | str,
    new: Obj,
    old: Obj,
    *,
    subresource: str | None = None,
    loopback_ok: bool = False,
) -> list[Cause]:
    """The problems that stop ``old`` from being replaced by ``new``.

    Includes every check of ``validate(new)`` plus what may not change
    (identity metadata, a pod's spec, a selector, an address type, ...).
    With ``subresource="status"`` only the status rules apply, as for a
    write to ``.../status``; ``"approval"`` is a CSR's ``.../approval``.
    """
    k = _kind(kind)
    table = {"status": _STATUS_UPDATE, "approval": _APPROVAL_UPDATE}.get(subresource or "", _UPDATE)
    fn = table.get(k.kind) or _UPDATE.get(k.kind)
    if fn is None:
        return []
    return _dedupe(fn(_d(new), _d(old), Opts(loopback_ok)))


def _dedupe(causes: list[Cause]) -> list[Cause]:
    """Drop repeated causes (upstream repeats some, e.g. labels on update; its message lists them once)."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for c in causes:
        key = (c["field"], c["reason"], c["message"])
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def check(kind: Kind | str, obj: Obj, old: Obj | None = None, **kwargs: Any) -> None:
    """Raise the 422 ``APIError`` kube-apiserver would answer with, if ``obj`` is invalid."""
    k = _kind(kind)
    causes = validate(k, obj, **kwargs) if old is None else validate_update(k, obj, old, **kwargs)
    if causes:
        md = _d(obj.get("metadata")) if isinstance(obj, dict) else {}
        raise errors.invalid_object(k.kind, _s(md.get("name")), k.group, causes)
