"""What kube-apiserver ensures at start: the ``default/kubernetes`` Service and its endpoints.

The Service gets the first address of the service CIDR and port 443 (``https``)
forwarding to the API server's own port; its Endpoints and EndpointSlice
(named ``kubernetes``, no selector, so the endpoint controllers leave them
alone) point at the advertised address. Run at every start: a restart on a
new port or address updates them.
"""

from __future__ import annotations

import copy
import ipaddress
import logging

from kmesh.api import errors as E
from kmesh.api.kinds import get as kind_named
from kmesh.apiserver.registry import Registry
from kmesh.store.base import Obj

log = logging.getLogger("kmesh.apiserver.bootstrap")

NAMESPACE = "default"
NAME = "kubernetes"
SERVICE_LABELS = {"component": "apiserver", "provider": "kubernetes"}


def kubernetes_service(cluster_ip: str, api_port: int) -> Obj:
    """The ``kubernetes`` Service object."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(SERVICE_LABELS)},
        "spec": {
            "type": "ClusterIP", "clusterIP": cluster_ip, "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}],
        },
    }


def kubernetes_endpoints(address: str | list[str], api_port: int) -> Obj:
    """The ``kubernetes`` Endpoints object (not mirrored into a second slice); one address per API server."""
    addresses = [address] if isinstance(address, str) else list(address)
    return {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": a} for a in addresses],
                     "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}]}],
    }


def kubernetes_slice(address: str | list[str], api_port: int) -> Obj:
    """The ``kubernetes`` EndpointSlice object."""
    addresses = [address] if isinstance(address, str) else list(address)
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": NAME}},
        "addressType": "IPv4" if ipaddress.ip_address(addresses[0]).version == 4 else "IPv6",
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
        "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
    }


async def publish_endpoints(registry: Registry, addresses: list[str], api_port: int) -> None:
    """Point the ``kubernetes`` Endpoints and EndpointSlice at ``addresses`` (every live API server)."""
    await _ensure(registry, "Endpoints", kubernetes_endpoints(addresses, api_port), ("subsets", "labels"))
    await _ensure(registry, "EndpointSlice", kubernetes_slice(addresses, api_port),
                  ("addressType", "endpoints", "ports", "labels"))


async def _ensure(registry: Registry, kind_name: str, want: Obj, fields: tuple[str, ...]) -> None:
    """Create ``want`` or bring ``fields`` of the stored object in line with it."""
    kind = kind_named(kind_name)
    try:
        await registry.create(kind, NAMESPACE, copy.deepcopy(want))
        return
    except E.APIError as exc:
        if exc.code != 409:
            raise
    cur = await registry.get(kind, NAMESPACE, NAME)
    new = copy.deepcopy(cur)
    for f in fields:
        if f == "labels":
            new["metadata"]["labels"] = {**(cur["metadata"].get("labels") or {}), **want["metadata"]["labels"]}
        else:
            new[f] = copy.deepcopy(want[f])
    if new != cur:
        await registry.update(kind, NAMESPACE, NAME, new)


async def ensure_kubernetes_service(registry: Registry, cluster_ip: str, address: str, api_port: int) -> None:
    """Make sure the ``kubernetes`` Service, Endpoints and EndpointSlice exist and are current.

    Endpoints that validation refuses (a loopback address on a server without
    ``loopback_ok``) are skipped with a warning: the Service still exists.
    """
    svc_kind = kind_named("Service")
    try:
        cur = await registry.get(svc_kind, NAMESPACE, NAME)
    except E.APIError as exc:
        if exc.code != 404:
            raise
        await registry.create(svc_kind, NAMESPACE, kubernetes_service(cluster_ip, api_port))
    else:
        want_ports = kubernetes_service(cluster_ip, api_port)["spec"]["ports"]
        if cur["spec"].get("ports") != want_ports:
            new = copy.deepcopy(cur)
            new["spec"]["ports"] = want_ports
            await registry.update(svc_kind, NAMESPACE, NAME, new)
    try:
        await publish_endpoints(registry, [address], api_port)
    except E.APIError as exc:
        if exc.code != 422:
            raise
        log.info("not publishing endpoints of the kubernetes Service: %s", exc.message)
