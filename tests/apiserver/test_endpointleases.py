"""Several API servers in one ``kubernetes`` Service (``kmesh.apiserver.endpointleases``): each keeps a Lease,
the Endpoints and EndpointSlice list the servers whose Lease is live, and one that stops takes itself out.

The servers' addresses are the host runtime's (192.168.56.x); the fixture's own server (127.0.0.1, refused
as an endpoint there) publishes none, so what the tests read is what the reconciler wrote."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import trio

from kmesh.api import errors as E
from kmesh.api.kinds import get as kind_named
from kmesh.apiserver.endpointleases import (
    ADDRESS_ANNOTATION,
    IDENTITY_LABEL,
    NAMESPACE,
    lease_name,
    live_addresses,
    reconcile_once,
    run_endpoint_leases,
)
from kmesh.apiserver.registry import Registry
from tests.support.cluster import Cluster

PORT = 6443
NOW = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def _micro(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _lease(address: str | None, renewed: str, seconds: int = 15) -> dict[str, Any]:
    annotations = {ADDRESS_ANNOTATION: address} if address else {}
    return {"metadata": {"name": f"l-{address}", "annotations": annotations},
            "spec": {"renewTime": renewed, "leaseDurationSeconds": seconds}}


def test_live_addresses_are_those_renewed_within_their_duration() -> None:
    leases = [
        _lease("192.168.56.12", _micro(NOW - dt.timedelta(seconds=5))),
        _lease("192.168.56.10", _micro(NOW - dt.timedelta(seconds=14))),
        _lease("192.168.56.11", _micro(NOW - dt.timedelta(seconds=16))),  # expired a second ago
        _lease("192.168.56.13", _micro(NOW - dt.timedelta(seconds=60)), seconds=120),  # a longer lease: live
        _lease(None, _micro(NOW)),  # no address to publish
        _lease("192.168.56.14", "not a time"),
        _lease("192.168.56.15", ""),
        _lease("192.168.56.12", _micro(NOW - dt.timedelta(seconds=1))),  # the same address twice
    ]
    assert live_addresses(leases, NOW) == ["192.168.56.10", "192.168.56.12", "192.168.56.13"]
    assert live_addresses([], NOW) == []


async def _published(cluster: Cluster) -> tuple[list[str], list[str]]:
    """The addresses in the ``kubernetes`` Endpoints and EndpointSlice, read through the API."""
    ep = await cluster.client.get("Endpoints", "kubernetes", "default")
    sl = await cluster.client.get("EndpointSlice", "kubernetes", "default")
    assert [p["port"] for s in ep["subsets"] for p in s["ports"]] == [PORT]
    return ([a["ip"] for s in ep["subsets"] for a in s["addresses"]],
            [a for e in sl["endpoints"] for a in e["addresses"]])


async def _make_stale(registry: Registry, address: str) -> None:
    kind = kind_named("Lease")
    lease = await registry.get(kind, NAMESPACE, lease_name(address))
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    lease["spec"]["renewTime"] = _micro(old)
    await registry.update(kind, NAMESPACE, lease_name(address), lease)


async def test_every_live_server_is_published_and_a_stale_one_drops_out(cluster: Cluster) -> None:
    registry = cluster.server.registry
    assert await reconcile_once(registry, "192.168.56.10", PORT, 15) == ["192.168.56.10"]
    assert await reconcile_once(registry, "192.168.56.11", PORT, 15) == ["192.168.56.10", "192.168.56.11"]
    assert await _published(cluster) == (["192.168.56.10", "192.168.56.11"], ["192.168.56.10", "192.168.56.11"])
    leases = await cluster.client.list("Lease", NAMESPACE, label_selector=f"{IDENTITY_LABEL}=kube-apiserver")
    assert sorted(x["metadata"]["name"] for x in leases["items"]) == [lease_name("192.168.56.10"),
                                                                       lease_name("192.168.56.11")]

    await _make_stale(registry, "192.168.56.10")  # that server stopped renewing (it died)
    assert await reconcile_once(registry, "192.168.56.11", PORT, 15) == ["192.168.56.11"]
    assert await _published(cluster) == (["192.168.56.11"], ["192.168.56.11"])


async def test_a_stopped_server_removes_its_lease_and_address(cluster: Cluster, nursery: trio.Nursery) -> None:
    registry = cluster.server.registry
    await reconcile_once(registry, "192.168.56.11", PORT, 15)  # another server, live
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def server(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with scope:
                async with trio.open_nursery() as n:
                    await n.start(run_endpoint_leases, registry, "192.168.56.12", PORT)
                    task_status.started()
        finally:
            stopped.set()

    await nursery.start(server)
    lease = await cluster.client.get("Lease", lease_name("192.168.56.12"), NAMESPACE)
    assert lease["metadata"]["annotations"][ADDRESS_ANNOTATION] == "192.168.56.12"
    assert lease["metadata"]["labels"][IDENTITY_LABEL] == "kube-apiserver"
    assert await _published(cluster) == (["192.168.56.11", "192.168.56.12"], ["192.168.56.11", "192.168.56.12"])

    scope.cancel()
    with trio.fail_after(30):
        await stopped.wait()
    with pytest.raises(E.APIError) as exc:
        await cluster.client.get("Lease", lease_name("192.168.56.12"), NAMESPACE)
    assert exc.value.code == 404
    assert await _published(cluster) == (["192.168.56.11"], ["192.168.56.11"])
    await cluster.client.get("Lease", lease_name("192.168.56.11"), NAMESPACE)  # the other server's stays
