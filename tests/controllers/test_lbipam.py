"""LoadBalancer address allocation: the pool on its own, then the controller against a real API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from kmesh.controllers.lbipam import DEFAULT_LB_RANGE, Pool, PoolError, check_range, parse_range, within
from tests.controllers.conftest import StartEnv

# ---------------------------------------------------------------------- the pool


def test_parse_cidr_and_range() -> None:
    assert parse_range("192.168.56.240/30") == [(int_ip("192.168.56.241"), int_ip("192.168.56.242"))]
    assert parse_range("10.0.0.5/32") == [(int_ip("10.0.0.5"), int_ip("10.0.0.5"))]
    assert parse_range(" 10.0.0.9 - 10.0.0.10 ,10.0.0.1-10.0.0.2") == [
        (int_ip("10.0.0.1"), int_ip("10.0.0.2")), (int_ip("10.0.0.9"), int_ip("10.0.0.10"))]
    assert Pool(DEFAULT_LB_RANGE).size == 15
    assert within(DEFAULT_LB_RANGE, "192.168.56.0/24")
    assert not within("192.168.56.250-192.168.57.3", "192.168.56.0/24")


@pytest.mark.parametrize("bad", ["", "banana", "10.0.0.9-10.0.0.1", "10.0.0.0/33", "fd00::/120",
                                 "10.0.0.0/8", "10.0.0.1-10.0.0.5,10.0.0.4/32"])
def test_bad_ranges(bad: str) -> None:
    with pytest.raises(PoolError):
        parse_range(bad)


def test_check_range_names_the_collision() -> None:
    with pytest.raises(PoolError, match="the service CIDR"):
        check_range("10.96.0.10-10.96.0.20", {"the pod CIDR": ["10.244.0.0/16"], "the service CIDR": ["10.96.0.0/12"]})
    with pytest.raises(PoolError, match="the node addresses"):
        check_range("192.168.56.0/24", {"the node addresses": ["192.168.56.11"]})
    assert check_range(DEFAULT_LB_RANGE, {"the node addresses": ["192.168.56.11/32", "192.168.56.10"]})


def test_allocate_claim_release() -> None:
    p = Pool("10.1.0.1-10.1.0.3")
    assert p.allocate("a/x") == "10.1.0.1"
    assert p.allocate("a/x") == "10.1.0.1"  # what it holds
    assert p.claim("a/y", "10.1.0.3")
    assert not p.claim("a/z", "10.1.0.3")  # held by another
    assert not p.claim("a/z", "10.9.9.9")  # outside
    assert p.allocate("a/z") == "10.1.0.2"
    assert p.allocate("a/w") is None and p.free() == 0
    assert p.release("a/x") == "10.1.0.1" and p.holder("10.1.0.1") is None
    assert p.allocate("a/w") == "10.1.0.1"
    assert p.claim("a/w", "10.1.0.1") and p.held("a/w") == "10.1.0.1"
    assert p.release("nobody") is None


def int_ip(ip: str) -> int:
    import ipaddress

    return int(ipaddress.IPv4Address(ip))


# ---------------------------------------------------------------------- the controller

RANGE = "192.168.56.240-192.168.56.241"


def lb_service(name: str, *, ip: str = "", cls: str = "", ns: str = "default") -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "LoadBalancer", "selector": {"app": name},
                            "ports": [{"port": 80, "targetPort": 8080}]}
    if ip:
        spec["loadBalancerIP"] = ip
    if cls:
        spec["loadBalancerClass"] = cls
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


async def ingress_of(env: Any, name: str, ns: str = "default") -> list[dict[str, Any]]:
    """Wait until the controllers' cache shows an address for the Service; the ingress list."""
    services = env.informer("Service")
    await services.wait_for(lambda inf: bool(
        (((inf.get(name, ns) or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress")))
    return services.get(name, ns)["status"]["loadBalancer"]["ingress"]


async def event_with(env: Any, name: str, reason: str) -> dict[str, Any]:
    """The first Event ``reason`` about Service ``name`` (waited for through a watch of Events)."""
    from kmesh.client.informer import Informer

    events = Informer(env.client, "Event", namespace="default")
    async with trio.open_nursery() as n:
        await n.start(events.run)

        def found(inf: Informer) -> bool:
            return any(e.get("reason") == reason and e["involvedObject"]["name"] == name for e in inf.list())

        await events.wait_for(found)
        n.cancel_scope.cancel()
    return next(e for e in events.list() if e.get("reason") == reason and e["involvedObject"]["name"] == name)


async def test_allocates_honours_and_refuses(start_env: StartEnv) -> None:
    env = await start_env(lb_range=RANGE)
    c = env.client
    await c.create(lb_service("web"))
    assert await ingress_of(env, "web") == [{"ip": "192.168.56.240", "ipMode": "VIP"}]
    ev = await event_with(env, "web", "IPAllocated")
    assert ev["type"] == "Normal" and "192.168.56.240" in ev["message"]

    await c.create(lb_service("other-class", cls="example.com/lb"))  # another implementation's
    await c.create(lb_service("outside", ip="192.168.56.99"))
    ev = await event_with(env, "outside", "AllocationFailed")
    assert ev["type"] == "Warning" and "192.168.56.99" in ev["message"]
    await c.create(lb_service("taken", ip="192.168.56.240"))
    ev = await event_with(env, "taken", "AllocationFailed")
    assert "default/web" in ev["message"]

    await c.create(lb_service("pinned", ip="192.168.56.241"))
    assert await ingress_of(env, "pinned") == [{"ip": "192.168.56.241", "ipMode": "VIP"}]
    await c.create(lb_service("late"))  # the pool is exhausted
    ev = await event_with(env, "late", "AllocationFailed")
    assert "no available IPs" in ev["message"]
    for name in ("other-class", "outside", "taken"):
        assert not (await c.get("Service", name, "default"))["status"]["loadBalancer"].get("ingress")

    # a Service that stops being a LoadBalancer gives its address back: the waiting one gets it
    await c.patch("Service", "web", {"spec": {"type": "ClusterIP"}}, "default")
    assert await ingress_of(env, "late") == [{"ip": "192.168.56.240", "ipMode": "VIP"}]
    # a deleted one too
    await c.delete("Service", "pinned", "default")
    await c.create(lb_service("again"))
    assert await ingress_of(env, "again") == [{"ip": "192.168.56.241", "ipMode": "VIP"}]


ELECTED = {"leader_elect": True, "leader_elect_lease_duration": 2, "leader_elect_renew_deadline": 1,
           "leader_elect_retry_period": 0.2}


@pytest.mark.parametrize("election", [{}, ELECTED], ids=["single", "leader-elected"])
async def test_restart_keeps_addresses(start_env: StartEnv, tmp_path: Path, election: dict[str, Any]) -> None:
    """A new controller manager (a restart, or a new leader's term) claims what Services hold before it allocates."""
    env = await start_env(lb_range="192.168.56.240-192.168.56.242", **election)
    c = env.client
    for name in ("a", "b"):
        await c.create(lb_service(name))
    first = {n: (await ingress_of(env, n))[0]["ip"] for n in ("a", "b")}
    assert sorted(first.values()) == ["192.168.56.240", "192.168.56.241"]
    await c.delete("Service", "a", "default")
    env.scope.cancel()  # the controller manager stops ...

    # ... and a new one over the same API server rebuilds the pool from the statuses
    from kmesh.controllers.manager import ControllerConfig, run_controllers

    async with trio.open_nursery() as n:
        mgr = await n.start(run_controllers, c, ControllerConfig(lb_range="192.168.56.240-192.168.56.242",
                                                                 **election))
        await c.create(lb_service("c"))
        await c.create(lb_service("d"))
        services = mgr.factory.informer("Service")
        await services.wait_for(lambda inf: all(
            ((inf.get(s, "default") or {}).get("status") or {}).get("loadBalancer", {}).get("ingress")
            for s in ("c", "d")))
        got = {s: services.get(s, "default")["status"]["loadBalancer"]["ingress"][0]["ip"] for s in ("b", "c", "d")}
        assert got["b"] == first["b"]
        assert len(set(got.values())) == 3
        n.cancel_scope.cancel()
