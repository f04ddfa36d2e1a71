"""Several API servers, one ``kubernetes`` Service: kube-apiserver's lease endpoint reconciler.

Each server keeps a Lease ``kube-system/kube-apiserver-<ip>`` (label
``apiserver.kubernetes.io/identity=kube-apiserver``, as upstream's identity
leases) renewed every ``interval`` seconds, and sets the ``kubernetes``
Endpoints and EndpointSlice to the addresses whose Lease is live. Upstream
keeps these leases in etcd under ``/masterleases/``; as Lease objects they are
visible with ``kubectl -n kube-system get leases``. A server that stops
cleanly removes its Lease and itself; one that dies drops out after the
lease duration, and joined nodes' API balancers stop trying it first.
"""

from __future__ import annotations

import datetime as dt
import logging

import trio

from kmesh.api import errors as E
from kmesh.api.kinds import get as kind_named
from kmesh.apiserver.bootstrap import publish_endpoints
from kmesh.apiserver.registry import ListOptions, Registry
from kmesh.store.base import Obj

log = logging.getLogger("kmesh.apiserver.endpointleases")
NAMESPACE = "kube-system"
IDENTITY_LABEL = "apiserver.kubernetes.io/identity"
ADDRESS_ANNOTATION = "kmesh.io/advertise-address"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _micro(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_name(address: str) -> str:
    """The Lease name of the server advertising ``address``."""
    return "kube-apiserver-" + address.replace(":", "-")


def _lease(address: str, seconds: int, now: dt.datetime) -> Obj:
    return {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": lease_name(address), "namespace": NAMESPACE,
                     "labels": {IDENTITY_LABEL: "kube-apiserver"},
                     "annotations": {ADDRESS_ANNOTATION: address}},
        "spec": {"holderIdentity": lease_name(address), "leaseDurationSeconds": seconds, "renewTime": _micro(now)},
    }


def live_addresses(leases: list[Obj], now: dt.datetime) -> list[str]:
    """The advertised addresses of the leases renewed within their duration, sorted."""
    out = []
    for lease in leases:
        spec = lease.get("spec") or {}
        address = ((lease.get("metadata") or {}).get("annotations") or {}).get(ADDRESS_ANNOTATION)
        try:
            renewed = dt.datetime.fromisoformat(str(spec.get("renewTime", "")).replace("Z", "+00:00"))
        except ValueError:
            continue
        if address and renewed + dt.timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0)) > now:
            out.append(address)
    return sorted(set(out))


async def _renew(registry: Registry, address: str, seconds: int) -> None:
    kind = kind_named("Lease")
    want = _lease(address, seconds, _now())
    try:
        cur = await registry.get(kind, NAMESPACE, want["metadata"]["name"])
    except E.APIError as exc:
        if exc.code != 404:
            raise
        await registry.create(kind, NAMESPACE, want)
        return
    new = {**cur, "spec": {**(cur.get("spec") or {}), **want["spec"]}}
    await registry.update(kind, NAMESPACE, want["metadata"]["name"], new)


async def reconcile_once(registry: Registry, address: str, api_port: int, seconds: int) -> list[str]:
    """Renew this server's Lease and publish every live server; the addresses published."""
    await _renew(registry, address, seconds)
    page = await registry.list(kind_named("Lease"), NAMESPACE, ListOptions(label_selector=f"{IDENTITY_LABEL}=kube-apiserver"))
    live = live_addresses(page.items, _now()) or [address]
    await publish_endpoints(registry, live, api_port)
    return live


async def run_endpoint_leases(
    registry: Registry, address: str, api_port: int, *, interval: float = 10.0, lease_seconds: int = 15,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep this server in the ``kubernetes`` endpoints until cancelled; then take it out."""
    started = False
    try:
        while True:
            try:
                await reconcile_once(registry, address, api_port, lease_seconds)
            except (E.APIError, OSError) as exc:
                log.warning("kubernetes endpoints: %s", exc)
            if not started:
                task_status.started()
                started = True
            await trio.sleep(interval)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await registry.delete(kind_named("Lease"), NAMESPACE, lease_name(address))
                page = await registry.list(kind_named("Lease"), NAMESPACE,
                                           ListOptions(label_selector=f"{IDENTITY_LABEL}=kube-apiserver"))
                rest = [a for a in live_addresses(page.items, _now()) if a != address]
                if rest:
                    await publish_endpoints(registry, rest, api_port)
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                log.info("leaving the kubernetes endpoints: %s", exc)
